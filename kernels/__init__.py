"""Kernel sources of both GPU families, installed as tinynet.kernels.

numba_cuda/  one Numba-CUDA module per op (imported by tinynet.backends.numba_cuda)
cuda/        one CUDA C file per op, extern "C" entry points (loaded by tinynet.backends.cupy_cuda)
split_k.py   how both families split a reduction over rows across blocks
"""
