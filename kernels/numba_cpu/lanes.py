"""Helpers of the stack kernels (stack_dense.py, stack_lstm.py), called from them: moving a
block of models between (M, ...) arrays and the lanes layout (gather_*, scatter_*), and the
pointwise activations and their derivatives.

activate_rows (stack_dense.py) works on rows [start, stop) of a C-contiguous (rows, lanes)
array: one row holds one value for each of a block's models. The activation code is tested
outside the loop over lanes, so each such loop is plain arithmetic over contiguous lanes,
which LLVM vectorizes. The lane count is read from the array, not a compile-time constant:
LLVM unrolls a loop of a constant 16 iterations completely and then vectorizes none of it.
activate and slope (stack_lstm.py) take one value or one SIMD vector of a block's values
(kernels/numba_cpu/vectors.py) and have no branch on the data.
Activation codes: tinynet/_activations.py CODES (0 linear, 1 relu, 2 sigmoid, 3 tanh).
"""

import numba

from tinynet.kernels.numba_cpu import COMPILE_OPTIONS
from tinynet.kernels.numba_math import cpu_sigmoid, cpu_tanh, select


@numba.njit(**COMPILE_OPTIONS)
def activate_rows(code, z, start, stop):
    # z[start:stop] = act(z[start:stop]), in place
    zero = z.dtype.type(0)
    lanes = z.shape[1]
    if code == 1:
        for row in range(start, stop):
            for lane in range(lanes):
                v = z[row, lane]
                z[row, lane] = zero if v < zero else v      # NaN stays NaN, as np.maximum
    elif code == 2:
        for row in range(start, stop):
            for lane in range(lanes):
                z[row, lane] = cpu_sigmoid(z[row, lane])
    elif code == 3:
        for row in range(start, stop):
            for lane in range(lanes):
                z[row, lane] = cpu_tanh(z[row, lane])


@numba.njit(**COMPILE_OPTIONS)
def slope_terms(code, one):
    # The terms slope() takes for activation `code` (one: 1 in the kernel's float type), made
    # once per kernel call: sigmoid's y (1 - y) and tanh's 1 - y^2 are both d0 + y (d1 + d2 y);
    # relu's derivative is the step 1 if y > 0 else 0, linear's the step 1 if y > 0 else 1
    # (so 1 for any y, NaN and infinities included). -> (d0, d1, d2, step, below)
    zero = one - one
    if code == 2:
        return zero, one, -one, False, zero
    if code == 3:
        return one, zero, -one, False, zero
    return one, zero, zero, True, zero if code == 1 else one


@numba.njit(forceinline=True, **COMPILE_OPTIONS)
def slope(y, terms):
    # act'(z) from the output y = act(z) (numba_math.activation_grad, the same roundings),
    # with the terms of slope_terms: no branch on the activation, so a loop over lanes that
    # calls it stays plain vectorizable arithmetic, and the kernels compute it inside the loop
    # that uses it, with no pass of its own over the rows. y: a scalar or a Vector.
    d0, d1, d2, step, below = terms
    return select(">", y, d1, d0, below) if step else d0 + y * (d1 + d2 * y)


@numba.njit(forceinline=True, **COMPILE_OPTIONS)
def activate(code, v, zero):
    # act(v) for v a kernels/numba_cpu/vectors.py Vector (one value per lane of a block) or
    # a scalar; zero: 0 of its float type
    if code == 1:
        return select("<", v, zero, zero, v)      # NaN stays NaN, as np.maximum
    if code == 2:
        return cpu_sigmoid(v)
    if code == 3:
        return cpu_tanh(v)
    return v


@numba.njit(**COMPILE_OPTIONS)
def gather_matrix(a, first, count, out):
    # a (M, rows, cols), any strides -> out (rows, cols, lanes): models first .. first+count-1
    # in lanes 0 .. count-1, zeros in the lanes past them
    out[:] = 0
    for lane in range(count):
        for i in range(a.shape[1]):
            for j in range(a.shape[2]):
                out[i, j, lane] = a[first + lane, i, j]


@numba.njit(**COMPILE_OPTIONS)
def gather_rows(a, first, count, out):
    # a (M, rows), any strides -> out (rows, lanes), zeros past the block's models
    out[:] = 0
    for lane in range(count):
        for i in range(a.shape[1]):
            out[i, lane] = a[first + lane, i]


@numba.njit(**COMPILE_OPTIONS)
def scatter_matrix(lanes_array, first, count, out):
    # the inverse of gather_matrix: lanes_array (rows, cols, lanes) -> out (M, rows, cols),
    # lanes 0 .. count-1 into models first .. first+count-1
    for lane in range(count):
        for i in range(lanes_array.shape[0]):
            for j in range(lanes_array.shape[1]):
                out[first + lane, i, j] = lanes_array[i, j, lane]


@numba.njit(**COMPILE_OPTIONS)
def scatter_rows(lanes_array, first, count, out):
    # the inverse of gather_rows: lanes_array (rows, lanes) -> out (M, rows)
    for lane in range(count):
        for i in range(lanes_array.shape[0]):
            out[first + lane, i] = lanes_array[i, lane]
