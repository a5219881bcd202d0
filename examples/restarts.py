"""Random restarts: how often does a small net fit 3-bit parity from a random start?

S1's problem (8 binary patterns, targets 3-bit parity) with one hidden layer of 2, 3 and 4
tanh units and one tanh output, trained full-batch by SGD on the mean squared error, from
1,000 random initialisations per width. The 1,000 restarts of a width train at once, as one
nn.Stack: each its own weights, the data shared. A restart "fits" when all 8 outputs are on
the right side of 0.5.

    python examples/restarts.py [--restarts 1000] [--widths 2,3,4] [--steps 2000]
                                [--lr 1.0] [--seed 0]
"""

import argparse
import time

import numpy as np

import tinynet
from tinynet import nn

PATTERNS = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1],
                     [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]], dtype=np.float32)
TARGETS = np.array([[1, 0, 0, 1, 0, 1, 1, 0]], dtype=np.float32).T       # (8, 1)


def restarts(width, count, steps, learning_rate, seed):
    """Train `count` restarts of 3 -> width tanh -> 1 tanh at once; returns each restart's
    outputs (count, 8, 1) and the seconds the training took."""
    nn.set_seed(seed)
    stack = nn.Stack([nn.Sequential([nn.Dense(3, width, "tanh"), nn.Dense(width, 1, "tanh")])
                      for _ in range(count)])
    stack.compile(optimizer=nn.SGD(learning_rate), loss="mse", seed=seed)
    started = time.perf_counter()
    stack.fit(PATTERNS, TARGETS, epochs=steps, batch_size=len(PATTERNS), shuffle=False,
              verbose=0, stop_on_nonfinite=False)
    seconds = time.perf_counter() - started
    return stack.predict(PATTERNS), seconds


def fits(outputs):
    """Per restart: are all 8 outputs on the right side of 0.5?"""
    return np.all((outputs > 0.5) == (TARGETS > 0.5), axis=(1, 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=1000)
    parser.add_argument("--widths", default="2,3,4")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"3-bit parity, {args.restarts} random restarts per width, {args.steps} full-batch "
          f"SGD steps at {args.lr}, all restarts of a width as one nn.Stack "
          f"(default backend {tinynet.get_backend()!r})")
    print(f"{'hidden units':>12}{'fit all 8':>12}{'time':>9}")
    for width in (int(w) for w in args.widths.split(",")):
        outputs, seconds = restarts(width, args.restarts, args.steps, args.lr, args.seed)
        print(f"{width:>12}{fits(outputs).mean():>11.1%}{seconds:>8.1f}s")


if __name__ == "__main__":
    main()
