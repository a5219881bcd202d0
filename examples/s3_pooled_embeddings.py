"""S3: frozen word vectors, pooled three ways, one shared Dense, concatenated on features.

The seed's model: a batch of 64 sentences of 150 words, each word a frozen 50-d pretrained
vector -> (64, 150, 50); the mean, max and min over the 150 words -> three (64, 50); the
*same* Dense layer applied to each; the three results joined along the feature axis into
(64, 3H); one sigmoid output for a binary target. The seed joined them along the batch axis
instead, got a (192, 1) prediction for a (64, 1) target, and a puzzling error; here that
mistake is shown too: tinynet refuses it when the model is built.

No download: the "pretrained" vectors are made up here, with a sentiment direction hidden in
them, and a sentence is positive when it holds more positive than negative words.

    python examples/s3_pooled_embeddings.py [--epochs 8] [--hidden 16]
"""

import argparse
import time

import numpy as np

import tinynet
from tinynet import nn

VOCAB, DIM, WORDS = 2000, 50, 150


def make_data(rng, sentences):
    """Word vectors with a hidden sentiment direction; sentences and their labels."""
    sentiment = np.zeros(VOCAB)
    sentiment[:150], sentiment[150:300] = 1.0, -1.0                    # 150 good, 150 bad words
    direction = rng.standard_normal(DIM)
    direction /= np.linalg.norm(direction)
    vectors = rng.standard_normal((VOCAB, DIM)) / np.sqrt(DIM) + np.outer(sentiment, direction)
    ids = rng.integers(0, VOCAB, (sentences, WORDS))
    labels = (sentiment[ids].sum(axis=1) > 0).astype(np.float32)[:, None]   # (sentences, 1)
    return vectors.astype(np.float32), ids, labels


def build(vectors, hidden, axis):
    words = nn.Input((WORDS,), dtype="int64")
    embedded = nn.Embedding.from_pretrained(vectors, trainable=False)(words)  # (b, 150, 50)
    shared = nn.Dense(DIM, hidden, "relu")                # one layer, used three times
    pooled = [shared(nn.GlobalPool1D(mode)(embedded)) for mode in ("mean", "max", "min")]
    joined = nn.Concatenate(axis=axis)(pooled)            # axis=-1: (b, 3H); axis=0: refused
    return nn.Model(words, nn.Dense(3 * hidden, 1, "sigmoid")(joined))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--sentences", type=int, default=2560)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nn.set_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    vectors, ids, labels = make_data(rng, args.sentences)
    print(f"default backend {tinynet.get_backend()!r}; {args.sentences} sentences of {WORDS} "
          f"words, {VOCAB} frozen {DIM}-d vectors, {labels.mean():.0%} positive")

    model = build(vectors, args.hidden, axis=-1)
    model.compile(optimizer=nn.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    print(model.summary())
    started = time.perf_counter()
    history = model.fit(ids, labels, epochs=args.epochs, batch_size=64, validation_split=0.2,
                        verbose=1)
    print(f"trained in {time.perf_counter() - started:.1f} s on "
          f"{', '.join(model.backend_used())}; held-out accuracy "
          f"{history.history['val_accuracy'][-1]:.3f}")
    table = model.named_parameters()["embedding/embeddings"]
    print("the embedding stayed frozen:", np.array_equal(tinynet.to_numpy(table.value), vectors))

    print("\nThe seed's mistake, concatenating along the batch axis (axis=0):")
    try:
        build(vectors, args.hidden, axis=0)
    except ValueError as error:
        print(f"  ValueError: {error}")


if __name__ == "__main__":
    main()
