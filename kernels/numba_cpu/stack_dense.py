"""Fused dense layer for a stack of M models on the CPU, models innermost, and its backward.

Must match tinynet/backends/numpy_ref.py: stack_dense_forward, stack_dense_backward (model m's
results are dense_forward / dense_backward on model m's slices).

Shapes: x (M, batch, in), w (M, in, out), b (M, out) -- (M, 0) stands for "no bias" -- y and
dy (M, batch, out); inputs may have any strides (a broadcast view: stride 0 on M).

Layout: the models go in blocks of `lanes` (the backend passes a multiple of LANES; the
count is an argument, not a constant, see lanes.py). A block copies its models' weights and,
row by row, their data into small arrays of its own whose last, contiguous axis is the model:
w (in, out, lanes), x (in, lanes). Every inner loop then runs
over the block's models, and LLVM turns it into SIMD instructions (one per 8 or 16 float32
models); each model's arithmetic is the single-model kernel's, in the same order. prange
runs the blocks on the cores. Lanes past the last model hold zeros and are never written out,
and no value crosses lanes, so a NaN in one model reaches no other.
"""

import numpy as np
from numba import prange, types

from tinynet.kernels.numba_cpu import array_types, strided
from tinynet.kernels.numba_cpu.lanes import (activate_rows, gather_matrix, gather_rows,
                                              scatter_matrix, scatter_rows, slope,
                                              slope_terms)


def forward(x, w, b, code, lanes, y):
    # y (M, batch, out) = act(x @ w + b), model by model
    models, batch, n_in = x.shape
    blocks = (models + lanes - 1) // lanes
    n_out = w.shape[2]
    dtype = y.dtype
    for block in prange(blocks):
        first = block * lanes
        count = min(lanes, models - first)
        w_lanes = np.empty((n_in, n_out, lanes), dtype)
        gather_matrix(w, first, count, w_lanes)
        b_lanes = np.empty((b.shape[1], lanes), dtype)
        gather_rows(b, first, count, b_lanes)
        x_lanes = np.zeros((n_in, lanes), dtype)
        y_lanes = np.empty((n_out, lanes), dtype)
        for row in range(batch):
            for lane in range(count):
                for k in range(n_in):
                    x_lanes[k, lane] = x[first + lane, row, k]
            if b.shape[1] != 0:
                y_lanes[:] = b_lanes
            else:
                y_lanes[:] = 0
            for k in range(n_in):
                for j in range(n_out):
                    for lane in range(lanes):
                        y_lanes[j, lane] += x_lanes[k, lane] * w_lanes[k, j, lane]
            activate_rows(code, y_lanes, 0, n_out)
            for lane in range(count):
                for j in range(n_out):
                    y[first + lane, row, j] = y_lanes[j, lane]


def backward(x, w, y, dy, code, lanes, dx, dw, db):
    # dz = dy * act'(y); dx = dz @ w.T, dw = x.T @ dz, db = sum of dz over rows, model by
    # model: dx (M, batch, in), dw (M, in, out), db (M, out) written, or, when the forward had
    # no bias, db is (M, 0) and nothing is summed
    models, batch, n_in = x.shape
    blocks = (models + lanes - 1) // lanes
    n_out = w.shape[2]
    dtype = dx.dtype
    terms = slope_terms(code, dtype.type(1))
    for block in prange(blocks):
        first = block * lanes
        count = min(lanes, models - first)
        w_lanes = np.empty((n_in, n_out, lanes), dtype)
        gather_matrix(w, first, count, w_lanes)
        dw_lanes = np.zeros((n_in, n_out, lanes), dtype)
        db_lanes = np.zeros((n_out, lanes), dtype)
        x_lanes = np.zeros((n_in, lanes), dtype)
        y_lanes = np.zeros((n_out, lanes), dtype)
        dz = np.zeros((n_out, lanes), dtype)
        dx_lanes = np.empty(lanes, dtype)
        for row in range(batch):
            for lane in range(count):
                for k in range(n_in):
                    x_lanes[k, lane] = x[first + lane, row, k]
                for j in range(n_out):
                    y_lanes[j, lane] = y[first + lane, row, j]
                    dz[j, lane] = dy[first + lane, row, j]
            for j in range(n_out):
                for lane in range(lanes):
                    dz[j, lane] *= slope(y_lanes[j, lane], terms)
                    db_lanes[j, lane] += dz[j, lane]
            for k in range(n_in):
                dx_lanes[:] = 0
                for j in range(n_out):
                    for lane in range(lanes):
                        dx_lanes[lane] += dz[j, lane] * w_lanes[k, j, lane]
                        dw_lanes[k, j, lane] += x_lanes[k, lane] * dz[j, lane]
                for lane in range(count):
                    dx[first + lane, row, k] = dx_lanes[lane]
        scatter_matrix(dw_lanes, first, count, dw)
        if db.shape[1] != 0:
            scatter_rows(db_lanes, first, count, db)


def signatures(float_type):
    _, writable = array_types(float_type)
    code = types.int64

    def any_strides(ndim):
        return strided(float_type, ndim)
    return {
        forward: types.void(any_strides(3), any_strides(3), any_strides(2), code, code,
                            writable(3)),
        backward: types.void(any_strides(3), any_strides(3), any_strides(3), any_strides(3),
                             code, code, writable(3), writable(3), writable(2)),
    }
