"""Activation math written once for every Numba target: the CPU (@njit, numba-cpu backend),
the GPU (@cuda.jit, numba-cuda backend) and Numba's CUDA simulator (plain Python).

Reference: tinynet/backends/numpy_ref.py (activate, activation_grad, sigmoid).
Codes: tinynet/_activations.py CODES (0 linear, 1 relu, 2 sigmoid, 3 tanh).

The same source is built per float type: constants are made of the argument's own type, so
a float32 kernel never computes in float64. Plain Python callers (the simulator) get the
float64 build; compiled callers get the overload for their type.

`activate` (the GPU kernels) takes exp and tanh from the math library. The CPU kernels use
`cpu_activate`, `cpu_sigmoid` and `cpu_tanh` instead: the same functions, with exp, sigmoid
and tanh written out here as plain arithmetic and selects, no branch and no library call, so
that LLVM vectorizes a loop over them (this Numba has no vector math library: a loop calling
expf or tanhf stays scalar); written with the element-wise helpers select, floor,
power_of_two and like, the same source also computes on the SIMD vectors of
kernels/numba_cpu/vectors.py (the stack LSTM kernel). `cpu_activate`, used in the scalar
loops of the single-model kernels, computes its sigmoid and tanh the same way but from the
math library's exp, the faster one there. Accurate to a few ulp over the whole float range, float32 and float64
(tests/test_numba_cpu.py); NaN stays NaN, -0.0 stays -0.0, +-inf gives the limits.
"""

import math
from fractions import Fraction

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype


def _build(one, tanh=math.tanh):
    zero = one - one

    def activate(code, z):
        if code == 0:
            return z
        if code == 1:
            return zero if z < zero else z     # NaN stays NaN, as np.maximum
        if code == 2:
            # exp of -|z| only: never overflows. One exp and a select, not two branches: the
            # sign of z is random in a network, so a branch would be mispredicted half the time.
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


# --- exp, sigmoid, tanh that vectorize (the CPU kernels) --------------------------------

@intrinsic
def _float_from_bits(typingctx, bits):
    """The float with the bit pattern of `bits`: int32 -> float32, int64 -> float64."""
    float_type = {types.int32: types.float32, types.int64: types.float64}.get(bits)
    if float_type is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(float_type))
    return float_type(bits), codegen


def _tanh_series(terms):
    """The first `terms` coefficients of tanh(z) = z (c0 + c1 z^2 + c2 z^4 + ...), exact:
    c(n-1) = 2^2n (2^2n - 1) B_2n / (2n)! with B the Bernoulli numbers."""
    bernoulli = [Fraction(1)]
    for n in range(1, 2 * terms + 1):
        bernoulli.append(-sum(math.comb(n + 1, k) * bernoulli[k] for k in range(n))
                         / Fraction(n + 1))
    return [Fraction(4 ** n * (4 ** n - 1)) * bernoulli[2 * n] / math.factorial(2 * n)
            for n in range(1, terms + 1)]


# Element-wise helpers the CPU exp, sigmoid and tanh are written with, so that one source
# serves scalars (the loops of every CPU kernel) and the SIMD vectors of
# kernels/numba_cpu/vectors.py (which registers their vector forms). Scalar forms below.

def select(op, a, b, x, y):
    """x where `a op b` holds, else y; op one of "<", "<=", ">", ">=", a compare that is
    false for NaN (a >= b is not `not a < b`)."""
    return x if _COMPARE[op](a, b) else y


def floor(x):
    """The largest whole number <= x."""
    return np.floor(x)


def power_of_two(n):
    """2^n for a whole float n in [-1022, 0] (float64; [-126, 0] float32): its exponent field,
    built as an integer."""
    return np.ldexp(1.0, int(n))


def like(x, value):
    """`value` (a scalar of x's float type) in the form of x: itself for a scalar x."""
    return value


_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _is_float(*values):
    return all(isinstance(v, types.Float) for v in values)


@overload(select, prefer_literal=True, jit_options={"forceinline": True})
def _select_typed(op, a, b, x, y):
    if not (isinstance(op, types.StringLiteral) and _is_float(a, b, x, y)):
        return None
    return {"<": lambda op, a, b, x, y: x if a < b else y,
            "<=": lambda op, a, b, x, y: x if a <= b else y,
            ">": lambda op, a, b, x, y: x if a > b else y,
            ">=": lambda op, a, b, x, y: x if a >= b else y}[op.literal_value]


@overload(floor, jit_options={"forceinline": True})
def _floor_typed(x):
    if _is_float(x):
        return lambda x: np.floor(x)


@overload(power_of_two, jit_options={"forceinline": True})
def _power_of_two_typed(n):
    if not _is_float(n):
        return None
    p = _PARAMETERS[as_dtype(n).type]
    int_type, shift, bias = p["int_type"], p["mantissa_bits"], p["exponent_bias"]
    return lambda n: _float_from_bits(int_type((np.int64(np.int32(n)) + bias) << shift))


@overload(like, jit_options={"forceinline": True})
def _like_typed(x, value):
    if _is_float(x) and value == x:
        return lambda x, value: value


# Per float type: the degree of the Taylor polynomial of exp on |r| <= ln(2)/2 and the number
# of terms of the tanh series on |z| < 1/4, each long enough that its first neglected term is
# a small fraction of an ulp (0.14 ulp at most, float32 tanh at |z| = 1/4); the Cody-Waite split of ln 2 (ln2_hi times any exponent is exact); and
# `lowest`, below which exp rounds to 0.
_PARAMETERS = {
    np.float32: dict(exp_degree=7, tanh_terms=5, ln2_hi=0.693359375, ln2_lo=-2.12194440e-4,
                     lowest=-103.9, int_type=np.int32, mantissa_bits=23, exponent_bias=127),
    np.float64: dict(exp_degree=13, tanh_terms=12, ln2_hi=6.93147180369123816490e-01,
                     ln2_lo=1.90821492927058770002e-10, lowest=-745.1, int_type=np.int64,
                     mantissa_bits=52, exponent_bias=1023),
}


# How the functions below compile: inlined by LLVM into each kernel (which keeps these flags on
# their instructions: multiply-adds may fuse, nothing is reassociated, so the Cody-Waite
# reduction of exp stays exact); no zero test before a division (none can divide by zero).
_OPTIONS = {"forceinline": True, "fastmath": {"contract"}, "error_model": "numpy"}


def _build_cpu(float_type):
    """exp of a non-positive argument, sigmoid and tanh for one float type, compiled inline
    into each kernel."""
    p = _PARAMETERS[float_type]
    f = float_type
    zero, half, one, two = f(0), f(0.5), f(1), f(2)
    log2e, ln2_hi, ln2_lo, lowest = f(1 / math.log(2)), f(p["ln2_hi"]), f(p["ln2_lo"]), f(p["lowest"])
    quarter = f(0.25)
    # Horner order: highest power first
    exp_coefficients = tuple(f(1 / math.factorial(k)) for k in range(p["exp_degree"], -1, -1))
    tanh_coefficients = tuple(f(c) for c in reversed(_tanh_series(p["tanh_terms"])))

    @numba.njit(**_OPTIONS)
    def exp_nonpositive(x):
        # exp(x) for x <= 0 or NaN: x = n ln2 + r, |r| <= ln2 / 2, exp(x) = 2^n exp(r), with
        # 2^n as two factors so that results down to the smallest subnormal come out right.
        # Computed from a clamped copy of x, so no NaN or Inf reaches the integer conversion;
        # the final select gives 0 below `lowest` (with -inf) and NaN for NaN.
        safe = select(">=", x, lowest, x, lowest)
        n = floor(safe * log2e + half)
        r = (safe - n * ln2_hi) - n * ln2_lo
        poly = like(x, zero)
        for c in exp_coefficients:
            poly = poly * r + c
        n_half = floor(n * half)
        y = poly * power_of_two(n_half) * power_of_two(n - n_half)
        return select(">=", x, lowest, y, select("<", x, lowest, like(x, zero), x))

    @numba.njit(**_OPTIONS)
    def sigmoid(z):
        # exp of -|z| only: never overflows; the select picks 1/(1+e) or e/(1+e) by sign
        e = exp_nonpositive(-abs(z))
        return select(">=", z, zero, one, e) / (one + e)

    def tanh_from(exp):
        @numba.njit(**_OPTIONS)
        def tanh(z):
            # tanh(|z|) = (1 - e) / (1 + e), e = exp(-2|z|) in [0, 1], never overflows; near
            # 0, where 1 - e loses digits, the odd series z (c0 + c1 z^2 + ...) instead. Both
            # are computed and one selected: no branch on the data.
            magnitude = abs(z)
            e = exp(-two * magnitude)
            t = (one - e) / (one + e)
            t = select(">=", z, zero, t, -t)
            z2 = z * z
            series = like(z, zero)
            for c in tanh_coefficients:
                series = series * z2 + c
            series = z * series
            return select("<", magnitude, quarter, series, t)
        return tanh

    # in loops over models (the stack kernels) the polynomial exp vectorizes; in the scalar
    # loops of the single-model kernels the math library's exp is the faster one
    return sigmoid, tanh_from(exp_nonpositive), tanh_from(math.exp)


_CPU = {np.dtype(t): _build_cpu(t) for t in _PARAMETERS}


def cpu_sigmoid(z):
    """sigmoid for the CPU kernels (see the module docstring)."""
    return activate(2, z)


def cpu_tanh(z):
    """tanh for the CPU kernels (see the module docstring)."""
    return activate(3, z)


def cpu_activate(code, z):
    """activate, for the CPU kernels (see the module docstring)."""
    return activate(code, z)


def _float_type_of(z):
    # a scalar's dtype, or a SIMD vector's (kernels/numba_cpu/vectors.py)
    return as_dtype(getattr(z, "dtype", z))


@overload(cpu_sigmoid, jit_options=_OPTIONS)
def _cpu_sigmoid_typed(z):
    sigmoid = _CPU[_float_type_of(z)][0]
    return lambda z: sigmoid(z)


@overload(cpu_tanh, jit_options=_OPTIONS)
def _cpu_tanh_typed(z):
    tanh = _CPU[_float_type_of(z)][1]
    return lambda z: tanh(z)


@overload(cpu_activate, jit_options=_OPTIONS)
def _cpu_activate_typed(code, z):
    # activate itself, with the scalar-loop tanh of _build_cpu
    return _build(as_dtype(z).type(1.0), _CPU[as_dtype(z)][2])[0]
