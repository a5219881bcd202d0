"""Numba CPU kernels (@njit), one module per op, for the numba-cpu backend.

Each kernel module holds plain Python functions and a `signatures(float_type)` that gives the
one signature each is compiled for; tinynet/backends/numba_cpu.py compiles them per float type
on first use (cache=True: on disk, so only a machine's first use pays the compile).

Argument types: inputs are typed read-only C-contiguous arrays (the stack kernels': read-only
arrays of any strides, `strided`) (a writable array converts to
that type for free, so one compiled version takes both, and writing into an input is a
compile error); outputs are writable C-contiguous arrays the caller allocated; activation
codes (tinynet/_activations.py CODES) are int64 arguments, not specializations.

Numba's disk cache checks only the stamp of the kernel's own file: after editing
lstm_cell.py (whose gate math lstm.py inlines), lanes.py or vectors.py (which the stack
kernels inline), kernels/numba_math.py, or the options below, delete
kernels/numba_cpu/__pycache__ (or the NUMBA_CACHE_DIR in use). An installed release gets
fresh stamps, so users never see a stale kernel.
"""

from numba import types

# LLVM may reassociate sums (so dot products vectorize) and fuse multiply-adds; no flag that
# assumes finite values, so NaN and Inf propagate as in NumPy. Results stay bit-identical
# run to run on a machine.
FASTMATH = {"reassoc", "contract"}

# How tinynet/backends/numba_cpu.py compiles every kernel. error_model "numpy": a float
# division by zero gives Inf or NaN as in NumPy instead of raising, so Numba puts no zero test
# before each division (none of ours can divide by zero: sigmoid and tanh divide by 1 + e,
# e >= 0). Same results bit for bit, and less code in the loops.
COMPILE_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy"}

# Models per block in the stack kernels (stack_dense.py, stack_lstm.py), the length of their
# innermost, contiguous axis. stack_lstm.py: exactly LANES, the length of its SIMD vectors
# (kernels/numba_cpu/vectors.py: 2 AVX2 or 1 AVX-512 register of float32). stack_dense.py: a
# multiple of LANES, so every inner loop is a whole number of SIMD vectors, and at most
# MAX_LANES; wider blocks spread each inner loop's fixed cost over more models, and
# tinynet/backends/numba_cpu.py picks the width per call so that every thread still gets a
# block.
LANES = 16
MAX_LANES = 64


def array_types(float_type):
    """(read-only input, writable output) array type makers for one float type."""

    def read_only(ndim):
        return types.Array(float_type, ndim, "C", readonly=True)

    def writable(ndim):
        return types.Array(float_type, ndim, "C")

    return read_only, writable


def strided(dtype, ndim):
    """A read-only input array type of any strides (the stack kernels' inputs: broadcast views
    included), so any array of this dtype and ndim is a valid argument."""
    return types.Array(dtype, ndim, "A", readonly=True)
