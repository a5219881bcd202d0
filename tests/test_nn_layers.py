"""tinynet.nn layers and graphs: gradients through the model's backward against central
finite differences (float64), shared layers, a DAG, and the shape errors' texts.

The scalar checked is L = sum(output * R) with R random: backward(tape, R) must give
dL/dweight in every Parameter.grad (and dL/dinput with input_grads=True), and each entry is
compared with (L(w + eps) - L(w - eps)) / (2 eps) computed by forward passes alone.
"""

import numpy as np
import pytest

from tinynet import nn

EPS = 1e-6
F64 = "float64"


def loss_of(model, x, r):
    out = model(x)
    return float(np.sum(out * r))


def numeric(model, x, r, array):
    """d L / d array, entry by entry (array is a weight or an input, changed in place)."""
    grad = np.zeros_like(array)
    for pos in np.ndindex(array.shape):
        keep = array[pos]
        array[pos] = keep + EPS
        plus = loss_of(model, x, r)
        array[pos] = keep - EPS
        minus = loss_of(model, x, r)
        array[pos] = keep
        grad[pos] = (plus - minus) / (2 * EPS)
    return grad


def check_model_grads(model, x, rng, wrt_input=True):
    """Every trainable weight's (and the input's) analytic gradient vs finite differences."""
    out = model(x)
    r = rng.standard_normal(out.shape)
    model.zero_grad()
    outs, tape = model.forward(x)
    (dx,) = model.backward(tape, [r], input_grads=True)
    checked = 0
    for name, p in model.named_parameters().items():
        if not p.trainable:
            assert p.grad is None, f"{name} is frozen but got a gradient"
            continue
        expected = numeric(model, x, r, p.value)
        assert p.grad is not None, f"{name}: no gradient"
        np.testing.assert_allclose(p.grad, expected, rtol=1e-5, atol=1e-7, err_msg=name)
        checked += 1
    if wrt_input:
        np.testing.assert_allclose(dx, numeric(model, x, r, x), rtol=1e-5, atol=1e-7,
                                   err_msg="d input")
    return checked


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh"])
def test_dense_gradients(rng, activation):
    model = nn.Sequential([nn.Dense(3, 5, activation, dtype=F64, seed=1),
                           nn.Dense(5, 2, "tanh", dtype=F64, seed=2)])
    x = rng.standard_normal((4, 3)) + 0.05        # away from relu's kink
    assert check_model_grads(model, x, rng) == 4


def test_dense_on_sequences_applies_to_last_axis(rng):
    layer = nn.Dense(3, 2, "tanh", dtype=F64, seed=0)
    x = rng.standard_normal((2, 5, 3))
    expected = np.tanh(x @ layer.kernel.value + layer.bias.value)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12)
    check_model_grads(nn.Sequential([layer]), x, rng)


@pytest.mark.parametrize("options", [
    dict(),
    dict(return_sequences=True),
    dict(activation=None, recurrent_activation=None, unit_forget_bias=False),
    dict(forget_bias=1.5),
])
def test_lstm_gradients(rng, options):
    model = nn.Sequential([nn.LSTM(2, 3, dtype=F64, seed=3, **options),
                           nn.Dense(3, 2, dtype=F64, seed=4)])
    x = rng.standard_normal((3, 4, 2)) * 0.5
    assert check_model_grads(model, x, rng) == 5


def test_lstm_return_state_gradients(rng):
    """Gradients flow into all three outputs [output, h_T, c_T] of return_state."""
    inp = nn.Input((4, 2))
    seq, h_last, c_last = nn.LSTM(2, 3, return_sequences=True, return_state=True,
                                  dtype=F64, seed=5)(inp)
    pooled = nn.GlobalPool1D("mean")(seq)
    out = nn.Concatenate()([pooled, h_last, c_last])
    model = nn.Model(inp, nn.Dense(9, 1, dtype=F64, seed=6)(out))
    check_model_grads(model, rng.standard_normal((2, 4, 2)), rng)


def test_lstm_matches_its_equations(rng):
    """The layer against the LSTM equations written out here in NumPy."""
    layer = nn.LSTM(2, 3, forget_bias=0.5, return_sequences=True, dtype=F64, seed=7)
    x = rng.standard_normal((2, 4, 2))
    sig = lambda z: 1 / (1 + np.exp(-z))
    h = c = np.zeros((2, 3))
    w, u, b = layer.kernel.value, layer.recurrent_kernel.value, layer.bias.value
    for t in range(4):
        z = x[:, t] @ w + h @ u + b
        i, f, g, o = sig(z[:, :3]), sig(z[:, 3:6] + 0.5), np.tanh(z[:, 6:9]), sig(z[:, 9:])
        c = f * c + i * g
        h = o * np.tanh(c)
        np.testing.assert_allclose(layer(x)[:, t], h, rtol=1e-12)
    np.testing.assert_allclose(b[3:6], 1.0)       # unit_forget_bias: +1 in the forget block


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
@pytest.mark.parametrize("kernel_size", [1, 4])
def test_conv1d_gradients(rng, padding, kernel_size):
    model = nn.Sequential([nn.Conv1D(2, 3, kernel_size, padding, "tanh", dtype=F64, seed=8)])
    x = rng.standard_normal((2, 7, 2))
    check_model_grads(model, x, rng)


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
def test_conv1d_matches_direct_convolution(rng, padding):
    layer = nn.Conv1D(2, 3, 4, padding, dtype=F64, seed=9)
    x = rng.standard_normal((2, 9, 2))
    k = layer.kernel.value                                     # (4, 2, 3)
    before = {"valid": 0, "same": 1, "causal": 3}[padding]     # (k - 1) // 2 = 1 for "same"
    after = {"valid": 0, "same": 2, "causal": 0}[padding]
    xp = np.pad(x, ((0, 0), (before, after), (0, 0)))
    steps = xp.shape[1] - 3
    direct = np.stack([sum(xp[:, t + j] @ k[j] for j in range(4)) for t in range(steps)], 1)
    np.testing.assert_allclose(layer(x), direct + layer.bias.value, rtol=1e-12)
    assert layer(x).shape == ((2, 6, 3) if padding == "valid" else (2, 9, 3))


def test_embedding_gradient_and_frozen(rng):
    ids = rng.integers(0, 6, (3, 4))
    table = rng.standard_normal((6, 2))
    words = nn.Input((4,), dtype="int64")
    trainable = nn.Embedding(6, 2, dtype=F64, seed=0)
    model = nn.Model(words, nn.Dense(2, 1, dtype=F64, seed=1)(
        nn.GlobalPool1D("mean")(trainable(words))))
    r = rng.standard_normal((3, 1))
    model.zero_grad()
    outs, tape = model.forward(ids)
    model.backward(tape, [r])
    expected = numeric(model, ids, r, trainable.embeddings.value)
    np.testing.assert_allclose(trainable.embeddings.grad, expected, rtol=1e-5, atol=1e-7)

    frozen = nn.Embedding.from_pretrained(table, dtype=F64)
    np.testing.assert_array_equal(frozen(ids), table[ids])
    model = nn.Model(words, nn.Dense(2, 1, dtype=F64, seed=1)(
        nn.GlobalPool1D("max")(frozen(words))))
    model.zero_grad()
    outs, tape = model.forward(ids)
    model.backward(tape, [r])
    assert frozen.embeddings.grad is None


def test_an_untyped_input_read_by_an_embedding_takes_ids(rng):
    # nn.Input((4,)) without dtype= feeding an Embedding takes the ids as integers, as
    # Sequential does (they were cast to float and refused by the Embedding)
    ids = rng.integers(0, 6, (3, 4))
    table = rng.standard_normal((6, 2)).astype(np.float32)

    def model(words):
        pooled = nn.GlobalPool1D("mean")(nn.Embedding.from_pretrained(table)(words))
        return nn.Model(words, pooled)
    untyped, typed = model(nn.Input((4,))), model(nn.Input((4,), dtype="int64"))
    np.testing.assert_array_equal(untyped.predict(ids), typed.predict(ids))
    np.testing.assert_allclose(untyped.predict(ids), table[ids].mean(1), rtol=1e-6)
    with pytest.raises(ValueError, match="integer ids"):
        untyped.predict(ids.astype(np.float32))


@pytest.mark.parametrize("mode", ["mean", "max", "min"])
def test_pooling_gradients(rng, mode):
    layer = nn.GlobalPool1D(mode)
    x = rng.standard_normal((3, 5, 4))
    expected = {"mean": x.mean(1), "max": x.max(1), "min": x.min(1)}[mode]
    np.testing.assert_array_equal(layer(x), expected)
    model = nn.Sequential([nn.Conv1D(4, 4, 1, dtype=F64, seed=1), layer,
                           nn.Dense(4, 2, dtype=F64, seed=2)])
    check_model_grads(model, x, rng)


def test_concatenate_and_sum_gradients(rng):
    inp = nn.Input((6, 1))
    a = nn.Conv1D(1, 3, 3, "same", "tanh", dtype=F64, seed=1)(inp)
    b = nn.Conv1D(1, 2, 2, "causal", dtype=F64, seed=2)(inp)
    joined = nn.Concatenate(axis=-1)([a, b])                       # (batch, 6, 5)
    model = nn.Model(inp, nn.Sum(axis=-1)(joined))                 # (batch, 6)
    x = rng.standard_normal((2, 6, 1))
    assert model(x).shape == (2, 6)
    check_model_grads(model, x, rng)


def test_shared_layer_accumulates_every_use(rng):
    """A Dense used three times: its gradient is the sum of three single-use gradients."""
    shared = nn.Dense(4, 2, "tanh", dtype=F64, seed=3)
    inp = nn.Input((5, 4))
    uses = [shared(nn.GlobalPool1D(m)(inp)) for m in ("mean", "max", "min")]
    model = nn.Model(inp, nn.Concatenate()(uses))
    x = rng.standard_normal((3, 5, 4))
    assert check_model_grads(model, x, rng) == 2
    r = rng.standard_normal((3, 6))
    model.zero_grad()
    _, tape = model.forward(x)
    model.backward(tape, [r])
    total = shared.kernel.grad.copy()
    parts = np.zeros_like(total)
    for k, mode in enumerate(("mean", "max", "min")):
        single = nn.Model(inp, shared(nn.GlobalPool1D(mode)(inp)))
        single.zero_grad()
        _, tape = single.forward(x)
        single.backward(tape, [r[:, 2 * k:2 * k + 2]])
        parts += shared.kernel.grad
    np.testing.assert_allclose(total, parts, rtol=1e-12)


def test_graph_dag_with_branches_and_skip(rng):
    """Branches that rejoin, a skip connection, and one tensor used by three consumers."""
    inp = nn.Input((3,))
    h = nn.Dense(3, 4, "tanh", dtype=F64, seed=1)(inp)
    left = nn.Dense(4, 4, "sigmoid", dtype=F64, seed=2)(h)
    right = nn.Dense(4, 2, "relu", dtype=F64, seed=3)(h)
    joined = nn.Concatenate()([left, right, h])                     # h used three times
    out = nn.Dense(10, 2, dtype=F64, seed=4)(joined)
    model = nn.Model(inp, out)
    assert [layer.name for layer in model.layers] == \
        ["dense", "dense_1", "dense_2", "concatenate", "dense_3"]
    x = rng.standard_normal((5, 3)) + 0.05
    assert check_model_grads(model, x, rng) == 8


def test_graph_refuses_inputs_it_was_not_given():
    a, b = nn.Input((2,)), nn.Input((2,))
    out = nn.Concatenate()([a, b])
    with pytest.raises(ValueError, match="not among the model's inputs"):
        nn.Model(a, out)


def test_duplicate_layer_names_refused():
    with pytest.raises(ValueError, match="named"):
        nn.Sequential([nn.Dense(2, 2, name="x"), nn.Dense(2, 2, name="x")])


# --- the shape errors people meet --------------------------------------------------------

def test_error_2d_input_to_sequence_layers():
    x = np.zeros((32, 100), np.float32)
    for layer in (nn.LSTM(1, 3, name="lstm"), nn.Conv1D(1, 6, 10, "same", name="conv")):
        with pytest.raises(ValueError) as info:
            layer(x)
        text = str(info.value)
        assert text.startswith(f"{type(layer).__name__} layer '{layer.name}'")
        assert "(batch, steps" in text and "(32, 100)" in text
        assert "x[..., None]" in text and "(32, 100, 1)" in text
    inp = nn.Input((100,))                     # the same mistake found when building a graph
    with pytest.raises(ValueError, match=r"x\[\.\.\., None\]"):
        nn.Conv1D(1, 6, 10, "same")(inp)


def test_error_input_width():
    layer = nn.Dense(3, 5, name="rgb")
    with pytest.raises(ValueError) as info:
        layer(np.zeros((8, 4), np.float32))
    text = str(info.value)
    assert text.startswith("Dense layer 'rgb'")
    assert "expected 3 features per sample" in text and "(8, 4)" in text
    assert "Dense(4, 5)" in text
    with pytest.raises(ValueError, match=r"Dense layer \(in=4, out=1\): expected 4 features"):
        nn.Sequential([nn.Dense(3, 5), nn.Dense(4, 1)])        # caught when building
    with pytest.raises(ValueError, match=r"LSTM layer.*expected 2 features per step.*LSTM\(3, 4\)"):
        nn.LSTM(2, 4)(np.zeros((1, 5, 3), np.float32))


def test_error_loss_shapes_name_both_and_the_axis():
    mse = nn.MSE()
    with pytest.raises(ValueError) as info:
        mse(np.zeros((192, 1), np.float32), np.zeros((64, 1), np.float32))
    text = str(info.value)
    assert "(192, 1)" in text and "(64, 1)" in text
    assert "192 = 3 x 64" in text and "axis 0" in text and "Concatenate(axis=-1)" in text
    with pytest.raises(ValueError, match=r"y.reshape\(-1, 1\)"):
        mse(np.zeros((64, 1), np.float32), np.zeros(64, np.float32))


def test_error_dtype_names_layer_and_fix():
    with pytest.raises(ValueError, match=r"Dense layer 'd'.*float64.*float32.*astype"):
        nn.Dense(2, 1, name="d")(np.zeros((1, 2)))


def test_concatenating_along_the_batch_axis_is_refused_when_the_graph_is_built():
    """S3's seed bug: three pooled (batch, 16) branches joined on axis 0 would give
    (3 * batch, 1) predictions; it is refused at build time, naming the shapes and the fix."""
    vectors = nn.Input((150, 50))
    shared = nn.Dense(50, 16, "relu")
    pooled = [shared(nn.GlobalPool1D(mode)(vectors)) for mode in ("mean", "max", "min")]
    for axis in (0, -2):
        with pytest.raises(ValueError) as info:
            nn.Concatenate(axis=axis)(pooled)
        text = str(info.value)
        for fragment in ("(None, 16), (None, 16), (None, 16)", f"axis={axis}", "batch axis",
                         "Concatenate(axis=-1)", "(None, 48)"):
            assert fragment in text, text
    with pytest.raises(ValueError, match="batch axis"):
        nn.Concatenate(axis=0)([np.ones((4, 2)), np.ones((4, 2))])


def test_dense_softmax_output_and_gradients(rng):
    model = nn.Sequential([nn.Dense(3, 5, "tanh", dtype=F64, seed=1),
                           nn.Dense(5, 4, "softmax", dtype=F64, seed=2)])
    x = rng.standard_normal((6, 3))
    z = np.tanh(x @ model.layers[0].kernel.value) @ model.layers[1].kernel.value
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)
    assert check_model_grads(model, x, rng) == 4
    huge = nn.Dense(1, 3, "softmax", dtype=F64, seed=3)
    huge.set_weights({"kernel": [[1000.0, -1000.0, 0.0]]})
    np.testing.assert_array_equal(huge(np.ones((1, 1))), [[1.0, 0.0, 0.0]])    # no overflow


def test_softmax_is_a_dense_output_and_its_misuses_say_so():
    with pytest.raises(ValueError, match=r"softmax over 1 output is always 1.*"
                                         r"Dense\(8, 1, 'sigmoid'\).*Dense\(8, 2, 'softmax'\)"):
        nn.Dense(8, 1, "softmax")
    for build in (lambda: nn.Conv1D(1, 4, 3, activation="softmax"),
                  lambda: nn.LSTM(1, 4, activation="softmax")):
        with pytest.raises(ValueError, match=r"softmax is the output activation of nn.Dense"):
            build()
