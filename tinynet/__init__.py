"""tinynet: fused kernels for tiny neural networks, on the GPU and the CPU.

    import tinynet
    y, ctx = tinynet.ops.dense(x, w, b, activation="tanh")

`import tinynet` needs NumPy alone; Numba and CuPy are imported when a backend that needs
them is first used.
"""

import numpy as _np

from tinynet import ops
from tinynet._dispatch import asarray, available_backends, get_backend, set_backend, use_backend

__version__ = "0.1.0"

__all__ = ["ops", "asarray", "available_backends", "get_backend", "set_backend", "use_backend",
           "to_numpy", "__version__"]


def to_numpy(a):
    """Bring any result (NumPy, CuPy, a PyTorch tensor, a Numba device array) to the host."""
    if isinstance(a, _np.ndarray):
        return a
    if hasattr(a, "get") and hasattr(a, "__cuda_array_interface__"):       # CuPy
        return a.get()
    if hasattr(a, "copy_to_host"):                                          # Numba device
        return a.copy_to_host()
    if hasattr(a, "detach"):                                                # PyTorch
        return a.detach().cpu().numpy()
    if hasattr(a, "__cuda_array_interface__"):
        import cupy
        return cupy.asarray(a).get()
    return _np.asarray(a)
