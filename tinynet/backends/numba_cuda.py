"""The numba-cuda backend: every op as fused Numba-CUDA kernels (kernels/numba_cuda/).

Arrays: on a GPU the device container is CuPy (kernels take CuPy arrays through
__cuda_array_interface__). `asarray` copies NumPy inputs to the device and takes anything
with __cuda_array_interface__ or a CUDA __dlpack__ without a copy; non-contiguous inputs
get a C-contiguous copy, because every kernel is compiled for C-contiguous arrays.
Under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) everything is NumPy and the same
kernels run as Python on the CPU.

Which kernels run (each kernel file's header says what it computes and how it launches):
  dense      dense.dense_forward; backward dense.dense_backward_dx and
             dense.dense_backward_dw (+ partials.sum_partials when the batch is split).
  lstm       H <= lstm.max_hidden(dtype) (64 float32, 32 float64): one persistent launch
             forward (lstm.lstm_forward); backward one launch (lstm.lstm_backward) +
             partials.sum_partials when the batch spans more than one block.
             Larger H, per step (the loop in tinynet/backends/_per_step.py, shared with
             cupy): lstm_cell.lstm_cell_forward; backward per step
             lstm_cell.lstm_cell_backward_dz and the dh GEMM (dense_backward_dx), then
             dxs, dw_ih, db, dw_hh as GEMMs over all steps (dense.py).
  lstm_cell  none of its own: tinynet.ops runs it as a sequence of one step (lstm's kernels).
Stacks of M models (the stack_* functions):
  dense      stack_dense.py: dense.py's tiles with a models axis, the dw chunks summed by
             partials.sum_partials.
  lstm       stack_lstm.stack_lstm_forward / stack_lstm_backward, one thread per (model,
             batch row), one launch per direction with per-row lengths; the backward's
             per-row weight gradients are summed over the batch by partials.sum_partials.
  lstm_cell  none of its own: tinynet.ops runs it as the stacked lstm of one step.
Compiled kernels are cached per (kernel, dtype, H of the persistent kernels): the first
call with a new dtype or H compiles, later calls only launch. Kernels launch on CuPy's
current stream, so they are ordered with the CuPy work around them.
"""

import functools
import threading

import numpy as np
from numba import cuda, types

from tinynet._activations import CODES
from tinynet.backends import _per_step
from tinynet.kernels.numba_cuda import (dense, lstm, lstm_cell, partials, stack_dense,
                                        stack_lstm, tiles)

NAME = "numba-cuda"
IS_GPU = True
# None: every array goes through asarray
NATIVE_ARRAY = None
SIMULATED = bool(cuda.config.ENABLE_CUDASIM)

if SIMULATED:
    xp = np
else:
    try:
        import cupy as xp
    except ImportError:
        xp = None


def unavailable_reason():
    """None if a kernel compiles and runs here, else why not. Runs when the backend is first
    used (tinynet._dispatch), not at import."""
    if SIMULATED:
        return None
    if not cuda.is_available():
        return "no CUDA GPU found (numba.cuda.is_available() is False)"
    if xp is None:
        return "cupy is not installed: pip install 'tinynet[gpu]'"
    try:
        _compile_and_launch_one()
    except Exception as error:    # whatever broke, it is the reason; nothing else would run
        return (f"numba-cuda cannot compile and launch a kernel ({type(error).__name__}: "
                f"{error}); it needs the CUDA toolkit's libNVVM: install the toolkit and set "
                "CUDA_HOME, or pip install 'tinynet[gpu]'")
    return None


def _compile_and_launch_one():
    """Compile (through libNVVM) and launch one tiny kernel, and check what it wrote."""
    def add_one(out):
        out[0] += 1

    out = xp.zeros(1, np.float32)
    _launch(cuda.jit(types.void(tiles.c_array(np.float32, 1)))(add_one), (1,), 1, out)
    if float(out[0]) != 1.0:
        raise RuntimeError(f"the test kernel wrote {float(out[0])} where 1.0 was expected")


_DLPACK_CUDA = 2    # DLDeviceType kDLCUDA


def asarray(a):
    """A C-contiguous array of this backend (see the module docstring); dtypes unchanged."""
    if SIMULATED:
        if hasattr(a, "__cuda_array_interface__"):
            raise ValueError("numba-cuda runs under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) "
                             "and takes host arrays, got a GPU array of type "
                             f"{type(a).__module__}.{type(a).__name__}: bring it back with "
                             "tinynet.to_numpy(a)")
        # A read-only view: _launch then tells the simulator not to copy it back.
        view = np.asarray(a, order="C").view()
        view.flags.writeable = False
        return view
    if isinstance(a, xp.ndarray):
        return a if a.flags.c_contiguous else xp.ascontiguousarray(a)
    if hasattr(a, "__cuda_array_interface__"):
        return xp.asarray(a, order="C")
    if (not isinstance(a, np.ndarray) and hasattr(a, "__dlpack__")
            and hasattr(a, "__dlpack_device__") and a.__dlpack_device__()[0] == _DLPACK_CUDA):
        return xp.asarray(xp.from_dlpack(a), order="C")
    return xp.asarray(np.asarray(a, order="C"))


def to_numpy(a):
    return np.asarray(a) if SIMULATED else xp.asnumpy(a)


def zeros(shape, dtype):
    return xp.zeros(shape, dtype)


stack_zeros = zeros


# --- kernels: compiled once per (kernel, dtype, static parameters), then launched -----

@functools.cache
def _kernel(module, name, dtype, *static):
    """The compiled kernel `name` of a kernels/numba_cuda module, for dtype (np.float32 or
    np.float64) and the module's static parameters (H for the persistent LSTM)."""
    source = getattr(module, f"{name}_source")(dtype, *static)
    argtypes = getattr(module, f"{name}_argtypes")(dtype)
    return cuda.jit(types.void(*argtypes))(source)


def _launch(kernel, grid, block, *args):
    """kernel[grid, block](*args) on CuPy's current stream. Every launch goes through here."""
    if not all(grid):
        # CUDA refuses a grid with no blocks (numba-cuda: "LaunchConfig.grid values must be
        # >= 1"); the simulator would run nothing. Refused here, on both, so that the caller
        # that forgot to skip an empty problem fails in tests without a GPU too.
        raise ValueError(f"{kernel.py_func.__name__}: launch with an empty grid {grid}; "
                         "the caller must skip empty problems")
    if SIMULATED:
        # The simulator copies every NumPy argument to its fake device and back after the
        # launch; inputs (read-only views, see asarray) are only copied in.
        args = [cuda.In(a) if isinstance(a, np.ndarray) and not a.flags.writeable else a
                for a in args]
    # numba-cuda warns (NumbaPerformanceWarning) when it configures a launch of fewer than
    # 128 blocks; small launches are what this package is for, so not for these. The switch
    # is global: the lock keeps two threads launching at once from restoring each other's
    # "off" as the user's setting.
    config = cuda.config
    with _WARNING_SWITCH:
        warns = config.CUDA_LOW_OCCUPANCY_WARNINGS
        config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
        try:
            configured = kernel[grid, block, _stream()]
        finally:
            config.CUDA_LOW_OCCUPANCY_WARNINGS = warns
    configured(*args)


_WARNING_SWITCH = threading.Lock()


def _stream():
    """CuPy's current stream (0, the default stream, under the simulator)."""
    return 0 if SIMULATED else _external_stream(xp.cuda.get_current_stream().ptr)


@functools.lru_cache(maxsize=64)
def _external_stream(pointer):
    # one Numba object per stream: numba-cuda caches configured launches per stream object
    return 0 if pointer == 0 else cuda.external_stream(pointer)


def _nothing(dtype, ndim):
    """A placeholder for an array argument a kernel is told not to read (one element, so
    that it has a real device pointer)."""
    return xp.empty((1,) * ndim, dtype)


def _sum_partials(partial):
    """partial (parts, ...) -> its sum over the first axis, added in a fixed order."""
    parts = partial.shape[0]
    if parts == 1:
        return partial[0]
    total = xp.empty(partial.shape[1:], partial.dtype)
    n = total.size
    if n:
        _launch(_kernel(partials, "sum_partials", partial.dtype.type),
                partials.grid(n), partials.THREADS, partial.reshape(parts, n), total.reshape(n))
    return total


def _gradient_times_weights(dy, y, code, w):
    """(dy * act'(y)) @ w.T: dy, y (batch, out), w (in, out) -> (batch, in)."""
    batch, n_in = dy.shape[0], w.shape[0]
    dx = xp.empty((batch, n_in), dy.dtype)
    if batch and n_in:
        _launch(_kernel(dense, "dense_backward_dx", dy.dtype.type), tiles.grid(batch, n_in),
                tiles.BLOCK, dy, y, code, w, dx)
    return dx


def _features_times_gradient(a, has_bias, dy, y, code):
    """[a.T @ dz ; dz.sum(0) if has_bias] with dz = dy * act'(y): a (batch, in), dy, y
    (batch, out) -> (in + has_bias, out), summed over the batch in a fixed order."""
    batch, n_in = a.shape
    n_out = dy.shape[1]
    n_rows = n_in + int(has_bias)
    chunks, rows_per_chunk = dense.batch_split(batch, n_in, n_out)
    partial = xp.empty((chunks, n_rows, n_out), a.dtype)
    if n_rows and n_out:
        _launch(_kernel(dense, "dense_backward_dw", a.dtype.type),
                dense.dense_backward_dw_grid(n_in, n_out, chunks), tiles.BLOCK,
                a, dy, y, code, has_bias, rows_per_chunk, partial)
    return _sum_partials(partial)


# --- dense ---------------------------------------------------------------------------

def dense_forward(x, w, b, activation):
    # x (batch, in), w (in, out), b (out,) or None -> y (batch, out)
    batch = x.shape[0]
    n_out = w.shape[1]
    y = xp.empty((batch, n_out), x.dtype)
    if batch and n_out:
        _launch(_kernel(dense, "dense_forward", x.dtype.type), tiles.grid(batch, n_out),
                tiles.BLOCK, x, w, _nothing(x.dtype, 1) if b is None else b, b is not None,
                CODES[activation], y)
    return y, (x, w, b is not None, activation, y)


def dense_backward(saved, dy):
    x, w, has_bias, activation, y = saved
    code = CODES[activation]
    dx = _gradient_times_weights(dy, y, code, w)
    dw_and_db = _features_times_gradient(x, has_bias, dy, y, code)    # (in + has_bias, out)
    n_in = x.shape[1]
    return dx, dw_and_db[:n_in], dw_and_db[n_in] if has_bias else None


# --- LSTM (tinynet.ops runs a cell as a sequence of one step) -------------------------

def _persistent(dtype, hidden):
    return hidden <= lstm.max_hidden(dtype)


def lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation, forget_bias):
    # xs (batch, steps, in), h0 and c0 (batch, H) -> hs (batch, steps, H)
    batch, steps, _ = xs.shape
    hidden = w_hh.shape[0]
    dtype = xs.dtype
    act, rec = CODES[activation], CODES[recurrent_activation]
    forget_bias = dtype.type(forget_bias)
    if not _persistent(dtype, hidden):
        return _per_step.forward(_STEPS, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias)
    hs = xp.empty((batch, steps, hidden), dtype)
    cs = xp.empty((batch, steps, hidden), dtype)
    gates = xp.empty((batch, steps, 4 * hidden), dtype)     # activated i, f, g, o
    hT = xp.empty((batch, hidden), dtype)
    cT = xp.empty((batch, hidden), dtype)
    if batch and hidden:
        _launch(_kernel(lstm, "lstm_forward", dtype.type, hidden), lstm.grid(batch),
                lstm.block_size(hidden), xs, h0, c0, w_ih, w_hh, b, act, rec,
                forget_bias, hs, cs, gates, hT, cT)
    saved = ("persistent", xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec)
    return hs, hT, cT, saved


def lstm_backward(saved, dhs, dhT, dcT):
    # dhs (batch, steps, H), dhT and dcT (batch, H)
    if saved[0] == "per_step":
        return _per_step.backward(_STEPS, saved, dhs, dhT, dcT)
    _, xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec = saved
    n_in = xs.shape[2]
    hidden = w_hh.shape[0]
    dxs, dh0, dc0, dw_all = _persistent_backward(saved, dhs, dhT, dcT)
    # dw_all (in + H + 1, 4H): rows dw_ih, then dw_hh, then db
    return (dxs, dh0, dc0, dw_all[:n_in], dw_all[n_in:n_in + hidden], dw_all[n_in + hidden])


def _persistent_backward(saved, dhs, dhT, dcT):
    _, xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec = saved
    batch, steps, n_in = xs.shape
    hidden = w_hh.shape[0]
    dtype = xs.dtype
    n_features = n_in + hidden + 1
    if not (batch and hidden):
        return (xp.zeros(xs.shape, dtype), xp.zeros((batch, hidden), dtype),
                xp.zeros((batch, hidden), dtype), xp.zeros((n_features, 4 * hidden), dtype))
    (blocks,) = lstm.grid(batch)
    dz_all = xp.empty((batch, steps, 4 * hidden), dtype)
    dxs = xp.empty(xs.shape, dtype)
    dh0 = xp.empty((batch, hidden), dtype)
    dc0 = xp.empty((batch, hidden), dtype)
    dw_partial = xp.empty((blocks, n_features, 4 * hidden), dtype)
    _launch(_kernel(lstm, "lstm_backward", dtype.type, hidden), (blocks,),
            lstm.block_size(hidden), xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec,
            dhs, dhT, dcT, dz_all, dxs, dh0, dc0, dw_partial)
    return dxs, dh0, dc0, _sum_partials(dw_partial)


# The per-step path (tinynet/backends/_per_step.py) over lstm_cell.py's kernels: each step
# one fused launch of [x | h] @ [w_ih ; w_hh] and the cell, so the step reads xs itself.

def _step_forward(x, h, c, w_ih, w_hh, b, act, rec, forget_bias, h1, c1, gates):
    batch, hidden = h1.shape
    _launch(_kernel(lstm_cell, "lstm_cell_forward", x.dtype.type),
            lstm_cell.lstm_cell_forward_grid(batch, hidden), tiles.BLOCK, x, h, c, w_ih, w_hh,
            b, act, rec, forget_bias, h1, c1, gates)


def _step_backward(gates, c1, c, dh, dhs, dc, dz, act, rec):
    batch, hidden = dc.shape
    _launch(_kernel(lstm_cell, "lstm_cell_backward_dz", dc.dtype.type),
            lstm_cell.lstm_cell_backward_dz_grid(batch, hidden), lstm_cell.THREADS, gates, c1,
            c, act, rec, dh, dhs, dc, dz)


def _weight_gradients(a, dz, with_sums):
    a_t_dz = _features_times_gradient(a, with_sums, dz, dz, CODES["linear"])
    n_in = a.shape[1]
    return a_t_dz[:n_in], (a_t_dz[n_in] if with_sums else None)


_STEPS = _per_step.Steps(
    xp=xp, inputs=lambda xs, w_ih: xs, forward=_step_forward, backward=_step_backward,
    times_weights_t=lambda a, w: _gradient_times_weights(a, a, CODES["linear"], w),
    weight_gradients=_weight_gradients)


# --- stacks of M models ------------------------------------------------------------------

def stack_dense_forward(x, w, b, activation):
    # x (M, batch, in), w (M, in, out), b (M, out) or None -> y (M, batch, out)
    n_models, batch, _ = x.shape
    n_out = w.shape[2]
    y = xp.empty((n_models, batch, n_out), x.dtype)
    if y.size:
        _launch(_kernel(stack_dense, "stack_dense_forward", x.dtype.type),
                (tiles.grid(batch, n_out)[0], stack_dense.models_grid(n_models)), tiles.BLOCK,
                x, w, _nothing(x.dtype, 2) if b is None else b, b is not None,
                CODES[activation], y)
    return y, (x, w, b is not None, activation, y)


def stack_dense_backward(saved, dy):
    x, w, has_bias, activation, y = saved
    n_models, batch, n_in = x.shape
    n_out = w.shape[2]
    code = CODES[activation]
    dx = xp.empty(x.shape, x.dtype)
    if dx.size:
        _launch(_kernel(stack_dense, "stack_dense_backward_dx", x.dtype.type),
                (tiles.grid(batch, n_in)[0], stack_dense.models_grid(n_models)), tiles.BLOCK,
                dy, y, code, w, dx)
    # [dw ; db] per model, the batch split into chunks summed in a fixed order
    n_rows = n_in + int(has_bias)
    chunks, rows_per_chunk = dense.batch_split(batch, n_in, n_out)
    partial = xp.empty((chunks, n_models, n_rows, n_out), x.dtype)
    if partial.size:
        _launch(_kernel(stack_dense, "stack_dense_backward_dw", x.dtype.type),
                stack_dense.stack_dense_backward_dw_grid(n_models, n_in, n_out, chunks),
                tiles.BLOCK, x, dy, y, code, has_bias, rows_per_chunk, partial)
    dw_and_db = _sum_partials(partial)      # (M, in + has_bias, out)
    return (dx, xp.ascontiguousarray(dw_and_db[:, :n_in]),
            xp.ascontiguousarray(dw_and_db[:, n_in]) if has_bias else None)


def stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation,
                       forget_bias, lengths):
    # xs (M, batch, steps, in), h0 and c0 (M, batch, H), forget_bias (M,),
    # lengths (M, batch) int32 -> hs (M, batch, steps, H), hT, cT (M, batch, H)
    n_models, batch, steps, _ = xs.shape
    hidden = w_hh.shape[1]
    dtype = xs.dtype
    act, rec = CODES[activation], CODES[recurrent_activation]
    threads = n_models * batch
    # saved for the backward, thread index innermost (stack_lstm.py)
    cs = xp.empty((steps, hidden, threads), dtype)
    gates = xp.empty((steps, 4 * hidden, threads), dtype)
    if threads and hidden:
        hs = xp.empty((n_models, batch, steps, hidden), dtype)
        hT = xp.empty((n_models, batch, hidden), dtype)
        cT = xp.empty((n_models, batch, hidden), dtype)
        _launch(_kernel(stack_lstm, "stack_lstm_forward", dtype.type, hidden),
                stack_lstm.grid(threads), stack_lstm.THREADS, xs, h0, c0, w_ih, w_hh, b,
                forget_bias, lengths, act, rec, hs, hT, cT, cs, gates)
    else:    # nothing to compute: every output is empty
        hs = xp.zeros((n_models, batch, steps, hidden), dtype)
        hT = xp.zeros((n_models, batch, hidden), dtype)
        cT = xp.zeros((n_models, batch, hidden), dtype)
    saved = (xs, h0, c0, w_ih, w_hh, hs, cs, gates, lengths, act, rec)
    return hs, hT, cT, saved


def stack_lstm_backward(saved, dhs, dhT, dcT):
    xs, h0, c0, w_ih, w_hh, hs, cs, gates, lengths, act, rec = saved
    n_models, batch, steps, n_in = xs.shape
    hidden = w_hh.shape[1]
    dtype = xs.dtype
    threads = n_models * batch
    n_features = n_in + hidden + 1
    if not (threads and hidden):    # the gates do not depend on anything: zero gradients
        return (xp.zeros(xs.shape, dtype), xp.zeros(h0.shape, dtype), xp.zeros(c0.shape, dtype),
                xp.zeros(w_ih.shape, dtype), xp.zeros(w_hh.shape, dtype),
                xp.zeros((n_models, 4 * hidden), dtype))
    dz_all = xp.empty((steps, 4 * hidden, threads), dtype)
    dxs = xp.empty(xs.shape, dtype)
    dh0 = xp.empty(h0.shape, dtype)
    dc0 = xp.empty(c0.shape, dtype)
    dw_partial = xp.empty((batch, n_models, n_features, 4 * hidden), dtype)
    _launch(_kernel(stack_lstm, "stack_lstm_backward", dtype.type, hidden),
            stack_lstm.grid(threads), stack_lstm.THREADS, xs, h0, c0, w_ih, w_hh, hs, cs, gates,
            lengths, act, rec, dhs, dhT, dcT, dz_all, dxs, dh0, dc0, dw_partial)
    dw_all = _sum_partials(dw_partial)      # (M, in + H + 1, 4H): dw_ih, dw_hh, db
    return (dxs, dh0, dc0, xp.ascontiguousarray(dw_all[:, :n_in]),
            xp.ascontiguousarray(dw_all[:, n_in:n_in + hidden]),
            xp.ascontiguousarray(dw_all[:, n_in + hidden]))
