"""Activation math written once for every Numba target: the CPU (@njit, numba-cpu backend),
the GPU (@cuda.jit, numba-cuda backend) and Numba's CUDA simulator (plain Python).

Reference: tinynet/backends/numpy_ref.py (activate, activation_grad, sigmoid).
Codes: tinynet/_activations.py CODES (0 linear, 1 relu, 2 sigmoid, 3 tanh).

The same source is built per float type: constants are made of the argument's own type, so
a float32 kernel never computes in float64 (one exception, below). Plain Python callers (the
simulator) get the float64 build; compiled callers get the overload for their type.

`cpu_activate` is `activate` for the CPU kernels: the same source, except that float32 tanh
is computed from a float64 exp (`_tanh_float32_from_exp`), because the C library's scalar
tanhf is the slowest part of the small LSTM kernels. Measured on the 2-core dev machine
(AMD EPYC, glibc 2.36; a one-off timeit script, not kept), ns per element of a compiled
loop over 10,000 float32: tanhf 11.9, float64 tanh 10.3, float64 expm1 11.0, float64 exp 5.5
(and sigmoid through expf 3.6). The
whole-sequence LSTM forward kernel at batch 1, T=100, in 1, H=3 (what online training of
Experiment 3a runs) went from 16.7 to 13.7 us. Its largest error against float64 tanh was
3.0e-8 (tanhf's: 9.4e-8). The GPU keeps tanhf: there it is not the bottleneck, and float64
is the slow path on GPUs.
"""

import math

import numba
import numpy as np
from numba.extending import overload
from numba.np.numpy_support import as_dtype


@numba.njit(inline="always")
def _tanh_float32_from_exp(z):
    # tanh(|z|) = (1 - e) / (1 + e) with e = exp(-2|z|) in [0, 1]: never overflows. In
    # float64 the cancellation in 1 - e costs at most 1.2e-16 / (2|z|) relative, below
    # float32's rounding for |z| >= 1e-4; below that, tanh(z) = z (1 - z^2/3 + ...) rounds to z
    # within float32's precision. NaN stays NaN; -0.0 stays -0.0.
    magnitude = abs(np.float64(z))
    if magnitude < 1e-4:
        return z
    e = math.exp(-2.0 * magnitude)
    t = np.float32((1.0 - e) / (1.0 + e))
    return t if z >= 0 else -t


def _build(one, tanh=math.tanh):
    zero = one - one

    def activate(code, z):
        if code == 0:
            return z
        if code == 1:
            return zero if z < zero else z     # NaN stays NaN, as np.maximum
        if code == 2:
            # exp of -|z| only: never overflows. One exp and a select, not two branches: the
            # sign of z is random in a network, so a branch is mispredicted half the time
            # (measured on the CPU: 5.7 -> 4.7 ns per element, same results bit for bit).
            e = math.exp(-abs(z))
            return (one if z >= zero else e) / (one + e)
        return tanh(z)

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


def cpu_activate(code, z):
    """activate, for the CPU kernels only (see the module docstring)."""
    return activate(code, z)


@overload(cpu_activate)
def _cpu_activate_typed(code, z):
    dtype = as_dtype(z)
    if dtype == np.float32:
        return _build(dtype.type(1.0), _tanh_float32_from_exp)[0]
    return _build(dtype.type(1.0))[0]
