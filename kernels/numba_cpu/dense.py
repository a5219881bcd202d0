"""Fused dense layer on the CPU: y = act(x @ w + b) and its backward.

Must match tinynet/backends/numpy_ref.py: dense_forward, dense_backward.

Shapes: x (batch, in), w (in, out), b (out,) -- a (0,) array stands for "no bias" -- y and
dy (batch, out). Activation codes: tinynet/_activations.py CODES.

Two ways to run each direction (tinynet/backends/numba_cpu.py picks one by size):
  - *_loops: everything in one compiled loop nest, for the tiny sizes where a BLAS call and
    its temporaries cost more than the arithmetic;
  - forward_epilogue / backward_prologue: the pointwise part only, around BLAS GEMMs done by
    NumPy (x @ w before; dz @ w.T and x.T @ dz after), for the large sizes. A sigmoid
    epilogue is two passes, sigmoid_input and sigmoid_finish, around NumPy's vectorized exp
    (Numba calls the scalar expf per element: 2.5x slower; see the backend's notes).
Single-threaded, sequential sums: results are bit-identical run to run.
"""

import numpy as np
from numba import types

from tinynet.kernels.numba_cpu import array_types
from tinynet.kernels.numba_math import activation_grad, cpu_activate


def forward_loops(x, w, b, code, y):
    # x (batch, in), w (in, out), b (out,) or (0,), y (batch, out) written
    batch, n_in = x.shape
    n_out = w.shape[1]
    has_bias = b.shape[0] != 0
    zero = x.dtype.type(0)
    for row in range(batch):
        for j in range(n_out):
            y[row, j] = b[j] if has_bias else zero
        for k in range(n_in):
            x_rk = x[row, k]
            for j in range(n_out):          # contiguous in w and y: vectorizes
                y[row, j] += x_rk * w[k, j]
        for j in range(n_out):
            y[row, j] = cpu_activate(code, y[row, j])


def forward_epilogue(z, b, code):
    # z (batch, out) = x @ w from BLAS, turned into y = act(z + b) in place
    batch, n_out = z.shape
    has_bias = b.shape[0] != 0
    for row in range(batch):
        for j in range(n_out):
            if has_bias:
                z[row, j] += b[j]
            z[row, j] = cpu_activate(code, z[row, j])


def sigmoid_input(z, b, e):
    # z (batch, out) = x @ w from BLAS: z += b in place, and e (batch, out) = -|z| for
    # np.exp, so that e becomes exp(-|z|) (never overflows; numpy_ref.sigmoid)
    batch, n_out = z.shape
    has_bias = b.shape[0] != 0
    for row in range(batch):
        for j in range(n_out):
            if has_bias:
                z[row, j] += b[j]
            e[row, j] = -abs(z[row, j])


def sigmoid_finish(z, e):
    # z (batch, out) with the bias, e = exp(-|z|): z becomes sigmoid(z) in place, the
    # formula of numpy_ref.sigmoid and kernels/numba_math.py
    one = z.dtype.type(1)
    batch, n_out = z.shape
    for row in range(batch):
        for j in range(n_out):
            e_rj = e[row, j]
            z[row, j] = (one if z[row, j] >= 0 else e_rj) / (one + e_rj)


def backward_loops(x, w, y, dy, code, dx, dw, db):
    # dz = dy * act'(y) one row at a time (never stored whole); dx = dz @ w.T,
    # dw = x.T @ dz, db = sum of dz over rows. dx (batch, in), dw (in, out) written, and db
    # (out,), or, when the forward had no bias, db is (0,) and nothing is summed.
    batch, n_in = x.shape
    n_out = w.shape[1]
    has_bias = db.shape[0] != 0
    zero = x.dtype.type(0)
    dw[:, :] = 0
    db[:] = 0
    dz_row = np.empty(n_out, y.dtype)
    for row in range(batch):
        for j in range(n_out):
            dz_row[j] = dy[row, j] * activation_grad(code, y[row, j])
        if has_bias:
            for j in range(n_out):
                db[j] += dz_row[j]
        for k in range(n_in):
            x_rk = x[row, k]
            dx_rk = zero
            for j in range(n_out):
                dx_rk += dz_row[j] * w[k, j]
                dw[k, j] += x_rk * dz_row[j]
            dx[row, k] = dx_rk


def backward_prologue(y, dy, code, dz, db):
    # dz (batch, out) = dy * act'(y) for the BLAS GEMMs that follow; db (out,) = its column
    # sums, or, when the forward had no bias, db is (0,) and nothing is summed
    batch, n_out = y.shape
    has_bias = db.shape[0] != 0
    db[:] = 0
    for row in range(batch):
        for j in range(n_out):
            dz[row, j] = dy[row, j] * activation_grad(code, y[row, j])
        if has_bias:
            for j in range(n_out):
                db[j] += dz[row, j]


def signatures(float_type):
    read_only, writable = array_types(float_type)
    code = types.int64
    return {
        forward_loops: types.void(read_only(2), read_only(2), read_only(1), code, writable(2)),
        forward_epilogue: types.void(writable(2), read_only(1), code),
        sigmoid_input: types.void(writable(2), read_only(1), writable(2)),
        sigmoid_finish: types.void(writable(2), read_only(2)),
        backward_loops: types.void(read_only(2), read_only(2), read_only(2), read_only(2), code,
                                   writable(2), writable(2), writable(1)),
        backward_prologue: types.void(read_only(2), read_only(2), code, writable(2),
                                      writable(1)),
    }
