"""The NumPy reference backend: plain, vectorized, always there.

Every other backend is checked against these functions, and these are checked against
finite differences (tests/test_reference_gradients.py). Arguments arrive validated by
tinynet.ops: float32 or float64 arrays of one dtype and matching shapes.

Conventions (see shared/API.md): batch first; weights (in, out); LSTM gate blocks i, f, g, o.
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

def dense_forward(x, w, b, activation):
    # x (batch, in), w (in, out), b (out,) or None -> y (batch, out)
    z = x @ w
    if b is not None:
        z = z + b
    y = activate(activation, z)
    return y, (x, w, b is not None, activation, y)


def dense_backward(saved, dy):
    x, w, has_bias, activation, y = saved
    if dy is None:
        dy = np.zeros_like(y)
    dz = dy * activation_grad(activation, y)          # (batch, out)
    dx = dz @ w.T                                     # (batch, in)
    dw = x.T @ dz                                     # (in, out)
    db = dz.sum(axis=0) if has_bias else None         # (out,)
    return dx, dw, db


# --- LSTM cell -----------------------------------------------------------------------

def _cell_step(x_proj, h, c, w_hh, activation, recurrent_activation, forget_bias):
    """One step from the input projection x_proj = x @ w_ih + b (batch, 4H)."""
    hidden = w_hh.shape[0]
    z = x_proj + h @ w_hh                               # (batch, 4H): blocks i, f, g, o
    i = activate(recurrent_activation, z[:, :hidden])
    f = activate(recurrent_activation, z[:, hidden:2 * hidden] + forget_bias)
    g = activate(activation, z[:, 2 * hidden:3 * hidden])
    o = activate(recurrent_activation, z[:, 3 * hidden:])
    c1 = f * c + i * g
    tanh_c1 = activate(activation, c1)   # a(c1); named for the usual a = tanh
    h1 = o * tanh_c1
    return h1, c1, (i, f, g, o, tanh_c1)


def _cell_step_backward(dh1, dc1, c, gates, activation, recurrent_activation):
    """Gradient of the gate pre-activations z (batch, 4H) and of c, for one step."""
    i, f, g, o, tanh_c1 = gates
    do = dh1 * tanh_c1
    dc1 = dc1 + dh1 * o * activation_grad(activation, tanh_c1)
    dz = np.concatenate([
        dc1 * g * activation_grad(recurrent_activation, i),
        dc1 * c * activation_grad(recurrent_activation, f),
        dc1 * i * activation_grad(activation, g),
        do * activation_grad(recurrent_activation, o),
    ], axis=1)
    return dz, dc1 * f


def lstm_cell_forward(x, h, c, w_ih, w_hh, b, activation, recurrent_activation, forget_bias):
    # x (batch, in), h and c (batch, H), w_ih (in, 4H), w_hh (H, 4H), b (4H,)
    forget_bias = x.dtype.type(forget_bias)
    h1, c1, gates = _cell_step(x @ w_ih + b, h, c, w_hh, activation, recurrent_activation,
                               forget_bias)
    return h1, c1, (x, h, c, w_ih, w_hh, gates, activation, recurrent_activation)


def lstm_cell_backward(saved, dh1, dc1):
    x, h, c, w_ih, w_hh, gates, activation, recurrent_activation = saved
    if dh1 is None:
        dh1 = np.zeros_like(h)
    if dc1 is None:
        dc1 = np.zeros_like(c)
    dz, dc = _cell_step_backward(dh1, dc1, c, gates, activation, recurrent_activation)
    return dz @ w_ih.T, dz @ w_hh.T, dc, x.T @ dz, h.T @ dz, dz.sum(axis=0)


# --- LSTM over a whole sequence ------------------------------------------------------

def lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation, forget_bias):
    # xs (batch, steps, in), h0 and c0 (batch, H) or None -> hs (batch, steps, H)
    batch, steps, _ = xs.shape
    hidden = w_hh.shape[0]
    h_start = np.zeros((batch, hidden), xs.dtype) if h0 is None else h0
    c_start = np.zeros((batch, hidden), xs.dtype) if c0 is None else c0
    forget_bias = xs.dtype.type(forget_bias)
    hs = np.empty((batch, steps, hidden), xs.dtype)
    cs = np.empty((batch, steps, hidden), xs.dtype)
    step_gates = []
    # The input projection of every step is one GEMM; only h @ w_hh stays in the loop.
    x_proj = xs @ w_ih + b                               # (batch, steps, 4H)
    h, c = h_start.copy(), c_start.copy()    # copies: with steps == 0 they are the result
    for t in range(steps):
        h, c, gates = _cell_step(x_proj[:, t], h, c, w_hh, activation, recurrent_activation,
                                 forget_bias)
        hs[:, t] = h
        cs[:, t] = c
        step_gates.append(gates)
    saved = (xs, h_start, c_start, w_ih, w_hh, hs, cs, step_gates, activation,
             recurrent_activation)
    return hs, h, c, saved


def lstm_backward(saved, dhs, dhT, dcT):
    xs, h_start, c_start, w_ih, w_hh, hs, cs, step_gates, activation, recurrent_activation = saved
    batch, steps, n_in = xs.shape
    hidden = w_hh.shape[0]
    dh = np.zeros_like(h_start) if dhT is None else dhT.copy()
    dc = np.zeros_like(c_start) if dcT is None else dcT.copy()
    dz_all = np.empty((batch, steps, 4 * hidden), xs.dtype)
    for t in reversed(range(steps)):
        if dhs is not None:
            dh = dh + dhs[:, t]
        c_prev = cs[:, t - 1] if t > 0 else c_start
        dz, dc = _cell_step_backward(dh, dc, c_prev, step_gates[t], activation,
                                     recurrent_activation)
        dz_all[:, t] = dz
        dh = dz @ w_hh.T
    # Everything that does not feed the recurrence is one GEMM over all steps.
    h_prev = np.concatenate([h_start[:, None, :], hs], axis=1)[:, :steps]  # (batch, steps, H)
    dz_flat = dz_all.reshape(batch * steps, 4 * hidden)
    dxs = (dz_flat @ w_ih.T).reshape(batch, steps, n_in)
    dw_ih = xs.reshape(batch * steps, n_in).T @ dz_flat
    dw_hh = h_prev.reshape(batch * steps, hidden).T @ dz_flat
    db = dz_flat.sum(axis=0)
    return dxs, dh, dc, dw_ih, dw_hh, db
