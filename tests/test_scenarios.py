"""The seven scenarios (S1 to S7, README "A short tour"), each run fast through the code of
its example (examples/*.py) and its outcome asserted. The examples run the full versions."""

import os
import sys

import numpy as np
import pytest

import tinynet
from tinynet import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "examples"))

import hochreiter_3a  # noqa: E402
import restarts  # noqa: E402
import s1_perceptron  # noqa: E402
import s2_several_outputs  # noqa: E402
import s3_pooled_embeddings  # noqa: E402
import s4_mlp  # noqa: E402
import s5_lstm_sum  # noqa: E402
import s6_conv1d  # noqa: E402


def test_s1_single_layer_cannot_fit_parity_hidden_layer_can():
    nn.set_seed(0)
    _, single, _ = s1_perceptron.train([nn.Dense(3, 1, "tanh", use_bias=False)], 20000)
    _, hidden, _ = s1_perceptron.train([nn.Dense(3, 4, "tanh"), nn.Dense(4, 1, "tanh")], 20000)
    targets = s1_perceptron.TARGETS
    assert np.mean((single - targets) ** 2) > 0.1                    # error stays high
    assert not np.all((single > 0.5) == (targets > 0.5))
    assert np.all((hidden > 0.5) == (targets > 0.5))                 # all 8 on the right side


def test_s1_example_script_succeeds():
    import subprocess
    script = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "s1_perceptron.py")
    done = subprocess.run([sys.executable, script, "--steps", "20000"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 of 8 on the right side of 0.5" in done.stdout


def test_s2_several_outputs(capsys):
    nn.set_seed(0)
    learnt = s2_several_outputs.fit_outputs(list(s2_several_outputs.COLUMNS), 3000)
    assert learnt == {"x0 AND x1": True, "x1 OR x2": True, "NOT x0": True, "majority": True,
                      "parity": False}
    layer = nn.Dense(3, 5)
    assert layer.kernel.value.shape == (3, 5) and layer(s2_several_outputs.BITS).shape == (8, 5)
    with pytest.raises(ValueError, match=r"expected 4 features per sample.*\(8, 3\)"):
        nn.Dense(4, 3)(s2_several_outputs.BITS)


def test_s3_pooled_embeddings_shared_dense_frozen_and_the_batch_axis_error():
    nn.set_seed(0)
    vectors, ids, labels = s3_pooled_embeddings.make_data(np.random.default_rng(0), 1280)
    model = s3_pooled_embeddings.build(vectors, 16, axis=-1)
    dense_layers = [layer for layer in model.layers if isinstance(layer, nn.Dense)]
    assert len(dense_layers) == 2                     # the hidden Dense is one layer, used 3x
    model.compile(optimizer=nn.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(ids, labels, epochs=8, batch_size=64, validation_split=0.2, verbose=0)
    assert history.history["val_accuracy"][-1] > 0.75
    table = model.named_parameters()["embedding/embeddings"]
    assert np.array_equal(tinynet.to_numpy(table.value), vectors)   # frozen

    with pytest.raises(ValueError) as info:                   # refused when built
        s3_pooled_embeddings.build(vectors, 16, axis=0)
    text = str(info.value)
    assert "(None, 16), (None, 16), (None, 16)" in text and "axis=0, the batch axis" in text
    assert "192 rows" in text and "Concatenate(axis=-1), which gives (None, 48)" in text


def test_s4_mlp_shapes_and_training():
    nn.set_seed(0)
    x, y = s4_mlp.make_data(np.random.default_rng(0), 1200)
    model, history, _ = s4_mlp.train([nn.Dense(10, 500, "sigmoid"), nn.Dense(500, 500, "sigmoid"),
                                      nn.Dense(500, 1, "sigmoid")], x, y, 2)
    assert [layer.kernel.value.shape for layer in model.layers] == [(10, 500), (500, 500),
                                                                    (500, 1)]
    assert history["val_accuracy"][-1] > 0.8
    assert history["loss"][-1] < history["loss"][0]


def test_s5_linear_lstm_sums_default_cannot():
    nn.set_seed(0)
    rng = np.random.default_rng(0)
    x, y = s5_lstm_sum.sequences(rng, 4000, 2)
    x_test, y_test = s5_lstm_sum.sequences(rng, 1000, 2)
    linear, _ = s5_lstm_sum.train(True, x, y, 10)
    default, _ = s5_lstm_sum.train(False, x, y, 10)
    assert linear.evaluate(x_test, y_test)["loss"] < 0.05
    assert default.evaluate(x_test, y_test)["loss"] > 0.5
    assert np.abs(default.predict(x_test)).max() < 1.0               # squashed by tanh


def test_s6_conv1d_layout_error_and_filter_sum():
    nn.set_seed(0)
    rng = np.random.default_rng(0)
    taps = rng.standard_normal(10) / np.sqrt(10)
    series = rng.standard_normal((300, 100)).astype(np.float32)
    model = nn.Sequential([nn.Conv1D(1, 6, 10, padding="same"), nn.Sum(axis=-1)])
    model.compile(optimizer=nn.Adam(0.01), loss="mse")
    with pytest.raises(ValueError) as info:
        model.fit(series, s6_conv1d.filtered(series[..., None], taps), verbose=0)
    assert "(300, 100)" in str(info.value) and "x[..., None]" in str(info.value)
    x = series[..., None]
    y = s6_conv1d.filtered(x, taps)
    assert model.predict(x).shape == (300, 100)
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 1e-4 * y.var()


def test_s7_experiment_3a_short_sequences():
    """T=10 (the example runs T=100): online training reaches ST1 and ST2."""
    st1, st2, after = hochreiter_3a.run_trial(T=10, N=3, forget_bias=5.0, seed=0,
                                              max_sequences=10000, test_every=250)
    assert st1 is not None and st2 is not None and st1 <= st2
    assert after < 0.01


def test_restarts_fit_parity_more_often_with_more_hidden_units():
    fitted = {width: restarts.fits(restarts.restarts(width, 100, 500, 1.0, seed=0)[0]).mean()
              for width in (2, 4)}
    assert fitted[2] < fitted[4] and fitted[4] >= 0.8


def test_s7_forget_bias_decides_experiment_3a_at_T_100():
    """The scenario itself (T=100, N=3): after 30,000 online sequences, every trial with
    forget_bias 0 or 1 still guesses (the memory of the first steps decays like sigmoid(fb)
    ^ 100), while forget_bias 5 has solved the task in some of its trials. All 16 trials
    train at once, as one nn.Stack."""
    biases = [0.0] * 4 + [1.0] * 4 + [5.0] * 8
    seeds = list(range(4)) * 2 + list(range(8))
    stack = nn.Stack([hochreiter_3a.build(fb, seed) for fb, seed in zip(biases, seeds)])
    stack.compile(optimizer=nn.SGD(0.5), loss="mse", seed=0)
    streams = [np.random.default_rng([seed, 1]) for seed in seeds]
    for _ in range(6):
        x, lengths, targets = hochreiter_3a.draw_per_trial(streams, 100, 3, 5000)
        stack.fit(x, targets, epochs=1, batch_size=1, shuffle=False, lengths=lengths,
                  verbose=0)
    errors = hochreiter_3a.test_errors(stack, streams, 100, 3).mean(axis=1)   # (16,)
    assert np.all(errors[:8] > 0.4), errors[:8]               # forget_bias 0 and 1
    assert np.min(errors[8:]) < 0.05, errors[8:]              # forget_bias 5


def test_s7_experiment_3a_with_adam_needs_a_held_open_forget_gate():
    """--optimizer adam at T=100, N=3: with forget_bias 5 every trial reaches ST2 within
    5,000 sequences; with forget_bias 0 none reaches even ST1 (the first steps' part of the
    gradient has decayed like sigmoid(0) ^ 100, about 1e-30, next to the part from the noise
    at the later steps)."""
    results = hochreiter_3a.run_trials(100, 3, [5.0] * 3 + [0.0] * 2, [0, 1, 2, 0, 1],
                                       max_sequences=5000, test_every=250,
                                       optimizer_name="adam")
    assert all(st2 is not None and after < 0.01 for _, st2, after in results[:3]), results
    assert all(st1 is None for st1, _, _ in results[3:]), results
