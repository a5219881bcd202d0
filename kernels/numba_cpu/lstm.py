"""The whole-sequence LSTM on the CPU: forward over all steps in one compiled loop, and the
backward (BPTT in reverse) in another, with the weight gradients accumulated inside it.

Must match tinynet/backends/numpy_ref.py: lstm_forward, lstm_backward. The gate math of one
step is kernels/numba_cpu/lstm_cell.py gates_forward / gates_backward.

Shapes: xs (batch, steps, in), h0 and c0 (batch, H), w_ih (in, 4H),
w_hh (H, 4H), b (4H,), gate blocks i, f, g, o. hs and cs (batch, steps, H): h and c after
each step; gates (batch, steps, 5H) = i, f, g, o, a(c) after each step: what the backward
reads. Activation codes (act, rec): tinynet/_activations.py CODES.

lengths (batch,) int32: the valid steps of each row (tinynet.ops, "Sequences of different
lengths"), or empty: every row runs all steps. A row stops at its length: hT and cT are its
state there, hs is zero after it (hs, cs and gates past it are otherwise not written, and the
backward never reads them), and its dxs are zero there. Used only with `projected` False:
the input GEMMs over all steps would read the padding.

Batch rows are independent, so the loop runs row by row and, inside, step by step: one row's
state and w_hh stay in cache. The recurrent product h @ w_hh is always in the loop. The input
side is in the loop too (`projected` False) or, for large sizes, one BLAS GEMM over all steps
done by NumPy (`projected` True): the forward then reads xs @ w_ih (batch, steps, 4H) instead
of xs, and the backward writes dz (batch, steps, 4H) for dxs = dz @ w_ih.T and
dw_ih = xs.T @ dz. tinynet/backends/numba_cpu.py picks by size.
Single-threaded, sequential sums: results are bit-identical run to run.

forward_models / backward_models run a stack of M models (every argument above with a
leading models axis, C-contiguous; forget_bias (M,), lengths (M, batch)) model by model,
each as forward / backward with projected False, and the models on the cores (prange): the
route tinynet/backends/numba_cpu.py takes for a stack of few (model, row) pairs.
"""

import numba
import numpy as np
from numba import prange, types

from tinynet.kernels.numba_cpu import array_types
from tinynet.kernels.numba_cpu.lstm_cell import gates_backward, gates_forward


def forward(xs, projected, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths, hs, cs, gates,
            hT, cT):
    one_model_forward(xs, projected, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths, hs,
                      cs, gates, hT, cT)


def forward_models(xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths, hs, cs, gates, hT,
                   cT):
    for m in prange(xs.shape[0]):
        one_model_forward(xs[m], False, h0[m], c0[m], w_ih[m], w_hh[m], b[m], act, rec,
                          forget_bias[m], lengths[m], hs[m], cs[m], gates[m], hT[m], cT[m])


@numba.njit(inline="always")
def one_model_forward(xs, projected, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths, hs,
                      cs, gates, hT, cT):
    # xs (batch, steps, in), or xs @ w_ih (batch, steps, 4H) when projected.
    # Writes hs, cs (batch, steps, H), gates (batch, steps, 5H), hT, cT (batch, H).
    batch, steps = xs.shape[0], xs.shape[1]
    n_in, four_h = w_ih.shape
    hidden = w_hh.shape[0]
    z = np.empty(four_h, xs.dtype)          # one step's gate pre-activations, bias not added
    for row in range(batch):
        valid = steps if lengths.shape[0] == 0 else lengths[row]
        # the state before step t: h0 and c0 copied into hT and cT first, so that h and c are
        # writable arrays at every step (one type for Numba)
        hT[row] = h0[row]
        cT[row] = c0[row]
        h = hT[row]
        c = cT[row]
        for t in range(valid):
            if projected:
                z[:] = xs[row, t]
            else:
                z[:] = 0
                for k in range(n_in):
                    x_k = xs[row, t, k]
                    for j in range(four_h):
                        z[j] += x_k * w_ih[k, j]
            for k in range(hidden):
                h_k = h[k]
                for j in range(four_h):
                    z[j] += h_k * w_hh[k, j]
            gates_forward(z, b, c, act, rec, forget_bias, hs[row, t], cs[row, t], gates[row, t])
            h = hs[row, t]
            c = cs[row, t]
        hT[row] = h
        cT[row] = c
        hs[row, valid:] = 0


def backward(xs, projected, h0, c0, w_ih, w_hh, hs, cs, gates, dhs, dhT, dcT, act, rec, lengths,
             dxs, dh0, dc0, dw_ih, dw_hh, db):
    one_model_backward(xs, projected, h0, c0, w_ih, w_hh, hs, cs, gates, dhs, dhT, dcT, act, rec,
                       lengths, dxs, dh0, dc0, dw_ih, dw_hh, db)


def backward_models(xs, h0, c0, w_ih, w_hh, hs, cs, gates, dhs, dhT, dcT, act, rec, lengths, dxs,
                    dh0, dc0, dw_ih, dw_hh, db):
    for m in prange(xs.shape[0]):
        one_model_backward(xs[m], False, h0[m], c0[m], w_ih[m], w_hh[m], hs[m], cs[m], gates[m],
                           dhs[m], dhT[m], dcT[m], act, rec, lengths[m], dxs[m], dh0[m], dc0[m],
                           dw_ih[m], dw_hh[m], db[m])


@numba.njit(inline="always")
def one_model_backward(xs, projected, h0, c0, w_ih, w_hh, hs, cs, gates, dhs, dhT, dcT, act, rec,
                       lengths, dxs, dh0, dc0, dw_ih, dw_hh, db):
    # Gradients of hs (batch, steps, H), hT and cT (batch, H) -> dh0, dc0 (batch, H),
    # dw_hh (H, 4H), db (4H,), and: dxs (batch, steps, in) and dw_ih (in, 4H) when not
    # projected; when projected, dz (batch, steps, 4H) in dxs, dw_ih untouched.
    batch, steps = xs.shape[0], xs.shape[1]
    n_in, four_h = w_ih.shape
    hidden = w_hh.shape[0]
    zero = xs.dtype.type(0)
    if not projected:
        dw_ih[:, :] = 0
    dw_hh[:, :] = 0
    db[:] = 0
    dz_step = np.empty(four_h, xs.dtype)
    for row in range(batch):
        valid = steps if lengths.shape[0] == 0 else lengths[row]
        dh = dh0[row]                         # gradient of h after step t, then before it
        dc = dc0[row]
        dh[:] = dhT[row]
        dc[:] = dcT[row]
        for t in range(valid - 1, -1, -1):
            for u in range(hidden):
                dh[u] += dhs[row, t, u]
            if t > 0:
                c_prev = cs[row, t - 1]
                h_prev = hs[row, t - 1]
            else:
                c_prev = c0[row]
                h_prev = h0[row]
            dz = dxs[row, t] if projected else dz_step
            gates_backward(gates[row, t], c_prev, dh, dc, act, rec, dz, dc)
            for j in range(four_h):
                db[j] += dz[j]
            for k in range(hidden):
                h_k = h_prev[k]
                dh_k = zero
                for j in range(four_h):
                    dh_k += dz[j] * w_hh[k, j]
                    dw_hh[k, j] += h_k * dz[j]
                dh[k] = dh_k
            if not projected:
                for k in range(n_in):
                    x_k = xs[row, t, k]
                    dx_k = zero
                    for j in range(four_h):
                        dx_k += dz[j] * w_ih[k, j]
                        dw_ih[k, j] += x_k * dz[j]
                    dxs[row, t, k] = dx_k
        if not projected:
            dxs[row, valid:] = 0


def signatures(float_type):
    read_only, writable = array_types(float_type)
    code = types.int64
    lengths = types.Array(types.int32, 1, "C", readonly=True)
    lengths_2d = types.Array(types.int32, 2, "C", readonly=True)
    return {
        forward_models: types.void(read_only(4), read_only(3), read_only(3), read_only(3),
                                   read_only(3), read_only(2), code, code, read_only(1),
                                   lengths_2d, writable(4), writable(4), writable(4),
                                   writable(3), writable(3)),
        backward_models: types.void(read_only(4), read_only(3), read_only(3), read_only(3),
                                    read_only(3), read_only(4), read_only(4), read_only(4),
                                    read_only(4), read_only(3), read_only(3), code, code,
                                    lengths_2d, writable(4), writable(3), writable(3),
                                    writable(3), writable(3), writable(2)),
        forward: types.void(read_only(3), types.boolean, read_only(2), read_only(2),
                            read_only(2), read_only(2), read_only(1), code, code, float_type,
                            lengths, writable(3), writable(3), writable(3), writable(2),
                            writable(2)),
        backward: types.void(read_only(3), types.boolean, read_only(2), read_only(2),
                             read_only(2), read_only(2), read_only(3), read_only(3),
                             read_only(3), read_only(3), read_only(2), read_only(2), code, code,
                             lengths, writable(3), writable(2), writable(2), writable(2),
                             writable(2), writable(1)),
    }
