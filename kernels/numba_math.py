"""Activation math written once for every Numba target: the CPU (@njit, numba-cpu backend),
the GPU (@cuda.jit, numba-cuda backend) and Numba's CUDA simulator (plain Python).

Reference: tinynet/backends/numpy_ref.py (activate, activation_grad, sigmoid).
Codes: tinynet/_activations.py CODES (0 linear, 1 relu, 2 sigmoid, 3 tanh).

The same source is built per float type: constants are made of the argument's own type, so
a float32 kernel never computes in float64. Plain Python callers (the simulator) get the
float64 build; compiled callers get the overload for their type.

`cpu_activate` is `activate` for the CPU kernels: the same source, except that float32 tanh
is `_tanh_float32`, built on expf, because the C library's scalar tanhf is the slowest part
of the small LSTM kernels. Measured on the 2-core dev machine (AMD EPYC, glibc 2.36; one-off
timeit scripts, not kept), ns per element of a compiled loop over float32: tanhf 11.9,
float64 tanh 10.3, tanh from a float64 exp 7.8-8.2, `_tanh_float32` 4.6 (and sigmoid
through expf 3.6). The whole-sequence LSTM forward kernel at batch 1, T=100, in 1, H=3 (what
online training of Experiment 3a runs): 16.7 us with tanhf, then 13.7 with the float64 exp;
with `_tanh_float32`, in three adjacent pairs of runs (medians of 31 blocks; the machine's
speed drifts between pairs), 14.3 -> 12.8, 18.9 -> 15.9 and 18.2 -> 15.9 us. Its error
against float64 tanh over 2.6 million float32 inputs from 1e-30 to 20: at most 8.9e-8
absolute and 2.6 ulp (tanhf's: 9.4e-8 absolute). The GPU keeps tanhf: there it is not the
bottleneck, and float64 is the slow path on GPUs.
"""

import math

import numba
import numpy as np
from numba.extending import overload
from numba.np.numpy_support import as_dtype


@numba.njit(inline="always")
def _tanh_float32(z):
    # tanh(|z|) = (1 - e) / (1 + e) with e = expf(-2|z|) in [0, 1]: never overflows. Half an
    # ulp of error in e becomes 2/(1+e)^2 times as much in the result, which near 0 is small:
    # so below |z| = 1/4 the odd series z - z^3/3 + 2z^5/15 - 17z^7/315 + 62z^9/2835 is used
    # instead (the next term, 1382z^11/155925, is below 1e-8 relative there). Worst error,
    # measured over 2.6 million inputs: 2.6 ulp, just above 1/4 (with the cut at 1/16 and a
    # series to z^7 it was 5.4 ulp, just above 1/16). Both are computed and one selected: no
    # branch on the data. NaN stays NaN; -0.0 stays -0.0; +-inf gives +-1.
    one = np.float32(1)
    magnitude = abs(z)
    e = math.exp(np.float32(-2) * magnitude)
    t = (one - e) / (one + e)
    t = t if z >= 0 else -t
    z2 = z * z
    series = z * (one - z2 * (np.float32(1 / 3) - z2 * (np.float32(2 / 15) - z2 * (
        np.float32(17 / 315) - z2 * np.float32(62 / 2835)))))
    return series if magnitude < np.float32(0.25) else t


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
        return _build(dtype.type(1.0), _tanh_float32)[0]
    return _build(dtype.type(1.0))[0]
