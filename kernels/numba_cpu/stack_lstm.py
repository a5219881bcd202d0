"""The whole-sequence LSTM for a stack of M models on the CPU, models innermost: the forward
over all steps in one compiled loop, the backward (BPTT in reverse) in another. One LSTM step
of a stack (ops.lstm_cell) is this kernel with one step.

Must match tinynet/backends/numpy_ref.py: stack_lstm_forward, stack_lstm_backward (model m's
results are lstm_forward / lstm_backward on model m's slices, with its lengths).

Shapes: xs (M, batch, steps, in), h0 and c0 (M, batch, H), w_ih (M, in, 4H), w_hh (M, H, 4H),
b (M, 4H), forget_bias (M,), lengths (M, batch) int32 in 0..steps; gate blocks i, f, g, o;
inputs may have any strides (a broadcast view: stride 0 on M). Activation codes (act, rec):
tinynet/_activations.py CODES.

Layout: as kernels/numba_cpu/stack_dense.py, blocks of `lanes` models (the last axis of the
saved arrays), the model the last, contiguous axis of everything a block computes, so that
every inner loop is SIMD over the block's models; prange runs the blocks (in the forward,
each (block, batch row) pair) on the cores. What the backward reads is saved in that layout,
one (batch, ...) slab per block (an integer index on the leading axis of a C-contiguous
array, so still contiguous): xs_lanes (blocks, batch, steps, in, lanes), the input with zeros
at padding steps; h_lanes, c_lanes (blocks, batch, steps + 1, H, lanes), the state before
each step and after the last; gates (blocks, batch, steps, 5H, lanes) = i, f, g, o, a(c).

Lengths: at a step t >= lengths[m, row] (padding) every lane's new state is selected, not
multiplied, from the old one, so a NaN in padding input changes nothing; the backward
selects dz = 0 there, lets dh and dc pass unchanged, and adds no dhs. The padding lanes of
the last block have length 0.

Loop shapes (chosen over the obvious ones by side-by-side runs; the numbers are in the
commit that made them):
- Per-model data (xs in, hs out; dhs in, dxs out of the backward) moves between the
  (M, ...) arrays and the lanes layout once per row, in loops of one model and one unit
  over the steps, not once per step: a per-step loop over lanes reads one scattered value
  per lane. The xs and dhs gathers are two loops, not one shared helper, which ran slower.
- The per-step loops over lanes each write one row and read a few: LLVM vectorizes a loop
  only after proving at run time that its arrays do not overlap, and gives up on a loop that
  touches too many. So the backward's dz is computed one gate at a time, and its weight
  gradients in loops of their own, apart from the dh and dx sums.
"""

import numpy as np
from numba import prange, types

from tinynet.kernels.numba_cpu import array_types, strided
from tinynet.kernels.numba_cpu.lanes import (activate_rows, gather_matrix, gather_rows,
                                              scatter_matrix, scatter_rows, slope,
                                              slope_terms)


def forward(xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths, act, rec, hs, hT, cT,
            xs_lanes, h_lanes, c_lanes, gates):
    # Writes hs (M, batch, steps, H) (zeros at padding steps), hT, cT (M, batch, H) and the
    # saved xs_lanes, h_lanes, c_lanes, gates described above.
    models, batch, steps, n_in = xs.shape
    hidden = w_hh.shape[1]
    four_h = 4 * hidden
    blocks, lanes = gates.shape[0], gates.shape[4]
    dtype = hs.dtype
    zero = dtype.type(0)
    for item in prange(blocks * batch):
        # one (block, row) pair: rows are independent in the forward, so a large batch
        # keeps every core busy even when the models fit in one block
        block, row = item // batch, item % batch
        first = block * lanes
        count = min(lanes, models - first)
        w_ih_lanes = np.empty((n_in, four_h, lanes), dtype)
        gather_matrix(w_ih, first, count, w_ih_lanes)
        w_hh_lanes = np.empty((hidden, four_h, lanes), dtype)
        gather_matrix(w_hh, first, count, w_hh_lanes)
        b_lanes = np.empty((four_h, lanes), dtype)         # the bias, forget_bias added
        gather_rows(b, first, count, b_lanes)
        for lane in range(count):
            for j in range(hidden, 2 * hidden):
                b_lanes[j, lane] += forget_bias[first + lane]
        length = np.zeros(lanes, np.int32)
        for lane in range(count):
            length[lane] = lengths[first + lane, row]
        valid = np.empty(lanes, np.bool_)                  # t < length, per lane
        x_row = xs_lanes[block, row]                       # (steps, in, lanes)
        x_row[:] = 0
        for lane in range(count):
            xs_model = xs[first + lane, row]               # (steps, in)
            for k in range(n_in):
                for t in range(length[lane]):
                    x_row[t, k, lane] = xs_model[t, k]
        h = h_lanes[block, row, 0]                         # (H, lanes): the state before step t
        c = c_lanes[block, row, 0]
        h[:] = 0
        c[:] = 0
        for lane in range(count):
            for u in range(hidden):
                h[u, lane] = h0[first + lane, row, u]
                c[u, lane] = c0[first + lane, row, u]
        for t in range(steps):
            x = x_row[t]                                   # (in, lanes)
            z = gates[block, row, t]                       # (5H, lanes)
            for j in range(four_h):
                for lane in range(lanes):
                    z[j, lane] = b_lanes[j, lane]
            for k in range(n_in):
                for j in range(four_h):
                    for lane in range(lanes):
                        z[j, lane] += x[k, lane] * w_ih_lanes[k, j, lane]
            for k in range(hidden):
                for j in range(four_h):
                    for lane in range(lanes):
                        z[j, lane] += h[k, lane] * w_hh_lanes[k, j, lane]
            activate_rows(rec, z, 0, 2 * hidden)
            activate_rows(act, z, 2 * hidden, 3 * hidden)
            activate_rows(rec, z, 3 * hidden, four_h)
            h_next = h_lanes[block, row, t + 1]
            c_next = c_lanes[block, row, t + 1]
            for u in range(hidden):
                for lane in range(lanes):
                    c_next[u, lane] = (z[hidden + u, lane] * c[u, lane]
                                       + z[u, lane] * z[2 * hidden + u, lane])
                    z[four_h + u, lane] = c_next[u, lane]
            activate_rows(act, z, four_h, 5 * hidden)
            for lane in range(lanes):
                valid[lane] = t < length[lane]
            for u in range(hidden):
                for lane in range(lanes):
                    h_step = z[3 * hidden + u, lane] * z[four_h + u, lane]
                    h_next[u, lane] = h_step if valid[lane] else h[u, lane]
                for lane in range(lanes):
                    c_next[u, lane] = c_next[u, lane] if valid[lane] else c[u, lane]
            h = h_next
            c = c_next
        for lane in range(count):
            hs_model = hs[first + lane, row]               # (steps, H)
            for u in range(hidden):
                for t in range(length[lane]):
                    hs_model[t, u] = h_lanes[block, row, t + 1, u, lane]
                for t in range(length[lane], steps):
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
    blocks, lanes = gates.shape[0], gates.shape[4]
    dtype = dxs.dtype
    zero = dtype.type(0)
    act_terms = slope_terms(act, dtype.type(1))
    rec_terms = slope_terms(rec, dtype.type(1))
    for block in prange(blocks):
        first = block * lanes
        count = min(lanes, models - first)
        w_ih_lanes = np.empty((n_in, four_h, lanes), dtype)
        gather_matrix(w_ih, first, count, w_ih_lanes)
        w_hh_lanes = np.empty((hidden, four_h, lanes), dtype)
        gather_matrix(w_hh, first, count, w_hh_lanes)
        dw_ih_lanes = np.zeros((n_in, four_h, lanes), dtype)
        dw_hh_lanes = np.zeros((hidden, four_h, lanes), dtype)
        db_lanes = np.zeros((four_h, lanes), dtype)
        length = np.zeros(lanes, np.int32)
        dh = np.zeros((hidden, lanes), dtype)     # gradient of h after step t, then before it
        dc = np.zeros((hidden, lanes), dtype)
        dz = np.empty((four_h, lanes), dtype)
        total = np.empty(lanes, dtype)     # per lane: dc through the cell, then each dh/dx sum
        dhs_lanes = np.empty((steps, hidden, lanes), dtype)    # dhs of one row, zero padded
        dxs_lanes = np.empty((steps, n_in, lanes), dtype)      # dxs of one row
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
                        for t in range(length[lane]):
                            dhs_lanes[t, u, lane] = dhs_model[t, u]
            for t in range(steps - 1, -1, -1):
                if not dhs_zero:
                    for u in range(hidden):
                        for lane in range(lanes):
                            dh[u, lane] += dhs_lanes[t, u, lane]
                g = gates[block, row, t]
                c_prev = c_lanes[block, row, t]
                h_prev = h_lanes[block, row, t]
                x = xs_lanes[block, row, t]
                for u in range(hidden):
                    for lane in range(lanes):
                        total[lane] = (dc[u, lane] + dh[u, lane] * g[3 * hidden + u, lane]
                                       * slope(g[four_h + u, lane], act_terms))
                    for lane in range(lanes):
                        dz_i = (total[lane] * g[2 * hidden + u, lane]
                                * slope(g[u, lane], rec_terms))
                        dz[u, lane] = dz_i if t < length[lane] else zero
                    for lane in range(lanes):
                        dz_f = (total[lane] * c_prev[u, lane]
                                * slope(g[hidden + u, lane], rec_terms))
                        dz[hidden + u, lane] = dz_f if t < length[lane] else zero
                    for lane in range(lanes):
                        dz_g = (total[lane] * g[u, lane]
                                * slope(g[2 * hidden + u, lane], act_terms))
                        dz[2 * hidden + u, lane] = dz_g if t < length[lane] else zero
                    for lane in range(lanes):
                        dz_o = (dh[u, lane] * g[four_h + u, lane]
                                * slope(g[3 * hidden + u, lane], rec_terms))
                        dz[3 * hidden + u, lane] = dz_o if t < length[lane] else zero
                    for lane in range(lanes):
                        dc_step = total[lane] * g[hidden + u, lane]
                        dc[u, lane] = dc_step if t < length[lane] else dc[u, lane]
                for j in range(four_h):
                    for lane in range(lanes):
                        db_lanes[j, lane] += dz[j, lane]
                for k in range(hidden):
                    total[:] = 0
                    for j in range(four_h):
                        for lane in range(lanes):
                            total[lane] += dz[j, lane] * w_hh_lanes[k, j, lane]
                    for j in range(four_h):
                        for lane in range(lanes):
                            dw_hh_lanes[k, j, lane] += h_prev[k, lane] * dz[j, lane]
                    for lane in range(lanes):
                        dh[k, lane] = total[lane] if t < length[lane] else dh[k, lane]
                for k in range(n_in):
                    total[:] = 0
                    for j in range(four_h):
                        for lane in range(lanes):
                            total[lane] += dz[j, lane] * w_ih_lanes[k, j, lane]
                    for j in range(four_h):
                        for lane in range(lanes):
                            dw_ih_lanes[k, j, lane] += x[k, lane] * dz[j, lane]
                    for lane in range(lanes):
                        dxs_lanes[t, k, lane] = total[lane]
            for lane in range(count):
                dxs_model = dxs[first + lane, row]         # (steps, in)
                for k in range(n_in):
                    for t in range(length[lane]):
                        dxs_model[t, k] = dxs_lanes[t, k, lane]
                    for t in range(length[lane], steps):
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
