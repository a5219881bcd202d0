"""The measurement behind nn.Stack's HOST_FORWARD_PAIRS: how many (model, sample) pairs one
host forward of predict should run.

    python bench/stack_predict.py [--quick]

A stack of M copies of experiment 3a's net (an LSTM of 3 cells over 100 to 110 steps of one
input, then a sigmoid unit) predicts 256 sequences per model on the numba-cpu backend, its
forward cut into chunks of `rows` samples per model (M x rows pairs per forward), for
several chunk sizes. Every forward also writes what a backward would read, several times
the size of its outputs, so the cost of a predict depends on how the process's memory
allocator serves those arrays, which depends on what the process allocated before. So each
chunk size runs in a process of its own, as a program that predicts again and again would
(experiment 3a tests every 250 updates): the process times PREDICTS predicts after a first
one, and reports their median and the page faults per predict (fresh memory from the
system). The table gives, per chunk size, the medians over its processes, run in
turns. With TINYNET_BENCH_SMOKE=1: one small stack, one process per size (the numbers mean
nothing).
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

import tinynet
from tinynet import nn
from tinynet.bench import timing
from tinynet.nn import stack as stack_module

SETTINGS = {"full": ((10, 50, 256), 5), "quick": ((10, 50, 256), 3),
            "smoke": ((3,), 1)}                       # stack sizes, processes per chunk size
SAMPLES, STEPS, HIDDEN = 256, 100, 3
PAIRS = (256, 512, 1024, 2048, 4096, 8192)            # pairs per forward, besides the whole
PREDICTS = 12


def net(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential([nn.LSTM(1, HIDDEN, forget_bias=5.0, seed=rng),
                          nn.Dense(HIDDEN, 1, "sigmoid", seed=rng)])


def page_faults():
    """Minor page faults of this process so far (None where the platform has no count)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def one_process(models, rows, predicts):
    """In this process: a stack of `models` predicting in chunks of `rows` samples per model;
    -> (median seconds per predict, page faults per predict or None)."""
    stack = nn.Stack([net(seed) for seed in range(models)]).to("numba-cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((models, SAMPLES, STEPS + STEPS // 10, 1)).astype(np.float32)
    lengths = rng.integers(STEPS, STEPS + STEPS // 10 + 1, (models, SAMPLES))
    stack_module.HOST_FORWARD_PAIRS = models * rows      # the cap at exactly this chunk
    stack.predict(x, batch_size=rows, lengths=lengths)   # compiles, or loads, the kernels
    seconds = []
    faults = page_faults()
    for _ in range(predicts):
        start = time.perf_counter()
        stack.predict(x, batch_size=rows, lengths=lengths)
        seconds.append(time.perf_counter() - start)
    faults = None if faults is None else (page_faults() - faults) / predicts
    return float(np.median(seconds)), faults


def table(models, processes, predicts):
    """{rows per forward: (median seconds per predict, faults per predict or None)}, each
    chunk size measured in `processes` fresh processes, the sizes in turns."""
    chunks = sorted({max(1, min(SAMPLES, pairs // models)) for pairs in PAIRS} | {SAMPLES})
    runs = {rows: [] for rows in chunks}
    for _ in range(processes):
        for rows in chunks:
            done = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--one", str(models), str(rows),
                 str(predicts)], capture_output=True, text=True, check=True)
            seconds, faults = done.stdout.split()
            runs[rows].append((float(seconds), None if faults == "-" else float(faults)))
    out = {}
    for rows, values in runs.items():
        faults = [f for _, f in values if f is not None]
        out[rows] = (float(np.median([s for s, _ in values])),
                     float(np.median(faults)) if faults else None)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer processes per size")
    parser.add_argument("--one", nargs=3, type=int, metavar=("M", "ROWS", "PREDICTS"),
                        help=argparse.SUPPRESS)      # the measuring process (one_process)
    args = parser.parse_args()
    if args.one:
        seconds, faults = one_process(*args.one)
        print(seconds, "-" if faults is None else faults)
        return
    mode = timing.mode(args.quick)
    sizes, processes = SETTINGS[mode]
    predicts = 2 if mode == "smoke" else PREDICTS
    print(f"nn.Stack.predict of {SAMPLES} sequences per model (T = {STEPS} to "
          f"{STEPS + STEPS // 10}, 1 input, H = {HIDDEN}), numba-cpu, tinynet "
          f"{tinynet.__version__}; HOST_FORWARD_PAIRS = {stack_module.HOST_FORWARD_PAIRS}; "
          f"each chunk size in {processes} fresh process(es), {predicts} predicts each\n")
    print("| M | rows per forward | pairs per forward | ms per predict | page faults per "
          "predict | vs the fastest |")
    print("|---|---|---|---|---|---|")
    for models in sizes:
        results = table(models, processes, predicts)
        best = min(seconds for seconds, _ in results.values())
        for rows, (seconds, faults) in results.items():
            print(f"| {models} | {rows} | {models * rows} | {seconds * 1e3:.2f} | "
                  f"{'-' if faults is None else f'{faults:.0f}'} | {seconds / best:.2f} |")


if __name__ == "__main__":
    main()
