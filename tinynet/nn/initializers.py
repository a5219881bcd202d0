"""Weight initializers: callables init(shape, rng) -> float64 NumPy array.

Layers draw their initial weights on the host from a numpy.random.Generator, then store
them in their dtype (and move them to a device with model.to). A layer built with
seed=<int or Generator> is reproducible on its own; a layer built without one draws from
the generator that `set_seed(n)` resets, so `set_seed(n)` before building a model makes the
whole model reproducible.

    glorot_uniform     U(-l, l), l = sqrt(6 / (fan_in + fan_out))      (Keras default)
    orthogonal         an orthogonal matrix (QR of a Gaussian), times gain (recurrent)
    uniform(a, b)      U(a, b)
    zeros              0
"""

import numpy as np

_global_rng = np.random.default_rng()


def set_seed(seed):
    """Reset the generator used by layers (and fit's shuffling) built without a seed."""
    global _global_rng
    _global_rng = np.random.default_rng(seed)


def generator(seed=None):
    """A numpy Generator from an int seed, a Generator (used as is), or None (the global one)."""
    if seed is None:
        return _global_rng
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _fans(shape):
    """(fan_in, fan_out): (in, out) for a matrix; (k, in, out) for a kernel: k*in, k*out."""
    if len(shape) < 2:
        return shape[0] if shape else 1, shape[0] if shape else 1
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(shape, rng):
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / max(fan_in + fan_out, 1))
    return rng.uniform(-limit, limit, size=shape)


def orthogonal(shape, rng, gain=1.0):
    """Rows of the flattened (prod(shape[:-1]), shape[-1]) matrix are orthonormal, or its
    columns are, whichever are fewer. For an LSTM's (H, 4H) recurrent kernel: orthonormal rows."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    cols = shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))          # makes the distribution uniform over orthogonal matrices
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


def uniform(a, b):
    """An initializer drawing from U(a, b)."""
    if not a < b:
        raise ValueError(f"uniform(a, b) needs a < b, got a={a}, b={b}")

    def init(shape, rng):
        return rng.uniform(a, b, size=shape)
    init.__name__ = f"uniform({a}, {b})"
    return init


def zeros(shape, rng):
    return np.zeros(shape)


_BY_NAME = {"glorot_uniform": glorot_uniform, "orthogonal": orthogonal, "zeros": zeros}


def get(initializer):
    """An initializer from its name or a callable(shape, rng)."""
    if callable(initializer):
        return initializer
    try:
        return _BY_NAME[initializer]
    except (KeyError, TypeError):
        raise ValueError(f"{initializer!r} is not an initializer; use one of "
                         + ", ".join(repr(n) for n in _BY_NAME)
                         + ", uniform(a, b), or a callable(shape, rng)") from None
