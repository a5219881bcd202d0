"""The cupy backend on device arrays, at shapes that span several tiles of every kernel and
with size-0 axes: forward and every gradient against the NumPy reference, float32 and
float64, every activation. Then its stacks of models (stack_*), called directly: lengths
with NaN in the padding, NaN in one model's weights, data shared by every model, size-0 axes.

Runs only inside the CUDA emulator: tests/test_cupy_emulated.py runs it in a subprocess with
tests/cuda_emulator first on PYTHONPATH (its name is not test_*.py, so a plain pytest run
does not collect it), once per path of the backend's FUSED_MAX_WIDTH table.
"""

import cupy
import numpy as np
import pytest

from _compare import assert_close, assert_grads_close, lstm_grad_scale
from _problems import (ACTIVATIONS, dense_problem, dense_stack_problem, lstm_problem,
                       lstm_stack_problem)
from tinynet import ops
from tinynet.backends import cupy_cuda, numpy_ref

assert cupy.__version__ == "cuda-emulator", f"not the emulator's cupy: {cupy.__file__}"

DTYPES = [np.float32, np.float64]
LSTM_ACTIVATION_PAIRS = [("tanh", "sigmoid"), ("linear", "linear"), ("relu", "sigmoid"),
                         ("sigmoid", "tanh"), ("tanh", "relu")]

# The first shape of each spans several tiles of every kernel it runs, none a multiple of a
# tile size, with more rows than one split of the split-K reductions (256 rows) and more
# columns than one block of the cuBLAS path's column sums (32): dense.cu tiles are 128 rows
# x 64 columns (dw 64 x 64), lstm_cell.cu 64 x 64 with 16 units per fused forward block, and
# the persistent lstm.cu puts 3 of the 10 rows in a block (4 emulated multiprocessors), the
# last block with 2 inactive rows. The others have one axis of size 0.
DENSE = [(300, 70, 130), (0, 3, 2), (3, 0, 2), (3, 2, 0)]     # (batch, in, out)
CELL = [(300, 45, 21), (0, 2, 2), (2, 0, 2), (2, 2, 0)]       # (batch, in, H)
# (batch, steps, in, H)
LSTM = [(10, 30, 50, 21), (0, 2, 2, 2), (2, 0, 2, 2), (2, 2, 0, 2), (2, 2, 2, 0)]


def on_device(arrays):
    return [None if a is None else cupy.asarray(a) for a in arrays]


def assert_unchanged(device_arrays, host_arrays, case):
    for device, host in zip(device_arrays, host_arrays):
        if device is not None:
            assert np.array_equal(cupy.asnumpy(device), host, equal_nan=True), \
                f"{case}: an op wrote into its input"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense(rng, dtype, activation):
    for batch, n_in, n_out in DENSE:
        for bias in (True, False):
            host = dense_problem(rng, batch, n_in, n_out, dtype, bias=bias)
            device = on_device(host)
            x, w, b, dy = device
            y, ctx = ops.dense(x, w, b, activation, backend="cupy")
            grads = ops.dense_backward(ctx, dy)
            y_ref, ctx_ref = ops.dense(*host[:3], activation, backend="numpy")
            grads_ref = ops.dense_backward(ctx_ref, host[3])
            case = f"dense {activation} {np.dtype(dtype)} {(batch, n_in, n_out)} bias={bias}"
            assert_close(f"{case} y", y, y_ref)
            assert_grads_close(case, ("dx", "dw", "db"), grads, grads_ref,
                               np.sqrt(max(batch, 1)))
            assert_unchanged(device, host, case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_lstm_cell(rng, dtype, activation, recurrent_activation):
    kw = dict(activation=activation, recurrent_activation=recurrent_activation, forget_bias=1.0)
    for batch, n_in, hidden in CELL:
        inputs, (dh1, _, dc1) = lstm_problem(rng, batch, None, n_in, hidden, dtype)
        host = [*inputs, dh1, dc1]
        device = on_device(host)
        h1, c1, ctx = ops.lstm_cell(*device[:6], backend="cupy", **kw)
        grads = ops.lstm_cell_backward(ctx, *device[6:])
        h1_ref, c1_ref, ctx_ref = ops.lstm_cell(*inputs, backend="numpy", **kw)
        grads_ref = ops.lstm_cell_backward(ctx_ref, dh1, dc1)
        case = (f"lstm_cell {activation}/{recurrent_activation} {np.dtype(dtype)} "
                f"{(batch, n_in, hidden)}")
        assert_close(f"{case} h1", h1, h1_ref)
        assert_close(f"{case} c1", c1, c1_ref)
        for name, got, ref in zip(("dx", "dh", "dc", "dw_ih", "dw_hh", "db"), grads, grads_ref):
            assert_close(f"{case} {name}", got, ref, scale=np.sqrt(max(batch, 1)))
        assert_unchanged(device, host, case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_lstm(rng, dtype, activation, recurrent_activation):
    kw = dict(activation=activation, recurrent_activation=recurrent_activation, forget_bias=0.5)
    # linear gates make the state a polynomial whose degree doubles every step
    weight_scale = 0.1 if activation == recurrent_activation == "linear" else 1.0
    for batch, steps, n_in, hidden in LSTM:
        inputs, grads_out = lstm_problem(rng, batch, steps, n_in, hidden, dtype,
                                         weight_scale=weight_scale)
        host = [*inputs, *grads_out]
        device = on_device(host)
        *outs, ctx = ops.lstm(*device[:6], backend="cupy", **kw)
        grads = ops.lstm_backward(ctx, *device[6:])
        *outs_ref, ctx_ref = ops.lstm(*inputs, backend="numpy", **kw)
        grads_ref = ops.lstm_backward(ctx_ref, *grads_out)
        case = (f"lstm {activation}/{recurrent_activation} {np.dtype(dtype)} "
                f"{(batch, steps, n_in, hidden)}")
        for name, got, ref in zip(("hs", "hT", "cT"), outs, outs_ref):
            assert_close(f"{case} {name}", got, ref, scale=np.sqrt(max(steps, 1)))
        for name, got, ref in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"), grads, grads_ref):
            assert_close(f"{case} {name}", got, ref, scale=lstm_grad_scale(batch, steps))
        assert_unchanged(device, host, case)


# --- stacks: M models per call, through the backend's stack_* functions -------------------
# The reference is an independent computation: NumPy's single-model ops, one model (and, for
# lengths, one sequence cut to its length) at a time. M * batch sequences spread over the
# emulated multiprocessors put several sequences, of different models, in one block of the
# recurrences, the last block with inactive slots.

STACK_DENSE = [(3, 5, 4, 7), (2, 3, 9, 2), (0, 2, 3, 4), (2, 0, 3, 4), (2, 3, 0, 4),
               (2, 3, 4, 0)]                                        # (M, batch, in, out)
STACK_LSTM = [(3, 5, 7, 4, 6), (2, 3, 4, 9, 2), (0, 2, 3, 2, 2), (2, 0, 3, 2, 2),
              (2, 2, 0, 2, 2), (2, 2, 3, 0, 2), (2, 2, 3, 2, 0)]    # (M, batch, steps, in, H)


def shared_by_models(host_array, models):
    """A device array shared by every model: a broadcast view with a 0 stride on the models
    axis, as cupy.broadcast_to makes."""
    device = cupy.asarray(host_array)
    return np.broadcast_to(device, (models,) + device.shape, subok=True)


def reference_stack_dense(x, w, b, dy, activation):
    y, dx, dw = np.empty(dy.shape, x.dtype), np.empty(x.shape, x.dtype), np.empty(w.shape, x.dtype)
    db = None if b is None else np.empty(b.shape, x.dtype)
    for m in range(x.shape[0]):
        y[m], saved = numpy_ref.dense_forward(x[m], w[m], None if b is None else b[m], activation)
        dx[m], dw[m], db_m = numpy_ref.dense_backward(saved, dy[m])
        if db is not None:
            db[m] = db_m
    return y, (dx, dw, db)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_stack_dense(rng, dtype, activation):
    for models, batch, n_in, n_out in STACK_DENSE:
        for bias, shared_x in ((True, False), (False, True)):
            host = dense_stack_problem(rng, models, batch, n_in, n_out, dtype, bias)
            if shared_x:
                host[0] = np.broadcast_to(host[0][:1], host[0].shape) if models else host[0]
            if models > 1 and host[1].size:
                host[1][1, 0, 0] = np.nan   # model 1 only: must not reach the others
            x, w, b, dy = device = on_device(host)
            if shared_x and models:
                x = shared_by_models(host[0][0], models)
            y, saved = cupy_cuda.stack_dense_forward(x, w, b, activation)
            grads = cupy_cuda.stack_dense_backward(saved, dy)
            y_ref, grads_ref = reference_stack_dense(*host, activation)
            case = (f"stack dense {activation} {np.dtype(dtype)} {(models, batch, n_in, n_out)} "
                    f"bias={bias} shared x={shared_x}")
            assert_close(f"{case} y", y, y_ref)
            assert_grads_close(case, ("dx", "dw", "db"), grads, grads_ref,
                               np.sqrt(max(batch, 1)))
            for name, got in zip(("y", "dx", "dw", "db"), (y, *grads)):
                if got is not None and models > 1:
                    others = np.delete(cupy.asnumpy(got), 1, axis=0)
                    assert np.isfinite(others).all(), f"{case} {name}: model 1's NaN spread"
            assert_unchanged(device, host, case)


def reference_stack_lstm(inputs, forget_bias, lengths, grads_out, activation,
                         recurrent_activation):
    """Every sequence on its own, cut to its length: hs zero at padding, dxs zero there, the
    weight gradients of a model summed over its sequences."""
    xs, h0, c0, w_ih, w_hh, b = inputs
    dhs, dhT, dcT = grads_out
    models, batch, steps, _ = xs.shape
    hs = np.zeros(dhs.shape, xs.dtype)
    dxs = np.zeros(xs.shape, xs.dtype)
    hT, cT, dh0, dc0 = (np.empty(h0.shape, xs.dtype) for _ in range(4))
    dw = [np.zeros(w.shape, xs.dtype) for w in (w_ih, w_hh, b)]
    for m in range(models):
        for r in range(batch):
            n = lengths[m, r]
            row = slice(r, r + 1)
            hs_row, hT[m, row], cT[m, row], saved = numpy_ref.lstm_forward(
                xs[m, row, :n], h0[m, row], c0[m, row], w_ih[m], w_hh[m], b[m], activation,
                recurrent_activation, forget_bias[m])
            hs[m, r, :n] = hs_row[0]
            dxs_row, dh0[m, row], dc0[m, row], *dw_row = numpy_ref.lstm_backward(
                saved, dhs[m, row, :n], dhT[m, row], dcT[m, row])
            dxs[m, r, :n] = dxs_row[0]
            for total, part in zip(dw, dw_row):
                total[m] += part
    return (hs, hT, cT), (dxs, dh0, dc0, *dw)


def stack_lstm_problem(rng, models, batch, steps, n_in, hidden, dtype, weight_scale):
    """lstm_stack_problem and a forget_bias per model."""
    inputs, grads_out = lstm_stack_problem(rng, models, batch, steps, n_in, hidden, dtype,
                                           weight_scale)
    return inputs, grads_out, rng.uniform(-1.0, 2.0, models).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_stack_lstm(rng, dtype, activation, recurrent_activation):
    """Lengths from 0 to steps with NaN in xs's padding, a per-model forget_bias, NaN in one
    model's weights, xs shared by every model (a broadcast view)."""
    weight_scale = 0.1 if activation == recurrent_activation == "linear" else 1.0
    for models, batch, steps, n_in, hidden in STACK_LSTM:
        for shared_xs in (False, True):
            inputs, grads_out, forget_bias = stack_lstm_problem(
                rng, models, batch, steps, n_in, hidden, dtype, weight_scale)
            lengths = rng.integers(0, steps + 1, (models, batch)).astype(np.int32)
            if lengths.size >= 2:
                lengths.flat[:2] = (0, steps)
            if shared_xs and models:
                inputs[0] = np.broadcast_to(inputs[0][:1], inputs[0].shape)
            else:   # padding is never read: NaN there changes nothing
                for (m, r), n in np.ndenumerate(lengths):
                    inputs[0][m, r, n:] = np.nan
            if models > 1 and hidden:
                inputs[4][1, 0, 0] = np.nan   # model 1 only: must not reach the others
            host = [*inputs, *grads_out]
            device = on_device(host)
            if shared_xs and models:
                device[0] = shared_by_models(inputs[0][0], models)
            *outs, saved = cupy_cuda.stack_lstm_forward(
                *device[:6], activation, recurrent_activation, cupy.asarray(forget_bias),
                cupy.asarray(lengths))
            grads = cupy_cuda.stack_lstm_backward(saved, *device[6:])
            outs_ref, grads_ref = reference_stack_lstm(inputs, forget_bias, lengths, grads_out,
                                                       activation, recurrent_activation)
            case = (f"stack lstm {activation}/{recurrent_activation} {np.dtype(dtype)} "
                    f"{(models, batch, steps, n_in, hidden)} shared xs={shared_xs}")
            for name, got, ref in zip(("hs", "hT", "cT"), outs, outs_ref):
                assert_close(f"{case} {name}", got, ref, scale=np.sqrt(max(steps, 1)))
            for name, got, ref in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"), grads,
                                      grads_ref):
                assert_close(f"{case} {name}", got, ref, scale=lstm_grad_scale(batch, steps))
            for name, got in zip(("hs", "hT", "cT", "dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"),
                                 (*outs, *grads)):
                if models > 1 and hidden:
                    others = np.delete(cupy.asnumpy(got), 1, axis=0)
                    assert np.isfinite(others).all(), f"{case} {name}: NaN outside model 1"
            assert_unchanged(device, host, case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_stack_lstm_cell(rng, dtype, activation, recurrent_activation):
    for models, batch, _, n_in, hidden in STACK_LSTM:
        inputs, grads_out, forget_bias = stack_lstm_problem(rng, models, batch, 1, n_in, hidden,
                                                            dtype, 1.0)
        dhs, _, dcT = grads_out
        host = [inputs[0][:, :, 0], *inputs[1:], dhs[:, :, 0], dcT]
        device = on_device(host)
        # the backend has no cell of its own: ops runs it as the stacked LSTM of one step
        h1, c1, ctx = ops.lstm_cell(*device[:6], activation, recurrent_activation, forget_bias,
                                    backend="cupy")
        grads = ops.lstm_cell_backward(ctx, *device[6:])
        full = np.ones((models, batch), np.int32)
        (_, h1_ref, c1_ref), grads_ref = reference_stack_lstm(
            inputs, forget_bias, full, (dhs, np.zeros_like(dcT), dcT), activation,
            recurrent_activation)
        dx_ref = grads_ref[0][:, :, 0]
        case = (f"stack lstm_cell {activation}/{recurrent_activation} {np.dtype(dtype)} "
                f"{(models, batch, n_in, hidden)}")
        assert_close(f"{case} h1", h1, h1_ref)
        assert_close(f"{case} c1", c1, c1_ref)
        for name, got, ref in zip(("dx", "dh", "dc", "dw_ih", "dw_hh", "db"), grads,
                                  (dx_ref, *grads_ref[1:])):
            assert_close(f"{case} {name}", got, ref, scale=np.sqrt(max(batch, 1)))
        assert_unchanged(device, host, case)


def test_stack_lstm_wider_than_a_block_is_refused():
    hidden = 513   # one thread per unit: at most 512 threads per block
    w_hh = cupy.zeros((1, hidden, 4 * hidden), np.float32)
    arrays = [cupy.zeros(shape, np.float32) for shape in
              [(1, 1, 2, 1), (1, 1, hidden), (1, 1, hidden), (1, 1, 4 * hidden), (1, 4 * hidden)]]
    xs, h0, c0, w_ih, b = arrays
    with pytest.raises(ValueError, match="H = 513"):
        cupy_cuda.stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, "tanh", "sigmoid",
                                     cupy.zeros(1, np.float32), cupy.zeros((1, 1), np.int32))
