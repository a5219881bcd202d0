"""Numba-CUDA kernels, one module per op."""
