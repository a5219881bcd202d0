"""S2: several output neurons, no hidden layer.

The seed asks whether the 3-input perceptron can have 3 or 5 output neurons without a hidden
layer. It can: Dense(3, 5) is five perceptrons side by side, one column of the (3, 5) kernel
each, all reading the same 3 inputs. The number of outputs is a choice; the number of inputs
is not (it is the width of the data). Each output is still a single layer on its own, so
each can only learn what one plane separates: here AND, OR, NOT, majority and parity of the
three bits. The first four are learnt; parity (S1) is not.

    python examples/s2_several_outputs.py [--epochs 3000]
"""

import argparse
import time

import numpy as np

import tinynet
from tinynet import nn

BITS = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], np.float32)
COLUMNS = {
    "x0 AND x1": BITS[:, 0] * BITS[:, 1],
    "x1 OR x2": np.maximum(BITS[:, 1], BITS[:, 2]),
    "NOT x0": 1 - BITS[:, 0],
    "majority": (BITS.sum(1) >= 2).astype(np.float32),
    "parity": (BITS.sum(1) % 2 == 0).astype(np.float32),      # S1's targets
}


def fit_outputs(names, epochs):
    targets = np.stack([COLUMNS[n] for n in names], axis=1)          # (8, outputs)
    layer = nn.Dense(3, len(names), "sigmoid")
    model = nn.Sequential([layer])
    model.compile(optimizer=nn.SGD(2.0), loss="binary_crossentropy")
    started = time.perf_counter()
    model.fit(BITS, targets, epochs=epochs, batch_size=8, shuffle=False, verbose=0)
    seconds = time.perf_counter() - started
    outputs = model.predict(BITS)
    learnt = np.all((outputs > 0.5) == (targets > 0.5), axis=0)       # per output neuron
    print(f"\nDense(3, {len(names)}): kernel {layer.kernel.value.shape} (one column per "
          f"output neuron), bias {layer.bias.value.shape}, outputs {outputs.shape}  "
          f"({seconds:.2f} s on {', '.join(model.backend_used())})")
    for name, ok, column in zip(names, learnt, outputs.T):
        print(f"  {name:<10} {'learnt' if ok else 'NOT learnt':<11} outputs "
              + " ".join(f"{v:.2f}" for v in column))
    return dict(zip(names, learnt))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nn.set_seed(args.seed)
    print(f"default backend {tinynet.get_backend()!r}; usable: "
          f"{', '.join(tinynet.available_backends())}")
    fit_outputs(["x0 AND x1", "x1 OR x2", "NOT x0"], args.epochs)           # e.g. an RGB colour
    fit_outputs(list(COLUMNS), args.epochs)

    print("\nThe number of inputs is fixed by the data. A layer built for 4 inputs says so:")
    try:
        nn.Dense(4, 3)(BITS)
    except ValueError as error:
        print(f"  ValueError: {error}")


if __name__ == "__main__":
    main()
