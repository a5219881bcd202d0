"""Emulated device memory: NumPy arrays inside guard zones.

Each allocation lies between guard bytes of 0xFF, on each side at least 64 KiB and twice the
array's size, so that a kernel that writes past an array (a wrong row stride, an index one
past the end) changes a guard; a launch checks the guards of the arrays it was given. Fresh
`empty` arrays hold the same bytes (NaN in float and double), so an output element that no
kernel writes shows up as NaN. Allocations start 256-byte aligned, as cudaMalloc's do.
"""

import types

import numpy as np

POISON = 0xFF
_ALIGNMENT = 256
_MIN_GUARD = 64 * 1024

_DEVICE = types.SimpleNamespace(id=0)   # the one emulated GPU


class ndarray(np.ndarray):
    """A CuPy array stand-in. Views (slices, reshape, .T) share their allocation; the methods
    below that make new arrays make them in device memory."""

    allocation = None   # set on the array allocate() makes; views inherit it

    def __array_finalize__(self, source):
        self.allocation = getattr(source, "allocation", None)

    @property
    def device(self):
        return _DEVICE

    def copy(self, order="C"):
        return to_device(np.asarray(self).copy(order))

    def __matmul__(self, other):
        return to_device(np.asarray(self) @ np.asarray(other))


class Allocation:
    """An array's bytes, [begin, end) of `owner`, and the guards around them."""

    def __init__(self, owner, begin, end, what):
        self.owner, self.begin, self.end, self.what = owner, begin, end, what

    def holds(self, a):
        first = self.owner.ctypes.data + self.begin
        last = self.owner.ctypes.data + self.end
        return first <= a.ctypes.data and a.ctypes.data + a.nbytes <= last

    def overwritten_guards(self):
        """"before <what>", "after <what>" for each guard that no longer holds only 0xFF."""
        return [f"{side} {self.what}" for side, guard in (("before", self.owner[:self.begin]),
                                                          ("after", self.owner[self.end:]))
                if guard.min() != POISON]


def allocate(shape, dtype, fill=None):
    """A new device array; fill=None leaves it poisoned (NaN)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    guard = max(_MIN_GUARD, 2 * nbytes)
    owner = np.full(guard + _ALIGNMENT + nbytes + guard, POISON, np.uint8)
    begin = guard + (-(owner.ctypes.data + guard) % _ALIGNMENT)
    array = owner[begin:begin + nbytes].view(dtype).reshape(shape).view(ndarray)
    array.allocation = Allocation(owner, begin, begin + nbytes, f"{dtype}{shape}")
    if fill is not None:
        array[...] = fill
    return array


def to_device(a):
    a = np.asarray(a)
    out = allocate(a.shape, a.dtype)
    out[...] = a
    return out


def allocation_of(a):
    """The allocation that holds all of a's bytes, or None (not device memory: an array that
    NumPy made from a device array, say by arithmetic, inherits its allocation but not its
    bytes)."""
    allocation = getattr(a, "allocation", None)
    return allocation if allocation is not None and allocation.holds(a) else None
