"""tinynet.nn training: losses (values and gradients), optimizers against hand-computed
steps, initializers, and fit/evaluate/predict behaviour (history, validation, early
stopping, online learning, determinism)."""

import numpy as np
import pytest

from tinynet import nn

EPS = 1e-6


def numeric_loss_grad(loss, pred, target):
    grad = np.zeros_like(pred)
    for pos in np.ndindex(pred.shape):
        keep = pred[pos]
        pred[pos] = keep + EPS
        plus = loss(pred, target)
        pred[pos] = keep - EPS
        minus = loss(pred, target)
        pred[pos] = keep
        grad[pos] = (plus - minus) / (2 * EPS)
    return grad


def test_loss_values_against_formulas(rng):
    p = rng.uniform(0.05, 0.95, (6, 2))
    y = (rng.uniform(size=(6, 2)) > 0.5).astype(np.float64)
    z = rng.standard_normal((6, 2)) * 3
    assert nn.MSE()(p, y) == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    assert nn.RMSE()(p, y) == pytest.approx(np.sqrt(np.mean((p - y) ** 2)), rel=1e-12)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert nn.BinaryCrossentropy()(p, y) == pytest.approx(bce, rel=1e-12)
    s = 1 / (1 + np.exp(-z))
    bce_logits = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    assert nn.BinaryCrossentropy(from_logits=True)(z, y) == pytest.approx(bce_logits, rel=1e-10)
    logits = rng.standard_normal((5, 4))
    ids = rng.integers(0, 4, 5)
    soft = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ce = -np.mean(np.log(soft[np.arange(5), ids]))
    assert nn.SoftmaxCrossentropy()(logits, ids) == pytest.approx(ce, rel=1e-12)
    assert nn.SoftmaxCrossentropy()(logits, np.eye(4)[ids]) == pytest.approx(ce, rel=1e-12)


@pytest.mark.parametrize("loss", [nn.MSE(), nn.RMSE(), nn.BinaryCrossentropy(),
                                  nn.BinaryCrossentropy(from_logits=True)])
def test_loss_gradients(rng, loss):
    pred = rng.uniform(0.1, 0.9, (4, 3))
    target = (rng.uniform(size=(4, 3)) > 0.5).astype(np.float64)
    value, grad = loss.value_and_grad(pred, target)
    assert value == pytest.approx(loss(pred, target), rel=1e-12)     # the metric's path
    np.testing.assert_allclose(grad, numeric_loss_grad(loss, pred, target), rtol=1e-6, atol=1e-9)


def test_softmax_gradient(rng):
    logits = rng.standard_normal((3, 5))
    target = rng.dirichlet(np.ones(5), 3)
    loss = nn.SoftmaxCrossentropy()
    for t in (target, rng.integers(0, 5, 3)):
        _, grad = loss.value_and_grad(logits, t)
        np.testing.assert_allclose(grad, numeric_loss_grad(loss, logits, t), rtol=1e-6,
                                   atol=1e-9)


def test_binary_crossentropy_is_stable_at_the_extremes():
    z = np.array([[-800.0], [800.0], [0.0]])
    y = np.array([[1.0], [0.0], [1.0]])
    value, grad = nn.BinaryCrossentropy(from_logits=True).value_and_grad(z, y)
    assert value == pytest.approx((800 + 800 + np.log(2)) / 3)
    np.testing.assert_allclose(grad, [[-1 / 3], [1 / 3], [-1 / 6]])
    p = np.array([[0.0], [1.0]], np.float32)                 # a saturated sigmoid output
    value, grad = nn.BinaryCrossentropy().value_and_grad(p, np.array([[1.0], [0.0]], np.float32))
    assert np.isfinite(value) and np.all(np.isfinite(grad))


class _Weight:
    def __init__(self, value, grad):
        self.value = np.array(value, np.float64)
        self.grad = np.array(grad, np.float64)
        self.trainable = True


def test_sgd_momentum_steps_by_hand():
    w = _Weight([1.0, -2.0], [0.5, 0.25])
    opt = nn.SGD(0.1, momentum=0.9)
    opt.step([w])                              # v = -0.1 g;  w += v
    np.testing.assert_allclose(w.value, [0.95, -2.025])
    w.grad = np.array([1.0, 1.0])
    opt.step([w])                              # v = 0.9 v - 0.1 g
    np.testing.assert_allclose(w.value, [0.95 - 0.045 - 0.1, -2.025 - 0.0225 - 0.1])


def test_adam_steps_by_hand():
    w = _Weight([1.0], [2.0])
    opt = nn.Adam(0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    opt.step([w])        # m = 0.2, v = 0.004; m_hat = 2, v_hat = 4: w -= 0.1 * 2 / (2 + eps)
    np.testing.assert_allclose(w.value, [1.0 - 0.1 * 2 / (2 + 1e-7)], rtol=1e-14)
    w.grad = np.array([-1.0])
    before = w.value[0]
    opt.step([w])
    m = 0.9 * 0.2 - 0.1
    v = 0.999 * 0.004 + 0.001
    expected = before - 0.1 * (m / (1 - 0.81)) / (np.sqrt(v / (1 - 0.999 ** 2)) + 1e-7)
    np.testing.assert_allclose(w.value, [expected], rtol=1e-14)


def test_rmsprop_step_by_hand():
    w = _Weight([0.0, 1.0], [3.0, -4.0])
    nn.RMSprop(0.01, rho=0.9, epsilon=1e-7).step([w])
    v = 0.1 * np.array([9.0, 16.0])
    np.testing.assert_allclose(w.value, [0.0, 1.0] - 0.01 * np.array([3.0, -4.0]) /
                               (np.sqrt(v) + 1e-7), rtol=1e-14)


def test_clipping():
    a, b = _Weight([0.0, 0.0], [3.0, 4.0]), _Weight([0.0], [12.0])
    nn.SGD(1.0, clipnorm=1.0).step([a, b])                 # each clipped to norm 1
    np.testing.assert_allclose(a.value, [-0.6, -0.8])
    np.testing.assert_allclose(b.value, [-1.0])
    a, b = _Weight([0.0, 0.0], [3.0, 4.0]), _Weight([0.0], [12.0])
    nn.SGD(1.0, global_clipnorm=1.3).step([a, b])          # joint norm 13 -> 1.3
    np.testing.assert_allclose(np.concatenate([a.value, b.value]), [-0.3, -0.4, -1.2])


def test_frozen_and_untouched_weights_are_skipped():
    frozen, untouched = _Weight([1.0], [5.0]), _Weight([2.0], [0.0])
    frozen.trainable, untouched.grad = False, None
    nn.Adam(0.1).step([frozen, untouched])
    assert frozen.value[0] == 1.0 and untouched.value[0] == 2.0


def test_initializers(rng):
    w = nn.initializers.orthogonal((3, 12), rng)
    np.testing.assert_allclose(w @ w.T, np.eye(3), atol=1e-12)
    g = nn.initializers.glorot_uniform((40, 60), rng)
    assert np.abs(g).max() <= np.sqrt(6 / 100)
    u = nn.initializers.uniform(-0.1, 0.1)((1000,), rng)
    assert -0.1 <= u.min() and u.max() <= 0.1 and u.std() > 0.05
    a = nn.Dense(3, 4, seed=5).kernel.value
    assert np.array_equal(a, nn.Dense(3, 4, seed=5).kernel.value)
    nn.set_seed(11)
    first = nn.Dense(3, 4).kernel.value
    nn.set_seed(11)
    assert np.array_equal(first, nn.Dense(3, 4).kernel.value)
    assert not np.array_equal(first, nn.Dense(3, 4).kernel.value)


def _regression(rng, n=64):
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1).astype(np.float32)
    return x, y


def _linear_model(seed=0):
    model = nn.Sequential([nn.Dense(3, 1, seed=seed)])
    model.compile(nn.SGD(0.1), "mse", metrics=["mae"], seed=seed)
    return model


def test_fit_history_validation_and_evaluate(rng):
    x, y = _regression(rng)
    model = _linear_model()
    history = model.fit(x, y, epochs=30, batch_size=16, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "mae", "val_loss", "val_mae"}
    assert len(history.history["loss"]) == 30
    assert history.history["loss"][-1] < 1e-3 < history.history["loss"][0]
    held_out = model.evaluate(x[48:], y[48:])       # the last quarter, as Keras holds out
    assert held_out["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-6)
    assert held_out["mae"] == pytest.approx(np.mean(np.abs(model.predict(x[48:]) - y[48:])),
                                            rel=1e-5)


def test_online_learning_is_one_update_per_sample(rng):
    x, y = _regression(rng, 10)
    model = _linear_model()
    model.fit(x, y, epochs=2, batch_size=1, verbose=0)
    assert model.optimizer.iterations == 20


def test_early_stopping_restores_best(rng):
    x, y = _regression(rng)
    y_noise = rng.standard_normal(y.shape).astype(np.float32) * 5   # nothing to learn
    model = nn.Sequential([nn.Dense(3, 1, seed=0)])
    model.compile(nn.SGD(0.5), "mse", seed=0)
    stop = nn.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(x, y_noise, epochs=200, batch_size=8, validation_split=0.5,
                        early_stopping=stop, verbose=0)
    epochs = len(history.history["loss"])
    assert epochs < 200 and epochs == stop.best_epoch + 1 + 3
    best = min(history.history["val_loss"])
    assert model.evaluate(x[32:], y_noise[32:])["loss"] == pytest.approx(best, rel=1e-6)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, epochs=1, early_stopping=nn.EarlyStopping(), verbose=0)


def test_fit_is_deterministic_with_seeds(rng):
    x, y = _regression(rng)
    weights = []
    for _ in range(2):
        model = _linear_model(seed=3)
        model.fit(x, y, epochs=3, batch_size=5, verbose=0)
        weights.append(model.get_weights())
    for key in weights[0]:
        assert np.array_equal(weights[0][key], weights[1][key])


def test_fit_progress_line(rng, capsys):
    x, y = _regression(rng, 8)
    _linear_model().fit(x, y, epochs=2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  loss ")
    _linear_model().fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_fit_converts_inputs_and_checks_counts(rng):
    model = _linear_model()
    model.fit([[0, 1, 0], [1, 0, 1]], [[1], [0]], epochs=1, verbose=0)   # lists, ints
    with pytest.raises(ValueError, match="same number of samples"):
        model.fit(np.zeros((5, 3)), np.zeros((4, 1)), verbose=0)
    with pytest.raises(ValueError, match="compile"):
        nn.Sequential([nn.Dense(3, 1)]).fit(np.zeros((5, 3)), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint="):
        model.fit(np.zeros((5, 3)), np.zeros((5, 1)), checkpoint_every=2, verbose=0)


def test_multiple_outputs_predict():
    inp = nn.Input((2,))
    a = nn.Dense(2, 3, seed=1)(inp)
    b = nn.Dense(2, 1, seed=2)(inp)
    out_a, out_b = nn.Model(inp, [a, b]).predict(np.ones((4, 2)))
    assert out_a.shape == (4, 3) and out_b.shape == (4, 1)


def test_predict_frees_each_chunks_tape_before_the_next_forward(rng):
    """A forward's tape (what a backward would read) is several times its outputs' size;
    predict and evaluate keep only the outputs of each chunk."""
    import weakref

    class Tape(list):                     # a list that can be watched with a weak reference
        pass

    model = nn.Sequential([nn.Dense(3, 2, "tanh", seed=1)])
    model.compile(optimizer="sgd", loss="mse")
    x = rng.standard_normal((10, 3))
    whole = model.predict(x, batch_size=10)
    forward, tapes = model.loop_forward, []

    def watched_forward(xs, lengths):
        assert all(t() is None for t in tapes), "the previous chunk's tape is still alive"
        outs, tape = forward(xs, lengths)
        tape = Tape(tape)
        tapes.append(weakref.ref(tape))
        return outs, tape

    model.loop_forward = watched_forward
    np.testing.assert_allclose(model.predict(x, batch_size=3), whole, rtol=1e-12)
    assert len(tapes) == 4                # chunks of 3, 3, 3, 1
    model.evaluate(x, np.zeros((10, 2)), batch_size=4)
    assert len(tapes) == 7


# --- classification -----------------------------------------------------------------------

def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_categorical_losses_against_formulas(rng):
    logits = rng.standard_normal((5, 4)) * 2
    ids = rng.integers(0, 4, 5)
    onehot = np.eye(4)[ids]
    p = _softmax(logits)
    ce = -np.mean(np.log(p[np.arange(5), ids]))
    assert nn.losses.get("categorical_crossentropy")(p, onehot) == pytest.approx(ce, rel=1e-12)
    assert nn.CategoricalCrossentropy(from_logits=True)(logits, onehot) == pytest.approx(
        ce, rel=1e-12)
    sparse = nn.losses.get("sparse_categorical_crossentropy")
    assert sparse(p, ids) == pytest.approx(ce, rel=1e-12)
    assert sparse(p, ids[:, None]) == pytest.approx(ce, rel=1e-12)        # Keras' (batch, 1)
    assert nn.SparseCategoricalCrossentropy(from_logits=True)(logits, ids) == pytest.approx(
        ce, rel=1e-12)
    soft = rng.dirichlet(np.ones(4), 5)                                    # soft labels
    assert nn.CategoricalCrossentropy()(p, soft) == pytest.approx(
        -np.mean((soft * np.log(p)).sum(axis=1)), rel=1e-12)
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 4\)"):
        sparse(p, ids + 4)


@pytest.mark.parametrize("loss", [nn.CategoricalCrossentropy(),
                                  nn.CategoricalCrossentropy(from_logits=True),
                                  nn.SparseCategoricalCrossentropy(),
                                  nn.SparseCategoricalCrossentropy(from_logits=True)])
def test_categorical_loss_gradients(rng, loss):
    pred = rng.dirichlet(np.ones(4), 3) if not loss.from_logits else rng.standard_normal((3, 4))
    ids = rng.integers(0, 4, 3)
    target = ids if isinstance(loss, nn.SparseCategoricalCrossentropy) else np.eye(4)[ids]
    value, grad = loss.value_and_grad(pred, target)
    assert value == pytest.approx(loss(pred, target), rel=1e-12)
    np.testing.assert_allclose(grad, numeric_loss_grad(loss, pred, target), rtol=1e-6,
                               atol=1e-9)


def _pair(kernel, dtype="float32"):
    """The same weights as a softmax output and as logits."""
    probs = nn.Sequential([nn.Dense(2, 3, "softmax", dtype=dtype)])
    logits = nn.Sequential([nn.Dense(2, 3, dtype=dtype)])
    for model in (probs, logits):
        model.set_weights({"dense/kernel": kernel, "dense/bias": np.zeros(3)})
    return probs, logits


@pytest.mark.parametrize("sparse", [False, True])
def test_a_softmax_output_trains_as_logits_would_even_when_saturated(sparse):
    """The softmax output and its crossentropy are one step: the gradient reaching the
    logits is p - y, never y / p through the softmax (which is 0 * inf once p underflows)."""
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    ids = np.array([1, 2, 0])
    y = ids if sparse else np.eye(3, dtype=np.float32)[ids]
    name = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
    logits_loss = (nn.SparseCategoricalCrossentropy if sparse else nn.CategoricalCrossentropy)(
        from_logits=True)
    for scale in (1.0, 200.0):              # 200: the right classes' p underflow to 0
        kernel = np.array([[1.0, -1.0, 0.5], [-0.5, 0.0, -1.0]]) * scale
        probs, logits = _pair(kernel)
        probs.compile(nn.SGD(0.1), name)
        logits.compile(nn.SGD(0.1), logits_loss)
        value = probs.train_on_batch(x, y)
        exact = logits.train_on_batch(x, y)
        assert np.isfinite(value)
        if scale == 1.0:
            assert value == pytest.approx(exact, rel=1e-5)
        for key, w in probs.get_weights().items():
            assert np.all(np.isfinite(w)), key
            np.testing.assert_allclose(w, logits.get_weights()[key], rtol=1e-5, atol=1e-5)


def test_accuracy_metric_for_classes():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    ids = np.array([0, 2, 0, 0])
    for loss, target in (("sparse_categorical_crossentropy", ids),
                         ("sparse_categorical_crossentropy", ids[:, None]),
                         ("categorical_crossentropy", np.eye(3)[ids]),
                         (nn.CategoricalCrossentropy(from_logits=True), np.eye(3)[ids])):
        accuracy = nn.losses.metric("accuracy", nn.losses.get(loss))
        assert accuracy(p, target) == 0.75, loss
    model = nn.Sequential([nn.Dense(3, 3, "softmax", dtype="float64")])
    model.set_weights({"dense/kernel": np.eye(3) * 10, "dense/bias": np.zeros(3)})
    model.compile(nn.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model.evaluate(p, ids)["accuracy"] == 0.75


def test_probability_losses_refuse_what_is_not_probabilities():
    """A Keras habit: 'categorical_crossentropy' on a linear last layer takes logits for
    probabilities. The values say so; the error names both fixes."""
    model = nn.Sequential([nn.Dense(4, 3, seed=0)])
    model.compile(nn.SGD(0.1), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((8, 4)) * 5
    with pytest.raises(ValueError, match=r"probabilities.*activation='softmax'.*"
                                         r"from_logits=True"):
        model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)


def test_a_digits_style_classifier_learns():
    rng = np.random.default_rng(0)
    centers = rng.uniform(0, 16, (10, 64))                       # 10 classes of 8x8 images
    ids = rng.integers(0, 10, 600)
    x = (centers[ids] + rng.normal(0, 4, (600, 64))) / 16
    nn.set_seed(0)
    model = nn.Sequential([nn.Dense(64, 32, "tanh"), nn.Dense(32, 10, "softmax")])
    model.compile(nn.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[:500], ids[:500], epochs=10, batch_size=32, verbose=0,
                        validation_data=(x[500:], ids[500:]))
    assert history.history["val_accuracy"][-1] > 0.9
    assert model.predict(x[:3]).sum(axis=1) == pytest.approx(np.ones(3), rel=1e-5)


# --- divergence -------------------------------------------------------------------------

def _diverging():
    """An all-linear net whose first loss already overflows float32 (as S5's recipe can)."""
    model = nn.Sequential([nn.Dense(4, 8, seed=0), nn.Dense(8, 1, seed=1)])
    model.set_weights({"dense/kernel": np.full((4, 8), 1e10),
                       "dense_1/kernel": np.full((8, 1), 1e10)})
    model.compile(nn.SGD(0.5), "mse", seed=0)
    x = np.ones((12, 4), np.float32)
    return model, x, np.zeros((12, 1), np.float32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_fit_stops_at_the_first_non_finite_loss():
    model, x, y = _diverging()
    before = model.get_weights()
    with pytest.raises(nn.NonFiniteLoss) as info:
        model.fit(x, y, epochs=3, batch_size=5, verbose=0)
    text = str(info.value)
    for fragment in ("inf", "epoch 1 of 3", "batch 1 of 3", "smaller learning rate",
                     "smaller initial weights", "stop_on_nonfinite=False"):
        assert fragment in text, text
    assert isinstance(info.value, FloatingPointError)
    after = model.get_weights()                       # the update of that batch not applied
    assert all(np.array_equal(before[k], after[k]) for k in before)
    model, x, y = _diverging()
    history = model.fit(x, y, epochs=2, batch_size=5, verbose=0, stop_on_nonfinite=False)
    assert len(history.history["loss"]) == 2
    assert not np.isfinite(history.history["loss"]).any()
