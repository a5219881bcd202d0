"""The LSTM over a whole sequence for a stack of M models, with per-row lengths: one thread
per (model, batch row), the whole sequence in one launch per direction.

Reference: tinynet/backends/numpy_ref.py:stack_lstm_forward and stack_lstm_backward (the
forward's cell arithmetic is lstm_cell.cell_forward's, written out per activation below;
the backward's is lstm_cell.cell_backward).

Shapes (user arrays, C-contiguous): xs (M, batch, steps, in); h0, c0, hT, cT (M, batch, H);
w_ih (M, in, 4H); w_hh (M, H, 4H); b (M, 4H); forget_bias (M,); lengths (M, batch) int32;
hs (M, batch, steps, H). Saved between the directions, thread index innermost so that
consecutive threads touch consecutive addresses: cs (steps, H, M * batch) and gates
(steps, 4H, M * batch), the activated i, f, g, o.

Launch: 1-D, THREADS threads per block, grid(M * batch) blocks; thread i owns
(model m, row r) = divmod(i, batch). Rows are independent, so there is no barrier and no
shared memory: the thread keeps its row's h and c (forward) or dh and dc (backward) and
its 4H gate values in local arrays whose size H is a compile-time constant (one compiled
kernel per dtype and H, cached by the backend), so the loops over H unroll and they live in
registers; compile_targets() checks REGISTER_HIDDEN (the largest H checked to compile
without local memory). Weights are read from global memory: the threads of one model's
rows read the same address (a broadcast), and they stay in L1 / L2.

Lengths: a step t >= lengths[m, r] is padding for the thread's row: one comparison per
step; the forward writes hs = 0 there and leaves h and c as they are (so hT, cT are the
state after the last valid step); the backward skips it (dhs ignored, dxs = 0), and
padding values of xs are never read.

stack_lstm_forward   per step: z = b + x_t @ w_ih + h @ w_hh, then the cell of each unit,
    one loop over the units per activation, so that each loop body is small enough to be
    unrolled and its arrays stay in registers.
stack_lstm_backward  BPTT in reverse: per valid step the cell's dz (kept in dz_all,
    (steps, 4H, M * batch)), dxs = dz @ w_ih.T and dh = dz @ w_hh.T. Then the row's weight
    gradients over its valid steps, [xs | h_prev | 1].T @ dz ((in + H + 1, 4H): dw_ih,
    dw_hh, db), one feature at a time with the 4H sums in registers, into
    dw_partial[r, m]; partials.sum_partials adds the batch rows in a fixed order
    (deterministic, no atomics).
"""

import numpy as np
from numba import cuda

from ..numba_math import activate
from .lstm_cell import cell_backward
from .tiles import c_array, scalar

THREADS = 64
# The largest H whose per-thread state (6H values) stays in registers on sm_90, checked by
# compile_targets(); larger H runs the same source with that state in local memory.
REGISTER_HIDDEN = {np.dtype(np.float32): 10, np.dtype(np.float64): 8}


def register_hidden(dtype):
    return REGISTER_HIDDEN[np.dtype(dtype)]


def grid(threads):
    return ((threads + THREADS - 1) // THREADS,)


def stack_lstm_forward_source(dtype, hidden):
    gate_columns = 4 * hidden
    zero = dtype(0)

    def stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths, act, rec, hs, hT,
                           cT, cs, gates):
        n_models, batch, steps, n_in = xs.shape
        thread = cuda.grid(1)
        if thread >= n_models * batch:
            return
        m = thread // batch
        r = thread - m * batch
        length = lengths[m, r]
        bias_f = forget_bias[m]
        h = cuda.local.array(hidden, dtype)
        c = cuda.local.array(hidden, dtype)
        z = cuda.local.array(gate_columns, dtype)
        for k in range(hidden):
            h[k] = h0[m, r, k]
            c[k] = c0[m, r, k]
        for t in range(steps):
            if t < length:
                for n in range(gate_columns):
                    z[n] = b[m, n]
                for j in range(n_in):
                    x = xs[m, r, t, j]
                    for n in range(gate_columns):
                        z[n] += x * w_ih[m, j, n]
                for k in range(hidden):
                    h_k = h[k]
                    for n in range(gate_columns):
                        z[n] += h_k * w_hh[m, k, n]
                # the gates in place, one activation per loop (small bodies unroll)
                for k in range(hidden):
                    z[k] = activate(rec, z[k])
                for k in range(hidden):
                    z[hidden + k] = activate(rec, z[hidden + k] + bias_f)
                for k in range(hidden):
                    z[2 * hidden + k] = activate(act, z[2 * hidden + k])
                for k in range(hidden):
                    z[3 * hidden + k] = activate(rec, z[3 * hidden + k])
                for k in range(hidden):
                    c[k] = z[hidden + k] * c[k] + z[k] * z[2 * hidden + k]
                for k in range(hidden):
                    h[k] = z[3 * hidden + k] * activate(act, c[k])
                for k in range(hidden):
                    hs[m, r, t, k] = h[k]
                    cs[t, k, thread] = c[k]
                for n in range(gate_columns):
                    gates[t, n, thread] = z[n]
            else:
                for k in range(hidden):
                    hs[m, r, t, k] = zero
        for k in range(hidden):
            hT[m, r, k] = h[k]
            cT[m, r, k] = c[k]
    return stack_lstm_forward


def stack_lstm_forward_argtypes(dtype):
    return (c_array(dtype, 4), c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 3),
            c_array(dtype, 3), c_array(dtype, 2), c_array(dtype, 1), c_array(np.int32, 2),
            scalar(int), scalar(int), c_array(dtype, 4), c_array(dtype, 3), c_array(dtype, 3),
            c_array(dtype, 3), c_array(dtype, 3))


def stack_lstm_backward_source(dtype, hidden):
    gate_columns = 4 * hidden
    zero = dtype(0)
    one = dtype(1)

    def stack_lstm_backward(xs, h0, c0, w_ih, w_hh, hs, cs, gates, lengths, act, rec, dhs,
                            dhT, dcT, dz_all, dxs, dh0, dc0, dw_partial):
        # saved by the forward: xs, h0, c0, w_ih, w_hh, hs, cs, gates, lengths
        # dhs (M, batch, steps, H); dhT, dcT (M, batch, H)
        # out: dz_all (steps, 4H, M * batch) scratch; dxs (M, batch, steps, in);
        #      dh0, dc0 (M, batch, H); dw_partial (batch, M, in + H + 1, 4H)
        n_models, batch, steps, n_in = xs.shape
        thread = cuda.grid(1)
        if thread >= n_models * batch:
            return
        m = thread // batch
        r = thread - m * batch
        length = lengths[m, r]
        dh = cuda.local.array(hidden, dtype)
        dc = cuda.local.array(hidden, dtype)
        dz = cuda.local.array(gate_columns, dtype)
        for k in range(hidden):
            dh[k] = dhT[m, r, k]
            dc[k] = dcT[m, r, k]
        for t in range(steps - 1, -1, -1):
            if t < length:
                for k in range(hidden):
                    dh_k = dh[k] + dhs[m, r, t, k]
                    c_before = cs[t - 1, k, thread] if t > 0 else c0[m, r, k]
                    dz_i, dz_f, dz_g, dz_o, dc_k = cell_backward(
                        gates[t, k, thread], gates[t, hidden + k, thread],
                        gates[t, 2 * hidden + k, thread], gates[t, 3 * hidden + k, thread],
                        cs[t, k, thread], c_before, dh_k, dc[k], act, rec)
                    dc[k] = dc_k
                    dz[k] = dz_i
                    dz[hidden + k] = dz_f
                    dz[2 * hidden + k] = dz_g
                    dz[3 * hidden + k] = dz_o
                for n in range(gate_columns):
                    dz_all[t, n, thread] = dz[n]
                for j in range(n_in):
                    total = zero
                    for n in range(gate_columns):
                        total += dz[n] * w_ih[m, j, n]
                    dxs[m, r, t, j] = total
                for k in range(hidden):
                    total = zero
                    for n in range(gate_columns):
                        total += dz[n] * w_hh[m, k, n]
                    dh[k] = total
            else:
                for j in range(n_in):
                    dxs[m, r, t, j] = zero
        for k in range(hidden):
            dh0[m, r, k] = dh[k]
            dc0[m, r, k] = dc[k]

        # Weight gradients of this row: feature f of A = [xs | h_prev | 1] at the valid steps
        # times dz, summed over them; dz now holds the 4H sums of one feature.
        for f in range(n_in + hidden + 1):
            for n in range(gate_columns):
                dz[n] = zero
            for t in range(length):
                if f < n_in:
                    a = xs[m, r, t, f]
                elif f == n_in + hidden:
                    a = one
                elif t > 0:
                    a = hs[m, r, t - 1, f - n_in]
                else:
                    a = h0[m, r, f - n_in]
                for n in range(gate_columns):
                    dz[n] += a * dz_all[t, n, thread]
            for n in range(gate_columns):
                dw_partial[r, m, f, n] = dz[n]
    return stack_lstm_backward


def stack_lstm_backward_argtypes(dtype):
    return (c_array(dtype, 4), c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 3),
            c_array(dtype, 3), c_array(dtype, 4), c_array(dtype, 3), c_array(dtype, 3),
            c_array(np.int32, 2), scalar(int), scalar(int), c_array(dtype, 4),
            c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 4),
            c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 4))
