"""Deterministic reduction of per-block partial sums.

Kernels that reduce over the batch (dense dw/db, LSTM dw_ih/dw_hh/db) do not use float
atomics, whose order (and so whose rounding) changes from run to run: each block writes
its own partial result, and this kernel adds the partials up in a fixed order.

    partials (parts, n) -> out (n,):  out[i] = (((partials[0, i] + partials[1, i]) + ...)

Reference: the sums in tinynet/backends/numpy_ref.py (dense_backward, lstm_backward).
Launch: 1-D, THREADS threads per block, one thread per output element; consecutive threads
read consecutive elements of every partial (coalesced). Assumes parts >= 1.
"""

from numba import cuda

from .tiles import c_array

THREADS = 256


def sum_partials_source(dtype):
    def sum_partials(partials, out):
        # partials (parts, n), out (n,)
        parts, n = partials.shape
        i = cuda.grid(1)
        if i < n:
            total = partials[0, i]
            for part in range(1, parts):
                total += partials[part, i]
            out[i] = total
    return sum_partials


def sum_partials_argtypes(dtype):
    return (c_array(dtype, 2), c_array(dtype, 1))


def grid(n):
    return ((n + THREADS - 1) // THREADS,)
