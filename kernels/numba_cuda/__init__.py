"""Numba-CUDA kernels, one module per op.

compile_targets() lists every kernel with concrete argument types, for
`python -m tinynet compile` (tinynet/_compile.py)."""


def compile_targets():
    """[(name, python function, argument types)] for every kernel at its default config."""
    return []
