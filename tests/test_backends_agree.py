"""Every backend against the NumPy reference, on the same random inputs: forward outputs and
every gradient, float32 and float64, every activation, shapes that are not multiples of any
tile size. A backend that is not usable here is skipped with its reason.

Under Numba's CUDA simulator each CUDA thread is a Python thread, so the simulated GPU
backend gets the small shapes only; on a real GPU (TINYNET_GPU_TESTS=1) it gets all of them.
"""

import numpy as np
import pytest

from tinynet import ops
from _compare import assert_close, assert_grads_close, lstm_grad_scale
from _problems import ACTIVATIONS, dense_problem, lstm_problem
from conftest import BACKENDS, SIMULATED, backend_param

OTHERS = [backend_param(name) for name in BACKENDS if name != "numpy"]
DTYPES = [np.float32, np.float64]

# (batch, in, out); the small ones span more than one block of a 16/32-wide tile
DENSE_SMALL = [(1, 1, 1), (3, 17, 5), (33, 7, 19)]
DENSE_LARGE = [(256, 500, 500), (1000, 3, 1), (70, 129, 67)]
# (batch, steps, in, H)
LSTM_SMALL = [(1, 1, 1, 1), (3, 5, 2, 3), (5, 4, 3, 17)]
LSTM_LARGE = [(256, 100, 1, 3), (64, 30, 7, 33), (3, 20, 16, 70)]
# (batch, in, H)
CELL_SMALL = [(1, 1, 1), (3, 17, 5), (33, 3, 9)]
CELL_LARGE = [(256, 500, 64), (100, 3, 130)]


def shapes(backend, small, large):
    simulated_gpu = SIMULATED and backend in ("numba-cuda", "cupy")
    return small if simulated_gpu else small + large


def snapshot(arrays):
    return [None if a is None else a.copy() for a in arrays]


def assert_unchanged(before, after):
    for old, new in zip(before, after):
        if old is not None:
            assert np.array_equal(old, new, equal_nan=True), "an op wrote into its input"


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense(rng, backend, dtype, activation):
    for batch, n_in, n_out in shapes(backend, DENSE_SMALL, DENSE_LARGE):
        for bias in (True, False):
            x, w, b, dy = dense_problem(rng, batch, n_in, n_out, dtype, bias=bias)
            before = snapshot([x, w, b, dy])
            y_ref, ctx_ref = ops.dense(x, w, b, activation, backend="numpy")
            grads_ref = ops.dense_backward(ctx_ref, dy)
            y, ctx = ops.dense(x, w, b, activation, backend=backend)
            grads = ops.dense_backward(ctx, dy)
            case = f"dense {activation} {np.dtype(dtype)} {(batch, n_in, n_out)} bias={bias}"
            assert_close(f"{case} y", y, y_ref)
            assert_grads_close(case, ("dx", "dw", "db"), grads, grads_ref, np.sqrt(batch))
            assert_unchanged(before, [x, w, b, dy])


LSTM_ACTIVATION_PAIRS = [("tanh", "sigmoid"), ("linear", "linear"), ("relu", "sigmoid"),
                         ("sigmoid", "tanh"), ("tanh", "relu")]


def as_float64(arrays):
    return tuple(None if a is None else np.asarray(a, np.float64) for a in arrays)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_lstm(rng, backend, dtype, activation, recurrent_activation):
    weight_scale = 0.1 if activation == recurrent_activation == "linear" else 1.0
    for batch, steps, n_in, hidden in shapes(backend, LSTM_SMALL, LSTM_LARGE):
        for initial_state in (True, False):
            inputs, (dhs, dhT, dcT) = lstm_problem(rng, batch, steps, n_in, hidden, dtype,
                                                   weight_scale=weight_scale)
            if not initial_state:
                inputs = (inputs[0], None, None) + inputs[3:]
            before = snapshot(list(inputs) + [dhs, dhT, dcT])
            kw = dict(activation=activation, recurrent_activation=recurrent_activation,
                      forget_bias=0.5)
            *out_ref, ctx_ref = ops.lstm(*inputs, backend="numpy", **kw)
            grads_ref = ops.lstm_backward(ctx_ref, dhs, dhT, dcT)
            *out, ctx = ops.lstm(*inputs, backend=backend, **kw)
            grads = ops.lstm_backward(ctx, dhs, dhT, dcT)
            # the float64 results, for the float32 cases that conditioning makes hard
            *out_64, ctx_64 = ops.lstm(*as_float64(inputs), backend="numpy", **kw)
            grads_64 = ops.lstm_backward(ctx_64, *as_float64((dhs, dhT, dcT)))
            case = (f"lstm {activation}/{recurrent_activation} {np.dtype(dtype)} "
                    f"{(batch, steps, n_in, hidden)} h0={'given' if initial_state else None}")
            for name, got, ref, truth in zip(("hs", "hT", "cT"), out, out_ref, out_64):
                assert_close(f"{case} {name}", got, ref, scale=np.sqrt(steps), truth=truth)
            for name, got, ref, truth in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"),
                                             grads, grads_ref, grads_64):
                assert_close(f"{case} {name}", got, ref, scale=lstm_grad_scale(batch, steps),
                             truth=truth)
            # Gradients that are None count as zero.
            *_, ctx = ops.lstm(*inputs, backend=backend, **kw)
            only_hs = ops.lstm_backward(ctx, dhs)
            only_hs_ref = ops.lstm_backward(ctx_ref, dhs, None, None)
            assert_close(f"{case} dxs (dhT=dcT=None)", only_hs[0], only_hs_ref[0],
                         scale=lstm_grad_scale(batch, steps))
            only_last = ops.lstm_backward(ctx, None, dhT)
            only_last_ref = ops.lstm_backward(ctx_ref, None, dhT, None)
            for name, got, ref in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"),
                                      only_last, only_last_ref):
                assert_close(f"{case} {name} (dhs=dcT=None)", got, ref,
                             scale=lstm_grad_scale(batch, steps))
            assert_unchanged(before, list(inputs) + [dhs, dhT, dcT])


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_lstm_cell(rng, backend, dtype, activation, recurrent_activation):
    for batch, n_in, hidden in shapes(backend, CELL_SMALL, CELL_LARGE):
        inputs, (dh1, _, dc1) = lstm_problem(rng, batch, None, n_in, hidden, dtype)
        before = snapshot(list(inputs) + [dh1, dc1])
        kw = dict(activation=activation, recurrent_activation=recurrent_activation,
                  forget_bias=1.0)
        h_ref, c_ref, ctx_ref = ops.lstm_cell(*inputs, backend="numpy", **kw)
        grads_ref = ops.lstm_cell_backward(ctx_ref, dh1, dc1)
        h1, c1, ctx = ops.lstm_cell(*inputs, backend=backend, **kw)
        grads = ops.lstm_cell_backward(ctx, dh1, dc1)
        case = (f"lstm_cell {activation}/{recurrent_activation} {np.dtype(dtype)} "
                f"{(batch, n_in, hidden)}")
        assert_close(f"{case} h1", h1, h_ref)
        assert_close(f"{case} c1", c1, c_ref)
        for name, got, ref in zip(("dx", "dh", "dc", "dw_ih", "dw_hh", "db"), grads, grads_ref):
            assert_close(f"{case} {name}", got, ref, scale=np.sqrt(batch))
        h1, c1, ctx = ops.lstm_cell(*inputs, backend=backend, **kw)
        no_dc = ops.lstm_cell_backward(ctx, dh1, None)
        no_dc_ref = ops.lstm_cell_backward(ctx_ref, dh1, None)
        assert_close(f"{case} dw_ih (dc1=None)", no_dc[3], no_dc_ref[3], scale=np.sqrt(batch))
        assert_unchanged(before, list(inputs) + [dh1, dc1])


@pytest.mark.parametrize("backend", [backend_param(name) for name in BACKENDS])
def test_memory_layout_does_not_matter(rng, backend):
    """Fortran-ordered, strided and read-only inputs give the contiguous result."""
    x, w, b, dy = dense_problem(rng, 9, 6, 5, np.float64)
    y_ref, _ = ops.dense(x, w, b, "tanh", backend="numpy")
    wide = np.zeros((9, 12))
    wide[:, ::2] = x
    read_only = x.copy()
    read_only.flags.writeable = False
    for variant in (np.asfortranarray(x), wide[:, ::2], read_only):
        y, _ = ops.dense(variant, np.asfortranarray(w), b, "tanh", backend=backend)
        assert_close("dense on a non-contiguous or read-only x", y, y_ref)
    inputs, grads = lstm_problem(rng, 3, 4, 2, 5, np.float64)
    *out_ref, ctx_ref = ops.lstm(*inputs, backend="numpy")
    frozen = []
    for a in inputs:
        a = np.asfortranarray(a)
        a.flags.writeable = False
        frozen.append(a)
    *out, ctx = ops.lstm(*frozen, backend=backend)
    for name, got, ref in zip(("hs", "hT", "cT"), out, out_ref):
        assert_close(f"lstm on Fortran-ordered read-only inputs: {name}", got, ref)
    for name, got, ref in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"),
                              ops.lstm_backward(ctx, *grads),
                              ops.lstm_backward(ctx_ref, *grads)):
        assert_close(f"lstm backward after Fortran-ordered read-only inputs: {name}", got, ref)
