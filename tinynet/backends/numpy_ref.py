"""The NumPy reference backend: plain, vectorized, always there.

Every other backend is checked against these functions, and these are checked against
finite differences (tests/test_reference_gradients.py). Arguments arrive validated by
tinynet.ops: float32 or float64 arrays of one dtype and matching shapes.

Conventions (the ops contract, README "Ops"): batch first; weights (in, out); LSTM gate
blocks i, f, g, o.
"""

import numpy as np

NAME = "numpy"
IS_GPU = False
# arrays of this type need no asarray call (tinynet.ops skips it)
NATIVE_ARRAY = np.ndarray


def unavailable_reason():
    return None


def host_asarray(backend_name):
    """asarray for a host backend: NumPy arrays pass through, a device array is refused
    rather than copied silently, anything else goes through np.asarray."""
    def asarray(a):
        if type(a) is np.ndarray:
            return a
        if hasattr(a, "__cuda_array_interface__"):
            raise ValueError(f"the {backend_name} backend takes host arrays, got a GPU array of "
                             f"type {type(a).__module__}.{type(a).__name__}: bring it back "
                             "with tinynet.to_numpy(a), or use a GPU backend")
        return np.asarray(a)
    return asarray


asarray = host_asarray(NAME)


def to_numpy(a):
    return a


# --- activations: value, and derivative from the output -------------------------------

def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp is only taken of -|z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def activate(name, z):
    if name == "linear":
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return sigmoid(z)
    return np.tanh(z)


def activation_grad(name, y):
    """d act / d z written with the output y = act(z)."""
    if name == "linear":
        return np.ones_like(y)
    if name == "relu":
        return (y > 0).astype(y.dtype)
    if name == "sigmoid":
        return y * (1 - y)
    return 1 - y * y


# --- dense ---------------------------------------------------------------------------
# Every function below is written for any number of leading models axes: x (..., batch, in)
# with w (..., in, out). One model has none; a stack (README, "Many models at once") has
# one, M. NumPy's matmul maps over the leading axes, so each model only meets its own weights.

def _t(a):
    """The matrix transpose of each model's (rows, cols) block."""
    return np.swapaxes(a, -1, -2)


zeros = np.zeros      # zeros(shape, dtype): what tinynet.ops fills a None state or gradient with
stack_zeros = zeros   # the same for an input of a stack op


def dense_forward(x, w, b, activation):
    # x (..., batch, in), w (..., in, out), b (..., out) or None -> y (..., batch, out)
    z = x @ w
    if b is not None:
        z = z + b[..., None, :]
    y = activate(activation, z)
    return y, (x, w, b is not None, activation, y)


def dense_backward(saved, dy):
    x, w, has_bias, activation, y = saved
    dz = dy * activation_grad(activation, y)          # (..., batch, out)
    dx = dz @ _t(w)                                   # (..., batch, in)
    dw = _t(x) @ dz                                   # (..., in, out)
    db = dz.sum(axis=-2) if has_bias else None        # (..., out)
    return dx, dw, db


# --- LSTM cell -----------------------------------------------------------------------

def _cell_step(x_proj, h, c, w_hh, activation, recurrent_activation, forget_bias):
    """One step from the input projection x_proj = x @ w_ih + b (..., batch, 4H)."""
    hidden = w_hh.shape[-2]
    z = x_proj + h @ w_hh                               # (..., batch, 4H): blocks i, f, g, o
    i = activate(recurrent_activation, z[..., :hidden])
    f = activate(recurrent_activation, z[..., hidden:2 * hidden] + forget_bias)
    g = activate(activation, z[..., 2 * hidden:3 * hidden])
    o = activate(recurrent_activation, z[..., 3 * hidden:])
    c1 = f * c + i * g
    tanh_c1 = activate(activation, c1)   # a(c1); named for the usual a = tanh
    h1 = o * tanh_c1
    return h1, c1, (i, f, g, o, tanh_c1)


def _cell_step_backward(dh1, dc1, c, gates, activation, recurrent_activation):
    """Gradient of the gate pre-activations z (..., batch, 4H) and of c, for one step."""
    i, f, g, o, tanh_c1 = gates
    do = dh1 * tanh_c1
    dc1 = dc1 + dh1 * o * activation_grad(activation, tanh_c1)
    dz = np.concatenate([
        dc1 * g * activation_grad(recurrent_activation, i),
        dc1 * c * activation_grad(recurrent_activation, f),
        dc1 * i * activation_grad(activation, g),
        do * activation_grad(recurrent_activation, o),
    ], axis=-1)
    return dz, dc1 * f


def lstm_cell_forward(x, h, c, w_ih, w_hh, b, activation, recurrent_activation, forget_bias):
    # x (..., batch, in), h and c (..., batch, H), w_ih (..., in, 4H), w_hh (..., H, 4H),
    # b (..., 4H); forget_bias a number, or (..., 1, 1) per model
    forget_bias = np.asarray(forget_bias, x.dtype)
    h1, c1, gates = _cell_step(x @ w_ih + b[..., None, :], h, c, w_hh, activation,
                               recurrent_activation, forget_bias)
    return h1, c1, (x, h, c, w_ih, w_hh, gates, activation, recurrent_activation)


def lstm_cell_backward(saved, dh1, dc1):
    x, h, c, w_ih, w_hh, gates, activation, recurrent_activation = saved
    dz, dc = _cell_step_backward(dh1, dc1, c, gates, activation, recurrent_activation)
    return dz @ _t(w_ih), dz @ _t(w_hh), dc, _t(x) @ dz, _t(h) @ dz, dz.sum(axis=-2)


# --- LSTM over a whole sequence ------------------------------------------------------

def lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation, forget_bias,
                 lengths=None):
    # xs (..., batch, steps, in), h0 and c0 (..., batch, H) -> hs (..., batch, steps, H)
    # lengths (..., batch) or None: steps t >= lengths are padding; the state stops changing
    # there and hs is zero
    *models, batch, steps, _ = xs.shape
    hidden = w_hh.shape[-2]
    forget_bias = np.asarray(forget_bias, xs.dtype)
    hs = np.empty((*models, batch, steps, hidden), xs.dtype)
    cs = np.empty((*models, batch, steps, hidden), xs.dtype)
    step_gates = []
    # The input projection of every step is one GEMM; only h @ w_hh stays in the loop.
    x_proj = xs @ w_ih[..., None, :, :] + b[..., None, None, :]       # (..., batch, steps, 4H)
    h, c = h0.copy(), c0.copy()              # copies: with steps == 0 they are the result
    for t in range(steps):
        h1, c1, gates = _cell_step(x_proj[..., t, :], h, c, w_hh, activation,
                                   recurrent_activation, forget_bias)
        if lengths is None:
            h, c = h1, c1
            hs[..., t, :] = h
        else:
            valid = (t < lengths)[..., None]                            # (..., batch, 1)
            h = np.where(valid, h1, h)
            c = np.where(valid, c1, c)
            hs[..., t, :] = np.where(valid, h1, 0)
        cs[..., t, :] = c
        step_gates.append(gates)
    saved = (xs, h0, c0, w_ih, w_hh, hs, cs, step_gates, activation,
             recurrent_activation, lengths)
    return hs, h, c, saved


def lstm_backward(saved, dhs, dhT, dcT):
    (xs, h0, c0, w_ih, w_hh, hs, cs, step_gates, activation, recurrent_activation,
     lengths) = saved
    *models, batch, steps, n_in = xs.shape
    hidden = w_hh.shape[-2]
    dh = dhT.copy()
    dc = dcT.copy()
    dz_all = np.empty((*models, batch, steps, 4 * hidden), xs.dtype)
    for t in reversed(range(steps)):
        valid = None if lengths is None else (t < lengths)[..., None]   # (..., batch, 1)
        dh = dh + (dhs[..., t, :] if valid is None else np.where(valid, dhs[..., t, :], 0))
        c_prev = cs[..., t - 1, :] if t > 0 else c0
        dz, dc_prev = _cell_step_backward(dh, dc, c_prev, step_gates[t], activation,
                                          recurrent_activation)
        if valid is None:
            dc = dc_prev
            dh = dz @ _t(w_hh)
        else:
            # padding passes dh and dc through unchanged; where() drops what the padding's
            # own (possibly NaN) inputs computed
            dz = np.where(valid, dz, 0)
            dc = np.where(valid, dc_prev, dc)
            dh = np.where(valid, dz @ _t(w_hh), dh)
        dz_all[..., t, :] = dz
    # Everything that does not feed the recurrence is one GEMM over all steps.
    h_prev = np.concatenate([h0[..., None, :], hs], axis=-2)[..., :steps, :]
    xs_used = xs
    if lengths is not None:
        # padding rows carry zero gradient, and their inputs (NaN included) must not reach
        # the weight gradients: 0 * NaN is NaN, so they are removed, not multiplied by zero
        valid = (np.arange(steps) < lengths[..., None])[..., None]     # (..., batch, steps, 1)
        xs_used = np.where(valid, xs, 0)
        h_prev = np.where(valid, h_prev, 0)
    dz_flat = dz_all.reshape(*models, batch * steps, 4 * hidden)
    dxs = (dz_flat @ _t(w_ih)).reshape(*models, batch, steps, n_in)
    dw_ih = _t(xs_used.reshape(*models, batch * steps, n_in)) @ dz_flat
    dw_hh = _t(h_prev.reshape(*models, batch * steps, hidden)) @ dz_flat
    db = dz_flat.sum(axis=-2)
    return dxs, dh, dc, dw_ih, dw_hh, db


# --- stacks: the same functions with one leading models axis ---------------------------
# Arguments as in the module docstring, plus forget_bias (M,) and lengths (M, batch).

stack_dense_forward = dense_forward
stack_dense_backward = dense_backward


def stack_lstm_cell_forward(x, h, c, w_ih, w_hh, b, activation, recurrent_activation,
                            forget_bias):
    return lstm_cell_forward(x, h, c, w_ih, w_hh, b, activation, recurrent_activation,
                             forget_bias[:, None, None])


stack_lstm_cell_backward = lstm_cell_backward


def stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation,
                       forget_bias, lengths):
    return lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation,
                        forget_bias[:, None, None], lengths)


stack_lstm_backward = lstm_backward
