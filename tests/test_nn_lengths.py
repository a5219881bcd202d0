"""Sequences of different lengths in tinynet.nn: a padded batch with its lengths against each
sequence run alone at its own length."""

import numpy as np
import pytest

from tinynet import nn

from _compare import assert_close


def sequences(rng, lengths, features=2):
    return [rng.standard_normal((n, features)).astype(np.float64) for n in lengths]


def two_lstms(seed=0):
    nn.set_seed(seed)
    return nn.Sequential([nn.LSTM(2, 5, return_sequences=True, dtype="float64"),
                          nn.LSTM(5, 3, dtype="float64"),
                          nn.Dense(3, 1, "sigmoid", dtype="float64")])


def test_pad_sequences_pads_with_zeros_and_counts_steps(rng):
    parts = sequences(rng, [3, 1, 4])
    padded, lengths = nn.pad_sequences(parts, dtype="float64")
    assert padded.shape == (3, 4, 2) and lengths.tolist() == [3, 1, 4]
    for k, part in enumerate(parts):
        assert np.array_equal(padded[k, :len(part)], part)
        assert not padded[k, len(part):].any()
    with pytest.raises(ValueError, match=r"sequence 1 is \(5,\): for one feature"):
        nn.pad_sequences([np.zeros((2, 1)), np.zeros(5)])
    with pytest.raises(ValueError, match="got no sequences"):
        nn.pad_sequences([])


def test_predict_with_lengths_is_each_sequence_alone(rng):
    model = two_lstms()
    parts = sequences(rng, [4, 1, 6, 3])
    padded, lengths = nn.pad_sequences(parts, dtype="float64")
    padded[0, 4:] = np.nan                                  # padding values change nothing
    got = model.predict(padded, lengths=lengths)
    for k, part in enumerate(parts):
        assert_close(f"sequence {k}", got[k], model.predict(part[None])[0])
    assert_close("call", model(padded, lengths=lengths), got)


def test_training_step_with_lengths_is_the_mean_over_sequences_alone(rng):
    parts = sequences(rng, [5, 2, 3])
    target = rng.uniform(0, 1, (3, 1))
    padded, lengths = nn.pad_sequences(parts, dtype="float64")
    padded[1, 2:] = np.nan
    batched, alone = two_lstms(1), two_lstms(1)
    batched.compile(optimizer=nn.SGD(0.3), loss="mse")
    batched.train_on_batch(padded, target, lengths=lengths)
    # the same step by hand: the batch loss is the mean of the sequences' losses
    alone.zero_grad()
    for k, part in enumerate(parts):
        outs, tape = alone.forward(part[None])
        alone.backward(tape, [2 * (outs[0] - target[k:k + 1]) / len(parts)])
    for p in alone.parameters():
        p.value -= 0.3 * p.grad
    for (name, got), expected in zip(batched.get_weights().items(),
                                     alone.get_weights().values()):
        assert_close(name, got, expected)


def test_fit_and_evaluate_take_lengths(rng):
    model = two_lstms(2)
    model.compile(optimizer=nn.Adam(0.01), loss="mse")
    parts = sequences(rng, rng.integers(1, 7, 16))
    padded, lengths = nn.pad_sequences(parts, dtype="float64")
    target = np.array([[p[:, 0].sum() > 0] for p in parts], np.float64)
    before = model.evaluate(padded, target, lengths=lengths)["loss"]
    history = model.fit(padded, target, epochs=20, batch_size=4, lengths=lengths, verbose=0,
                        validation_data=(padded, target, lengths))
    after = model.evaluate(padded, target, lengths=lengths)["loss"]
    assert after < before and history.history["val_loss"][-1] == pytest.approx(after)
    with pytest.raises(ValueError, match="lengths must have one entry per sample: 16, got 3"):
        model.fit(padded, target, lengths=lengths[:3], verbose=0)
    with pytest.raises(ValueError, match="lengths must be in 0..steps"):
        model.predict(padded, lengths=lengths + 7)
    with pytest.raises(ValueError, match="lengths must be integers"):
        model.predict(padded, lengths=lengths * 1.0)


@pytest.mark.parametrize("bad, shown", [(np.array([2 ** 32 + 2, 3], np.int64), 2 ** 32 + 2),
                                        (np.array([2 ** 63 + 2, 3], np.uint64), 2 ** 63 + 2),
                                        (np.array([-1, 3], ">i8"), -1)])
def test_lengths_out_of_range_in_any_integer_type_are_refused(rng, bad, shown):
    """Values that a narrower or unsigned reading would wrap into 0..steps are refused too."""
    model = two_lstms(3)
    padded, _ = nn.pad_sequences(sequences(rng, [2, 3]), dtype="float64")
    with pytest.raises(ValueError, match=rf"lengths must be in 0\.\.steps = 0\.\.3, got {shown}$"):
        model.predict(padded, lengths=bad)
