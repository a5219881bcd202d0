"""Small helpers shared by the model layer: where an array lives, and how to print a shape.

Element-wise glue (pooling, concatenation, losses, optimizer updates) runs with the array
module of the data: NumPy for host arrays, CuPy for arrays on a GPU. Nothing here moves an
array between devices.
"""

import numpy as np


def array_module(a):
    """numpy for host arrays, cupy for CUDA arrays (the device container of both GPU
    backends). Under the Numba CUDA simulator "device" arrays are NumPy arrays."""
    if type(a) is np.ndarray or not hasattr(a, "__cuda_array_interface__"):
        return np
    import cupy
    return cupy


def shape_text(shape):
    """(64, 150, 50) style, None shown as None (an axis not known until data arrives)."""
    items = ["None" if n is None else str(n) for n in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def float_dtype(dtype, where):
    """The dtype as np.dtype; it must be float32 or float64."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{where}: dtype must be float32 or float64, got {dt}")
    return dt
