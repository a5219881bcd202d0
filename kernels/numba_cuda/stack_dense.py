"""Fused dense layer for a stack of M models: dense.py's tiles with a models axis.

Reference: tinynet/backends/numpy_ref.py:stack_dense_forward and stack_dense_backward.

Shapes: x (M, batch, in), w (M, in, out), b (M, out), y and dy (M, batch, out);
all C-contiguous. Model m's tiles are exactly dense.py's on the slices x[m], w[m], ...:
the kernels below only add the model index and call dense.py's tile functions.

Models: grid axis y (stack_dense_forward, stack_dense_backward_dx) or z (stack_dense_backward_dw,
with the batch chunks) walks the models; a grid axis holds at most MAX_GRID_YZ blocks,
so each block loops over models m = blockIdx, blockIdx + gridDim, ... (the same block
geometry for every model, so the barriers inside the tile functions are reached by the
whole block).

stack_dense_forward      grid (tiles.grid(batch, out), models_grid(M)).
stack_dense_backward_dx  grid (tiles.grid(batch, in), models_grid(M)).
stack_dense_backward_dw  grid (out tiles, feature tiles, models_grid(M * chunks)), the batch
                         split as dense.batch_split; partial (chunks, M, in + has_bias, out),
                         then partials.sum_partials over the chunks (fixed order).
"""

import math

from numba import cuda

from .dense import backward_dw_tile, backward_dx_tile, forward_tile
from .tiles import PADDED, PER_THREAD, TILE, TILE_K, VECTOR_ALIGNMENT, c_array, scalar, tile_origin

MAX_GRID_YZ = 65535     # CUDA's limit on gridDim.y and gridDim.z


def models_grid(count):
    return min(count, MAX_GRID_YZ)


def stack_dense_forward_source(dtype):
    def stack_dense_forward(x, w, b, has_bias, code, y):
        # x (M, batch, in), w (M, in, out), b (M, out) read only if has_bias (else any
        # (1, 1) array), y (M, batch, out)
        x_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        w_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), dtype)
        row0, col0 = tile_origin(w.shape[2], TILE)
        for m in range(cuda.blockIdx.y, x.shape[0], cuda.gridDim.y):
            forward_tile(x_tile, w_tile, acc, x[m], w[m], b[m if has_bias else 0], has_bias,
                         code, y[m], row0, col0)
    return stack_dense_forward


def stack_dense_forward_argtypes(dtype):
    return (c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 2), scalar(bool),
            scalar(int), c_array(dtype, 3))


def stack_dense_backward_dx_source(dtype):
    def stack_dense_backward_dx(dy, y, code, w, dx):
        # dy, y (M, batch, out) (y read only if code != 0), w (M, in, out), dx (M, batch, in)
        dz_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        w_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), dtype)
        row0, col0 = tile_origin(w.shape[1], TILE)
        for m in range(cuda.blockIdx.y, dy.shape[0], cuda.gridDim.y):
            backward_dx_tile(dz_tile, w_tile, acc, dy[m], y[m], code, w[m], dx[m], row0, col0)
    return stack_dense_backward_dx


def stack_dense_backward_dx_argtypes(dtype):
    return (c_array(dtype, 3), c_array(dtype, 3), scalar(int), c_array(dtype, 3),
            c_array(dtype, 3))


def stack_dense_backward_dw_source(dtype):
    def stack_dense_backward_dw(x, dy, y, code, has_bias, rows_per_chunk, partial):
        # x (M, batch, in), dy and y (M, batch, out) (y read only if code != 0),
        # partial (chunks, M, in + has_bias, out): dense_backward_dw's partials per model
        x_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        dz_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), dtype)
        bias_acc = cuda.local.array(PER_THREAD, dtype)
        chunks, n_models = partial.shape[0], partial.shape[1]
        batch = x.shape[1]
        for index in range(cuda.blockIdx.z, n_models * chunks, cuda.gridDim.z):
            m = index // chunks
            chunk = index - m * chunks
            row_begin = chunk * rows_per_chunk
            backward_dw_tile(x_tile, dz_tile, acc, bias_acc, x[m], dy[m], y[m], code, has_bias,
                             row_begin, min(batch, row_begin + rows_per_chunk),
                             partial[chunk, m])
    return stack_dense_backward_dw


def stack_dense_backward_dw_argtypes(dtype):
    return (c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 3), scalar(int), scalar(bool),
            scalar(int), c_array(dtype, 4))


def stack_dense_backward_dw_grid(n_models, n_in, n_out, chunks):
    """(output tiles, feature tiles, models x chunks); one feature tile even for in = 0."""
    return (math.ceil(n_out / TILE), math.ceil(max(n_in, 1) / TILE),
            models_grid(n_models * chunks))
