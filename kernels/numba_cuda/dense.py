"""Fused dense layer on the GPU: y = act(x @ w + b) and its backward.

Reference: tinynet/backends/numpy_ref.py:dense_forward and dense_backward.

Shapes: x (batch, in), w (in, out), b (out,), y and dy (batch, out); all C-contiguous.
Activations are integer codes (tinynet/_activations.py CODES), passed at run time: a
branch that is the same for every thread costs next to nothing, and one compiled kernel
per dtype serves every activation.

Kernels (each a tiled GEMM of tiles.py: blocks of 16 x 16 threads, 64 x 64 outputs):

dense_forward      grid tiles.grid(batch, out) (1-D, tiles.tile_origin).  y = act(x @ w + b):
                   bias and activation are applied to the accumulators (epilogue), y is
                   written once.
dense_backward_dx  grid tiles.grid(batch, in) (1-D).  dx = dz @ w.T, where dz = dy * act'(y) is
                   formed while staging the dy tile (prologue), never stored.
dense_backward_dw  grid dense_backward_dw_grid(in, out, chunks).  The batch is split into
                   `chunks` runs of `rows_per_chunk` rows (batch_split below); block
                   (.., .., c) writes partial[c, :in] = x[rows of c].T @ dz[rows of c], dz
                   again formed while staging. With a bias, the first row of threads of the
                   blocks of the first feature tile also adds up the dz tiles they stage:
                   partial[c, in] = the sum of dz over the chunk's rows (db, same pass).
                   Chunks are summed in a fixed order by partials.sum_partials (no float
                   atomics), so results are the same run to run; with one chunk partial[0]
                   is the result.

The work of one block is a device function (forward_tile, backward_dx_tile,
backward_dw_tile) taking the block's shared tiles and accumulators as arguments, so that
stack_dense.py runs the same tiles on each model's slices.
"""

import math

from numba import cuda

from ..numba_math import activate, activation_grad
from ..split_k import split_rows
from .tiles import (LOADS, PADDED, PER_THREAD, SIDE, TILE, TILE_K, VECTOR_ALIGNMENT, c_array,
                    device, multiply_tiles, scalar, stage_natural, stage_transposed,
                    tile_origin, zero_accumulators)

def batch_split(batch, n_in, n_out):
    """(chunks, rows_per_chunk) for dense_backward_dw by the rule both GPU families share
    (kernels/split_k.py); rows_per_chunk a multiple of TILE_K."""
    tiles = math.ceil(max(n_in, 1) / TILE) * math.ceil(n_out / TILE)
    rows_per_chunk, chunks = split_rows(batch, tiles, TILE_K)
    return chunks, rows_per_chunk


@device
def stage_gradient_transposed(tile, dy, y, code, row0, k0, thread):
    """tile[k, m] = dz[row0 + m, k0 + k] with dz = dy * act'(y); zero outside (batch, out)."""
    rows, depth = dy.shape
    for load in range(LOADS):
        m = thread // TILE_K + load * (SIDE * SIDE // TILE_K)
        k = thread % TILE_K
        if row0 + m < rows and k0 + k < depth:
            grad = dy[row0 + m, k0 + k]
            if code != 0:
                grad *= activation_grad(code, y[row0 + m, k0 + k])
            tile[k, m] = grad
        else:
            tile[k, m] = 0


@device
def stage_gradient_natural(tile, dy, y, code, k0, k_end, col0, thread):
    """tile[k, n] = dz[k0 + k, col0 + n] with dz = dy * act'(y); zero for rows >= k_end."""
    cols = dy.shape[1]
    for load in range(LOADS):
        k = thread // TILE + load * (SIDE * SIDE // TILE)
        n = thread % TILE
        if k0 + k < k_end and col0 + n < cols:
            grad = dy[k0 + k, col0 + n]
            if code != 0:
                grad *= activation_grad(code, y[k0 + k, col0 + n])
            tile[k, n] = grad
        else:
            tile[k, n] = 0


@device
def finish_value(y, b, has_bias, code, row, col, z):
    """y[row, col] = act(z + b[col]), if col is inside y."""
    if col < y.shape[1]:
        if has_bias:
            z += b[col]
        y[row, col] = activate(code, z)


@device
def finish_row(y, b, has_bias, code, row, col, z0, z1, z2, z3):
    """The epilogue of one row of a thread's accumulators: columns col .. col + 3."""
    if row < y.shape[0]:
        finish_value(y, b, has_bias, code, row, col, z0)
        finish_value(y, b, has_bias, code, row, col + 1, z1)
        finish_value(y, b, has_bias, code, row, col + 2, z2)
        finish_value(y, b, has_bias, code, row, col + 3, z3)


@device
def forward_tile(x_tile, w_tile, acc, x, w, b, has_bias, code, y, row0, col0):
    """The block's tile of y = act(x @ w + b) at (row0, col0): x (batch, in), w (in, out),
    b (out,) read only if has_bias, y (batch, out); x_tile, w_tile the shared staging
    tiles (TILE_K, PADDED), acc the thread's (PER_THREAD, PER_THREAD) accumulators."""
    n_in = w.shape[0]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    thread = ty * SIDE + tx
    # x_tile[k, m] = x[row0 + m, k0 + k]; w_tile[k, n] = w[k0 + k, col0 + n]
    zero_accumulators(acc)
    for k0 in range(0, n_in, TILE_K):
        stage_transposed(x_tile, x, row0, k0, thread)
        stage_natural(w_tile, w, k0, n_in, col0, thread)
        cuda.syncthreads()   # both tiles staged before anyone multiplies
        multiply_tiles(x_tile, w_tile, acc, ty, tx)
        cuda.syncthreads()   # everyone done reading before the next stage overwrites
    # One call per accumulator row, with constant indices: acc stays in registers
    # (a loop holding 16 inlined activations is not always unrolled, and acc[i, j]
    # would then live on the stack).
    row = row0 + ty * PER_THREAD
    col = col0 + tx * PER_THREAD
    finish_row(y, b, has_bias, code, row, col, acc[0, 0], acc[0, 1], acc[0, 2], acc[0, 3])
    finish_row(y, b, has_bias, code, row + 1, col, acc[1, 0], acc[1, 1], acc[1, 2],
               acc[1, 3])
    finish_row(y, b, has_bias, code, row + 2, col, acc[2, 0], acc[2, 1], acc[2, 2],
               acc[2, 3])
    finish_row(y, b, has_bias, code, row + 3, col, acc[3, 0], acc[3, 1], acc[3, 2],
               acc[3, 3])


def dense_forward_source(dtype):
    def dense_forward(x, w, b, has_bias, code, y):
        # x (batch, in), w (in, out), b (out,) read only if has_bias, y (batch, out)
        x_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        w_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), dtype)
        row0, col0 = tile_origin(w.shape[1], TILE)
        forward_tile(x_tile, w_tile, acc, x, w, b, has_bias, code, y, row0, col0)
    return dense_forward


def dense_forward_argtypes(dtype):
    return (c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 1), scalar(bool),
            scalar(int), c_array(dtype, 2))


@device
def backward_dx_tile(dz_tile, w_tile, acc, dy, y, code, w, dx, row0, col0):
    """The block's tile of dx = dz @ w.T at (row0, col0), dz = dy * act'(y): dy, y (batch,
    out) (y read only if code != 0), w (in, out), dx (batch, in); tiles and acc as in
    forward_tile."""
    batch, n_out = dy.shape
    n_in = w.shape[0]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    thread = ty * SIDE + tx
    # dz_tile[k, m] = dz[row0 + m, k0 + k]; w_tile[k, n] = w[col0 + n, k0 + k]
    zero_accumulators(acc)
    for k0 in range(0, n_out, TILE_K):
        stage_gradient_transposed(dz_tile, dy, y, code, row0, k0, thread)
        stage_transposed(w_tile, w, col0, k0, thread)
        cuda.syncthreads()   # both tiles staged before anyone multiplies
        multiply_tiles(dz_tile, w_tile, acc, ty, tx)
        cuda.syncthreads()   # everyone done reading before the next stage overwrites
    for i in range(PER_THREAD):
        row = row0 + ty * PER_THREAD + i
        for j in range(PER_THREAD):
            col = col0 + tx * PER_THREAD + j
            if row < batch and col < n_in:
                dx[row, col] = acc[i, j]


def dense_backward_dx_source(dtype):
    def dense_backward_dx(dy, y, code, w, dx):
        # dy, y (batch, out) (y read only if code != 0), w (in, out), dx (batch, in)
        dz_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        w_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), dtype)
        row0, col0 = tile_origin(w.shape[0], TILE)
        backward_dx_tile(dz_tile, w_tile, acc, dy, y, code, w, dx, row0, col0)
    return dense_backward_dx


def dense_backward_dx_argtypes(dtype):
    return (c_array(dtype, 2), c_array(dtype, 2), scalar(int), c_array(dtype, 2),
            c_array(dtype, 2))


@device
def backward_dw_tile(x_tile, dz_tile, acc, bias_acc, x, dy, y, code, has_bias, row_begin,
                     row_end, partial):
    """The block's tile of partial = [x[rows].T @ dz[rows] ; dz[rows].sum(0) if has_bias]
    for rows row_begin .. row_end - 1, at feature tile blockIdx.y and column tile
    blockIdx.x: x (batch, in), dy, y (batch, out) (y read only if code != 0), partial
    (in + has_bias, out); bias_acc the thread's (PER_THREAD,) bias sums."""
    n_in = x.shape[1]
    n_out = dy.shape[1]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    thread = ty * SIDE + tx
    f0 = cuda.blockIdx.y * TILE
    col0 = cuda.blockIdx.x * TILE
    # x_tile[k, m] = x[r0 + k, f0 + m]; dz_tile[k, n] = dz[r0 + k, col0 + n]
    zero_accumulators(acc)
    # db: the first row of threads of the first feature tile also sums the staged dz
    sums_bias = has_bias and cuda.blockIdx.y == 0 and ty == 0
    for j in range(PER_THREAD):
        bias_acc[j] = 0
    for r0 in range(row_begin, row_end, TILE_K):
        stage_natural(x_tile, x, r0, row_end, f0, thread)
        stage_gradient_natural(dz_tile, dy, y, code, r0, row_end, col0, thread)
        cuda.syncthreads()   # both tiles staged before anyone multiplies
        multiply_tiles(x_tile, dz_tile, acc, ty, tx)
        if sums_bias:
            for k in range(TILE_K):
                for j in range(PER_THREAD):
                    bias_acc[j] += dz_tile[k, tx * PER_THREAD + j]
        cuda.syncthreads()   # everyone done reading before the next stage overwrites
    for i in range(PER_THREAD):
        feature = f0 + ty * PER_THREAD + i
        for j in range(PER_THREAD):
            col = col0 + tx * PER_THREAD + j
            if feature < n_in and col < n_out:
                partial[feature, col] = acc[i, j]
    if sums_bias:
        for j in range(PER_THREAD):
            col = col0 + tx * PER_THREAD + j
            if col < n_out:
                partial[n_in, col] = bias_acc[j]


def dense_backward_dw_source(dtype):
    def dense_backward_dw(x, dy, y, code, has_bias, rows_per_chunk, partial):
        # x (batch, in), dy and y (batch, out) (y read only if code != 0),
        # partial (chunks, in + has_bias, out): for the rows of chunk c,
        #   partial[c, :in] = x[rows].T @ dz[rows], partial[c, in] = dz[rows].sum(0) (if has_bias)
        x_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        dz_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), dtype)
        bias_acc = cuda.local.array(PER_THREAD, dtype)
        chunk = cuda.blockIdx.z
        row_begin = chunk * rows_per_chunk
        row_end = min(x.shape[0], row_begin + rows_per_chunk)
        backward_dw_tile(x_tile, dz_tile, acc, bias_acc, x, dy, y, code, has_bias, row_begin,
                         row_end, partial[chunk])
    return dense_backward_dw


def dense_backward_dw_argtypes(dtype):
    return (c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2), scalar(int), scalar(bool),
            scalar(int), c_array(dtype, 3))


def dense_backward_dw_grid(n_in, n_out, chunks):
    """(output tiles, feature tiles, chunks); one feature tile even for in = 0 (for db)."""
    return (math.ceil(n_out / TILE), math.ceil(max(n_in, 1) / TILE), chunks)
