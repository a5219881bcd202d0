"""SIMD vectors of LANES floats as a Numba type, for the stack kernels (stack_lstm.py): one
value per model of a block, the whole block in one variable.

A loop over a block's lanes is vectorized by LLVM only after it proves at run time that the
loop's arrays do not overlap, and it gives that up for a loop that touches many arrays; a
vector is SIMD by construction. A kernel written with vectors is plain code over gate rows
and units: each operation below is one LLVM vector instruction (split into as many machine
vectors as the CPU needs: one AVX-512 or two AVX2 registers for 16 float32), and LLVM
schedules the independent ones of a step side by side.

What a kernel can do with a Vector:
- load(row) / store(row, v): the first LANES values of a 1-D C-contiguous array (a row of a
  lanes-layout array, e.g. z[j] of z (rows, LANES));
- + - * / and unary -, between vectors of one float type or with a scalar of that type
  (broadcast), with the kernels' fastmath flags (multiply-adds may fuse);
- the element-wise helpers of kernels/numba_math.py: select, floor, abs, power_of_two, like
  (their vector forms are registered here), and so the CPU sigmoid and tanh built from them.
"""

import operator

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, overload, register_model

from tinynet.kernels.numba_cpu import FASTMATH, LANES
from tinynet.kernels.numba_math import floor, like, power_of_two, select

_FLAGS = tuple(sorted(FASTMATH))


class Vector(types.Type):
    """LANES values of one float type, as one LLVM vector."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Vector({dtype} x {LANES})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, LANES))


def _is_row(row):
    return isinstance(row, types.Array) and row.ndim == 1 and row.layout == "C" and \
        isinstance(row.dtype, types.Float)


def _row_pointer(context, builder, row_type, row, vector_type):
    # the row's data as a pointer to one vector, aligned as its elements are
    data = context.make_array(row_type)(context, builder, row).data
    return builder.bitcast(data, context.get_value_type(vector_type).as_pointer())


@intrinsic
def load(typingctx, row):
    """The first LANES values of `row` (1-D, C-contiguous, at least LANES long) as a Vector."""
    if not _is_row(row):
        return None
    vector = Vector(row.dtype)

    def codegen(context, builder, signature, args):
        pointer = _row_pointer(context, builder, row, args[0], vector)
        return builder.load(pointer, align=context.get_abi_sizeof(pointer.type.pointee.element))
    return vector(row), codegen


@intrinsic
def store(typingctx, row, value):
    """row[:LANES] = value."""
    if not (_is_row(row) and row.mutable and value == Vector(row.dtype)):
        return None

    def codegen(context, builder, signature, args):
        pointer = _row_pointer(context, builder, row, args[0], value)
        builder.store(args[1], pointer, align=context.get_abi_sizeof(pointer.type.pointee.element))
        return context.get_dummy_value()
    return types.none(row, value), codegen


def _broadcast(context, builder, value, value_type, vector):
    # codegen: `value` (of value_type: `vector` itself or its float type) as a `vector`
    if value_type == vector:
        return value
    vector_type = context.get_value_type(vector)
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


@intrinsic
def splat(typingctx, value):
    """A Vector with `value` (a float) in every lane."""
    if not isinstance(value, types.Float):
        return None
    vector = Vector(value)

    def codegen(context, builder, signature, args):
        return _broadcast(context, builder, args[0], value, vector)
    return vector(value), codegen


def _vector_or_scalar_of(vector, value):
    """Whether `value` is `vector` itself or a scalar of its float type (broadcast)."""
    return value == vector or value == vector.dtype


def _the_vector(*values):
    """The Vector type among `values` (None if there is none)."""
    return next((v for v in values if isinstance(v, Vector)), None)


def _register_binary(python_op, instruction):
    @intrinsic
    def vector_op(typingctx, a, b):
        vector = _the_vector(a, b)
        if vector is None or not (_vector_or_scalar_of(vector, a)
                                  and _vector_or_scalar_of(vector, b)):
            return None

        def codegen(context, builder, signature, args):
            a_, b_ = (_broadcast(context, builder, value, value_type, vector)
                      for value, value_type in zip(args, signature.args))
            return getattr(builder, instruction)(a_, b_, flags=_FLAGS)
        return vector(a, b), codegen

    @overload(python_op)
    def _typed(a, b):
        if _the_vector(a, b) is not None:
            return lambda a, b: vector_op(a, b)


for _python_op, _instruction in ((operator.add, "fadd"), (operator.sub, "fsub"),
                                 (operator.mul, "fmul"), (operator.truediv, "fdiv")):
    _register_binary(_python_op, _instruction)


@intrinsic
def _negate(typingctx, a):
    if not isinstance(a, Vector):
        return None

    def codegen(context, builder, signature, args):
        return builder.fneg(args[0], flags=_FLAGS)
    return a(a), codegen


@overload(operator.neg)
def _negate_typed(a):
    if isinstance(a, Vector):
        return lambda a: _negate(a)


def _llvm_unary(name):
    # an LLVM intrinsic on a vector, e.g. llvm.floor.v16f32
    @intrinsic
    def vector_op(typingctx, a):
        if not isinstance(a, Vector):
            return None

        def codegen(context, builder, signature, args):
            vector_type = args[0].type
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector_type, [vector_type]),
                f"llvm.{name}.v{LANES}f{a.dtype.bitwidth}")
            return builder.call(function, [args[0]])
        return a(a), codegen
    return vector_op


_floor, _fabs = _llvm_unary("floor"), _llvm_unary("fabs")


@overload(floor)
def _floor_typed(x):
    if isinstance(x, Vector):
        return lambda x: _floor(x)


@overload(abs)
def _abs_typed(x):
    if isinstance(x, Vector):
        return lambda x: _fabs(x)


@intrinsic
def _power_of_two(typingctx, n):
    if not isinstance(n, Vector):
        return None
    bits = n.dtype.bitwidth
    mantissa_bits, exponent_bias = {32: (23, 127), 64: (52, 1023)}[bits]

    def codegen(context, builder, signature, args):
        # as numba_math's scalar power_of_two: the exponent field built as an integer
        integers = ir.VectorType(ir.IntType(bits), LANES)
        field = builder.add(builder.fptosi(args[0], integers),
                            ir.Constant(integers, [exponent_bias] * LANES))
        field = builder.shl(field, ir.Constant(integers, [mantissa_bits] * LANES))
        return builder.bitcast(field, args[0].type)
    return n(n), codegen


@overload(power_of_two)
def _power_of_two_typed(n):
    if isinstance(n, Vector):
        return lambda n: _power_of_two(n)


def _select_intrinsic(predicate):
    @intrinsic
    def vector_select(typingctx, a, b, x, y):
        vector = _the_vector(a, b, x, y)
        if vector is None or not all(_vector_or_scalar_of(vector, v) for v in (a, b, x, y)):
            return None

        def codegen(context, builder, signature, args):
            a_, b_, x_, y_ = (_broadcast(context, builder, value, value_type, vector)
                              for value, value_type in zip(args, signature.args))
            holds = builder.fcmp_ordered(predicate, a_, b_)
            return builder.select(holds, x_, y_)
        return vector(a, b, x, y), codegen
    return vector_select


_SELECTS = {op: _select_intrinsic(op) for op in ("<", "<=", ">", ">=")}


@overload(select, prefer_literal=True)
def _select_typed(op, a, b, x, y):
    if _the_vector(a, b, x, y) is None or not isinstance(op, types.StringLiteral):
        return None
    vector_select = _SELECTS[op.literal_value]
    return lambda op, a, b, x, y: vector_select(a, b, x, y)


@overload(like)
def _like_typed(x, value):
    if isinstance(x, Vector) and value == x.dtype:
        return lambda x, value: splat(value)
