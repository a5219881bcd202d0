"""The numba-cpu backend: fused, compiled CPU kernels (kernels/numba_cpu, @njit).

Same functions and results as the reference, tinynet/backends/numpy_ref.py. Arguments arrive
validated by tinynet.ops, so the only work here is: make inputs C-contiguous where they are
not (np.ascontiguousarray returns a contiguous array itself), allocate outputs,
pick the tiny-size path (one compiled loop nest) or the BLAS path (NumPy GEMMs around a
compiled epilogue/prologue) by size, and call the kernel.

Kernels are compiled per float type on first use and cached on disk (numba cache=True: in
kernels/numba_cpu/__pycache__, or, where that is read-only, Numba's user-wide cache
directory, ~/.cache/numba; NUMBA_CACHE_DIR overrides both), so only a machine's first use
pays the compile. Where no directory is writable, kernels compile without the cache, with a
warning.
BLAS is called from here through NumPy rather than np.dot inside @njit, which would make
SciPy a dependency (Numba takes its BLAS from scipy.linalg.cython_blas).

Importing this module imports Numba; `import tinynet` does not import it (the registry in
tinynet/_dispatch.py imports backends on first use).
"""

import functools
import types
import warnings

import numba
import numpy as np

from tinynet.backends import numpy_ref
from tinynet._activations import CODES
from tinynet.kernels.numba_cpu import COMPILE_OPTIONS, LANES, MAX_LANES
from tinynet.kernels.numba_cpu import dense as dense_kernels
from tinynet.kernels.numba_cpu import lstm as lstm_kernels
from tinynet.kernels.numba_cpu import lstm_cell as cell_kernels
from tinynet.kernels.numba_cpu import stack_dense as stack_dense_kernels
from tinynet.kernels.numba_cpu import stack_lstm as stack_lstm_kernels

NAME = "numba-cpu"
IS_GPU = False
# arrays of this type need no asarray call (tinynet.ops skips it)
NATIVE_ARRAY = np.ndarray


def unavailable_reason():
    return None     # usable wherever Numba imports; where it does not, importing this fails


asarray = numpy_ref.host_asarray(NAME)


def to_numpy(a):
    return a


# --- size crossovers: tiny loops below, BLAS above ---------------------------------------
# From `python bench/numba_cpu_tuning.py --crossover` (forward + backward through tinynet.ops,
# tiny loops against the BLAS path); MACs = multiply-adds of the op's GEMMs. At one or two
# rows the GEMMs are matrix-vector products, where BLAS gains nothing: loops at any size.
DENSE_LOOPS_MAX_MACS = 8192
LOOPS_MAX_ROWS = 2            # at most this many rows: loops at any size (dense, cell)
# lstm_cell: MACs = batch * (in + H) * 4H
CELL_LOOPS_MAX_MACS = 32768
# lstm: the input side in the loop, or as one GEMM over all steps (the recurrent part is the
# same loop in both); MACs = batch * steps * in * 4H. With few inputs the loop wins at any size.
LSTM_LOOPS_MAX_MACS = 65536
LSTM_PROJECT_MIN_IN = 8
# A stacked LSTM (or one model's with lengths) runs model by model in the single-model loop
# kernel, the models on the cores (_stack_lstm_route), when it has few (model, batch row)
# pairs: a block of the stack kernel's SIMD lanes costs about as much as H / 2 single-model
# runs of one row, so it wins up to H / 2 pairs. From H = PER_MODEL_MIN_HIDDEN on, the single-model kernel's loops over 4H gate
# columns fill the SIMD lanes themselves, and it wins while there are at most 1.5 H models,
# whatever the batch (`python bench/numba_cpu_tuning.py --stack-lstm`).
PER_MODEL_MIN_HIDDEN = 32


# --- "auto": numba-cpu or numpy, per op and size ----------------------------------------
# From the same script's tables (numba-cpu / numpy time) for the single-model ops, and from
# side-by-side runs of stacked ops through tinynet.ops for the stacks (the numbers are in
# the commit that set AUTO_STACK_*). dense: never clearly slower (above the loops,
# the same GEMMs as numpy with a fused epilogue), so always numba-cpu. lstm_cell: numpy wins
# from batch 64 (its vectorized exp/tanh over the whole gate array). lstm: numpy wins once
# batch and H are both large (a multi-threaded BLAS call per step); up to H = 16 numba-cpu
# wins at every batch measured. Stacks: numba-cpu's models-innermost loops win while each
# model is tiny; above that NumPy's batched matmuls (BLAS per model) win. A stacked LSTM
# (whole sequences) with a larger H follows the single-model rule, numba-cpu up to a batch
# of AUTO_LSTM_MAX_BATCH: there it was faster in every case measured, H up to 64, M up to 256
# (`python bench/numba_cpu_tuning.py --stack-lstm`, numpy column).
AUTO_CELL_MAX_BATCH = 16
AUTO_LSTM_MAX_BATCH = 8
AUTO_LSTM_ANY_BATCH_MAX_HIDDEN = 16
AUTO_STACK_DENSE_MAX_MACS = 4096        # batch * in * out of one model
AUTO_STACK_LSTM_MAX_HIDDEN = 16


def prefer(op, first_array, w_hh=None, w=None):
    """Whether numba-cpu beats numpy for forward op `op` ("dense", "lstm_cell", "lstm") with
    this first argument (and, for the LSTM ops, these recurrent weights (H, 4H); for a
    stacked dense, its weights w (M, in, out)); the backward runs where the forward ran."""
    shape = getattr(first_array, "shape", None)
    if op == "dense":
        if shape is not None and len(shape) == 3 and w is not None:     # a stack
            w_shape = getattr(w, "shape", ())
            return len(w_shape) != 3 or (
                shape[1] * w_shape[1] * w_shape[2] <= AUTO_STACK_DENSE_MAX_MACS)
        return True
    if not shape:
        return True             # not an array yet or 0-D: ops reports the error either way
    if len(shape) == (4 if op == "lstm" else 3):            # a stack: x (M, batch, ...)
        recurrent = getattr(w_hh, "shape", ())
        if len(recurrent) != 3 or recurrent[1] <= AUTO_STACK_LSTM_MAX_HIDDEN:
            return True
        return op == "lstm" and shape[1] <= AUTO_LSTM_MAX_BATCH
    if op == "lstm_cell":
        return shape[0] <= AUTO_CELL_MAX_BATCH
    recurrent = getattr(w_hh, "shape", ())
    return shape[0] <= AUTO_LSTM_MAX_BATCH or (
        len(recurrent) == 2 and recurrent[0] <= AUTO_LSTM_ANY_BATCH_MAX_HIDDEN)


# --- compiled kernels, per float type -----------------------------------------------------

# name -> (module, function, whether it runs prange loops on the cores)
_SOURCES = {
    "dense_forward_loops": (dense_kernels, dense_kernels.forward_loops, False),
    "dense_forward_epilogue": (dense_kernels, dense_kernels.forward_epilogue, False),
    "dense_sigmoid_input": (dense_kernels, dense_kernels.sigmoid_input, False),
    "dense_sigmoid_finish": (dense_kernels, dense_kernels.sigmoid_finish, False),
    "dense_backward_loops": (dense_kernels, dense_kernels.backward_loops, False),
    "dense_backward_prologue": (dense_kernels, dense_kernels.backward_prologue, False),
    "cell_forward_loops": (cell_kernels, cell_kernels.forward_loops, False),
    "cell_forward_gates": (cell_kernels, cell_kernels.forward_gates, False),
    "cell_backward_loops": (cell_kernels, cell_kernels.backward_loops, False),
    "cell_backward_gates": (cell_kernels, cell_kernels.backward_gates, False),
    "lstm_forward": (lstm_kernels, lstm_kernels.forward, False),
    "lstm_backward": (lstm_kernels, lstm_kernels.backward, False),
}
# The stack kernels twice: with prange on the cores, and on the calling thread alone
# ("_one_thread") for a call with one item of work, where a parallel launch would only add
# the cost of waking the other threads (and, on a busy machine, of waiting for them).
for _name, _module, _function in (
        ("stack_dense_forward", stack_dense_kernels, stack_dense_kernels.forward),
        ("stack_dense_backward", stack_dense_kernels, stack_dense_kernels.backward),
        ("stack_lstm_forward", stack_lstm_kernels, stack_lstm_kernels.forward),
        ("stack_lstm_backward", stack_lstm_kernels, stack_lstm_kernels.backward),
        ("lstm_forward_models", lstm_kernels, lstm_kernels.forward_models),
        ("lstm_backward_models", lstm_kernels, lstm_kernels.backward_models)):
    _SOURCES[_name] = (_module, _function, True)
    _SOURCES[_name + "_one_thread"] = (_module, _function, False)


def _renamed(function, suffix):
    """`function` under its name plus `suffix`: Numba's disk cache keys a compiled function
    by its qualified name and signature, not by its compile options, so the one-thread twin
    of a parallel kernel needs a name of its own."""
    twin = types.FunctionType(function.__code__, function.__globals__,
                              function.__name__ + suffix, function.__defaults__,
                              function.__closure__)
    twin.__qualname__ = function.__qualname__ + suffix
    twin.__module__ = function.__module__
    return twin


class _Kernels:
    """The kernels of one float type, each compiled (or loaded from the disk cache) on first
    use; after that, a plain attribute holding the compiled function's entry point.

    The entry point is what Numba's dispatcher calls once it has matched the argument types to
    the signature; calling it directly skips that matching (a sizeable part of a call's cost
    at the tiny sizes). That is safe only because every call here passes exactly the declared
    types: tinynet.ops has checked every dtype and ndim, and this module makes the inputs
    C-contiguous and allocates the outputs (the stack kernels take any strides). Given an
    array of another layout, an entry point would read it wrongly without an error, so these
    functions must only be reached through tinynet.ops (tests/test_numba_cpu.py checks views
    of every layout through it).
    """

    def __init__(self, float_type):
        self._float_type = float_type

    def __getattr__(self, name):
        if name not in _SOURCES:
            raise AttributeError(name)
        module, function, parallel = _SOURCES[name]
        signature = module.signatures(self._float_type)[function]
        options = dict(COMPILE_OPTIONS, parallel=parallel)
        if name.endswith("_one_thread"):
            function = _renamed(function, "_one_thread")
        try:
            compiled = numba.njit([signature], cache=True, **options)(function)
        except RuntimeError as error:     # "cannot cache function ...: no locator available"
            if "cannot cache" not in str(error):
                raise
            warnings.warn("tinynet numba-cpu: no writable directory for Numba's disk cache "
                          "(beside the kernels, nor the user cache directory), so every "
                          "process compiles its kernels again: set NUMBA_CACHE_DIR to a "
                          "writable directory", RuntimeWarning, stacklevel=2)
            compiled = numba.njit([signature], **options)(function)
        entry_point = compiled.overloads[compiled.signatures[0]].entry_point
        setattr(self, name, entry_point)
        return entry_point


_KERNELS = {np.dtype(np.float32): _Kernels(numba.float32),
            np.dtype(np.float64): _Kernels(numba.float64)}


def _read_only_empty(dtype):
    a = np.empty(0, dtype)
    a.flags.writeable = False
    return a


_NO_BIAS = {dtype: _read_only_empty(dtype) for dtype in _KERNELS}
# db for a forward without bias: the kernels sum nothing into a (0,) array, and writing
# nothing, one shared array serves every thread
_NO_BIAS_GRAD = {dtype: np.empty(0, dtype) for dtype in _KERNELS}
# the single-model LSTM kernel's lengths argument for "every row runs all steps"
_ALL_STEPS = _read_only_empty(np.int32)

_contiguous = np.ascontiguousarray

_SIGMOID = CODES["sigmoid"]
_TANH = CODES["tanh"]


# --- dense ---------------------------------------------------------------------------

def _activate_in_place(kernels, z, bias, code):
    """z (batch, out) = x @ w from BLAS becomes act(z + b), in place: linear and relu in one
    compiled pass; tanh and sigmoid through NumPy's vectorized np.tanh / np.exp, which beat
    compiled code calling the scalar library functions per element."""
    if code == _TANH:
        if bias.shape[0]:
            np.add(z, bias, out=z)
        np.tanh(z, out=z)
    elif code == _SIGMOID:
        e = np.empty_like(z)
        kernels.dense_sigmoid_input(z, bias, e)
        np.exp(e, out=e)
        kernels.dense_sigmoid_finish(z, e)
    else:
        kernels.dense_forward_epilogue(z, bias, code)


def dense_forward(x, w, b, activation):
    # x (batch, in), w (in, out), b (out,) or None -> y (batch, out)
    x = _contiguous(x)
    w = _contiguous(w)
    dtype = x.dtype
    kernels = _KERNELS[dtype]
    bias = _NO_BIAS[dtype] if b is None else _contiguous(b)
    code = CODES[activation]
    x_shape = x.shape
    w_shape = w.shape
    batch = x_shape[0]
    loops = batch <= LOOPS_MAX_ROWS or batch * x_shape[1] * w_shape[1] <= DENSE_LOOPS_MAX_MACS
    if loops:
        y = np.empty((batch, w_shape[1]), dtype)
        kernels.dense_forward_loops(x, w, bias, code, y)
    else:
        y = x @ w
        _activate_in_place(kernels, y, bias, code)
    # what the backward needs, with the shapes read, the path and the kernels chosen here
    return y, (x, w, b is not None, code, y, kernels, loops, x_shape, w_shape)


def dense_backward(saved, dy):
    x, w, has_bias, code, y, kernels, loops, x_shape, w_shape = saved
    dy = _contiguous(dy)
    dtype = x.dtype
    db = np.empty(w_shape[1], dtype) if has_bias else _NO_BIAS_GRAD[dtype]
    if loops:
        dx = np.empty(x_shape, dtype)
        dw = np.empty(w_shape, dtype)
        kernels.dense_backward_loops(x, w, y, dy, code, dx, dw, db)
    else:
        dz = np.empty(y.shape, dtype)
        kernels.dense_backward_prologue(y, dy, code, dz, db)
        dx = dz @ w.T
        dw = x.T @ dz
    return dx, dw, (db if has_bias else None)


# --- LSTM cell -----------------------------------------------------------------------

def lstm_cell_forward(x, h, c, w_ih, w_hh, b, activation, recurrent_activation, forget_bias):
    # x (batch, in), h and c (batch, H), w_ih (in, 4H), w_hh (H, 4H), b (4H,)
    x, h, c = _contiguous(x), _contiguous(h), _contiguous(c)
    w_ih, w_hh, b = _contiguous(w_ih), _contiguous(w_hh), _contiguous(b)
    dtype = x.dtype
    act, rec = CODES[activation], CODES[recurrent_activation]
    batch, n_in = x.shape
    hidden = h.shape[1]
    h1 = np.empty((batch, hidden), dtype)
    c1 = np.empty((batch, hidden), dtype)
    gates = np.empty((batch, 5 * hidden), dtype)          # i, f, g, o, a(c1)
    macs = batch * (n_in + hidden) * 4 * hidden
    if batch <= LOOPS_MAX_ROWS or macs <= CELL_LOOPS_MAX_MACS:
        _KERNELS[dtype].cell_forward_loops(x, h, c, w_ih, w_hh, b, act, rec, forget_bias,
                                           h1, c1, gates)
    else:
        z = x @ w_ih
        z += h @ w_hh
        _KERNELS[dtype].cell_forward_gates(z, c, b, act, rec, forget_bias, h1, c1, gates)
    return h1, c1, (x, h, c, w_ih, w_hh, gates, act, rec)


def lstm_cell_backward(saved, dh1, dc1):
    x, h, c, w_ih, w_hh, gates, act, rec = saved
    dh1, dc1 = _contiguous(dh1), _contiguous(dc1)
    dtype = x.dtype
    batch, n_in = x.shape
    hidden = h.shape[1]
    dc = np.empty((batch, hidden), dtype)
    db = np.empty(4 * hidden, dtype)
    macs = batch * (n_in + hidden) * 4 * hidden
    if batch <= LOOPS_MAX_ROWS or macs <= CELL_LOOPS_MAX_MACS:
        dx = np.empty((batch, n_in), dtype)
        dh = np.empty((batch, hidden), dtype)
        dw_ih = np.empty((n_in, 4 * hidden), dtype)
        dw_hh = np.empty((hidden, 4 * hidden), dtype)
        _KERNELS[dtype].cell_backward_loops(x, h, c, w_ih, w_hh, gates, dh1, dc1, act, rec,
                                            dx, dh, dc, dw_ih, dw_hh, db)
        return dx, dh, dc, dw_ih, dw_hh, db
    dz = np.empty((batch, 4 * hidden), dtype)
    _KERNELS[dtype].cell_backward_gates(gates, c, dh1, dc1, act, rec, dz, dc, db)
    return dz @ w_ih.T, dz @ w_hh.T, dc, x.T @ dz, h.T @ dz, db


# --- LSTM over a whole sequence ------------------------------------------------------

def lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation, forget_bias):
    # xs (batch, steps, in), h0 and c0 (batch, H) -> hs (batch, steps, H)
    xs, h0, c0 = _contiguous(xs), _contiguous(h0), _contiguous(c0)
    w_ih, w_hh, b = _contiguous(w_ih), _contiguous(w_hh), _contiguous(b)
    dtype = xs.dtype
    batch, steps, n_in = xs.shape
    hidden = w_hh.shape[0]
    hs = np.empty((batch, steps, hidden), dtype)
    cs = np.empty((batch, steps, hidden), dtype)
    gates = np.empty((batch, steps, 5 * hidden), dtype)     # i, f, g, o, a(c) per step
    hT = np.empty((batch, hidden), dtype)
    cT = np.empty((batch, hidden), dtype)
    projected = (n_in >= LSTM_PROJECT_MIN_IN
                 and batch * steps * n_in * 4 * hidden > LSTM_LOOPS_MAX_MACS)
    # xs @ w_ih (batch, steps, 4H) as one GEMM, or xs itself for the loop to project
    inputs = ((xs.reshape(batch * steps, n_in) @ w_ih).reshape(batch, steps, 4 * hidden)
              if projected else xs)
    _KERNELS[dtype].lstm_forward(inputs, projected, h0, c0, w_ih, w_hh, b,
                                 CODES[activation], CODES[recurrent_activation], forget_bias,
                                 _ALL_STEPS, hs, cs, gates, hT, cT)
    saved = (xs, h0, c0, w_ih, w_hh, hs, cs, gates, CODES[activation],
             CODES[recurrent_activation], projected)
    return hs, hT, cT, saved


def lstm_backward(saved, dhs, dhT, dcT):
    xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec, projected = saved
    dtype = xs.dtype
    batch, steps, n_in = xs.shape
    hidden = w_hh.shape[0]
    dhs, dhT, dcT = _contiguous(dhs), _contiguous(dhT), _contiguous(dcT)
    dh0 = np.empty((batch, hidden), dtype)
    dc0 = np.empty((batch, hidden), dtype)
    dw_ih = np.empty((n_in, 4 * hidden), dtype)          # written by the loop unless projected
    dw_hh = np.empty((hidden, 4 * hidden), dtype)
    db = np.empty(4 * hidden, dtype)
    # dxs, or, when projected, dz (batch, steps, 4H) for the BLAS GEMMs of the input side
    dxs_or_dz = np.empty((batch, steps, 4 * hidden if projected else n_in), dtype)
    _KERNELS[dtype].lstm_backward(xs, projected, h0, c0, w_ih, w_hh, hs, cs, gates, dhs,
                                  dhT, dcT, act, rec, _ALL_STEPS, dxs_or_dz, dh0, dc0, dw_ih,
                                  dw_hh, db)
    if not projected:
        return dxs_or_dz, dh0, dc0, dw_ih, dw_hh, db
    dz = dxs_or_dz.reshape(batch * steps, 4 * hidden)
    dxs = (dz @ w_ih.T).reshape(batch, steps, n_in)
    dw_ih = xs.reshape(batch * steps, n_in).T @ dz
    return dxs, dh0, dc0, dw_ih, dw_hh, db


# --- stacks of M models: models innermost, blocks of models on the cores -----------------
# The stack kernels take inputs of any strides (broadcast views included) and read them in
# place: nothing here copies an input.

zeros = numpy_ref.zeros


@functools.lru_cache(maxsize=64)
def stack_zeros(shape, dtype):
    """What tinynet.ops fills a None input of a stack op with: a read-only array of zeros with
    every stride 0 (one element of memory, whatever the shape). The stack kernels read it in
    place, the per-model route makes it contiguous (_c_layout), and the stack LSTM backward
    skips a dhs that is all zero (_all_zero). Read-only, so one array per shape and dtype
    serves every call (a training loop asks for the same few on every update)."""
    return np.ndarray(shape, dtype, buffer=bytes(np.dtype(dtype).itemsize),
                      strides=(0,) * len(shape))


def _all_zero(a):
    """Whether every element of `a` is zero, known without reading it: every stride 0 (each
    element is the first) and the first element 0."""
    return not any(a.strides) and (a.size == 0 or a.item(0) == 0)


def _c_layout(a):
    """a C-contiguous, as the single-model kernels read it: an all-zero stride-0 array
    (stack_zeros) as new zeros, faster than copying it element by element."""
    if a.flags.c_contiguous:
        return a
    return np.zeros(a.shape, a.dtype) if _all_zero(a) else _contiguous(a)


def _lanes(models):
    """Models per block: a multiple of LANES up to MAX_LANES, small enough that every thread
    gets a block. (The thread count is Numba's configured one: numba.get_num_threads() takes
    a process lock on every call.)"""
    per_thread = -(-models // numba.config.NUMBA_NUM_THREADS)
    return min(MAX_LANES, LANES * max(1, -(-per_thread // LANES)))


def _stack_kernel(dtype, name, items):
    """Stack kernel `name` for a call with `items` independent items of work (what its prange
    loop runs over): the one-thread twin when there is a single item."""
    return getattr(_KERNELS[dtype], name if items > 1 else name + "_one_thread")


def stack_dense_forward(x, w, b, activation):
    # x (M, batch, in), w (M, in, out), b (M, out) or None -> y (M, batch, out)
    models, batch, _ = x.shape
    dtype = x.dtype
    bias = np.empty((models, 0), dtype) if b is None else b
    code = CODES[activation]
    y = np.empty((models, batch, w.shape[2]), dtype)
    lanes = _lanes(models)
    _stack_kernel(dtype, "stack_dense_forward", -(-models // lanes))(x, w, bias, code, lanes, y)
    return y, (x, w, b is not None, code, y)


def stack_dense_backward(saved, dy):
    x, w, has_bias, code, y = saved
    dtype = x.dtype
    models = x.shape[0]
    dx = np.empty(x.shape, dtype)
    dw = np.empty(w.shape, dtype)
    db = np.empty((models, w.shape[2] if has_bias else 0), dtype)
    lanes = _lanes(models)
    _stack_kernel(dtype, "stack_dense_backward", -(-models // lanes))(x, w, y, dy, code, lanes,
                                                                      dx, dw, db)
    return dx, dw, (db if has_bias else None)


def _stack_lstm_route(models, batch, steps, n_in, hidden):
    """How a stacked LSTM runs: "per model" (the single-model kernel, model by model),
    "rows as models" (each (model, batch row) pair in a SIMD lane of its own) or "lanes"
    (the models in SIMD lanes, their rows in turn)."""
    if _per_model(models, batch, hidden):
        return "per model"
    if _rows_as_models(models, batch, steps, n_in, hidden):
        return "rows as models"
    return "lanes"


def _per_model(models, batch, hidden):
    """Whether a stacked LSTM runs model by model (PER_MODEL_MIN_HIDDEN says why)."""
    return 2 * models * batch <= hidden or (
        hidden >= PER_MODEL_MIN_HIDDEN and 2 * models <= 3 * hidden)


def _rows_as_models(models, batch, steps, n_in, hidden):
    """Whether a stacked LSTM runs each (model, batch row) pair as a model of its own: the
    kernels put models in SIMD lanes and run a block's rows in turn, so a stack of fewer
    than MAX_LANES models fills more lanes and more blocks this way when it has more than
    one row. Each pair then holds a copy of its
    model's weights, so only while that copy is no larger than what the forward saves per
    pair anyway (the input and 7H values a step): at most twice the memory."""
    weights = (n_in + hidden + 1) * 4 * hidden
    return batch > 1 and models < MAX_LANES and weights <= steps * (n_in + 7 * hidden)


def stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation,
                       forget_bias, lengths):
    # xs (M, batch, steps, in), h0, c0 (M, batch, H), forget_bias (M,), lengths (M, batch)
    # int32 -> hs (M, batch, steps, H), hT, cT (M, batch, H). What is saved starts with the
    # backward that reads it.
    models, batch, steps, n_in = xs.shape
    hidden = w_hh.shape[1]
    route = _stack_lstm_route(models, batch, steps, n_in, hidden)
    if route == "per model":
        return _per_model_lstm_forward(xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths,
                                       activation, recurrent_activation)
    if route == "rows as models":
        pairs = models * batch              # pair p = model p // batch, row p % batch
        hs, hT, cT, saved = _stack_lstm_forward(
            xs.reshape(pairs, 1, steps, n_in), h0.reshape(pairs, 1, hidden),
            c0.reshape(pairs, 1, hidden), np.repeat(w_ih, batch, axis=0),
            np.repeat(w_hh, batch, axis=0), np.repeat(b, batch, axis=0),
            np.repeat(forget_bias, batch), lengths.reshape(pairs, 1), activation,
            recurrent_activation)
        return (hs.reshape(models, batch, steps, hidden), hT.reshape(models, batch, hidden),
                cT.reshape(models, batch, hidden),
                (_rows_as_models_lstm_backward, (saved, models, batch)))
    hs, hT, cT, saved = _stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths,
                                            activation, recurrent_activation)
    return hs, hT, cT, (_stack_lstm_backward, saved)


def _per_model_lstm_forward(xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths, activation,
                            recurrent_activation):
    """Model by model (the models on the cores), the single-model loop kernel with each
    model's lengths and forget_bias (kernels/numba_cpu/lstm.py forward_models)."""
    models, batch, steps, _ = xs.shape
    hidden = w_hh.shape[1]
    dtype = xs.dtype
    xs, w_ih, w_hh, b, forget_bias, lengths = (
        _contiguous(a) for a in (xs, w_ih, w_hh, b, forget_bias, lengths))
    h0, c0 = _c_layout(h0), _c_layout(c0)
    act, rec = CODES[activation], CODES[recurrent_activation]
    hs = np.empty((models, batch, steps, hidden), dtype)
    cs = np.empty((models, batch, steps, hidden), dtype)
    gates = np.empty((models, batch, steps, 5 * hidden), dtype)     # i, f, g, o, a(c)
    hT = np.empty((models, batch, hidden), dtype)
    cT = np.empty((models, batch, hidden), dtype)
    _stack_kernel(dtype, "lstm_forward_models", models)(
        xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, lengths, hs, cs, gates, hT, cT)
    return hs, hT, cT, (_per_model_lstm_backward,
                        (xs, h0, c0, w_ih, w_hh, lengths, hs, cs, gates, act, rec))


def _stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths, activation,
                        recurrent_activation):
    models, batch, steps, n_in = xs.shape
    hidden = w_hh.shape[1]
    dtype = xs.dtype
    lanes = LANES                  # the kernel's SIMD vectors: one block of models each
    blocks = -(-models // lanes)
    hs = np.empty((models, batch, steps, hidden), dtype)
    hT = np.empty((models, batch, hidden), dtype)
    cT = np.empty((models, batch, hidden), dtype)
    # saved for the backward, in the kernel's layout (kernels/numba_cpu/stack_lstm.py)
    xs_lanes = np.empty((blocks, batch, steps, n_in, lanes), dtype)
    h_lanes = np.empty((blocks, batch, steps + 1, hidden, lanes), dtype)
    c_lanes = np.empty((blocks, batch, steps + 1, hidden, lanes), dtype)
    gates = np.empty((blocks, batch, steps, 5 * hidden, lanes), dtype)
    act, rec = CODES[activation], CODES[recurrent_activation]
    _stack_kernel(dtype, "stack_lstm_forward", blocks * batch)(
        xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths, act, rec, hs, hT, cT, xs_lanes,
        h_lanes, c_lanes, gates)
    return hs, hT, cT, (w_ih, w_hh, lengths, xs_lanes, h_lanes, c_lanes, gates, act, rec,
                        xs.shape)


def stack_lstm_backward(saved, dhs, dhT, dcT):
    backward, saved = saved
    return backward(saved, dhs, dhT, dcT)


def _per_model_lstm_backward(saved, dhs, dhT, dcT):
    xs, h0, c0, w_ih, w_hh, lengths, hs, cs, gates, act, rec = saved
    models, batch, steps, n_in = xs.shape
    hidden = hs.shape[3]
    dtype = hs.dtype
    dxs = np.empty((models, batch, steps, n_in), dtype)
    dh0 = np.empty((models, batch, hidden), dtype)
    dc0 = np.empty((models, batch, hidden), dtype)
    dw_ih = np.empty((models, n_in, 4 * hidden), dtype)
    dw_hh = np.empty((models, hidden, 4 * hidden), dtype)
    db = np.empty((models, 4 * hidden), dtype)
    _stack_kernel(dtype, "lstm_backward_models", models)(
        xs, h0, c0, w_ih, w_hh, hs, cs, gates, _c_layout(dhs), _c_layout(dhT), _c_layout(dcT),
        act, rec, lengths, dxs, dh0, dc0, dw_ih, dw_hh, db)
    return dxs, dh0, dc0, dw_ih, dw_hh, db


def _rows_as_models_lstm_backward(saved, dhs, dhT, dcT):
    saved, models, batch = saved
    pairs, _, steps, n_in = saved[-1]
    hidden = dhT.shape[2]
    dxs, dh0, dc0, dw_ih, dw_hh, db = _stack_lstm_backward(
        saved, dhs.reshape(pairs, 1, steps, hidden), dhT.reshape(pairs, 1, hidden),
        dcT.reshape(pairs, 1, hidden))
    return (dxs.reshape(models, batch, steps, n_in), dh0.reshape(models, batch, hidden),
            dc0.reshape(models, batch, hidden),
            dw_ih.reshape(models, batch, n_in, 4 * hidden).sum(axis=1),
            dw_hh.reshape(models, batch, hidden, 4 * hidden).sum(axis=1),
            db.reshape(models, batch, 4 * hidden).sum(axis=1))


def _stack_lstm_backward(saved, dhs, dhT, dcT):
    w_ih, w_hh, lengths, xs_lanes, h_lanes, c_lanes, gates, act, rec, xs_shape = saved
    models, batch, _, n_in = xs_shape
    hidden = w_hh.shape[1]
    dtype = gates.dtype
    dxs = np.empty(xs_shape, dtype)
    dh0 = np.empty((models, batch, hidden), dtype)
    dc0 = np.empty((models, batch, hidden), dtype)
    dw_ih = np.empty(w_ih.shape, dtype)
    dw_hh = np.empty(w_hh.shape, dtype)
    db = np.empty((models, 4 * hidden), dtype)
    _stack_kernel(dtype, "stack_lstm_backward", gates.shape[0])(
        w_ih, w_hh, lengths, xs_lanes, h_lanes, c_lanes, gates, dhs, _all_zero(dhs), dhT, dcT,
        act, rec, dxs, dh0, dc0, dw_ih, dw_hh, db)
    return dxs, dh0, dc0, dw_ih, dw_hh, db
