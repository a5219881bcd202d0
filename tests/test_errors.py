"""Every error path of the ops contract: bad input is refused with a ValueError that names
the op, the argument, the expected shape (with symbols), the shape or dtype it got, and the
fix. The checks live in tinynet.ops, so every backend answers alike; they run here on each
CPU backend present."""

import re

import numpy as np
import pytest

from tinynet import ops
from conftest import BACKENDS, SIMULATED, backend_param

CPU_BACKENDS = [backend_param(n) for n in BACKENDS
                if n in ("numpy", "numba-cpu") or (SIMULATED and n == "numba-cuda")]
f32 = np.float32


def lstm_args(batch=2, steps=3, n_in=4, hidden=5, dtype=f32):
    return (np.ones((batch, steps, n_in), dtype), np.zeros((batch, hidden), dtype),
            np.zeros((batch, hidden), dtype), np.ones((n_in, 4 * hidden), dtype),
            np.ones((hidden, 4 * hidden), dtype), np.zeros(4 * hidden, dtype))


def raises(match, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    return str(info.value)


@pytest.fixture(params=CPU_BACKENDS)
def backend(request):
    return request.param


# --- dense -----------------------------------------------------------------------------

def test_dense_1d_input_says_how_to_make_a_batch(backend):
    text = raises(r"dense: x must be 2-D \(batch, in\), got a 1-D array of shape \(3,\)",
                  ops.dense, np.ones(3, f32), np.ones((3, 2), f32), backend=backend)
    assert "x[None, :]" in text


def test_dense_3d_input_says_how_to_flatten_steps(backend):
    text = raises(r"got a 3-D array of shape \(2, 5, 3\)", ops.dense,
                  np.ones((2, 5, 3), f32), np.ones((3, 2), f32), backend=backend)
    assert "x.reshape(-1, x.shape[-1])" in text


def test_dense_transposed_weights(backend):
    text = raises(r"w must be \(in, out\) with in = 3 to match x \(8, 3\), got \(1, 3\)",
                  ops.dense, np.ones((8, 3), f32), np.ones((1, 3), f32), backend=backend)
    assert "w.T" in text


def test_dense_input_width_mismatch(backend):
    text = raises(r"with in = 4 to match x \(8, 4\), got \(3, 1\)", ops.dense,
                  np.ones((8, 4), f32), np.ones((3, 1), f32), backend=backend)
    assert "number of inputs" in text


def test_dense_bias_shape(backend):
    text = raises(r"b must be \(out,\) = \(2,\), got \(1, 2\)", ops.dense,
                  np.ones((8, 3), f32), np.ones((3, 2), f32), np.ones((1, 2), f32),
                  backend=backend)
    assert "b.reshape(-1)" in text
    raises(r"b must be \(out,\) = \(2,\), got \(3,\)", ops.dense, np.ones((8, 3), f32),
           np.ones((3, 2), f32), np.ones(3, f32), backend=backend)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float16, np.bool_, np.complex64])
def test_dense_non_float_input(backend, dtype):
    text = raises(rf"dense: x must be float32 or float64, got {np.dtype(dtype)}", ops.dense,
                  np.ones((2, 3), dtype), np.ones((3, 2), f32), backend=backend)
    assert "astype" in text


def test_dense_mixed_dtypes_are_not_cast(backend):
    text = raises(r"dense: w is float64 but x is float32", ops.dense, np.ones((2, 3), f32),
                  np.ones((3, 2)), backend=backend)
    assert "w.astype(x.dtype)" in text
    raises(r"b is float64 but x is float32", ops.dense, np.ones((2, 3), f32),
           np.ones((3, 2), f32), np.ones(2), backend=backend)
    raises(r"b must be float32 or float64 like x \(float32\), got int64", ops.dense,
           np.ones((2, 3), f32), np.ones((3, 2), f32), np.ones(2, np.int64), backend=backend)


def test_python_lists_are_float64_and_mix_explicitly(backend):
    # A list becomes a float64 array (NumPy's reading); with float32 weights that is a
    # mixed-dtype error, never a silent cast.
    raises(r"w is float32 but x is float64", ops.dense, [[1.0, 2.0]], np.ones((2, 1), f32),
           backend=backend)


def test_unknown_activation_lists_valid_ones(backend):
    text = raises(r"dense: activation='softmax' is not an activation", ops.dense,
                  np.ones((2, 3), f32), np.ones((3, 2), f32), activation="softmax",
                  backend=backend)
    for name in ("linear", "identity", "relu", "sigmoid", "tanh", "None"):
        assert name in text


def test_dense_backward_gradient_checks(backend):
    y, ctx = ops.dense(np.ones((4, 3), f32), np.ones((3, 2), f32), backend=backend)
    raises(r"dense_backward: dy must have the shape of the forward's output \(4, 2\), "
           r"got \(2, 4\)", ops.dense_backward, ctx, np.ones((2, 4), f32))
    raises(r"dense_backward: dy must be float32 like the forward's output, got float64",
           ops.dense_backward, ctx, np.ones((4, 2)))
    _, _, cell_ctx = ops.lstm_cell(np.ones((1, 1), f32), np.ones((1, 1), f32),
                                   np.ones((1, 1), f32), np.ones((1, 4), f32),
                                   np.ones((1, 4), f32), np.ones(4, f32), backend=backend)
    raises(r"dense_backward: ctx must be the context returned by ops.dense, got lstm_cell",
           ops.dense_backward, cell_ctx, np.ones((4, 2), f32))
    raises(r"ctx must be the context returned by ops.dense, got tuple", ops.dense_backward,
           (1, 2), np.ones((4, 2), f32))


# --- LSTM ------------------------------------------------------------------------------

def test_lstm_2d_sequence_says_add_a_feature_axis(backend):
    xs, h0, c0, w_ih, w_hh, b = lstm_args(n_in=1)
    text = raises(r"lstm: xs must be 3-D \(batch, steps, in\), got a 2-D array of shape "
                  r"\(2, 3\)", ops.lstm, xs[..., 0], h0, c0, w_ih, w_hh, b, backend=backend)
    assert "(batch, steps, features)" in text and "xs[..., None]" in text


def test_lstm_1d_sequence(backend):
    xs, h0, c0, w_ih, w_hh, b = lstm_args(batch=1, n_in=1)
    text = raises(r"got a 1-D array", ops.lstm, xs[0, :, 0], None, None, w_ih, w_hh, b,
                  backend=backend)
    assert "xs[None, :, None]" in text


def test_lstm_wrong_gate_width(backend):
    xs, h0, c0, w_ih, w_hh, b = lstm_args(hidden=5)
    text = raises(r"lstm: w_hh must be \(H, 4\*H\) with gate blocks i, f, g, o, got \(5, 5\)",
                  ops.lstm, xs, h0, c0, w_ih, np.ones((5, 5), f32), b, backend=backend)
    assert "4*H gate columns" in text
    raises(r"w_ih must be \(in, 4\*H\) = \(4, 20\), got \(4, 15\)", ops.lstm, xs, h0, c0,
           np.ones((4, 15), f32), w_hh, b, backend=backend)
    text = raises(r"w_ih must be \(in, 4\*H\) = \(4, 20\), got \(20, 4\)", ops.lstm, xs, h0, c0,
                  np.ones((20, 4), f32), w_hh, b, backend=backend)
    assert "w_ih.T" in text


def test_lstm_bias_and_state_shapes(backend):
    xs, h0, c0, w_ih, w_hh, b = lstm_args(hidden=5)
    text = raises(r"b must be \(4\*H,\) = \(20,\), got \(1, 20\)", ops.lstm, xs, h0, c0, w_ih,
                  w_hh, b[None], backend=backend)
    assert "b.reshape(-1)" in text
    text = raises(r"b must be \(4\*H,\) = \(20,\), got \(40,\)", ops.lstm, xs, h0, c0, w_ih,
                  w_hh, np.zeros(40, f32), backend=backend)
    assert "bias_ih + bias_hh" in text
    raises(r"h0 must be \(batch, H\) = \(2, 5\), got \(5, 2\)", ops.lstm, xs, h0.T, c0, w_ih,
           w_hh, b, backend=backend)
    raises(r"c0 must be \(batch, H\) = \(2, 5\), got \(1, 5\)", ops.lstm, xs, h0, c0[:1], w_ih,
           w_hh, b, backend=backend)


def test_lstm_dtypes(backend):
    xs, h0, c0, w_ih, w_hh, b = lstm_args()
    raises(r"lstm: w_hh is float64 but xs is float32", ops.lstm, xs, h0, c0, w_ih,
           w_hh.astype(np.float64), b, backend=backend)
    raises(r"lstm: xs must be float32 or float64, got int64", ops.lstm, xs.astype(np.int64),
           h0, c0, w_ih, w_hh, b, backend=backend)


def test_lstm_forget_bias_must_be_a_number(backend):
    args = lstm_args()
    raises(r"lstm: forget_bias must be a real number, got '1.0'", ops.lstm, *args,
           forget_bias="1.0", backend=backend)
    raises(r"forget_bias must be a real number, got True", ops.lstm, *args, forget_bias=True,
           backend=backend)


def test_lstm_activation_names(backend):
    args = lstm_args()
    raises(r"lstm: recurrent_activation='hard_sigmoid' is not an activation", ops.lstm, *args,
           recurrent_activation="hard_sigmoid", backend=backend)


def test_lstm_backward_gradient_checks(backend):
    hs, hT, cT, ctx = ops.lstm(*lstm_args(), backend=backend)
    raises(r"lstm_backward: dhs must have the shape of the forward's output \(2, 3, 5\), "
           r"got \(2, 5\)", ops.lstm_backward, ctx, np.ones((2, 5), f32))
    raises(r"lstm_backward: dcT must have the shape of the forward's output \(2, 5\)",
           ops.lstm_backward, ctx, None, None, np.ones((3, 5), f32))


def test_lstm_cell_errors(backend):
    xs, h0, c0, w_ih, w_hh, b = lstm_args()
    text = raises(r"lstm_cell: x must be 2-D \(batch, in\), got a 3-D array", ops.lstm_cell,
                  xs, h0, c0, w_ih, w_hh, b, backend=backend)
    assert "ops.lstm" in text
    raises(r"lstm_cell: h must be \(batch, H\) = \(2, 5\), got \(2, 4\)", ops.lstm_cell,
           xs[:, 0], h0[:, :4], c0, w_ih, w_hh, b, backend=backend)
    _, _, ctx = ops.lstm_cell(xs[:, 0], h0, c0, w_ih, w_hh, b, backend=backend)
    raises(r"lstm_cell_backward: dh1 must have the shape", ops.lstm_cell_backward, ctx,
           np.ones((5, 2), f32), None)


# --- backends --------------------------------------------------------------------------

def test_unknown_backend_lists_known_ones():
    text = raises(r"'tensorflow' is not a tinynet backend; known backends: 'numpy'",
                  ops.dense, np.ones((1, 1), f32), np.ones((1, 1), f32), backend="tensorflow")
    for name in ("numba-cpu", "numba-cuda", "cupy", "auto"):
        assert repr(name) in text


def test_error_messages_name_the_op_first():
    """Every message starts with the op's name, so a traceback says where at a glance."""
    with pytest.raises(ValueError) as info:
        ops.lstm_cell(np.ones(3, f32), None, None, None, None, None, backend="numpy")
    assert re.match(r"lstm_cell: ", str(info.value))


def test_out_of_memory_names_the_op_and_the_sizes(monkeypatch):
    from tinynet.backends import numpy_ref

    def no_memory(*args):
        raise MemoryError("Out of memory allocating 8,589,934,592 bytes")

    monkeypatch.setattr(numpy_ref, "lstm_forward", no_memory)
    args = lstm_args(batch=2, steps=3, n_in=4, hidden=5)
    with pytest.raises(MemoryError, match=r"lstm on the numpy backend ran out of memory with "
                                          r"xs \(2, 3, 4\) float32, w_ih \(4, 20\) float32"):
        ops.lstm(*args, backend="numpy")

    def other_failure(*args):
        raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")

    monkeypatch.setattr(numpy_ref, "lstm_forward", other_failure)
    with pytest.raises(RuntimeError, match="ILLEGAL_ADDRESS"):
        ops.lstm(*args, backend="numpy")


def test_out_of_memory_in_a_backward_names_it(monkeypatch):
    from tinynet.backends import numpy_ref

    _, ctx = ops.dense(np.ones((4, 3), f32), np.ones((3, 2), f32), backend="numpy")

    def no_memory(*args):
        raise RuntimeError("[CUresult.CUDA_ERROR_OUT_OF_MEMORY] Call to cuMemAlloc results in "
                           "CUDA_ERROR_OUT_OF_MEMORY")

    monkeypatch.setattr(numpy_ref, "dense_backward", no_memory)
    with pytest.raises(MemoryError, match=r"dense_backward on the numpy backend ran out of "
                                          r"memory for output gradients of shape \(4, 2\)"):
        ops.dense_backward(ctx, np.ones((4, 2), f32))
