"""S1: the perceptron that cannot learn parity, and the hidden layer that can.

The seed: 3 inputs -> 1 tanh output, trained full-batch with the delta rule for 20,000
steps on the 8 binary patterns with targets [1, 0, 0, 1, 0, 1, 1, 0]. Those targets are
3-bit parity (1 when the number of ones is even): no single layer of weights separates them,
so its error stays high whatever it does. One hidden layer fits all 8.

The delta rule is plain gradient descent on the squared error, so here it is SGD on the
mean squared error. (The seed's step of 1.0 on the summed error is 4.0 on the mean; that
is too large once there is a hidden layer, so both nets use 1.0.)

    python examples/s1_perceptron.py [--steps 20000] [--hidden 4] [--seed 0]

Exits with status 1 if the outcome is not the expected one.
"""

import argparse
import sys
import time

import numpy as np

import tinynet
from tinynet import nn

PATTERNS = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1],
                     [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]], dtype=np.float32)
TARGETS = np.array([[1, 0, 0, 1, 0, 1, 1, 0]], dtype=np.float32).T       # (8, 1)


def train(layers, steps, learning_rate=1.0):
    """Full-batch training; returns the model, its outputs and the seconds it took."""
    model = nn.Sequential(layers)
    model.compile(optimizer=nn.SGD(learning_rate), loss="mse")
    started = time.perf_counter()
    model.fit(PATTERNS, TARGETS, epochs=steps, batch_size=len(PATTERNS), shuffle=False,
              verbose=0)
    return model, model.predict(PATTERNS), time.perf_counter() - started


def report(title, model, outputs, seconds):
    right = (outputs > 0.5) == (TARGETS > 0.5)
    mse = float(np.mean((outputs - TARGETS) ** 2))
    print(f"\n{title}  ({seconds:.2f} s, backend {', '.join(model.backend_used())})")
    print("  pattern  target  output")
    for pattern, target, output, ok in zip(PATTERNS, TARGETS[:, 0], outputs[:, 0], right[:, 0]):
        print(f"  {pattern.astype(int)}  {target:6.0f}  {output:7.3f}  "
              f"{'right side of 0.5' if ok else 'WRONG side of 0.5'}")
    print(f"  mean squared error {mse:.4f}; {int(right.sum())} of 8 on the right side of 0.5")
    return int(right.sum()), mse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--hidden", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    nn.set_seed(args.seed)
    print(f"tinynet {tinynet.__version__}: default backend {tinynet.get_backend()!r}, usable: "
          f"{', '.join(tinynet.available_backends())}")
    print(f"8 patterns, targets {TARGETS[:, 0].astype(int).tolist()} (3-bit parity), "
          f"{args.steps} full-batch steps")

    single = train([nn.Dense(3, 1, "tanh", use_bias=False)], args.steps)
    single_right, single_mse = report("One layer, 3 -> 1 tanh (the seed's net):", *single)
    hidden = train([nn.Dense(3, args.hidden, "tanh"), nn.Dense(args.hidden, 1, "tanh")],
                   args.steps)
    hidden_right, _ = report(f"One hidden layer, 3 -> {args.hidden} tanh -> 1 tanh:",
                                      *hidden)

    print("\nThe single layer cannot fit parity (no plane separates the even patterns from "
          "the odd ones);\nthe hidden layer can." if single_right < 8 and hidden_right == 8
          else "\nUNEXPECTED: see the tables above.")
    sys.exit(0 if single_right < 8 and single_mse > 0.1 and hidden_right == 8 else 1)


if __name__ == "__main__":
    main()
