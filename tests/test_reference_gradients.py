"""The NumPy reference against central finite differences, in float64.

For each op the scalar loss L = sum(out * R) (R random) is differentiated two ways: by the
op's backward, and numerically by perturbing input entries one at a time. Small problems
check every entry; the realistic ones (batch 256, width 500; T=100) check a random sample of
entries of each input, since each entry costs two forward passes.
"""

import numpy as np
import pytest

from tinynet import ops
from _problems import ACTIVATIONS, dense_problem, lstm_problem

EPS = 1e-6


def numeric_grad(loss, arrays, index, rng, samples):
    """d loss / d arrays[index] at `samples` random entries (all entries when None)."""
    a = arrays[index]
    flat_ids = np.arange(a.size) if samples is None or samples >= a.size else \
        rng.choice(a.size, samples, replace=False)
    grads = []
    for flat in flat_ids:
        pos = np.unravel_index(flat, a.shape)
        plus = [arr.copy() for arr in arrays]
        minus = [arr.copy() for arr in arrays]
        plus[index][pos] += EPS
        minus[index][pos] -= EPS
        grads.append((loss(plus) - loss(minus)) / (2 * EPS))
    return flat_ids, np.array(grads)


def check_grads(loss, arrays, analytic, names, rng, samples=None):
    for index, (name, grad) in enumerate(zip(names, analytic)):
        if grad is None:
            continue
        ids, numeric = numeric_grad(loss, arrays, index, rng, samples)
        got = grad.reshape(-1)[ids]
        err = np.abs(got - numeric)
        tol = 1e-6 + 1e-5 * np.abs(numeric)
        assert np.all(err <= tol), (f"{name}: analytic vs numeric differ at flat index "
                                    f"{ids[np.argmax(err - tol)]}: {got[np.argmax(err - tol)]} "
                                    f"vs {numeric[np.argmax(err - tol)]}")


DENSE_SHAPES = [(1, 1, 1, None), (3, 17, 5, None), (17, 3, 33, None), (256, 500, 500, 12)]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("batch,n_in,n_out,samples", DENSE_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_dense(rng, activation, batch, n_in, n_out, samples, bias):
    x, w, b, dy = dense_problem(rng, batch, n_in, n_out, np.float64, bias=bias)
    if activation == "relu":   # keep pre-activations away from the kink at 0
        x = x + np.sign(x) * 0.1
    inputs = [x, w] + ([b] if bias else [])

    def loss(arrays):
        y, _ = ops.dense(*arrays[:2], arrays[2] if bias else None, activation, backend="numpy")
        return float(np.sum(y * dy))

    y, ctx = ops.dense(x, w, b, activation, backend="numpy")
    dx, dw, db = ops.dense_backward(ctx, dy)
    assert (db is None) == (not bias)
    check_grads(loss, inputs, [dx, dw, db][:len(inputs)], ["dx", "dw", "db"], rng, samples)


LSTM_ACTIVATIONS = [("tanh", "sigmoid"), ("linear", "linear"), ("relu", "sigmoid"),
                    ("sigmoid", "tanh"), ("tanh", "relu")]
LSTM_SHAPES = [(1, 1, 1, 1, None), (3, 4, 2, 5, None), (2, 7, 3, 17, None),
               (256, 100, 1, 3, 6), (4, 100, 3, 32, 8)]
# ReLU's kink puts some entries of a 100-step run within finite-difference reach of it,
# so the relu pairs are checked at the short shapes only.
LSTM_CASES = [(acts, shape) for acts in LSTM_ACTIVATIONS for shape in LSTM_SHAPES
              if shape[1] < 100 or "relu" not in acts]


@pytest.mark.parametrize("acts,shape", LSTM_CASES)
def test_lstm(rng, acts, shape):
    (activation, recurrent_activation), (batch, steps, n_in, hidden, samples) = acts, shape
    weight_scale = 0.1 if activation == recurrent_activation == "linear" else 1.0
    inputs, (dhs, dhT, dcT) = lstm_problem(rng, batch, steps, n_in, hidden, np.float64,
                                           weight_scale=weight_scale)
    kw = dict(activation=activation, recurrent_activation=recurrent_activation,
              forget_bias=0.7, backend="numpy")

    def loss(arrays):
        hs, hT, cT, _ = ops.lstm(*arrays, **kw)
        return float(np.sum(hs * dhs) + np.sum(hT * dhT) + np.sum(cT * dcT))

    hs, hT, cT, ctx = ops.lstm(*inputs, **kw)
    grads = ops.lstm_backward(ctx, dhs, dhT, dcT)
    check_grads(loss, list(inputs), grads, ["dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"],
                rng, samples)


@pytest.mark.parametrize("activation,recurrent_activation",
                         [("tanh", "sigmoid"), ("linear", "linear"), ("relu", "relu"),
                          ("sigmoid", "tanh")])
@pytest.mark.parametrize("batch,n_in,hidden,samples",
                         [(1, 1, 1, None), (3, 17, 5, None), (256, 500, 33, 10)])
def test_lstm_cell(rng, activation, recurrent_activation, batch, n_in, hidden, samples):
    inputs, (dh1, _, dc1) = lstm_problem(rng, batch, None, n_in, hidden, np.float64)
    kw = dict(activation=activation, recurrent_activation=recurrent_activation,
              forget_bias=1.3, backend="numpy")

    def loss(arrays):
        h1, c1, _ = ops.lstm_cell(*arrays, **kw)
        return float(np.sum(h1 * dh1) + np.sum(c1 * dc1))

    h1, c1, ctx = ops.lstm_cell(*inputs, **kw)
    grads = ops.lstm_cell_backward(ctx, dh1, dc1)
    check_grads(loss, list(inputs), grads, ["dx", "dh", "dc", "dw_ih", "dw_hh", "db"],
                rng, samples)


def test_lstm_matches_a_loop_of_cells(rng):
    """ops.lstm is ops.lstm_cell applied step by step, forward and backward."""
    (xs, h0, c0, w_ih, w_hh, b), (dhs, dhT, dcT) = lstm_problem(rng, 3, 6, 2, 4, np.float64)
    hs, hT, cT, ctx = ops.lstm(xs, h0, c0, w_ih, w_hh, b, forget_bias=1.0, backend="numpy")
    h, c, contexts = h0, c0, []
    for t in range(xs.shape[1]):
        h, c, cell_ctx = ops.lstm_cell(xs[:, t], h, c, w_ih, w_hh, b, forget_bias=1.0,
                                       backend="numpy")
        np.testing.assert_allclose(hs[:, t], h, rtol=1e-12)
        contexts.append(cell_ctx)
    np.testing.assert_allclose(hT, h, rtol=1e-12)
    np.testing.assert_allclose(cT, c, rtol=1e-12)
    dh, dc = dhT, dcT
    dxs = np.zeros_like(xs)
    dw_ih_sum, dw_hh_sum, db_sum = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b)
    for t in reversed(range(xs.shape[1])):
        dx, dh, dc, dw_ih, dw_hh, db = ops.lstm_cell_backward(contexts[t], dh + dhs[:, t], dc)
        dxs[:, t] = dx
        dw_ih_sum += dw_ih
        dw_hh_sum += dw_hh
        db_sum += db
    grads = ops.lstm_backward(ctx, dhs, dhT, dcT)
    for name, got, expected in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"), grads,
                                   (dxs, dh, dc, dw_ih_sum, dw_hh_sum, db_sum)):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=name)
