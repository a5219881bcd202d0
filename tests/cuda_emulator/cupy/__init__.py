"""A fake CuPy that runs tinynet's cupy backend on the CPU, for tests: only the part of CuPy's
API that tinynet/backends/cupy_cuda.py uses, one emulated GPU (device 0).

Arrays are NumPy arrays in guarded "device" memory (_memory.py). cupy.RawModule compiles the
CUDA C with g++ and runs its kernels on the CPU (_raw.py, ../cuda_shim.h), checking each
launch's arguments against the kernel's C signature. See ../README.md for what is and is
not emulated.
"""

import types

import numpy as np

from cupy._memory import allocate, ndarray, to_device
from cupy._raw import (OPT_IN_SHARED_BYTES, RawKernel, RawModule, kernels_defined,
                       kernels_launched)

__version__ = "cuda-emulator"


def empty(shape, dtype=np.float64):
    return allocate(shape, dtype)


def zeros(shape, dtype=np.float64):
    return allocate(shape, dtype, fill=0)


def empty_like(a):
    return allocate(a.shape, a.dtype)


def zeros_like(a):
    return allocate(a.shape, a.dtype, fill=0)


def asarray(a):
    return a if isinstance(a, ndarray) else to_device(a)


def ascontiguousarray(a):
    if isinstance(a, ndarray) and a.flags.c_contiguous:
        return a
    return to_device(np.ascontiguousarray(a))


def concatenate(arrays, axis=0):
    return to_device(np.concatenate([np.asarray(a) for a in arrays], axis))


def matmul(a, b):
    return to_device(np.matmul(np.asarray(a), np.asarray(b)))


def asnumpy(a):
    return np.array(a)


class CUDARuntimeError(RuntimeError):
    pass


_MULTIPROCESSOR_COUNT = 16                  # CUDA's numbers for these device attributes
_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97
# The multiprocessor count is small (an H200 has 132) so that the persistent LSTM kernels
# put several batch rows into a block even for small batches (some rows of the last block
# inactive), as they do for large batches on a GPU.
_ATTRIBUTES = {_MULTIPROCESSOR_COUNT: 4, _MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: OPT_IN_SHARED_BYTES}


def _device_attribute(attribute, device):
    if device != 0:
        raise CUDARuntimeError(f"cudaErrorInvalidDevice: device {device} (the emulator has one)")
    return _ATTRIBUTES[attribute]


cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
    CUDARuntimeError=CUDARuntimeError,
    cudaDevAttrMultiProcessorCount=_MULTIPROCESSOR_COUNT,
    cudaDevAttrMaxSharedMemoryPerBlockOptin=_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
    getDeviceCount=lambda: 1,
    getDevice=lambda: 0,
    deviceGetAttribute=_device_attribute,
))
