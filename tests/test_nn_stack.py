"""nn.Stack against its models trained one by one: the same data, the same updates, the same
weights after; select, save/load and the architecture check."""

import numpy as np
import pytest

import tinynet
from tinynet import nn

from _compare import assert_close
from conftest import SIMULATED, USABLE

CPU = [pytest.param(name, id=name, marks=[] if USABLE[name] else
                    [pytest.mark.skip(reason=f"{name} not usable")])
       for name in ("numpy", "numba-cpu")]
ALL = CPU + [pytest.param("numba-cuda", id="numba-cuda"),
             pytest.param("cupy", id="cupy", marks=[] if USABLE["cupy"] else [
                 pytest.mark.skip(reason="cupy not usable (no GPU)")])]


def sequence_model(seed, forget_bias):
    nn.set_seed(seed)
    return nn.Sequential([
        nn.LSTM(2, 4, return_sequences=True, forget_bias=forget_bias, dtype="float64"),
        nn.LSTM(4, 3, forget_bias=forget_bias, dtype="float64"),
        nn.Dense(3, 1, "sigmoid", dtype="float64")])


def pooled_model(seed):
    """S3's shape, small: ids -> embedding -> mean/max pooled -> one shared Dense -> joined."""
    nn.set_seed(seed)
    words = nn.Input((6,), dtype="int64")
    vectors = nn.Embedding(20, 5, dtype="float64")(words)
    shared = nn.Dense(5, 3, "tanh", dtype="float64")
    pooled = [shared(nn.GlobalPool1D(mode)(vectors)) for mode in ("mean", "max")]
    out = nn.Dense(6, 1, "sigmoid", dtype="float64")(nn.Concatenate(axis=-1)(pooled))
    return nn.Model(words, out)


def assert_same_weights(case, stack, models):
    stacked = stack.get_weights()
    for m, model in enumerate(models):
        for name, value in model.get_weights().items():
            assert_close(f"{case} model {m} {name}", stacked[name][m], value)


@pytest.mark.parametrize("backend", ALL)
def test_a_stack_trains_each_model_as_alone(backend, rng):
    small = backend == "numba-cuda" and SIMULATED
    models_n, samples, steps = (2, 3, 3) if small else (4, 6, 5)
    forget_biases = [0.0, 1.0, 2.5, 5.0][:models_n]
    rates = [0.05, 0.1, 0.2, 0.4][:models_n]
    x = rng.standard_normal((models_n, samples, steps, 2))
    y = rng.uniform(0, 1, (models_n, samples, 1))
    lengths = rng.integers(1, steps + 1, (models_n, samples))
    with tinynet.use_backend(backend):
        stack = nn.Stack([sequence_model(m, fb) for m, fb in enumerate(forget_biases)])
        stack.compile(optimizer=nn.SGD(rates, momentum=0.5), loss="mse")
        history = stack.fit(x, y, epochs=2, batch_size=2, shuffle=False, lengths=lengths,
                            verbose=0)
        alone = [sequence_model(m, fb) for m, fb in enumerate(forget_biases)]
        for m, model in enumerate(alone):
            model.compile(optimizer=nn.SGD(rates[m], momentum=0.5), loss="mse")
            model_history = model.fit(x[m], y[m], epochs=2, batch_size=2, shuffle=False,
                                      lengths=lengths[m], verbose=0)
            for epoch in range(2):
                assert history.history["loss"][epoch][m] == pytest.approx(
                    model_history.history["loss"][epoch], rel=1e-9)
        assert_same_weights(backend, stack, alone)
        assert stack.optimizer.iterations == alone[0].optimizer.iterations == 2 * (
            -(-samples // 2))                                 # one update per batch
        assert_close("predict", stack.predict(x, lengths=lengths),
                     np.stack([model.predict(x[m], lengths=lengths[m])
                               for m, model in enumerate(alone)]))


@pytest.mark.parametrize("backend", CPU)
def test_a_functional_stack_with_a_shared_layer_and_shared_data(backend, rng):
    ids = rng.integers(0, 20, (10, 6))                 # shared by all models
    y = rng.integers(0, 2, (3, 10, 1)).astype(np.float64)   # per model
    with tinynet.use_backend(backend):
        stack = nn.Stack([pooled_model(m) for m in range(3)])
        stack.compile(optimizer=nn.Adam([0.01, 0.02, 0.05]), loss="binary_crossentropy",
                      metrics=["accuracy"])
        stack.fit(ids, y, epochs=3, batch_size=4, shuffle=False, verbose=0)
        alone = [pooled_model(m) for m in range(3)]
        for m, model in enumerate(alone):
            model.compile(optimizer=nn.Adam([0.01, 0.02, 0.05][m]), loss="binary_crossentropy")
            model.fit(ids, y[m], epochs=3, batch_size=4, shuffle=False, verbose=0)
        assert_same_weights(backend, stack, alone)
        logs = stack.evaluate(ids, y)
        assert logs["loss"].shape == (3,) and logs["accuracy"].shape == (3,)
        for m, model in enumerate(alone):
            assert logs["loss"][m] == pytest.approx(model.evaluate(ids, y[m])["loss"])


def test_select_keeps_optimizer_state(rng):
    x = rng.standard_normal((4, 5, 3, 2))
    y = rng.uniform(0, 1, (4, 5, 1))
    whole = nn.Stack([sequence_model(m, 1.0) for m in range(4)])
    whole.compile(optimizer=nn.Adam([0.01, 0.02, 0.03, 0.04]), loss="mse")
    only = nn.Stack([sequence_model(m, 1.0) for m in (1, 3)])
    only.compile(optimizer=nn.Adam([0.02, 0.04]), loss="mse")
    for _ in range(3):
        whole.train_on_batch(x, y)
        only.train_on_batch(x[[1, 3]], y[[1, 3]])
    part = whole.select(np.array([False, True, False, True]))
    assert len(part) == 2
    for _ in range(3):
        losses = part.train_on_batch(x[[1, 3]], y[[1, 3]])
        assert_close("losses", losses, only.train_on_batch(x[[1, 3]], y[[1, 3]]))
    for name, value in only.get_weights().items():
        assert_close(name, part.get_weights()[name], value)
    alone = part.model(1)
    assert isinstance(alone, nn.Sequential)
    assert_close("model(1)", alone.predict(x[3]), part.predict(x[[1, 3]])[1])


@pytest.mark.parametrize("backend", CPU)
def test_host_predict_and_evaluate_cap_the_pairs_per_forward(backend, rng, monkeypatch):
    """On the host, predict and evaluate cut the samples so that one forward runs at most
    HOST_FORWARD_PAIRS (model, sample) pairs; the outputs and losses are those of a single
    forward over every sample."""
    x = rng.standard_normal((3, 7, 4, 2))
    y = rng.uniform(0, 1, (3, 7, 1))
    lengths = rng.integers(1, 5, (3, 7))
    with tinynet.use_backend(backend):
        stack = nn.Stack([sequence_model(m, 1.0) for m in range(3)])
        stack.compile(optimizer=nn.SGD(0.1), loss="mse")
        whole = stack.predict(x, batch_size=None, lengths=lengths)      # one forward
        whole_losses = stack.evaluate(x, y, batch_size=None, lengths=lengths)
        rows = []
        forward = stack.loop_forward
        monkeypatch.setattr(stack, "loop_forward",
                            lambda xs, lens: rows.append(xs[0].shape[1]) or forward(xs, lens))
        monkeypatch.setattr(nn.stack, "HOST_FORWARD_PAIRS", 7)         # 2 samples x 3 models
        assert_close("predict, capped", stack.predict(x, lengths=lengths), whole)
        assert rows == [2, 2, 2, 1]
        rows.clear()
        assert_close("evaluate, capped", stack.evaluate(x, y, batch_size=None,
                                                        lengths=lengths), whole_losses)
        assert rows == [2, 2, 2, 1]
        rows.clear()
        stack.predict(x, batch_size=1, lengths=lengths)       # below the cap: as asked
        assert rows == [1] * 7
        rows.clear()
        monkeypatch.setattr(nn.stack, "HOST_FORWARD_PAIRS", 2)     # fewer pairs than models
        stack.predict(x, lengths=lengths)
        assert rows == [1] * 7


def test_save_load_round_trip_and_another_architecture_refused(rng, tmp_path):
    stack = nn.Stack([sequence_model(m, 0.0) for m in range(3)])
    path = tmp_path / "stack.npz"
    stack.save(path)
    other = nn.Stack([sequence_model(m + 10, 0.0) for m in range(3)])
    other.load(path)
    for name, value in stack.get_weights().items():
        assert np.array_equal(other.get_weights()[name], value)
    with pytest.raises(ValueError, match="stack.npz"):
        nn.Stack([sequence_model(m, 0.0) for m in range(2)]).load(path)    # M = 2, not 3
    with pytest.raises(ValueError):
        sequence_model(0, 0.0).load(path)                 # one model: no models axis


def test_models_of_another_architecture_are_refused():
    def dense(units, activation="tanh"):
        return nn.Sequential([nn.Dense(3, units, activation), nn.Dense(units, 1)])
    with pytest.raises(ValueError, match=r"model 2 differs from model 0 at Dense layer "
                                         r"'dense': out_features is 5 there, 4"):
        nn.Stack([dense(4), dense(4), dense(5)])
    with pytest.raises(ValueError, match="activation is 'relu' there, 'tanh'"):
        nn.Stack([dense(4), dense(4, "relu")])
    model = dense(4)
    with pytest.raises(ValueError, match="the same object"):
        nn.Stack([model, model])
    stack = nn.Stack([dense(4), dense(4)])
    with pytest.raises(ValueError, match="learning_rate has 3 values for a stack of 2"):
        stack.compile(optimizer=nn.SGD([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="is for an nn.Stack"):
        dense(4).compile(optimizer=nn.SGD([0.1, 0.2]))


def test_nonfinite_models_are_named(rng):
    stack = nn.Stack([sequence_model(m, 0.0) for m in range(3)])
    stack.compile(optimizer=nn.SGD(0.1), loss="mse")
    x = rng.standard_normal((3, 4, 2, 2))
    x[2, 0, 0, 0] = np.nan
    with pytest.raises(nn.NonFiniteLoss, match=r"in 1 of the stack's 3 models \(2;"):
        stack.fit(x, rng.uniform(0, 1, (3, 4, 1)), epochs=1, verbose=0)


def _loss_case(rng, kind, models, batch, classes):
    """(loss, predictions (M, batch, ...), target) for one kind of loss."""
    rows = (models, batch, classes)
    probs = rng.dirichlet(np.ones(classes), (models, batch))
    logits = rng.standard_normal(rows)
    ids = rng.integers(0, classes, (models, batch))
    binary = (rng.uniform(size=rows) > 0.5).astype(np.float64)
    return {
        "mse": (nn.MSE(), logits, rng.standard_normal(rows)),
        "rmse": (nn.RMSE(), logits, rng.standard_normal(rows)),
        "bce": (nn.BinaryCrossentropy(), rng.uniform(0.05, 0.95, rows), binary),
        "bce logits": (nn.BinaryCrossentropy(from_logits=True), logits, binary),
        "cce": (nn.CategoricalCrossentropy(), probs,
                rng.dirichlet(np.ones(classes), (models, batch))),
        "cce logits": (nn.CategoricalCrossentropy(from_logits=True), logits, np.eye(classes)[ids]),
        "sparse": (nn.SparseCategoricalCrossentropy(), probs, ids),
        "sparse (batch, 1)": (nn.SparseCategoricalCrossentropy(), probs, ids[..., None]),
        "sparse logits": (nn.SparseCategoricalCrossentropy(from_logits=True), logits, ids),
        "softmax ids": (nn.SoftmaxCrossentropy(), logits, ids),
        "softmax rows": (nn.SoftmaxCrossentropy(), logits, np.eye(classes)[ids]),
    }[kind]


@pytest.mark.parametrize("kind", ["mse", "rmse", "bce", "bce logits", "cce", "cce logits",
                                  "sparse", "sparse (batch, 1)", "sparse logits",
                                  "softmax ids", "softmax rows"])
def test_stack_losses_and_metrics_are_each_models_own(rng, kind):
    """A stack's loss, its gradient (fused with a softmax output where the loss takes one)
    and every metric, computed for all models at once, against each model on its own
    (whose values tests/test_nn_training.py checks against formulas and finite
    differences); a NaN in model 0 stays in model 0, and model 1 fits exactly."""
    loss, pred, target = _loss_case(rng, kind, 4, 5, 3)
    if kind in ("mse", "rmse"):
        target[1] = pred[1]                 # a zero loss (RMSE's gradient has a 0/0 there)
    # in model 0 a NaN where it counts (with class ids, in the row's own class)
    pred[0, 1, int(target[0, 1].flat[0]) if target.dtype.kind in "iu" else 2] = np.nan
    fusions = [False, True] if isinstance(loss, nn.CategoricalCrossentropy) \
        and not loss.from_logits else [False]
    for fused in fusions:
        values, grad = loss.stack_value_and_grad(pred, target, fused_softmax=fused)
        one = loss.softmax_value_and_grad if fused else loss.value_and_grad
        assert values.shape == (4,) and grad.shape == pred.shape
        for m in range(4):
            value, grad_m = one(pred[m], target[m])
            np.testing.assert_allclose(values[m], value, rtol=1e-12, err_msg=f"{kind} {m}")
            np.testing.assert_allclose(grad[m], grad_m, rtol=1e-12, atol=1e-15,
                                       err_msg=f"{kind} {m} fused={fused}")
        assert np.isnan(values[0]) and np.all(np.isfinite(values[1:]))
        assert np.isnan(grad[0]).any() and np.all(np.isfinite(grad[1:]))
        if kind == "rmse":                  # sqrt of a NaN mean: every element's gradient
            assert np.isnan(grad[0]).all()
    for name in ("accuracy", "mae", "mse", "rmse"):
        if name != "accuracy" and target.dtype.kind in "iu":
            continue                        # class ids: accuracy is the only metric
        metric = nn.losses.metric(name, loss)
        per_model = metric.stack(pred, target)
        expected = [metric(pred[m], target[m]) for m in range(4)]
        np.testing.assert_allclose(per_model, expected, rtol=1e-12, err_msg=f"{kind} {name}")
