"""The LSTM one launch per step: the fallback of the GPU backends (numba-cuda, cupy) for an H
too large for their persistent kernels, written once. Each backend gives the step kernels and
the GEMMs (Steps below); the loop, the layout and what is saved are here.

Reference: tinynet/backends/numpy_ref.py lstm_forward, lstm_backward.

Time-major inside: every step's slice (batch, ...) of xs, hs, cs, the gates and dz is
contiguous, as a step kernel and a GEMM take it; the results are batch-major. Saved for the
backward: ("per_step", xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec), time-major, gates
(steps, batch, 4H) = i, f, g, o after activation.
"""

from typing import Callable, NamedTuple


class Steps(NamedTuple):
    """What a backend gives the per-step LSTM."""
    xp: object                  # its array module
    inputs: Callable            # (xs (steps, batch, in), w_ih) -> what each step reads, by step
    forward: Callable           # (inputs[t], h, c, w_ih, w_hh, b, act, rec, forget_bias,
                                #  h1, c1, gates): writes the step's h1, c1 (batch, H), gates
    backward: Callable          # (gates, c1, c, dh, dhs, dc, dz, act, rec): writes dz
                                #  (batch, 4H); dc (batch, H) in: of c1, out: of c
    times_weights_t: Callable   # (a, w) -> a @ w.T
    weight_gradients: Callable  # (a, dz, with_sums) -> (a.T @ dz, dz summed over rows or None)


def forward(steps_of, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias):
    # xs (batch, steps, in), h0 and c0 (batch, H) -> hs (batch, steps, H), hT, cT, saved
    xp = steps_of.xp
    batch, steps, _ = xs.shape
    hidden = w_hh.shape[0]
    dtype = xs.dtype
    xs = xp.ascontiguousarray(xs.transpose(1, 0, 2))                 # (steps, batch, in)
    inputs = steps_of.inputs(xs, w_ih)
    hs = xp.empty((steps, batch, hidden), dtype)
    cs = xp.empty((steps, batch, hidden), dtype)
    gates = xp.empty((steps, batch, 4 * hidden), dtype)
    h, c = h0, c0
    for t in range(steps if batch and hidden else 0):
        steps_of.forward(inputs[t], h, c, w_ih, w_hh, b, act, rec, forget_bias, hs[t], cs[t],
                         gates[t])
        h, c = hs[t], cs[t]
    saved = ("per_step", xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec)
    # hT, cT as copies: never views of hs, cs, nor (no step run) the inputs h0, c0 themselves
    return xp.ascontiguousarray(hs.transpose(1, 0, 2)), h.copy(), c.copy(), saved


def backward(steps_of, saved, dhs, dhT, dcT):
    # dhs (batch, steps, H), dhT and dcT (batch, H) -> dxs, dh0, dc0, dw_ih, dw_hh, db
    _, xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec = saved
    xp = steps_of.xp
    steps, batch, n_in = xs.shape
    hidden = w_hh.shape[0]
    dhs = xp.ascontiguousarray(dhs.transpose(1, 0, 2))               # (steps, batch, H)
    dz = xp.empty((steps, batch, 4 * hidden), xs.dtype)
    dh = dhT                        # the gradient reaching h after step t, replaced each step
    dc = dcT.copy()                 # updated in place, step by step
    for t in reversed(range(steps if batch and hidden else 0)):
        steps_of.backward(gates[t], cs[t], cs[t - 1] if t else c0, dh, dhs[t], dc, dz[t], act,
                          rec)
        dh = steps_of.times_weights_t(dz[t], w_hh)
    dh0 = dhT.copy() if dh is dhT else dh                            # never the input itself
    # everything that does not feed the recurrence: GEMMs over all steps at once
    rows = steps * batch
    dz_rows = dz.reshape(rows, 4 * hidden)
    dxs = steps_of.times_weights_t(dz_rows, w_ih).reshape(steps, batch, n_in)
    dw_ih, db = steps_of.weight_gradients(xs.reshape(rows, n_in), dz_rows, True)
    h_before = xp.concatenate([h0[None], hs[:-1]]) if steps else hs  # h before each step
    dw_hh, _ = steps_of.weight_gradients(h_before.reshape(rows, hidden), dz_rows, False)
    return xp.ascontiguousarray(dxs.transpose(1, 0, 2)), dh0, dc, dw_ih, dw_hh, db
