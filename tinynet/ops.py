"""tinynet.ops: the functional core (the contract: README "Ops").

Each op validates its arguments once, here, picks a backend, and calls it; backends trust
what they receive. Forward ops return their outputs and a Context; backward ops take that
Context (which remembers the backend) and the gradients of the outputs (None = zero).

What every backend would otherwise do for itself is done here, once: an initial state or an
output gradient given as None becomes zeros (so a backend always gets complete arrays), a
stack's forget_bias becomes one value per model, lengths an int32 array, and one model's
LSTM with lengths runs as a stack of one.
"""

import operator

import numpy as np

from tinynet._activations import ALIASES, canonical
from tinynet._dispatch import LOADED, resolve

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_FLOATS = (_F32, _F64)


class Context(tuple):
    """What a backward needs: opaque to users, owned by the backend that made it.

    Made as Context((op, backend, saved, outputs, dtype)). `outputs` are the forward's
    outputs, in order: each gradient the backward takes has the shape of one (the arrays are
    kept, not their shapes: reading .shape builds a new tuple each time, and the per-call cost
    of ops is what the small cases pay). A tuple subclass is built in one C call. op is
    'dense', 'lstm_cell' or 'lstm', with ' stack' for a stack of models, or 'lstm lengths'
    for one model's LSTM with lengths (run as a stack of one).
    """

    __slots__ = ()
    op = property(operator.itemgetter(0))
    backend = property(operator.itemgetter(1))
    saved = property(operator.itemgetter(2))
    outputs = property(operator.itemgetter(3))
    dtype = property(operator.itemgetter(4))

    def grad_shapes(self):
        return [tuple(a.shape) for a in self.outputs]

    def __repr__(self):
        return f"<tinynet {self.op} context on {self.backend.NAME}, {self.dtype}>"


# --- argument checks -----------------------------------------------------------------

def _fail(op, message):
    raise ValueError(f"{op}: {message}")


def _shape(shape):
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _float_dtype(op, name, a):
    """The dtype of the first array; it must be float32 or float64."""
    dtype = getattr(a, "dtype", None)
    if dtype not in _FLOATS:
        _fail(op, f"{name} must be float32 or float64, got {dtype}: convert it explicitly, "
                  f"e.g. {name}.astype(np.float32) (tinynet never casts silently)")
    return dtype


def _same_dtype(op, dtype, first, arrays):
    for name, a in arrays:
        if a is not None and a.dtype != dtype:
            if a.dtype in _FLOATS:
                _fail(op, f"{name} is {a.dtype} but {first} is {dtype}: mixed dtypes are not "
                          f"cast; convert one, e.g. {name}.astype({first}.dtype)")
            _fail(op, f"{name} must be float32 or float64 like {first} ({dtype}), got "
                      f"{a.dtype}: convert it explicitly, e.g. {name}.astype({first}.dtype)")


def _ndim(op, name, a, ndim, symbols, fix=""):
    if a.ndim != ndim:
        _fail(op, f"{name} must be {ndim}-D {symbols}, got a {a.ndim}-D array of shape "
                  f"{_shape(a.shape)}" + (f": {fix}" if fix else ""))


def _expect(op, name, a, expected, symbols, fix=""):
    if tuple(a.shape) != expected:
        _fail(op, f"{name} must be {symbols} = {_shape(expected)}, got {_shape(a.shape)}"
                  + (f": {fix}" if fix else ""))


def _forget_bias(op, value):
    """A forget_bias that is not a float, as a float; refused unless a real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                        np.floating)):
        _fail(op, f"forget_bias must be a real number, got {value!r} of type "
                  f"{type(value).__name__}")
    return float(value)


def _lstm_options(op, activation, recurrent_activation, forget_bias, w_hh):
    """The canonical activation names and forget_bias as a float (a stack's, recognised by
    its 3-D w_hh, is checked with its M); known names and a float forget_bias pass without a
    further call."""
    try:
        act, rec = ALIASES[activation], ALIASES[recurrent_activation]
    except (KeyError, TypeError):
        act = canonical(activation, "activation", op)
        rec = canonical(recurrent_activation, "recurrent_activation", op)
    if type(forget_bias) is not float and getattr(w_hh, "ndim", 0) != 3:
        forget_bias = _forget_bias(op, forget_bias)
    return act, rec, forget_bias


def _check_lstm_weights(op, n_in, w_ih, w_hh, b):
    """Check w_hh (H, 4H), w_ih (in, 4H), b (4H,); return H."""
    _ndim(op, "w_hh", w_hh, 2, "(H, 4*H)")
    hidden = w_hh.shape[0]
    if w_hh.shape[1] != 4 * hidden:
        _fail(op, f"w_hh must be (H, 4*H) with gate blocks i, f, g, o, got "
                  f"{_shape(w_hh.shape)}: an LSTM of H units has 4*H gate columns"
                  + (f" (with H = {w_hh.shape[1] // 4}, w_hh is ({w_hh.shape[1] // 4}, "
                     f"{w_hh.shape[1]}))" if w_hh.shape[1] % 4 == 0 and w_hh.shape[1] else ""))
    _ndim(op, "w_ih", w_ih, 2, "(in, 4*H)")
    fix = "w_ih looks transposed: use w_ih.T" if w_ih.shape == (4 * hidden, n_in) else ""
    _expect(op, "w_ih", w_ih, (n_in, 4 * hidden), "(in, 4*H)", fix)
    fix = "use b.reshape(-1)" if b.size == 4 * hidden else (
        "PyTorch has two biases: pass bias_ih + bias_hh" if b.ndim == 1 else "")
    _expect(op, "b", b, (4 * hidden,), "(4*H,)", fix)
    return hidden


# --- stacks and lengths (README "Many models at once", "Sequences of different lengths") -
# Stacked shapes checked, forget_bias as an (M,) array of the data's dtype, lengths as an
# (M, batch) int32 array. A single-model LSTM with lengths runs as a stack of one.

def _stacked(op, name, a, models, tail, symbols, made_by, data=True):
    """a must be (M,) + tail; made_by names the weight that made the call a stack."""
    expected = (models,) + tuple(tail)
    shape = tuple(a.shape)
    if shape == expected:
        return
    if len(shape) == len(tail):
        how = (f"for data shared by all models pass np.broadcast_to({name}, ({models},) + "
               f"{name}.shape) (no copy)" if data else
               f"give each model its own {name} and combine them with np.stack")
        _fail(op, f"{name} must be {symbols} = {_shape(expected)}, got {_shape(shape)}, with "
                  f"no models axis: {made_by} is a stack of M = {models} models (its first "
                  f"axis), so every argument has a leading models axis; {how}")
    if len(shape) != len(tail) + 1:
        _fail(op, f"{name} must be {len(tail) + 1}-D {symbols}, got a {len(shape)}-D array of "
                  f"shape {_shape(shape)}")
    if shape[0] != models:
        _fail(op, f"{name} has {shape[0]} models on its first axis, but {made_by} has "
                  f"M = {models}: every argument of a stack has the same leading M")
    _fail(op, f"{name} must be {symbols} = {_shape(expected)}, got {_shape(shape)}")


def _host(a):
    """An array-like on the host (a small argument such as lengths or forget_bias)."""
    if hasattr(a, "__cuda_array_interface__"):
        import tinynet
        return tinynet.to_numpy(a)
    return np.asarray(a)


def _forget_bias_per_model(op, value, models, dtype):
    """forget_bias, a real number or one per model, as a host array (M,) of dtype."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return np.full(models, _forget_bias(op, value), dtype)
    host = _host(value)
    if host.dtype.kind not in "iuf":
        _fail(op, f"forget_bias must be a real number or an array (M,) of real numbers, got "
                  f"{value!r}")
    if host.shape != (models,):
        _fail(op, f"forget_bias must be a number or one per model, (M,) = ({models},), got an "
                  f"array of shape {_shape(host.shape)}")
    return host.astype(dtype)


def _lengths(op, lengths, expected, steps):
    """lengths as a host int32 array of shape `expected`, each in 0..steps."""
    symbols = "(batch,)" if len(expected) == 1 else "(M, batch)"
    host = _host(lengths)
    if host.dtype.kind not in "iu":
        _fail(op, f"lengths must be integers {symbols}, got dtype {host.dtype}"
                  + (": convert with lengths.astype(np.int64) if the values are whole"
                     if host.dtype.kind == "f" else ""))
    if host.shape != tuple(expected):
        _fail(op, f"lengths must be {symbols} = {_shape(expected)}, one per sequence, got "
                  f"{_shape(host.shape)}")
    if host.size and (host.min() < 0 or host.max() > steps):
        bad = host[(host < 0) | (host > steps)]
        _fail(op, f"lengths must be in 0..steps = 0..{steps}, got {int(bad.flat[0])}")
    return np.ascontiguousarray(host, np.int32)


def _stack_lstm_weights(op, models, n_in, w_ih, w_hh, b):
    """Check the stacked w_hh (M, H, 4H), w_ih (M, in, 4H), b (M, 4H); return H."""
    hidden = w_hh.shape[1]
    if w_hh.shape[2] != 4 * hidden:
        _fail(op, f"w_hh must be (M, H, 4*H) with gate blocks i, f, g, o, got "
                  f"{_shape(w_hh.shape)}: an LSTM of H units has 4*H gate columns")
    _stacked(op, "w_ih", w_ih, models, (n_in, 4 * hidden), "(M, in, 4*H)", "w_hh", data=False)
    _stacked(op, "b", b, models, (4 * hidden,), "(M, 4*H)", "w_hh", data=False)
    return hidden


_STACK_KINDS = ("dense stack", "lstm_cell stack", "lstm stack")


def _output_gradients(op, ctx, names, grads):
    """The output gradients a backward takes: checked, None as zeros."""
    be, outputs, dtype = ctx[1], ctx[3], ctx[4]
    native = be.NATIVE_ARRAY
    zeros = be.stack_zeros if ctx[0] in _STACK_KINDS else be.zeros
    filled = []
    for index, g in enumerate(grads):
        if g is None:
            g = zeros(outputs[index].shape, dtype)
        elif not (type(g) is native and g.dtype is dtype and g.shape == outputs[index].shape):
            g = _gradient(op, ctx, be, index, names[index], g)     # converted, or refused
        filled.append(g)
    return filled


def _dense_stack(be, x, w, b, act):
    op = "dense"
    dtype = _float_dtype(op, "x", x)
    _same_dtype(op, dtype, "x", (("w", w), ("b", b)))
    models, n_in = w.shape[0], w.shape[1]
    if x.ndim != 3:
        _stacked(op, "x", x, models, (x.shape[0] if x.ndim else 0, n_in), "(M, batch, in)", "w")
    _stacked(op, "x", x, models, (x.shape[1], n_in), "(M, batch, in)", "w")
    if b is not None:
        _stacked(op, "b", b, models, (w.shape[2],), "(M, out)", "w", data=False)
    try:
        y, saved = be.stack_dense_forward(x, w, b, act)
    except Exception as error:
        if not _is_out_of_memory(error):
            raise
        _out_of_memory(op, be, error, (("x", x), ("w", w)))
    return y, Context(("dense stack", be, saved, (y,), dtype))


def _lstm_cell_stack(be, x, h, c, w_ih, w_hh, b, act, rec, forget_bias):
    op = "lstm_cell"
    dtype = _float_dtype(op, "x", x)
    _same_dtype(op, dtype, "x", (("h", h), ("c", c), ("w_ih", w_ih), ("w_hh", w_hh), ("b", b)))
    models = w_hh.shape[0]
    if x.ndim != 3:
        _stacked(op, "x", x, models, (x.shape[0] if x.ndim else 0, w_ih.shape[-2]),
                 "(M, batch, in)", "w_hh")
    batch, n_in = x.shape[1], x.shape[2]
    hidden = _stack_lstm_weights(op, models, n_in, w_ih, w_hh, b)
    _stacked(op, "x", x, models, (batch, n_in), "(M, batch, in)", "w_hh")
    _stacked(op, "h", h, models, (batch, hidden), "(M, batch, H)", "w_hh")
    _stacked(op, "c", c, models, (batch, hidden), "(M, batch, H)", "w_hh")
    forget_bias = be.asarray(_forget_bias_per_model(op, forget_bias, models, dtype))
    try:
        if hasattr(be, "stack_lstm_cell_forward"):
            h1, c1, saved = be.stack_lstm_cell_forward(x, h, c, w_ih, w_hh, b, act, rec,
                                                       forget_bias)
        else:                       # a sequence of one step
            lengths = be.asarray(np.ones((models, batch), np.int32))
            _, h1, c1, saved = be.stack_lstm_forward(x.reshape(models, batch, 1, n_in), h, c,
                                                     w_ih, w_hh, b, act, rec, forget_bias,
                                                     lengths)
    except Exception as error:
        if not _is_out_of_memory(error):
            raise
        _out_of_memory(op, be, error, (("x", x), ("h", h), ("w_ih", w_ih), ("w_hh", w_hh)))
    return h1, c1, Context(("lstm_cell stack", be, saved, (h1, c1), dtype))


def _lstm_stack(be, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths):
    op = "lstm"
    dtype = _float_dtype(op, "xs", xs)
    _same_dtype(op, dtype, "xs",
                (("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh), ("b", b)))
    models = w_hh.shape[0]
    if xs.ndim != 4:
        fix = ""
        if xs.ndim == 3 and xs.shape[0] == models:
            fix = ": a sequence batch is (M, batch, steps, features): use xs[..., None] for one "\
                  "feature"
        elif xs.ndim == 3:
            fix = (f": for sequences shared by all models pass np.broadcast_to(xs, ({models},) "
                   "+ xs.shape) (no copy)")
        _fail(op, f"xs must be 4-D (M, batch, steps, in) since w_hh is a stack of M = {models} "
                  f"models, got a {xs.ndim}-D array of shape {_shape(xs.shape)}{fix}")
    batch, steps, n_in = xs.shape[1:]
    _stacked(op, "xs", xs, models, (batch, steps, n_in), "(M, batch, steps, in)", "w_hh")
    hidden = _stack_lstm_weights(op, models, n_in, w_ih, w_hh, b)
    state = (models, batch, hidden)
    if h0 is None:
        h0 = be.stack_zeros(state, dtype)
    else:
        _stacked(op, "h0", h0, models, (batch, hidden), "(M, batch, H)", "w_hh")
    if c0 is None:
        c0 = be.stack_zeros(state, dtype)
    else:
        _stacked(op, "c0", c0, models, (batch, hidden), "(M, batch, H)", "w_hh")
    forget_bias = be.asarray(_forget_bias_per_model(op, forget_bias, models, dtype))
    if lengths is None:
        lengths = np.full((models, batch), steps, np.int32)
    else:
        lengths = _lengths(op, lengths, (models, batch), steps)
    return _run_lstm_stack(be, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias,
                           be.asarray(lengths), "lstm stack")


def _run_lstm_stack(be, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths, kind):
    try:
        hs, hT, cT, saved = be.stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, act, rec,
                                                  forget_bias, lengths)
    except Exception as error:
        if not _is_out_of_memory(error):
            raise
        _out_of_memory("lstm", be, error, (("xs", xs), ("w_ih", w_ih), ("w_hh", w_hh)))
    if kind == "lstm lengths":       # one model, run as a stack of one
        hs, hT, cT = hs[0], hT[0], cT[0]
    return hs, hT, cT, Context((kind, be, saved, (hs, hT, cT), xs.dtype))


def _lstm_with_lengths(be, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths):
    """One model's (checked) LSTM with lengths: a stack of one."""
    batch, steps = xs.shape[0], xs.shape[1]
    lengths = be.asarray(_lengths("lstm", lengths, (batch,), steps)[None])
    forget_bias = be.asarray(np.full(1, forget_bias, xs.dtype))
    return _run_lstm_stack(be, xs[None], h0[None], c0[None], w_ih[None], w_hh[None], b[None],
                           act, rec, forget_bias, lengths, "lstm lengths")


def _gradient(op, ctx, backend, index, name, g):
    """g (not None) checked against the forward's output `index`; on the backend's device."""
    if type(g) is not backend.NATIVE_ARRAY:
        g = backend.asarray(g)
    expected = tuple(ctx.outputs[index].shape)
    dtype = getattr(g, "dtype", None)
    if dtype is ctx.dtype and g.shape == expected:
        return g
    if dtype != ctx.dtype:
        _fail(op, f"{name} must be {ctx.dtype} like the forward's output, got {dtype}")
    if tuple(g.shape) != expected:
        _fail(op, f"{name} must have the shape of the forward's output {_shape(expected)}, "
                  f"got {_shape(g.shape)}")
    return g


def _is_out_of_memory(error):
    """CuPy raises a MemoryError subclass; Numba-CUDA a CudaAPIError naming the CUDA code."""
    return isinstance(error, MemoryError) or "OUT_OF_MEMORY" in str(error)


def _out_of_memory(op, backend, error, arrays):
    sizes = ", ".join(f"{name} {_shape(a.shape)} {a.dtype}" for name, a in arrays
                      if a is not None)
    raise MemoryError(f"{op} on the {backend.NAME} backend ran out of memory with {sizes}: "
                      "use a smaller batch (or shorter sequences), or free memory held "
                      "elsewhere") from error


def _backward_failed(op, ctx, error):
    """Re-raise a backward's error, naming the op and sizes when memory ran out."""
    if not _is_out_of_memory(error):
        raise error
    shapes = ", ".join(_shape(shape) for shape in ctx.grad_shapes())
    raise MemoryError(f"{op} on the {ctx.backend.NAME} backend ran out of memory for output "
                      f"gradients of shape {shapes} ({ctx.dtype}): use a smaller batch (or "
                      "shorter sequences), or free memory held elsewhere") from error


def _wrong_context(op, ctx, kind):
    got = ctx.op if isinstance(ctx, Context) else type(ctx).__name__
    _fail(op, f"ctx must be the context returned by ops.{kind}, got {got}")


# --- dense ---------------------------------------------------------------------------

def _check_dense(op, x, w, b):
    """The detailed checks, run when the fast test in dense() fails: each raises with the fix."""
    dtype = _float_dtype(op, "x", x)
    _same_dtype(op, dtype, "x", (("w", w), ("b", b)))
    if x.ndim != 2:
        fix = ("for one sample use x[None, :]" if x.ndim == 1 else
               "to apply it at every step use x.reshape(-1, x.shape[-1])" if x.ndim == 3 else "")
        _ndim(op, "x", x, 2, "(batch, in)", fix)
    n_in = x.shape[1]
    _ndim(op, "w", w, 2, "(in, out)")
    if w.shape[0] != n_in:
        fix = ("w looks transposed (weights are stored (in, out)): use w.T"
               if w.shape[1] == n_in else "the number of inputs is fixed by the data")
        _fail(op, f"w must be (in, out) with in = {n_in} to match x {_shape(x.shape)}, got "
                  f"{_shape(w.shape)}: {fix}")
    if b is not None:
        n_out = w.shape[1]
        _expect(op, "b", b, (n_out,), "(out,)", "use b.reshape(-1)" if b.size == n_out else "")


def dense(x, w, b=None, activation="linear", *, backend=None):
    """y = act(x @ w + b): x (batch, in), w (in, out), b (out,) or None -> y, ctx."""
    # a named, loaded backend and a known activation name are looked up here directly: the
    # calls to resolve() and canonical() are a sizeable part of a call at the smallest sizes
    be = LOADED.get(backend)
    if be is None:
        be = resolve(backend, "dense", x, None, w)
    native = be.NATIVE_ARRAY
    if type(x) is not native:
        x = be.asarray(x)
    if type(w) is not native:
        w = be.asarray(w)
    if b is not None and type(b) is not native:
        b = be.asarray(b)
    try:
        act = ALIASES[activation]
    except (KeyError, TypeError):
        act = canonical(activation, "activation", "dense")
    dtype = x.dtype
    # One cheap test of everything (dtype objects of float32/float64 are singletons); the
    # detailed checks run only when it fails, to say exactly what is wrong.
    # Each .shape is read once: reading it builds a tuple.
    x_shape = x.shape
    w_shape = w.shape
    if not ((dtype is _F32 or dtype is _F64) and w.dtype is dtype and len(x_shape) == 2
            and len(w_shape) == 2 and w_shape[0] == x_shape[1]
            and (b is None or (b.dtype is dtype and b.shape == (w_shape[1],)))):
        if len(w_shape) == 3:
            return _dense_stack(be, x, w, b, act)
        _check_dense("dense", x, w, b)
    try:
        y, saved = be.dense_forward(x, w, b, act)
    except Exception as error:
        if not _is_out_of_memory(error):
            raise
        _out_of_memory("dense", be, error, (("x", x), ("w", w)))
    return y, Context(("dense", be, saved, (y,), dtype))


def dense_backward(ctx, dy):
    """dx, dw, db (db is None when the forward had no bias)."""
    op = "dense_backward"
    if type(ctx) is not Context or ctx[0] != "dense":
        if type(ctx) is Context and ctx[0] == "dense stack":
            try:
                return ctx[1].stack_dense_backward(ctx[2], *_output_gradients(op, ctx, ("dy",),
                                                                              (dy,)))
            except Exception as error:
                _backward_failed(op, ctx, error)
        _wrong_context(op, ctx, "dense")
    be = ctx[1]
    # the common case (a native array of the right dtype and shape) tested inline
    if not (type(dy) is be.NATIVE_ARRAY and dy.dtype is ctx[4]
            and dy.shape == ctx[3][0].shape):
        (dy,) = _output_gradients(op, ctx, ("dy",), (dy,))
    try:
        return be.dense_backward(ctx[2], dy)
    except Exception as error:
        _backward_failed(op, ctx, error)


# --- LSTM cell -----------------------------------------------------------------------

def _lstm_fast_ok(dtype, batch, n_in, h, c, w_ih, w_hh, b):
    """One cheap test that all LSTM arguments are right (see dense() for the idea); h and c
    may be None (zeros, in ops.lstm). Each .shape is read once: reading it builds a tuple."""
    if not ((dtype is _F32 or dtype is _F64) and w_ih.dtype is dtype and w_hh.dtype is dtype
            and b.dtype is dtype):
        return False
    recurrent = w_hh.shape
    if len(recurrent) != 2:
        return False
    hidden = recurrent[0]
    gates = 4 * hidden
    if not (recurrent[1] == gates and w_ih.shape == (n_in, gates) and b.shape == (gates,)):
        return False
    state = (batch, hidden)
    return ((h is None or (h.dtype is dtype and h.shape == state))
            and (c is None or (c.dtype is dtype and c.shape == state)))


def _check_lstm_cell(op, x, h, c, w_ih, w_hh, b):
    dtype = _float_dtype(op, "x", x)
    _same_dtype(op, dtype, "x", (("h", h), ("c", c), ("w_ih", w_ih), ("w_hh", w_hh), ("b", b)))
    _ndim(op, "x", x, 2, "(batch, in)",
          "lstm_cell is one step; for a whole sequence (batch, steps, in) use ops.lstm"
          if x.ndim == 3 else "for one sample use x[None, :]" if x.ndim == 1 else "")
    batch, n_in = x.shape
    hidden = _check_lstm_weights(op, n_in, w_ih, w_hh, b)
    _expect(op, "h", h, (batch, hidden), "(batch, H)")
    _expect(op, "c", c, (batch, hidden), "(batch, H)")


def lstm_cell(x, h, c, w_ih, w_hh, b, activation="tanh", recurrent_activation="sigmoid",
              forget_bias=0.0, *, backend=None):
    """One LSTM step: h1, c1, ctx. Gates z = x @ w_ih + h @ w_hh + b, blocks i, f, g, o."""
    op = "lstm_cell"
    be = LOADED.get(backend)            # as in dense()
    if be is None:
        be = resolve(backend, op, x, w_hh)
    native = be.NATIVE_ARRAY
    if not (type(x) is native and type(h) is native and type(c) is native
            and type(w_ih) is native and type(w_hh) is native and type(b) is native):
        x, h, c = be.asarray(x), be.asarray(h), be.asarray(c)
        w_ih, w_hh, b = be.asarray(w_ih), be.asarray(w_hh), be.asarray(b)
    act, rec, forget_bias = _lstm_options(op, activation, recurrent_activation, forget_bias,
                                          w_hh)
    shape = getattr(x, "shape", ())
    if not (len(shape) == 2 and _lstm_fast_ok(x.dtype, shape[0], shape[1], h, c, w_ih, w_hh, b)):
        if getattr(w_hh, "ndim", 0) == 3:
            return _lstm_cell_stack(be, x, h, c, w_ih, w_hh, b, act, rec, forget_bias)
        _check_lstm_cell(op, x, h, c, w_ih, w_hh, b)
    try:
        if hasattr(be, "lstm_cell_forward"):
            h1, c1, saved = be.lstm_cell_forward(x, h, c, w_ih, w_hh, b, act, rec, forget_bias)
        else:                       # a sequence of one step
            _, h1, c1, saved = be.lstm_forward(x.reshape(shape[0], 1, shape[1]), h, c, w_ih,
                                               w_hh, b, act, rec, forget_bias)
    except Exception as error:
        if not _is_out_of_memory(error):
            raise
        _out_of_memory(op, be, error, (("x", x), ("h", h), ("w_ih", w_ih), ("w_hh", w_hh)))
    return h1, c1, Context((op, be, saved, (h1, c1), x.dtype))


def lstm_cell_backward(ctx, dh1, dc1=None):
    """dx, dh, dc, dw_ih, dw_hh, db."""
    op = "lstm_cell_backward"
    if type(ctx) is not Context or ctx[0] not in ("lstm_cell", "lstm_cell stack"):
        _wrong_context(op, ctx, "lstm_cell")
    be = ctx[1]
    stack = ctx[0] == "lstm_cell stack"
    dh1, dc1 = _output_gradients(op, ctx, ("dh1", "dc1"), (dh1, dc1))
    try:
        if hasattr(be, "stack_lstm_cell_backward" if stack else "lstm_cell_backward"):
            cell_backward = be.stack_lstm_cell_backward if stack else be.lstm_cell_backward
            return cell_backward(ctx[2], dh1, dc1)
        # a sequence of one step: h1 and c1 are its final state, its hs no output
        sequence_backward = be.stack_lstm_backward if stack else be.lstm_backward
        dhs = (be.stack_zeros if stack else be.zeros)(dh1.shape[:-1] + (1, dh1.shape[-1]),
                                                      ctx[4])
        dxs, dh, dc, dw_ih, dw_hh, db = sequence_backward(ctx[2], dhs, dh1, dc1)
        return dxs.reshape(dxs.shape[:-2] + dxs.shape[-1:]), dh, dc, dw_ih, dw_hh, db
    except Exception as error:
        _backward_failed(op, ctx, error)


# --- LSTM over a sequence ------------------------------------------------------------

def _check_lstm(op, xs, h0, c0, w_ih, w_hh, b):
    dtype = _float_dtype(op, "xs", xs)
    _same_dtype(op, dtype, "xs",
                (("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh), ("b", b)))
    if xs.ndim != 3:
        fix = ""
        if xs.ndim == 2:
            fix = (f"got a 2-D array (batch, steps) = {_shape(xs.shape)}; a sequence batch is "
                   "(batch, steps, features): use xs[..., None] for one feature")
        elif xs.ndim == 1:
            fix = "one sequence of one feature is xs[None, :, None]"
        _ndim(op, "xs", xs, 3, "(batch, steps, in)", fix)
    batch, steps, n_in = xs.shape
    hidden = _check_lstm_weights(op, n_in, w_ih, w_hh, b)
    if h0 is not None:
        _expect(op, "h0", h0, (batch, hidden), "(batch, H)", "or pass None for zeros")
    if c0 is not None:
        _expect(op, "c0", c0, (batch, hidden), "(batch, H)", "or pass None for zeros")


def lstm(xs, h0, c0, w_ih, w_hh, b, activation="tanh", recurrent_activation="sigmoid",
         forget_bias=0.0, lengths=None, *, backend=None):
    """The whole sequence: hs (batch, steps, H), hT, cT, ctx. h0/c0 None means zeros.
    lengths (batch,) of ints: the valid steps of each sequence (None: all)."""
    op = "lstm"
    be = LOADED.get(backend)            # as in dense()
    if be is None:
        be = resolve(backend, op, xs, w_hh)
    native = be.NATIVE_ARRAY
    if not (type(xs) is native and type(w_ih) is native and type(w_hh) is native
            and type(b) is native and (h0 is None or type(h0) is native)
            and (c0 is None or type(c0) is native)):
        xs = be.asarray(xs)
        h0 = None if h0 is None else be.asarray(h0)
        c0 = None if c0 is None else be.asarray(c0)
        w_ih, w_hh, b = be.asarray(w_ih), be.asarray(w_hh), be.asarray(b)
    act, rec, forget_bias = _lstm_options(op, activation, recurrent_activation, forget_bias,
                                          w_hh)
    shape = getattr(xs, "shape", ())
    if not (len(shape) == 3
            and _lstm_fast_ok(xs.dtype, shape[0], shape[2], h0, c0, w_ih, w_hh, b)):
        if getattr(w_hh, "ndim", 0) == 3:
            return _lstm_stack(be, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths)
        _check_lstm(op, xs, h0, c0, w_ih, w_hh, b)
    if h0 is None or c0 is None:
        state = (xs.shape[0], w_hh.shape[0])
        if h0 is None:
            h0 = be.zeros(state, xs.dtype)
        if c0 is None:
            c0 = be.zeros(state, xs.dtype)
    if lengths is not None:
        return _lstm_with_lengths(be, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths)
    try:
        hs, hT, cT, saved = be.lstm_forward(xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias)
    except Exception as error:
        if not _is_out_of_memory(error):
            raise
        _out_of_memory(op, be, error, (("xs", xs), ("w_ih", w_ih), ("w_hh", w_hh)))
    return hs, hT, cT, Context((op, be, saved, (hs, hT, cT), xs.dtype))


def lstm_backward(ctx, dhs, dhT=None, dcT=None):
    """dxs, dh0, dc0, dw_ih, dw_hh, db (dh0/dc0 also when h0/c0 were None)."""
    op = "lstm_backward"
    if type(ctx) is not Context or ctx[0] != "lstm":
        if type(ctx) is Context and ctx[0] in ("lstm stack", "lstm lengths"):
            return _lstm_stack_backward(op, ctx, dhs, dhT, dcT)
        _wrong_context(op, ctx, "lstm")
    try:
        return ctx[1].lstm_backward(ctx[2], *_output_gradients(op, ctx, ("dhs", "dhT", "dcT"),
                                                               (dhs, dhT, dcT)))
    except Exception as error:
        _backward_failed(op, ctx, error)


def _lstm_stack_backward(op, ctx, dhs, dhT, dcT):
    be = ctx[1]
    grads = _output_gradients(op, ctx, ("dhs", "dhT", "dcT"), (dhs, dhT, dcT))
    one_model = ctx[0] == "lstm lengths"
    if one_model:
        grads = [g[None] for g in grads]
    try:
        results = be.stack_lstm_backward(ctx[2], *grads)
    except Exception as error:
        _backward_failed(op, ctx, error)
    return tuple(r[0] for r in results) if one_model else results
