"""The whole-sequence LSTM for a stack of M models on the CPU, models innermost: the forward
over all steps in one compiled loop, the backward (BPTT in reverse) in another. One LSTM step
of a stack (ops.lstm_cell) is this kernel with one step.

Must match tinynet/backends/numpy_ref.py: stack_lstm_forward, stack_lstm_backward (model m's
results are lstm_forward / lstm_backward on model m's slices, with its lengths).

Shapes: xs (M, batch, steps, in), h0 and c0 (M, batch, H), w_ih (M, in, 4H), w_hh (M, H, 4H),
b (M, 4H), forget_bias (M,), lengths (M, batch) int32 in 0..steps; gate blocks i, f, g, o;
inputs may have any strides (a broadcast view: stride 0 on M). Activation codes (act, rec):
tinynet/_activations.py CODES.

Layout: blocks of LANES models, the model the last, contiguous axis of everything a block
computes, and each step computed with SIMD vectors of the block's LANES models
(kernels/numba_cpu/vectors.py: one vector holds, say, gate row j of all of them); prange
runs the blocks (in the forward, each (block, batch row) pair) on the cores. What the
backward reads is saved in that layout, one (batch, ...) slab per block (an integer index on
the leading axis of a C-contiguous array, so still contiguous): xs_lanes (blocks, batch,
steps, in, LANES), the input with zeros at padding steps; h_lanes, c_lanes (blocks, batch,
steps + 1, H, LANES), the state before each step and after the last; gates (blocks, batch,
steps, 5H, LANES) = i, f, g, o, a(c).

Lengths: at a step t >= lengths[m, row] (padding) every lane's new state is selected, not
multiplied, from the old one, so a NaN in padding input changes nothing; the backward
selects dz = 0 there, lets dh and dc pass unchanged, and adds no dhs. The padding lanes of
the last block have length 0. The step is compared with the lengths as floats of the
kernel's type, exact for any step count below 2^24.

Per-model data (xs in, hs out; dhs in, dxs out of the backward) moves between the (M, ...)
arrays and the lanes layout once per row, in loops of one model and one unit over the steps,
not once per step: a per-step loop over lanes reads one scattered value per lane. The xs and
dhs gathers are two loops, not one shared helper, which ran slower.
"""

import numpy as np
from numba import prange, types

from tinynet.kernels.numba_cpu import LANES, array_types, strided
from tinynet.kernels.numba_cpu.lanes import (activate, gather_matrix, gather_rows,
                                              scatter_matrix, scatter_rows, slope,
                                              slope_terms)
from tinynet.kernels.numba_cpu.vectors import load, select, splat, store


def forward(xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths, act, rec, hs, hT, cT,
            xs_lanes, h_lanes, c_lanes, gates):
    # Writes hs (M, batch, steps, H) (zeros at padding steps), hT, cT (M, batch, H) and the
    # saved xs_lanes, h_lanes, c_lanes, gates described above.
    models, batch, steps, n_in = xs.shape
    hidden = w_hh.shape[1]
    four_h = 4 * hidden
    blocks = gates.shape[0]
    if gates.shape[4] != LANES:        # every vector load reads LANES values of a row
        raise ValueError("stack_lstm forward: the saved arrays' last axis must be LANES")
    dtype = hs.dtype
    zero = dtype.type(0)
    for item in prange(blocks * batch):
        # one (block, row) pair: rows are independent in the forward, so a large batch
        # keeps every core busy even when the models fit in one block
        block, row = item // batch, item % batch
        first = block * LANES
        count = min(LANES, models - first)
        w_ih_lanes = np.empty((n_in, four_h, LANES), dtype)
        gather_matrix(w_ih, first, count, w_ih_lanes)
        w_hh_lanes = np.empty((hidden, four_h, LANES), dtype)
        gather_matrix(w_hh, first, count, w_hh_lanes)
        b_lanes = np.empty((four_h, LANES), dtype)         # the bias, forget_bias added
        gather_rows(b, first, count, b_lanes)
        for lane in range(count):
            for j in range(hidden, 2 * hidden):
                b_lanes[j, lane] += forget_bias[first + lane]
        length = np.zeros(LANES, dtype)
        for lane in range(count):
            length[lane] = lengths[first + lane, row]
        x_row = xs_lanes[block, row]                       # (steps, in, LANES)
        x_row[:] = 0
        for lane in range(count):
            xs_model = xs[first + lane, row]               # (steps, in)
            for k in range(n_in):
                for t in range(lengths[first + lane, row]):
                    x_row[t, k, lane] = xs_model[t, k]
        h = h_lanes[block, row, 0]                         # (H, LANES): the state before step t
        c = c_lanes[block, row, 0]
        h[:] = 0
        c[:] = 0
        for lane in range(count):
            for u in range(hidden):
                h[u, lane] = h0[first + lane, row, u]
                c[u, lane] = c0[first + lane, row, u]
        length_v = load(length)
        for t in range(steps):
            x = x_row[t]                                   # (in, LANES)
            z = gates[block, row, t]                       # (5H, LANES)
            for j in range(four_h):
                z_j = load(b_lanes[j])
                for k in range(n_in):
                    z_j = z_j + load(x[k]) * load(w_ih_lanes[k, j])
                for k in range(hidden):
                    z_j = z_j + load(h[k]) * load(w_hh_lanes[k, j])
                code = act if 2 * hidden <= j < 3 * hidden else rec
                store(z[j], activate(code, z_j, zero))
            h_next = h_lanes[block, row, t + 1]
            c_next = c_lanes[block, row, t + 1]
            step = dtype.type(t)
            for u in range(hidden):
                c_u = load(c[u])
                c_step = load(z[hidden + u]) * c_u + load(z[u]) * load(z[2 * hidden + u])
                a_c = activate(act, c_step, zero)
                store(z[four_h + u], a_c)
                h_step = load(z[3 * hidden + u]) * a_c
                store(h_next[u], select("<", step, length_v, h_step, load(h[u])))
                store(c_next[u], select("<", step, length_v, c_step, c_u))
            h = h_next
            c = c_next
        for lane in range(count):
            hs_model = hs[first + lane, row]               # (steps, H)
            length_lane = lengths[first + lane, row]
            for u in range(hidden):
                for t in range(length_lane):
                    hs_model[t, u] = h_lanes[block, row, t + 1, u, lane]
                for t in range(length_lane, steps):
                    hs_model[t, u] = zero
            for u in range(hidden):
                hT[first + lane, row, u] = h[u, lane]
                cT[first + lane, row, u] = c[u, lane]


def backward(w_ih, w_hh, lengths, xs_lanes, h_lanes, c_lanes, gates, dhs, dhs_zero, dhT, dcT,
             act, rec, dxs, dh0, dc0, dw_ih, dw_hh, db):
    # Gradients of hs (M, batch, steps, H), hT and cT (M, batch, H) -> dxs (M, batch, steps,
    # in) (zeros at padding steps), dh0, dc0 (M, batch, H), dw_ih (M, in, 4H),
    # dw_hh (M, H, 4H), db (M, 4H), all written. dhs_zero: dhs is known to be all zero (no
    # gradient of hs), so it is neither gathered nor added.
    models, batch, steps = dxs.shape[0], dxs.shape[1], dxs.shape[2]
    n_in = w_ih.shape[1]
    hidden = w_hh.shape[1]
    four_h = 4 * hidden
    blocks = gates.shape[0]
    if gates.shape[4] != LANES:
        raise ValueError("stack_lstm backward: the saved arrays' last axis must be LANES")
    dtype = dxs.dtype
    zero = dtype.type(0)
    act_terms = slope_terms(act, dtype.type(1))
    rec_terms = slope_terms(rec, dtype.type(1))
    for block in prange(blocks):
        first = block * LANES
        count = min(LANES, models - first)
        w_ih_lanes = np.empty((n_in, four_h, LANES), dtype)
        gather_matrix(w_ih, first, count, w_ih_lanes)
        w_hh_lanes = np.empty((hidden, four_h, LANES), dtype)
        gather_matrix(w_hh, first, count, w_hh_lanes)
        dw_ih_lanes = np.zeros((n_in, four_h, LANES), dtype)
        dw_hh_lanes = np.zeros((hidden, four_h, LANES), dtype)
        db_lanes = np.zeros((four_h, LANES), dtype)
        length = np.zeros(LANES, dtype)
        dh = np.zeros((hidden, LANES), dtype)     # gradient of h after step t, then before it
        dc = np.zeros((hidden, LANES), dtype)
        dz = np.empty((four_h, LANES), dtype)
        dhs_lanes = np.empty((steps, hidden, LANES), dtype)    # dhs of one row, zero padded
        dxs_lanes = np.empty((steps, n_in, LANES), dtype)      # dxs of one row
        for row in range(batch):
            for lane in range(count):
                length[lane] = lengths[first + lane, row]
                for u in range(hidden):
                    dh[u, lane] = dhT[first + lane, row, u]
                    dc[u, lane] = dcT[first + lane, row, u]
            if not dhs_zero:
                dhs_lanes[:] = 0
                for lane in range(count):
                    dhs_model = dhs[first + lane, row]     # (steps, H)
                    for u in range(hidden):
                        for t in range(lengths[first + lane, row]):
                            dhs_lanes[t, u, lane] = dhs_model[t, u]
            length_v = load(length)
            for t in range(steps - 1, -1, -1):
                g = gates[block, row, t]
                c_prev = c_lanes[block, row, t]
                h_prev = h_lanes[block, row, t]
                x = xs_lanes[block, row, t]
                step = dtype.type(t)
                for u in range(hidden):
                    dh_u = load(dh[u])
                    if not dhs_zero:
                        dh_u = dh_u + load(dhs_lanes[t, u])
                    i_u, f_u = load(g[u]), load(g[hidden + u])
                    g_u, o_u = load(g[2 * hidden + u]), load(g[3 * hidden + u])
                    a_u = load(g[four_h + u])
                    dc_u = load(dc[u])
                    total = dc_u + dh_u * o_u * slope(a_u, act_terms)   # dc through the cell
                    store(dz[u], select("<", step, length_v,
                                        total * g_u * slope(i_u, rec_terms), zero))
                    store(dz[hidden + u], select("<", step, length_v,
                                                 total * load(c_prev[u]) * slope(f_u, rec_terms),
                                                 zero))
                    store(dz[2 * hidden + u], select("<", step, length_v,
                                                     total * i_u * slope(g_u, act_terms), zero))
                    store(dz[3 * hidden + u], select("<", step, length_v,
                                                     dh_u * a_u * slope(o_u, rec_terms), zero))
                    store(dc[u], select("<", step, length_v, total * f_u, dc_u))
                for j in range(four_h):
                    store(db_lanes[j], load(db_lanes[j]) + load(dz[j]))
                for k in range(hidden):
                    h_k = load(h_prev[k])
                    dh_k = splat(zero)
                    for j in range(four_h):
                        dz_j = load(dz[j])
                        dh_k = dh_k + dz_j * load(w_hh_lanes[k, j])
                        store(dw_hh_lanes[k, j], load(dw_hh_lanes[k, j]) + h_k * dz_j)
                    store(dh[k], select("<", step, length_v, dh_k, load(dh[k])))
                for k in range(n_in):
                    x_k = load(x[k])
                    dx_k = splat(zero)
                    for j in range(four_h):
                        dz_j = load(dz[j])
                        dx_k = dx_k + dz_j * load(w_ih_lanes[k, j])
                        store(dw_ih_lanes[k, j], load(dw_ih_lanes[k, j]) + x_k * dz_j)
                    store(dxs_lanes[t, k], dx_k)
            for lane in range(count):
                dxs_model = dxs[first + lane, row]         # (steps, in)
                length_lane = lengths[first + lane, row]
                for k in range(n_in):
                    for t in range(length_lane):
                        dxs_model[t, k] = dxs_lanes[t, k, lane]
                    for t in range(length_lane, steps):
                        dxs_model[t, k] = zero
            for lane in range(count):
                for u in range(hidden):
                    dh0[first + lane, row, u] = dh[u, lane]
                    dc0[first + lane, row, u] = dc[u, lane]
        scatter_matrix(dw_ih_lanes, first, count, dw_ih)
        scatter_matrix(dw_hh_lanes, first, count, dw_hh)
        scatter_rows(db_lanes, first, count, db)


def signatures(float_type):
    read_only, writable = array_types(float_type)
    code = types.int64

    def any_strides(ndim):
        return strided(float_type, ndim)
    lengths = strided(types.int32, 2)
    return {
        forward: types.void(any_strides(4), any_strides(3), any_strides(3), any_strides(3),
                            any_strides(3), any_strides(2), any_strides(1), lengths, code,
                            code, writable(4), writable(3), writable(3), writable(5),
                            writable(5), writable(5), writable(5)),
        backward: types.void(any_strides(3), any_strides(3), lengths, read_only(5),
                             read_only(5), read_only(5), read_only(5), any_strides(4),
                             types.boolean, any_strides(3), any_strides(3), code, code,
                             writable(4), writable(3), writable(3), writable(3),
                             writable(3), writable(2)),
    }
