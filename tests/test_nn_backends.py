"""A model on every usable backend (model.to(name)) gives the numpy backend's outputs,
gradients and training steps. Shapes are tiny: under the CUDA simulator every GPU thread is
a Python thread."""

import numpy as np
import pytest

from _compare import assert_close
from conftest import BACKENDS, backend_param
import tinynet
from tinynet import nn


def build(dtype):
    ids = nn.Input((5,), dtype="int64")
    series = nn.Input((5, 2))
    words = nn.GlobalPool1D("max")(nn.Embedding(7, 3, dtype=dtype, seed=1)(ids))  # (b, 3)
    conv = nn.Conv1D(2, 3, 3, "causal", "tanh", dtype=dtype, seed=2)(series)       # (b, 5, 3)
    seq = nn.LSTM(3, 4, return_sequences=True, dtype=dtype, seed=3)(conv)           # (b, 5, 4)
    last = nn.LSTM(4, 2, forget_bias=1.0, dtype=dtype, seed=4)(seq)                  # (b, 2)
    joined = nn.Concatenate()([words, last, nn.GlobalPool1D("mean")(seq)])          # (b, 9)
    out = nn.Dense(9, 1, "sigmoid", dtype=dtype, seed=5)(joined)
    model = nn.Model([ids, series], out)
    model.compile(nn.Adam(0.05), "binary_crossentropy", seed=6)
    return model


def data(dtype):
    rng = np.random.default_rng(0)
    return ([rng.integers(0, 7, (4, 5)), rng.standard_normal((4, 5, 2)).astype(dtype)],
            (rng.uniform(size=(4, 1)) > 0.5).astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS if b != "numpy"])
def test_model_on_backend_matches_numpy(backend, dtype):
    x, y = data(dtype)
    reference, model = build(dtype).to("numpy"), build(dtype).to(backend)
    assert_close("predict", model.predict(x), reference.predict(x))
    assert model.backend_used() == [backend]
    for m in (reference, model):
        m.zero_grad()
        (pred,), tape = m.forward(x)
        m.backward(tape, [m.loss.value_and_grad(pred, m._to_device(y))[1]])
    ref_params = reference.named_parameters()
    for name, p in model.named_parameters().items():
        assert_close(f"d {name}", p.grad, ref_params[name].grad, scale=10)
    reference.fit(x, y, epochs=1, batch_size=3, verbose=0)    # 2 steps: 3 samples, then 1
    model.fit(x, y, epochs=1, batch_size=3, verbose=0)
    for name, p in model.named_parameters().items():
        assert_close(f"{name} after fit", p.value, ref_params[name].value, scale=10)


def test_to_follows_the_default_and_refuses_unknown_names():
    x, _ = data("float64")
    model = build("float64")
    before = model.predict(x)
    with tinynet.use_backend("numpy"):
        # 'auto' may have run numba-cpu: same values up to float64 rounding
        np.testing.assert_allclose(model.predict(x), before, rtol=1e-12, atol=1e-15)
        assert model.backend_used() == ["numpy"]
    with pytest.raises(ValueError, match="not a tinynet backend"):
        model.to("tpu")


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
def test_asarray_places_an_array_where_a_backend_computes(backend):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    placed = tinynet.asarray(a, backend=backend)
    assert placed.shape == (2, 3) and placed.dtype == np.float32
    np.testing.assert_array_equal(tinynet.to_numpy(placed), a)
    ids = tinynet.asarray(np.arange(3), backend=backend)          # dtypes are kept
    assert ids.dtype.kind == "i"
    y, _ = tinynet.ops.dense(placed, tinynet.asarray(np.ones((3, 1), np.float32), backend=backend),
                             backend=backend)
    np.testing.assert_allclose(tinynet.to_numpy(y), a.sum(axis=1, keepdims=True))
    with tinynet.use_backend(backend):                            # None: the default
        assert type(tinynet.asarray(a)) is type(placed)


def test_asarray_on_the_host_and_refusals():
    a = np.ones(3)
    assert tinynet.asarray(a, backend="numpy") is a               # no copy on the host
    assert type(tinynet.asarray([1.0, 2.0], backend="auto")) is np.ndarray
    with pytest.raises(ValueError, match="not a tinynet backend"):
        tinynet.asarray(a, backend="tpu")


def test_nn_places_weights_through_the_public_api_only():
    """tinynet.nn is a client of tinynet's public face: no import of the private registry."""
    import ast
    import pathlib
    for path in pathlib.Path(nn.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any(n.startswith("tinynet._dispatch") for n in names), path.name


def _s1_outputs(seed, learning_rate, nudge=0.0):
    """The README's S1 recipe (3-bit parity, 3-4-1 tanh, full batch) on numpy, with the
    initial first-layer weights scaled by 1 + nudge."""
    x = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], np.float32)
    y = np.array([[1], [0], [0], [1], [0], [1], [1], [0]], np.float32)
    nn.set_seed(seed)
    model = nn.Sequential([nn.Dense(3, 4, "tanh"), nn.Dense(4, 1, "tanh")]).to("numpy")
    model.set_weights({"dense/kernel": model.get_weights()["dense/kernel"] * (1 + nudge)})
    model.compile(optimizer=nn.SGD(learning_rate), loss="mse", seed=0)
    model.fit(x, y, epochs=3000, batch_size=8, verbose=0)
    outputs = model.predict(x)
    assert np.array_equal(outputs > 0.5, y > 0.5)              # trained, whatever the nudge
    return outputs


def test_the_s1_recipe_is_chaotic_at_sgd_05_and_calm_at_01():
    """What the README says where it compares backends: with SGD(0.5) a change of 1e-6 in
    the initial weights (the size of a float32 rounding difference between backends) moves
    the trained outputs by hundredths; with SGD(0.1) it stays about 1e-6."""
    moved = {rate: max(float(np.abs(_s1_outputs(seed, rate)
                                    - _s1_outputs(seed, rate, 1e-6)).max()) for seed in range(3))
             for rate in (0.5, 0.1)}
    assert moved[0.5] > 1e-2 and moved[0.1] < 1e-4, moved
