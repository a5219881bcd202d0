"""Random problems for each op, the same for every backend: inputs, and the random output
weights R of a scalar loss L = sum(out * R), whose gradients every backend must agree on."""

import numpy as np

ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh"]


def dense_problem(rng, batch, n_in, n_out, dtype, bias=True, scale=1.0):
    x = (rng.standard_normal((batch, n_in)) * scale).astype(dtype)
    w = (rng.standard_normal((n_in, n_out)) / np.sqrt(max(n_in, 1))).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype) if bias else None
    dy = rng.standard_normal((batch, n_out)).astype(dtype)
    return x, w, b, dy


def lstm_problem(rng, batch, steps, n_in, hidden, dtype, scale=1.0, weight_scale=1.0):
    """Inputs of ops.lstm (xs, h0, c0, w_ih, w_hh, b) and output gradients (dhs, dhT, dcT).
    Drop the steps axis (steps=None) for a single lstm_cell step. With linear gates the
    state is a polynomial whose degree doubles every step: use weight_scale < 1 there."""
    shape = (batch, n_in) if steps is None else (batch, steps, n_in)
    xs = (rng.standard_normal(shape) * scale).astype(dtype)
    h0 = (rng.standard_normal((batch, hidden)) * 0.5).astype(dtype)
    c0 = (rng.standard_normal((batch, hidden)) * 0.5).astype(dtype)
    w_ih = (rng.standard_normal((n_in, 4 * hidden)) / np.sqrt(max(n_in, 1)) * weight_scale).astype(dtype)
    w_hh = (rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(hidden) * weight_scale).astype(dtype)
    b = (rng.standard_normal(4 * hidden) * 0.5 * weight_scale).astype(dtype)
    hs_shape = (batch, hidden) if steps is None else (batch, steps, hidden)
    dhs = rng.standard_normal(hs_shape).astype(dtype)
    dhT = rng.standard_normal((batch, hidden)).astype(dtype)
    dcT = rng.standard_normal((batch, hidden)).astype(dtype)
    return (xs, h0, c0, w_ih, w_hh, b), (dhs, dhT, dcT)


def _stacked(problems, models):
    """Each argument of `problems` stacked on a new leading models axis, cut to `models`
    (0 gives every array with an empty models axis); None stays None."""
    return [None if parts[0] is None else np.stack(parts)[:models] for parts in zip(*problems)]


def dense_stack_problem(rng, models, batch, n_in, n_out, dtype, bias=True):
    """dense_problem for each of `models` models (0 allowed), stacked: x, w, b, dy."""
    return _stacked([dense_problem(rng, batch, n_in, n_out, dtype, bias=bias)
                     for _ in range(max(models, 1))], models)


def lstm_stack_problem(rng, models, batch, steps, n_in, hidden, dtype, weight_scale=1.0):
    """lstm_problem for each of `models` models (0 allowed), stacked: (inputs, grads)."""
    problems = [lstm_problem(rng, batch, steps, n_in, hidden, dtype, weight_scale=weight_scale)
                for _ in range(max(models, 1))]
    return (_stacked([p[0] for p in problems], models),
            _stacked([p[1] for p in problems], models))
