"""Stacks of models and sequences of different lengths (the ops contract), on every backend.

Each stacked result is checked against the other way of computing it: model m run alone
through the single-model op of the NumPy reference (and, for lengths, each sequence run
alone, cut to its own length). Forward and every gradient, float32 and float64.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinynet import ops

from _compare import assert_close, lstm_grad_scale
from _problems import dense_stack_problem, lstm_stack_problem
from conftest import BACKENDS, SIMULATED, backend_param

ALL = [backend_param(name) for name in BACKENDS]
DTYPES = [np.float32, np.float64]
LSTM_ACTIVATIONS = [("tanh", "sigmoid"), ("relu", "sigmoid"), ("sigmoid", "tanh")]
CELL_GRADS = ("dx", "dh", "dc", "dw_ih", "dw_hh", "db")
LSTM_GRADS = ("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db")


def small(backend):
    """Numba's CUDA simulator runs one Python thread per CUDA thread: keep its shapes tiny."""
    return backend == "numba-cuda" and SIMULATED


def models_param(backend, models):
    if models > 3 and small(backend):
        pytest.skip("M > 3 under Numba's CUDA simulator (one Python thread per CUDA thread); "
                    "runs on a GPU with TINYNET_GPU_TESTS=1")
    return models


def empty_stack(shape, dtype):
    return np.zeros(shape, dtype)


# --- dense -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("models", [1, 3, 50])
def test_dense_stack_is_each_model_alone(backend, dtype, models, rng):
    models = models_param(backend, models)
    batch, n_in, n_out = (3, 2, 3) if small(backend) else (5, 3, 7)
    for activation in ("linear", "relu", "sigmoid", "tanh"):
        for bias in (True, False):
            x, w, b, dy = dense_stack_problem(rng, models, batch, n_in, n_out, dtype, bias)
            y, ctx = ops.dense(x, w, b, activation, backend=backend)
            grads = ops.dense_backward(ctx, dy)
            case = f"{backend} M={models} {activation} bias={bias}"
            for m in range(models):
                y_ref, ctx_ref = ops.dense(x[m], w[m], None if b is None else b[m], activation,
                                           backend="numpy")
                grads_ref = ops.dense_backward(ctx_ref, dy[m])
                assert_close(f"{case} y[{m}]", y[m], y_ref)
                for name, got, ref in zip(("dx", "dw", "db"), grads, grads_ref):
                    if ref is None:
                        assert got is None, f"{case} {name}: None expected without a bias"
                    else:
                        assert_close(f"{case} {name}[{m}]", got[m], ref)


# --- LSTM cell -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("models", [1, 3, 50])
def test_lstm_cell_stack_is_each_model_alone(backend, dtype, models, rng):
    models = models_param(backend, models)
    batch, n_in, hidden = (2, 2, 3) if small(backend) else (5, 3, 7)
    for activation, recurrent in LSTM_ACTIVATIONS:
        (x, h, c, w_ih, w_hh, b), (dh1, _, dc1) = lstm_stack_problem(
            rng, models, batch, None, n_in, hidden, dtype)
        dh1 = dh1.reshape(models, batch, hidden)
        forget_bias = rng.uniform(-1, 3, models)
        h1, c1, ctx = ops.lstm_cell(x, h, c, w_ih, w_hh, b, activation, recurrent,
                                    forget_bias=forget_bias, backend=backend)
        grads = ops.lstm_cell_backward(ctx, dh1, dc1)
        case = f"{backend} M={models} {activation}/{recurrent}"
        for m in range(models):
            h1_ref, c1_ref, ctx_ref = ops.lstm_cell(x[m], h[m], c[m], w_ih[m], w_hh[m], b[m],
                                                    activation, recurrent,
                                                    forget_bias=float(forget_bias[m]),
                                                    backend="numpy")
            grads_ref = ops.lstm_cell_backward(ctx_ref, dh1[m], dc1[m])
            assert_close(f"{case} h1[{m}]", h1[m], h1_ref)
            assert_close(f"{case} c1[{m}]", c1[m], c1_ref)
            for name, got, ref in zip(CELL_GRADS, grads, grads_ref):
                assert_close(f"{case} {name}[{m}]", got[m], ref, scale=np.sqrt(batch))


# --- LSTM over a sequence, with lengths ------------------------------------------------

def lstm_sizes(backend):
    return (2, 4, 2, 3) if small(backend) else (4, 6, 3, 5)     # batch, steps, in, H


def random_lengths(rng, shape, steps):
    lengths = rng.integers(0, steps + 1, shape)
    lengths.flat[0] = 0
    lengths.flat[-1] = steps
    return lengths


def with_nan_padding(xs, lengths):
    """xs with NaN at every padding step: the result must not depend on them."""
    xs = xs.copy()
    steps = xs.shape[-2]
    padding = np.arange(steps) >= lengths[..., None]               # (..., batch, steps)
    xs[padding] = np.nan
    return xs


def assert_sequence_alone(case, backend_out, inputs, grads_out, forget_bias, lengths,
                          activation, recurrent, dtype):
    """Each (model, row) equals that one sequence, cut to its length, run alone through the
    NumPy reference's single-model op; padding rows of hs and dxs are exactly zero."""
    xs, h0, c0, w_ih, w_hh, b = inputs
    dhs, dhT, dcT = grads_out
    hs, hT, cT, grads = backend_out
    models, batch, steps = xs.shape[:3]
    scale = lstm_grad_scale(batch, steps)
    for m in range(models):
        dw_sums = None
        for row in range(batch):
            n = int(lengths[m, row])
            one = slice(row, row + 1)
            hs_ref, hT_ref, cT_ref, ctx = ops.lstm(
                xs[m, one, :n], h0[m, one], c0[m, one], w_ih[m], w_hh[m], b[m], activation,
                recurrent, forget_bias=float(forget_bias[m]), backend="numpy")
            ref = ops.lstm_backward(ctx, dhs[m, one, :n], dhT[m, one], dcT[m, one])
            where = f"{case} [{m}, {row}] length {n}"
            assert_close(f"{where} hs", hs[m, row, :n], hs_ref[0])
            assert_close(f"{where} hT", hT[m, row], hT_ref[0])
            assert_close(f"{where} cT", cT[m, row], cT_ref[0])
            assert np.all(hs[m, row, n:] == 0), f"{where}: hs not zero at padding"
            assert_close(f"{where} dxs", grads[0][m, row, :n], ref[0][0], scale=scale)
            assert np.all(grads[0][m, row, n:] == 0), f"{where}: dxs not zero at padding"
            assert_close(f"{where} dh0", grads[1][m, row], ref[1][0], scale=scale)
            assert_close(f"{where} dc0", grads[2][m, row], ref[2][0], scale=scale)
            dw_sums = ref[3:] if dw_sums is None else [s + r for s, r in zip(dw_sums, ref[3:])]
        for name, got, ref in zip(LSTM_GRADS[3:], grads[3:], dw_sums):
            assert_close(f"{case} {name}[{m}]", got[m], ref, scale=scale)


def run_lstm(backend, inputs, grads_out, activation, recurrent, forget_bias, lengths):
    hs, hT, cT, ctx = ops.lstm(*inputs, activation, recurrent, forget_bias=forget_bias,
                               lengths=lengths, backend=backend)
    from tinynet import to_numpy
    grads = [to_numpy(g) for g in ops.lstm_backward(ctx, *grads_out)]
    return to_numpy(hs), to_numpy(hT), to_numpy(cT), grads


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("models", [1, 3, 50])
def test_lstm_stack_with_lengths_is_each_sequence_alone(backend, dtype, models, rng):
    models = models_param(backend, models)
    batch, steps, n_in, hidden = lstm_sizes(backend)
    if models == 50:
        batch, steps = 2, 3
    for activation, recurrent in LSTM_ACTIVATIONS[:1] if models == 50 else LSTM_ACTIVATIONS:
        inputs, grads_out = lstm_stack_problem(rng, models, batch, steps, n_in, hidden, dtype)
        forget_bias = rng.uniform(-1, 3, models)
        lengths = random_lengths(rng, (models, batch), steps)
        inputs[0] = with_nan_padding(inputs[0], lengths)
        out = run_lstm(backend, inputs, grads_out, activation, recurrent, forget_bias, lengths)
        assert_sequence_alone(f"{backend} M={models} {activation}/{recurrent}", out, inputs,
                              grads_out, forget_bias, lengths, activation, recurrent, dtype)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_stack_without_lengths_is_each_model_alone(backend, dtype, rng):
    """lengths=None, h0/c0 None and output gradients None: as the single-model op."""
    models = 3
    batch, steps, n_in, hidden = lstm_sizes(backend)
    inputs, (dhs, _, _) = lstm_stack_problem(rng, models, batch, steps, n_in, hidden, dtype)
    xs, _, _, w_ih, w_hh, b = inputs
    hs, hT, cT, ctx = ops.lstm(xs, None, None, w_ih, w_hh, b, forget_bias=1.5, backend=backend)
    grads = ops.lstm_backward(ctx, dhs)
    scale = lstm_grad_scale(batch, steps)
    for m in range(models):
        hs_ref, hT_ref, cT_ref, ctx_ref = ops.lstm(xs[m], None, None, w_ih[m], w_hh[m], b[m],
                                                   forget_bias=1.5, backend="numpy")
        for name, got, ref in (("hs", hs, hs_ref), ("hT", hT, hT_ref), ("cT", cT, cT_ref)):
            assert_close(f"{backend} {name}[{m}]", got[m], ref)
        for name, got, ref in zip(LSTM_GRADS, grads, ops.lstm_backward(ctx_ref, dhs[m])):
            assert_close(f"{backend} {name}[{m}]", got[m], ref, scale=scale)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_model_with_lengths_is_each_sequence_alone(backend, dtype, rng):
    """lengths on a single-model call: (batch,) lengths, outputs without a models axis."""
    batch, steps, n_in, hidden = lstm_sizes(backend)
    inputs, grads_out = lstm_stack_problem(rng, 1, batch, steps, n_in, hidden, dtype)
    lengths = random_lengths(rng, (1, batch), steps)
    inputs[0] = with_nan_padding(inputs[0], lengths)
    hs, hT, cT, ctx = ops.lstm(*[a[0] for a in inputs], forget_bias=0.5, lengths=lengths[0],
                               backend=backend)
    grads = ops.lstm_backward(ctx, *[g[0] for g in grads_out])
    assert hs.shape == (batch, steps, hidden) and hT.shape == (batch, hidden)
    assert [g.shape for g in grads] == [a[0].shape for a in inputs]
    from tinynet import to_numpy
    out = (to_numpy(hs)[None], to_numpy(hT)[None], to_numpy(cT)[None],
           [to_numpy(g)[None] for g in grads])
    assert_sequence_alone(f"{backend} one model", out, inputs, grads_out, np.array([0.5]),
                          lengths, "tanh", "sigmoid", dtype)


# --- shared data, independence, empty axes ---------------------------------------------

@pytest.mark.parametrize("backend", ALL)
def test_shared_data_as_a_broadcast_view(backend, rng):
    models = 3
    batch, steps, n_in, hidden = lstm_sizes(backend)
    inputs, grads_out = lstm_stack_problem(rng, models, batch, steps, n_in, hidden, np.float64)
    shared = inputs[0][0]
    inputs[0] = np.broadcast_to(shared, (models,) + shared.shape)
    out = run_lstm(backend, inputs, grads_out, "tanh", "sigmoid", 1.0,
                   np.full((models, batch), steps))
    assert out[3][0].shape == (models, batch, steps, n_in), "dxs has the full stacked shape"
    assert_sequence_alone(f"{backend} shared xs", out, inputs, grads_out, np.ones(models),
                          np.full((models, batch), steps), "tanh", "sigmoid", np.float64)
    x, w, b, dy = dense_stack_problem(rng, models, batch, n_in, hidden, np.float64, True)
    x_shared = np.broadcast_to(x[0], x.shape)
    y, ctx = ops.dense(x_shared, w, b, "tanh", backend=backend)
    dx = ops.dense_backward(ctx, dy)[0]
    for m in range(models):
        y_ref, ctx_ref = ops.dense(x[0], w[m], b[m], "tanh", backend="numpy")
        assert_close(f"{backend} shared x y[{m}]", y[m], y_ref)
        assert_close(f"{backend} shared x dx[{m}]", dx[m], ops.dense_backward(ctx_ref, dy[m])[0])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the Inf put in
@pytest.mark.parametrize("backend", ALL)
def test_nan_in_one_model_reaches_no_other(backend, rng):
    from tinynet import to_numpy
    models = 3
    batch, steps, n_in, hidden = lstm_sizes(backend)
    inputs, grads_out = lstm_stack_problem(rng, models, batch, steps, n_in, hidden, np.float32)
    lengths = np.full((models, batch), steps)
    clean = run_lstm(backend, inputs, grads_out, "tanh", "sigmoid", 1.0, lengths)
    inputs[4] = inputs[4].copy()
    inputs[4][1, 0, 0] = np.nan                          # model 1's w_hh
    dirty = run_lstm(backend, inputs, grads_out, "tanh", "sigmoid", 1.0, lengths)
    for name, a, b in zip(("hs", "hT", "cT") + LSTM_GRADS, (*clean[:3], *clean[3]),
                          (*dirty[:3], *dirty[3])):
        assert np.isnan(b[1]).any(), f"{backend} {name}: the NaN model shows no NaN"
        for m in (0, 2):
            assert np.array_equal(a[m], b[m]), f"{backend} {name}[{m}] changed by model 1's NaN"
    x, w, b, dy = dense_stack_problem(rng, models, batch, n_in, hidden, np.float32, True)
    y_clean = to_numpy(ops.dense(x, w, b, "tanh", backend=backend)[0])
    w = w.copy()
    w[1, 0, 0] = np.inf
    y_dirty, ctx = ops.dense(x, w, b, "linear", backend=backend)
    y_dirty_tanh = to_numpy(ops.dense(x, w, b, "tanh", backend=backend)[0])
    grads = [to_numpy(g) for g in ops.dense_backward(ctx, dy)]
    assert np.array_equal(y_clean[[0, 2]], y_dirty_tanh[[0, 2]])
    assert all(np.isfinite(g[[0, 2]]).all() for g in grads), f"{backend} dense: Inf leaked"


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("shape", [(0, 2, 3), (2, 0, 3), (2, 2, 0)])
def test_empty_axes(backend, shape, rng):
    """M, batch or steps of size 0: results of the right shapes, zero gradients."""
    models, batch, steps = shape
    inputs, grads_out = lstm_stack_problem(rng, max(models, 1), batch, steps, 2, 3, np.float32)
    inputs = [a[:models] for a in inputs]
    grads_out = [g[:models] for g in grads_out]
    hs, hT, cT, grads = run_lstm(backend, inputs, grads_out, "tanh", "sigmoid",
                                 np.ones(models), np.full((models, batch), steps))
    assert hs.shape == (models, batch, steps, 3)
    assert [g.shape for g in grads] == [a.shape for a in inputs]
    if steps == 0:       # nothing ran: the state is the initial one and passes the gradient
        assert np.array_equal(hT, inputs[1]) and np.array_equal(cT, inputs[2])
        assert np.array_equal(grads[1], grads_out[1]) and np.array_equal(grads[2], grads_out[2])
    assert all(not np.any(g) for g in grads[3:] if batch == 0 or steps == 0)
    x, w, b, dy = dense_stack_problem(rng, max(models, 1), batch, 2, 3, np.float32, True)
    y, ctx = ops.dense(x[:models], w[:models], b[:models], "tanh", backend=backend)
    assert y.shape == (models, batch, 3)
    dx, dw, db = ops.dense_backward(ctx, dy[:models])
    assert dw.shape == (models, 2, 3) and (batch or not np.any(dw))


# --- bad arguments: the same message on every backend ----------------------------------

def bad_stack_calls(rng):
    (xs, h0, c0, w_ih, w_hh, b), _ = lstm_stack_problem(rng, 3, 2, 4, 2, 3, np.float32)
    lengths = np.full((3, 2), 4)
    return {
        "lengths negative": (lambda be: ops.lstm(xs, h0, c0, w_ih, w_hh, b,
                                                 lengths=lengths - 5, backend=be),
                             "lengths must be in 0..steps = 0..4, got -1"),
        "lengths past steps": (lambda be: ops.lstm(xs, h0, c0, w_ih, w_hh, b,
                                                   lengths=lengths + 1, backend=be),
                               "lengths must be in 0..steps = 0..4, got 5"),
        "lengths not integers": (lambda be: ops.lstm(xs, h0, c0, w_ih, w_hh, b,
                                                     lengths=lengths * 1.0, backend=be),
                                 "lengths must be integers (M, batch), got dtype float64"),
        "lengths wrong shape": (lambda be: ops.lstm(xs, h0, c0, w_ih, w_hh, b,
                                                    lengths=lengths[0], backend=be),
                                "lengths must be (M, batch) = (3, 2)"),
        "one model lengths": (lambda be: ops.lstm(xs[0], h0[0], c0[0], w_ih[0], w_hh[0], b[0],
                                                  lengths=lengths, backend=be),
                              "lengths must be (batch,) = (2,)"),
        "M mismatch": (lambda be: ops.lstm(xs[:2], h0, c0, w_ih, w_hh, b, backend=be),
                       "xs has 2 models on its first axis, but w_hh has M = 3"),
        "no models axis": (lambda be: ops.lstm(xs, h0[0], c0, w_ih, w_hh, b, backend=be),
                           "h0 must be (M, batch, H) = (3, 2, 3), got (2, 3), with no models "
                           "axis"),
        "weight without models axis": (lambda be: ops.lstm(xs, h0, c0, w_ih[0], w_hh, b,
                                                           backend=be),
                                       "w_ih must be (M, in, 4*H) = (3, 2, 12)"),
        "forget_bias per model": (lambda be: ops.lstm(xs, h0, c0, w_ih, w_hh, b,
                                                      forget_bias=np.ones(2), backend=be),
                                  "forget_bias must be a number or one per model, (M,) = (3,)"),
        "cell M mismatch": (lambda be: ops.lstm_cell(xs[:, :, 0], h0[:1], c0, w_ih, w_hh, b,
                                                     backend=be),
                            "h has 1 models on its first axis, but w_hh has M = 3"),
        "dense shared x": (lambda be: ops.dense(xs[0, :, 0], w_ih, b, backend=be),
                           "np.broadcast_to(x, (3,) + x.shape)"),
    }


@pytest.mark.parametrize("backend", ALL)
def test_bad_stack_arguments_get_the_same_message_everywhere(backend, rng):
    for case, (call, message) in bad_stack_calls(rng).items():
        with pytest.raises(ValueError) as error:
            call(backend)
        assert message in str(error.value), f"{case}: {error.value}"


# --- hypothesis over M, batch, H -------------------------------------------------------

@pytest.mark.parametrize("backend", [b for b in ALL if b.values[0] != "numba-cuda"])
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(models=st.integers(1, 9), batch=st.integers(1, 4), hidden=st.integers(1, 9),
       seed=st.integers(0, 2 ** 31))
def test_lstm_stack_any_size(backend, models, batch, hidden, seed):
    rng = np.random.default_rng(seed)
    steps = 3
    inputs, grads_out = lstm_stack_problem(rng, models, batch, steps, 2, hidden, np.float64)
    forget_bias = rng.uniform(-1, 3, models)
    lengths = rng.integers(0, steps + 1, (models, batch))
    out = run_lstm(backend, inputs, grads_out, "tanh", "sigmoid", forget_bias, lengths)
    assert_sequence_alone(f"{backend} M={models} batch={batch} H={hidden}", out, inputs,
                          grads_out, forget_bias, lengths, "tanh", "sigmoid", np.float64)
