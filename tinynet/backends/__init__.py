"""Backends: one module each, the same function names in every one (see _dispatch.py)."""
