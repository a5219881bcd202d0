"""The measurement behind nn.Stack's HOST_FORWARD_PAIRS: how many (model, sample) pairs one
host forward of predict should run.

    python bench/stack_predict.py [--quick]

A stack of M copies of experiment 3a's net (an LSTM of 3 cells over 100 to 110 steps of one
input, then a sigmoid unit) predicts 256 sequences per model on the numba-cpu backend, its
forward cut into chunks of `rows` samples per model (M x rows pairs per forward), for
several chunk sizes: milliseconds per predict, medians of interleaved, calibrated blocks
(bench/timing.py). Every forward also writes what a backward would read; the table shows
the number of pairs per forward beyond which that slows the whole predict down. With
TINYNET_BENCH_SMOKE=1: one small stack, tiny blocks (seconds; the numbers mean nothing).
"""

import argparse

import numpy as np

import tinynet
from tinynet import nn
from tinynet.bench import timing
from tinynet.nn import stack as stack_module

SETTINGS = {"full": ((10, 50, 256), 5, 0.2), "quick": ((10, 50, 256), 3, 0.05),
            "smoke": ((3,), 1, 0.0)}                  # stack sizes, repeats, block seconds
SAMPLES, STEPS, HIDDEN = 256, 100, 3
PAIRS = (256, 512, 1024, 2048, 4096, 8192)            # pairs per forward, besides the whole


def net(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential([nn.LSTM(1, HIDDEN, forget_bias=5.0, seed=rng),
                          nn.Dense(HIDDEN, 1, "sigmoid", seed=rng)])


def table(models, repeats, min_block_s):
    """{rows per forward: median seconds per predict} for a stack of `models`."""
    stack = nn.Stack([net(seed) for seed in range(models)]).to("numba-cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((models, SAMPLES, STEPS + STEPS // 10, 1)).astype(np.float32)
    lengths = rng.integers(STEPS, STEPS + STEPS // 10 + 1, (models, SAMPLES))
    chunks = sorted({max(1, min(SAMPLES, pairs // models)) for pairs in PAIRS} | {SAMPLES})

    def predict(rows):
        stack_module.HOST_FORWARD_PAIRS = models * rows      # the cap at exactly this chunk
        stack.predict(x, batch_size=rows, lengths=lengths)

    saved = stack_module.HOST_FORWARD_PAIRS
    try:
        medians = timing.interleaved(
            {rows: timing.cpu_block(lambda rows=rows: predict(rows)) for rows in chunks},
            repeats=repeats, min_block_s=min_block_s)
    finally:
        stack_module.HOST_FORWARD_PAIRS = saved
    return {rows: seconds[0] for rows, (seconds, _) in medians.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter blocks")
    args = parser.parse_args()
    sizes, repeats, min_block_s = SETTINGS[timing.mode(args.quick)]
    print(f"nn.Stack.predict of {SAMPLES} sequences per model (T = {STEPS} to "
          f"{STEPS + STEPS // 10}, 1 input, H = {HIDDEN}), numba-cpu, tinynet "
          f"{tinynet.__version__}; HOST_FORWARD_PAIRS = {stack_module.HOST_FORWARD_PAIRS}\n")
    print("| M | rows per forward | pairs per forward | ms per predict | vs the fastest |")
    print("|---|---|---|---|---|")
    for models in sizes:
        seconds = table(models, repeats, min_block_s)
        best = min(seconds.values())
        for rows, value in seconds.items():
            print(f"| {models} | {rows} | {models * rows} | {value * 1e3:.2f} | "
                  f"{value / best:.2f} |")


if __name__ == "__main__":
    main()
