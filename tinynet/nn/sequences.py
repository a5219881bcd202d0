"""Sequences of different lengths, padded into one batch."""

import numpy as np

import tinynet
from tinynet.nn._arrays import shape_text


def pad_sequences(sequences, dtype="float32"):
    """A list of arrays (steps_i, features) -> (padded (n, max steps, features), lengths (n,)).

    Steps past a sequence's length are zeros; pass `lengths` to a model's fit, predict,
    evaluate or call, and every LSTM layer treats them as padding (tinynet.ops.lstm)."""
    arrays = [np.asarray(tinynet.to_numpy(s)) for s in sequences]
    if not arrays:
        raise ValueError("pad_sequences: got no sequences")
    features = arrays[0].shape[1:]
    for k, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1:] != features:
            raise ValueError(f"pad_sequences: every sequence must be (steps, features) with "
                             f"the same features, {shape_text((None,) + features)}; sequence "
                             f"{k} is {shape_text(a.shape)}" + (
                                 ": for one feature per step use s[:, None]"
                                 if a.ndim == 1 else ""))
        if a.dtype.kind not in "fiub":
            raise ValueError(f"pad_sequences: sequence {k} must hold real numbers, got "
                             f"{a.dtype}")
    lengths = np.array([len(a) for a in arrays], np.int64)
    padded = np.zeros((len(arrays), int(lengths.max())) + features, dtype)
    for k, a in enumerate(arrays):
        padded[k, :len(a)] = a
    return padded, lengths
