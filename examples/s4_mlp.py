"""S4: the from-scratch MLP, 2 hidden layers of 500 sigmoid neurons and one output.

The seed asks how "500 neurons" become code. A layer of 500 neurons reading `in` inputs is
one (in, 500) weight matrix: neuron j is column j (its `in` weights), and the whole layer is
one matrix product x @ W for a whole batch at once. So the net is three matrices,
(in, 500), (500, 500), (500, 1), and training it is GEMMs: this is the case where the CPU
path has to run at BLAS speed.

The data set is generated here (no download): points around 8 random centres in 10
dimensions, the class of a point being the parity of its centre's number, so that no single
plane separates the classes well. A one-layer logistic regression is trained beside the MLP
for comparison.

    python examples/s4_mlp.py [--epochs 10] [--samples 4000]
"""

import argparse
import time

import numpy as np

import tinynet
from tinynet import nn


def make_data(rng, samples, features=10, centres=8):
    centre = rng.standard_normal((centres, features)) * 1.5
    which = rng.integers(0, centres, samples)
    x = (centre[which] + rng.standard_normal((samples, features))).astype(np.float32)
    return x, (which % 2).astype(np.float32)[:, None]


def train(layers, x, y, epochs):
    model = nn.Sequential(layers)
    model.compile(optimizer=nn.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, batch_size=32, validation_split=0.2, verbose=0)
    return model, history.history, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nn.set_seed(args.seed)
    x, y = make_data(np.random.default_rng(args.seed), args.samples)
    features = x.shape[1]
    print(f"default backend {tinynet.get_backend()!r}; {args.samples} samples of {features} "
          f"features (80% train, 20% held out)")

    mlp, history, seconds = train([nn.Dense(features, 500, "sigmoid"),
                                   nn.Dense(500, 500, "sigmoid"),
                                   nn.Dense(500, 1, "sigmoid")], x, y, args.epochs)
    print(mlp.summary())
    first = mlp.layers[0].kernel.value
    print(f"neuron 0 of the first hidden layer is column 0 of its kernel: {first.shape[0]} "
          f"weights: " + " ".join(f"{v:.3f}" for v in tinynet.to_numpy(first[:, 0])))
    for epoch, (loss, acc) in enumerate(zip(history["loss"], history["val_accuracy"]), 1):
        print(f"  epoch {epoch:2d}  loss {loss:.4f}  held-out accuracy {acc:.3f}")
    weights = features * 500 + 500 * 500 + 500
    flops = 6 * weights * int(args.samples * 0.8) * args.epochs      # forward 2, backward 4
    print(f"MLP: {seconds:.1f} s on {', '.join(mlp.backend_used())} "
          f"({seconds / args.epochs:.2f} s per epoch, about {flops / seconds / 1e9:.1f} GFLOP/s "
          "counting the three GEMMs per layer)")

    _, lin_history, _ = train([nn.Dense(features, 1, "sigmoid")], x, y, args.epochs)
    print(f"one layer (logistic regression), same data and epochs: held-out accuracy "
          f"{lin_history['val_accuracy'][-1]:.3f} (MLP {history['val_accuracy'][-1]:.3f})")


if __name__ == "__main__":
    main()
