"""Activation math written once for every Numba target: the CPU (@njit, numba-cpu backend),
the GPU (@cuda.jit, numba-cuda backend) and Numba's CUDA simulator (plain Python).

Reference: tinynet/backends/numpy_ref.py (activate, activation_grad, sigmoid).
Codes: tinynet/_activations.py CODES (0 linear, 1 relu, 2 sigmoid, 3 tanh).

The same source is built per float type: constants are made of the argument's own type, so
a float32 kernel never computes in float64. Plain Python callers (the simulator) get the
float64 build; compiled callers get the overload for their type.
"""

import math

from numba.extending import overload
from numba.np.numpy_support import as_dtype


def _build(one):
    zero = one - one

    def activate(code, z):
        if code == 0:
            return z
        if code == 1:
            return zero if z < zero else z     # NaN stays NaN, as np.maximum
        if code == 2:
            # exp of -|z| only: never overflows
            if z >= zero:
                return one / (one + math.exp(-z))
            e = math.exp(z)
            return e / (one + e)
        return math.tanh(z)

    def activation_grad(code, y):
        """d act / d z from the output y = act(z)."""
        if code == 0:
            return one
        if code == 1:
            return one if y > zero else zero
        if code == 2:
            return y * (one - y)
        return one - y * y

    return activate, activation_grad


activate, activation_grad = _build(1.0)


@overload(activate)
def _activate_typed(code, z):
    return _build(as_dtype(z).type(1.0))[0]


@overload(activation_grad)
def _activation_grad_typed(code, y):
    return _build(as_dtype(y).type(1.0))[1]
