"""The shared-memory GEMM tile used by the dense and LSTM-cell kernels.

One block of 16 x 16 threads computes a TILE x TILE (64 x 64) tile of C = A @ B. The
reduction axis is walked TILE_K (16) at a time: the block stages A[rows, k0:k0+16] and
B[k0:k0+16, cols] in shared memory (each thread stages LOADS = 4 elements of each), then
every thread multiplies them into its own 4 x 4 accumulators, which live in registers
(constant trip counts: the local array is promoted to registers; `python -m tinynet
compile` shows 0 local bytes).

Thread (ty, tx) owns rows 4 ty .. 4 ty + 3 and columns 4 tx .. 4 tx + 3. Both staged tiles
are stored k-major, tile[k, m], 16-byte aligned, so per k a thread reads its 4 values of A
and its 4 values of B with one 16-byte load each (float32; two for float64): 2 shared loads
per 16 FMAs. (The 16 threads of a half-warp read 256 contiguous bytes of B, the minimum 2
wavefronts; the two rows of threads of a warp read A as broadcasts.)

Rows of a staged tile are PADDED = TILE + 4 long: still a multiple of 16 bytes, and a
transposing store (16 consecutive threads walking k down one column) spreads over the
banks instead of hitting one bank 16 times (2-way conflicts at most).

Tile sizes are compile-time constants; the same tile runs under the simulator.
"""

import numpy as np
from numba import cuda, from_dtype, types

TILE = 64                       # rows and columns of the output tile of one block
TILE_K = 16                     # depth of one shared-memory stage of the reduction
SIDE = 16                       # a block is SIDE x SIDE threads
PER_THREAD = TILE // SIDE       # each thread owns PER_THREAD x PER_THREAD outputs
BLOCK = (SIDE, SIDE)            # launch geometry: blockDim (x, y)
LOADS = TILE * TILE_K // (SIDE * SIDE)   # elements each thread stages per tile (4)
PADDED = TILE + 4               # row length of a staged tile (see above)


# Alignment of shared arrays from which 4 consecutive values are read at once (16 bytes:
# one vector load). The simulator takes no alignment argument other than None.
VECTOR_ALIGNMENT = None if cuda.config.ENABLE_CUDASIM else 16


def c_array(dtype, ndim):
    """The Numba type of a C-contiguous array of `dtype` (np.float32 or np.float64)."""
    return types.Array(from_dtype(np.dtype(dtype)), ndim, "C")


def scalar(dtype):
    return from_dtype(np.dtype(dtype))


def device(function):
    """A device function inlined into its caller (so its accumulators stay in registers).
    The simulator runs device functions as plain Python and takes no inlining option."""
    if cuda.config.ENABLE_CUDASIM:
        return cuda.jit(device=True)(function)
    return cuda.jit(device=True, forceinline=True)(function)


@device
def zero_accumulators(acc):
    for i in range(PER_THREAD):
        for j in range(PER_THREAD):
            acc[i, j] = 0


@device
def multiply_tiles(a_tile, b_tile, acc, ty, tx):
    """acc[i, j] += sum_k a_tile[k, 4 ty + i] * b_tile[k, 4 tx + j]."""
    for k in range(TILE_K):
        for i in range(PER_THREAD):
            a = a_tile[k, ty * PER_THREAD + i]
            for j in range(PER_THREAD):
                acc[i, j] += a * b_tile[k, tx * PER_THREAD + j]


@device
def stage_transposed(tile, src, row0, k0, thread):
    """tile[k, m] = src[row0 + m, k0 + k], zero outside src (rows, depth). Each group of 16
    consecutive threads reads 16 consecutive k of one row of src."""
    rows, depth = src.shape
    for load in range(LOADS):
        m = thread // TILE_K + load * (SIDE * SIDE // TILE_K)
        k = thread % TILE_K
        if row0 + m < rows and k0 + k < depth:
            tile[k, m] = src[row0 + m, k0 + k]
        else:
            tile[k, m] = 0


@device
def stage_natural(tile, src, k0, k_end, col0, thread):
    """tile[k, n] = src[k0 + k, col0 + n], zero for rows >= k_end and outside src (rows,
    cols). Each group of 64 consecutive threads reads 64 consecutive columns of one row."""
    cols = src.shape[1]
    for load in range(LOADS):
        k = thread // TILE + load * (SIDE * SIDE // TILE)
        n = thread % TILE
        if k0 + k < k_end and col0 + n < cols:
            tile[k, n] = src[k0 + k, col0 + n]
        else:
            tile[k, n] = 0


@device
def tile_origin(cols, col_width):
    """(first row, first column) of this block's tile, for a 1-D grid of grid(rows, cols,
    col_width) blocks: the column tiles of one row tile are consecutive blocks (they
    share that row tile of A, which then comes from L2), and a 1-D grid has no 65535
    limit on the number of row tiles."""
    col_tiles = (cols + col_width - 1) // col_width
    return (cuda.blockIdx.x // col_tiles) * TILE, (cuda.blockIdx.x % col_tiles) * col_width


def grid(rows, cols, col_width=TILE):
    """The 1-D grid covering an output of rows x cols with TILE x col_width tiles."""
    return (((rows + TILE - 1) // TILE) * ((cols + col_width - 1) // col_width),)
