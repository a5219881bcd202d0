"""Numba CPU kernels (@njit), one module per op, for the numba-cpu backend."""
