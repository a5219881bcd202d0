"""The cupy backend on device arrays, at shapes that span several tiles of every kernel and
with size-0 axes: forward and every gradient against the NumPy reference, float32 and
float64, every activation.

Runs only inside the CUDA emulator: tests/test_cupy_emulated.py runs it in a subprocess with
tests/cuda_emulator first on PYTHONPATH (its name is not test_*.py, so a plain pytest run
does not collect it), once per path of the backend's FUSED_MAX_WIDTH table.
"""

import cupy
import numpy as np
import pytest

from _compare import assert_close, assert_grads_close, lstm_grad_scale
from _problems import ACTIVATIONS, dense_problem, lstm_problem
from tinynet import ops

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
            assert np.array_equal(cupy.asnumpy(device), host), f"{case}: an op wrote into its input"


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
