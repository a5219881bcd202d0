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
