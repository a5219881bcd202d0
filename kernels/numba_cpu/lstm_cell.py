"""One LSTM step on the CPU, and its backward.

Must match tinynet/backends/numpy_ref.py: lstm_cell_forward, lstm_cell_backward (and their
helpers _cell_step, _cell_step_backward, which kernels/numba_cpu/lstm.py also uses from here:
the gate math is written once, in gates_forward / gates_backward).

Shapes: x (batch, in), h and c (batch, H), w_ih (in, 4H), w_hh (H, 4H), b (4H,), gate blocks
i, f, g, o. Saved for the backward: gates (batch, 5H) = i, f, g, o, a(c1) after activation.
Activation codes (act = activation, rec = recurrent_activation): tinynet/_activations.py.

Two ways to run each direction (tinynet/backends/numba_cpu.py picks one by size):
  - *_loops: GEMMs and gate math in one compiled loop nest, for tiny sizes;
  - forward_gates / backward_gates: the gate math only, around BLAS GEMMs done by NumPy
    (z = x @ w_ih + h @ w_hh before; dz @ w.T, x.T @ dz, h.T @ dz after).
Single-threaded, sequential sums: results are bit-identical run to run.
"""

import numba
import numpy as np
from numba import types

from tinynet.kernels.numba_cpu import array_types
from tinynet.kernels.numba_math import activation_grad, cpu_activate


@numba.njit(inline="always")
def gates_forward(z, b, c, act, rec, forget_bias, h1, c1, gates):
    # z (4H,) = x @ w_ih + h @ w_hh without the bias; b (4H,); c (H,) the state before.
    # Writes h1, c1 (H,) and gates (5H,) = i, f, g, o, a(c1).
    hidden = c.shape[0]
    for u in range(hidden):
        i = cpu_activate(rec, z[u] + b[u])
        f = cpu_activate(rec, z[hidden + u] + b[hidden + u] + forget_bias)
        g = cpu_activate(act, z[2 * hidden + u] + b[2 * hidden + u])
        o = cpu_activate(rec, z[3 * hidden + u] + b[3 * hidden + u])
        c_new = f * c[u] + i * g
        a_c = cpu_activate(act, c_new)
        c1[u] = c_new
        h1[u] = o * a_c
        gates[u] = i
        gates[hidden + u] = f
        gates[2 * hidden + u] = g
        gates[3 * hidden + u] = o
        gates[4 * hidden + u] = a_c


@numba.njit(inline="always")
def gates_backward(gates, c, dh1, dc1, act, rec, dz, dc):
    # gates (5H,) saved by gates_forward; c (H,) the state before the step; dh1, dc1 (H,)
    # gradients of the step's outputs. Writes dz (4H,) for the gate pre-activations and
    # dc (H,) for c.
    hidden = c.shape[0]
    for u in range(hidden):
        i = gates[u]
        f = gates[hidden + u]
        g = gates[2 * hidden + u]
        o = gates[3 * hidden + u]
        a_c = gates[4 * hidden + u]
        dc_total = dc1[u] + dh1[u] * o * activation_grad(act, a_c)
        dz[u] = dc_total * g * activation_grad(rec, i)
        dz[hidden + u] = dc_total * c[u] * activation_grad(rec, f)
        dz[2 * hidden + u] = dc_total * i * activation_grad(act, g)
        dz[3 * hidden + u] = dh1[u] * a_c * activation_grad(rec, o)
        dc[u] = dc_total * f


def forward_loops(x, h, c, w_ih, w_hh, b, act, rec, forget_bias, h1, c1, gates):
    # x (batch, in), h and c (batch, H) -> h1, c1 (batch, H), gates (batch, 5H) written
    batch, n_in = x.shape
    hidden = h.shape[1]
    z = np.empty(4 * hidden, x.dtype)          # one row's gate pre-activations
    for row in range(batch):
        z[:] = 0
        for k in range(n_in):
            x_rk = x[row, k]
            for j in range(4 * hidden):
                z[j] += x_rk * w_ih[k, j]
        for k in range(hidden):
            h_rk = h[row, k]
            for j in range(4 * hidden):
                z[j] += h_rk * w_hh[k, j]
        gates_forward(z, b, c[row], act, rec, forget_bias, h1[row], c1[row], gates[row])


def forward_gates(z, c, b, act, rec, forget_bias, h1, c1, gates):
    # z (batch, 4H) = x @ w_ih + h @ w_hh from BLAS -> h1, c1 (batch, H), gates (batch, 5H)
    for row in range(z.shape[0]):
        gates_forward(z[row], b, c[row], act, rec, forget_bias, h1[row], c1[row], gates[row])


def backward_loops(x, h, c, w_ih, w_hh, gates, dh1, dc1, act, rec,
                   dx, dh, dc, dw_ih, dw_hh, db):
    # dz (4H,) one row at a time; dx = dz @ w_ih.T, dh = dz @ w_hh.T, dw_ih = x.T @ dz,
    # dw_hh = h.T @ dz, db = sum of dz over rows: dx (batch, in), dh and dc (batch, H),
    # dw_ih (in, 4H), dw_hh (H, 4H), db (4H,) written.
    batch, n_in = x.shape
    hidden = h.shape[1]
    zero = x.dtype.type(0)
    dw_ih[:, :] = 0
    dw_hh[:, :] = 0
    db[:] = 0
    dz = np.empty(4 * hidden, x.dtype)
    for row in range(batch):
        gates_backward(gates[row], c[row], dh1[row], dc1[row], act, rec, dz, dc[row])
        for j in range(4 * hidden):
            db[j] += dz[j]
        for k in range(n_in):
            x_rk = x[row, k]
            dx_rk = zero
            for j in range(4 * hidden):
                dx_rk += dz[j] * w_ih[k, j]
                dw_ih[k, j] += x_rk * dz[j]
            dx[row, k] = dx_rk
        for k in range(hidden):
            h_rk = h[row, k]
            dh_rk = zero
            for j in range(4 * hidden):
                dh_rk += dz[j] * w_hh[k, j]
                dw_hh[k, j] += h_rk * dz[j]
            dh[row, k] = dh_rk


def backward_gates(gates, c, dh1, dc1, act, rec, dz, dc, db):
    # dz (batch, 4H) for the BLAS GEMMs that follow, dc (batch, H), db (4H,) written
    db[:] = 0
    for row in range(gates.shape[0]):
        gates_backward(gates[row], c[row], dh1[row], dc1[row], act, rec, dz[row], dc[row])
        for j in range(dz.shape[1]):
            db[j] += dz[row, j]


def signatures(float_type):
    read_only, writable = array_types(float_type)
    code = types.int64
    return {
        forward_loops: types.void(read_only(2), read_only(2), read_only(2), read_only(2),
                                  read_only(2), read_only(1), code, code, float_type,
                                  writable(2), writable(2), writable(2)),
        forward_gates: types.void(read_only(2), read_only(2), read_only(1), code, code,
                                  float_type, writable(2), writable(2), writable(2)),
        backward_loops: types.void(read_only(2), read_only(2), read_only(2), read_only(2),
                                   read_only(2), read_only(2), read_only(2), read_only(2),
                                   code, code, writable(2), writable(2), writable(2),
                                   writable(2), writable(2), writable(1)),
        backward_gates: types.void(read_only(2), read_only(2), read_only(2), read_only(2),
                                   code, code, writable(2), writable(2), writable(1)),
    }
