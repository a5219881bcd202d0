"""The measurements behind the numba-cpu backend's size thresholds and its compile cost.

    python bench/numba_cpu_tuning.py [--quick] [--crossover] [--stack-lstm] [--compile]
                                     (default: all three)

--crossover  the tables behind the thresholds in tinynet/backends/numba_cpu.py: per op and
             size, forward + backward through tinynet.ops with the backend forced onto its
             tiny loops, forced onto its BLAS path, and left to choose, beside the numpy
             backend (for prefer()). Float32, medians of interleaved, calibrated blocks
             (bench/timing.py).
--stack-lstm the table behind numba-cpu's route for a stacked LSTM (_stack_lstm_route) and
             auto's choice for it (prefer): a stacked LSTM with lengths (forward +
             backward through tinynet.ops) run model by model in the single-model
             kernel, in the stack kernel's SIMD lanes, and on the numpy backend.
--compile    first use of every kernel with a cold disk cache (a fresh NUMBA_CACHE_DIR), then
             the same in a new process with that cache warm; each in its own subprocess.

The end-to-end targets (S1, S4, S7, per-call overhead) are in `python -m tinynet bench`.
On a busy machine, two-thread BLAS (OpenBLAS, PyTorch's OpenMP) swings by several times
between runs: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 in the environment gives steadier
one-thread numbers. With TINYNET_BENCH_SMOKE=1 the crossover runs one size per op with tiny
blocks (seconds; the numbers mean nothing).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numba
import numpy as np

from tinynet import ops
from tinynet.backends import numba_cpu
from tinynet.bench import timing

F32 = np.float32

SETTINGS = {"full": (7, 0.02), "quick": (3, 0.005), "smoke": (1, 0.0)}   # repeats, block s

# limit -> (its value forcing the tiny loops, its value forcing the BLAS path)
FORCING = {"DENSE_LOOPS_MAX_MACS": (1 << 62, -1), "CELL_LOOPS_MAX_MACS": (1 << 62, -1),
           "LSTM_LOOPS_MAX_MACS": (1 << 62, -1), "LOOPS_MAX_ROWS": (1 << 62, -1),
           "LSTM_PROJECT_MIN_IN": (1 << 62, 0)}

DENSE_SIZES = [(8, 3, 1), (1, 16, 16), (16, 8, 8), (4, 32, 32), (16, 16, 16), (1, 64, 64),
               (64, 8, 8), (8, 32, 32), (32, 16, 16), (1, 128, 128), (16, 32, 32),
               (64, 16, 16), (32, 32, 32), (256, 8, 8), (1, 256, 256), (1, 500, 500),
               (2, 128, 128), (4, 128, 128), (64, 32, 32), (128, 64, 64), (256, 64, 500)]
CELL_SIZES = [(1, 1, 3), (1, 8, 8), (4, 8, 8), (1, 16, 16), (16, 4, 8), (4, 16, 16),
              (16, 16, 16), (1, 64, 64), (64, 16, 16), (16, 32, 32), (64, 32, 32),
              (256, 64, 64)]
# (M, batch, steps, in, H)
STACK_LSTM_SIZES = [(1, 1, 100, 1, 3), (3, 1, 100, 1, 3), (4, 1, 100, 1, 3), (8, 1, 100, 1, 3),
                    (1, 4, 100, 1, 3), (1, 8, 100, 1, 3), (4, 1, 100, 1, 8), (8, 1, 100, 1, 8),
                    (12, 1, 100, 1, 8), (1, 8, 100, 1, 8), (1, 16, 100, 1, 8),
                    (8, 1, 50, 1, 16), (16, 1, 50, 1, 16), (24, 1, 50, 1, 16),
                    (16, 1, 50, 1, 32), (32, 1, 50, 1, 32), (48, 1, 50, 1, 32),
                    (64, 1, 50, 1, 32), (16, 4, 50, 1, 32), (4, 8, 50, 1, 32),
                    (32, 4, 50, 1, 32), (64, 2, 50, 1, 32), (32, 8, 20, 8, 32),
                    (8, 1, 50, 1, 64), (64, 1, 50, 1, 64), (96, 1, 50, 1, 64),
                    (16, 8, 50, 1, 64), (64, 4, 50, 1, 32), (256, 1, 50, 1, 32),
                    (128, 2, 50, 1, 64), (128, 8, 20, 8, 32)]
LSTM_SIZES = [(1, 100, 1, 3), (1, 100, 8, 8), (8, 50, 8, 8), (1, 100, 32, 16),
              (16, 50, 16, 16), (32, 50, 32, 16), (64, 30, 7, 33), (256, 100, 1, 3),
              (16, 30, 64, 64), (64, 30, 32, 64), (64, 20, 64, 128), (256, 20, 32, 128)]


# --- crossovers -------------------------------------------------------------------------

def forced_block(path, call):
    """A timing block of call() with numba-cpu's limits set so that every op takes `path`
    ("loops" or "blas"), restored after the block."""
    block = timing.cpu_block(call)

    def run(n):
        saved = {name: getattr(numba_cpu, name) for name in FORCING}
        for name, (loops_value, blas_value) in FORCING.items():
            setattr(numba_cpu, name, loops_value if path == "loops" else blas_value)
        try:
            return block(n)
        finally:
            for name, value in saved.items():
                setattr(numba_cpu, name, value)
    return run


def dense_fwd_bwd(r, batch, n_in, n_out):
    # x (batch, in), w (in, out), b (out,), dy (batch, out)
    x = r.standard_normal((batch, n_in)).astype(F32)
    w = r.standard_normal((n_in, n_out)).astype(F32)
    b = r.standard_normal(n_out).astype(F32)
    dy = r.standard_normal((batch, n_out)).astype(F32)

    def on(backend):
        def call():
            _, ctx = ops.dense(x, w, b, "sigmoid", backend=backend)
            ops.dense_backward(ctx, dy)
        return call
    return on


def cell_fwd_bwd(r, batch, n_in, hidden):
    # x (batch, in), h and c (batch, H), w_ih (in, 4H), w_hh (H, 4H), b (4H,)
    args = (r.standard_normal((batch, n_in)).astype(F32),
            r.standard_normal((batch, hidden)).astype(F32),
            r.standard_normal((batch, hidden)).astype(F32),
            r.standard_normal((n_in, 4 * hidden)).astype(F32) * F32(0.3),
            r.standard_normal((hidden, 4 * hidden)).astype(F32) * F32(0.3),
            r.standard_normal(4 * hidden).astype(F32))
    dh = r.standard_normal((batch, hidden)).astype(F32)

    def on(backend):
        def call():
            _, _, ctx = ops.lstm_cell(*args, backend=backend)
            ops.lstm_cell_backward(ctx, dh, dh)
        return call
    return on


def lstm_fwd_bwd(r, batch, steps, n_in, hidden):
    # xs (batch, steps, in), w_ih (in, 4H), w_hh (H, 4H), b (4H,); dhT (batch, H)
    args = (r.standard_normal((batch, steps, n_in)).astype(F32), None, None,
            (r.standard_normal((n_in, 4 * hidden)) * 0.3 / np.sqrt(n_in)).astype(F32),
            (r.standard_normal((hidden, 4 * hidden)) * 0.3 / np.sqrt(hidden)).astype(F32),
            r.standard_normal(4 * hidden).astype(F32))
    dh = r.standard_normal((batch, hidden)).astype(F32)

    def on(backend):
        def call():
            _, _, _, ctx = ops.lstm(*args, backend=backend)
            ops.lstm_backward(ctx, None, dh)
        return call
    return on


def crossover_table(title, header, cases, mode):
    """cases: [(size, MACs, on)], on(backend) -> a call of the op's forward + backward."""
    repeats, min_block_s = SETTINGS[mode]
    lines = [f"\n### {title}, float32, fwd+bwd us per call\n",
             f"| {header} | MACs | loops | BLAS path | numba-cpu | numpy backend | "
             "numba-cpu / numpy |", "|---|---:|---:|---:|---:|---:|---:|"]
    for size, macs, on in cases:
        timed = timing.interleaved({"loops": forced_block("loops", on("numba-cpu")),
                                    "blas": forced_block("blas", on("numba-cpu")),
                                    "numba-cpu": timing.cpu_block(on("numba-cpu")),
                                    "numpy": timing.cpu_block(on("numpy"))},
                                   repeats=repeats, min_block_s=min_block_s)
        us = {name: seconds * 1e6 for name, ((seconds,), _) in timed.items()}
        lines.append(f"| {size} | {macs:,} | {us['loops']:.1f} | {us['blas']:.1f} | "
                     f"{us['numba-cpu']:.1f} | {us['numpy']:.1f} | "
                     f"{us['numba-cpu'] / us['numpy']:.2f} |")
    print("\n".join(lines), flush=True)


def crossover(mode):
    r = np.random.default_rng(0)
    sizes = {"dense": DENSE_SIZES, "cell": CELL_SIZES, "lstm": LSTM_SIZES}
    if mode == "smoke":
        sizes = {op: found[:1] for op, found in sizes.items()}
    crossover_table("dense (batch, in, out), sigmoid", "(batch, in, out)",
                    [(s, s[0] * s[1] * s[2], dense_fwd_bwd(r, *s)) for s in sizes["dense"]],
                    mode)
    crossover_table("lstm_cell (batch, in, H)", "(batch, in, H)",
                    [(s, s[0] * (s[1] + s[2]) * 4 * s[2], cell_fwd_bwd(r, *s))
                     for s in sizes["cell"]], mode)
    crossover_table("lstm (batch, steps, in, H); MACs of the input side",
                    "(batch, steps, in, H)",
                    [(s, s[0] * s[1] * s[2] * 4 * s[3], lstm_fwd_bwd(r, *s))
                     for s in sizes["lstm"]], mode)


# --- stacked LSTM: model by model, or in SIMD lanes ----------------------------------------

def routed_block(route, call):
    """A timing block of call() with numba-cpu's stacked LSTM forced onto `route`: "per model",
    or the stack kernel (whichever of its two layouts it picks)."""
    block = timing.cpu_block(call)
    chosen = numba_cpu._stack_lstm_route

    def forced(models, batch, steps, n_in, hidden):
        if route == "per model":
            return route
        return ("rows as models" if numba_cpu._rows_as_models(models, batch, steps, n_in, hidden)
                else "lanes")

    def run(n):
        numba_cpu._stack_lstm_route = forced
        try:
            return block(n)
        finally:
            numba_cpu._stack_lstm_route = chosen
    return run


def stack_lstm_fwd_bwd(r, models, batch, steps, n_in, hidden):
    # xs (M, batch, steps, in), weights (M, ...), lengths (M, batch) in [0.9 steps, steps]
    xs = r.standard_normal((models, batch, steps, n_in)).astype(F32)
    w_ih = (r.standard_normal((models, n_in, 4 * hidden)) * 0.3).astype(F32)
    w_hh = (r.standard_normal((models, hidden, 4 * hidden)) * 0.3 / np.sqrt(hidden)).astype(F32)
    b = np.zeros((models, 4 * hidden), F32)
    lengths = r.integers(steps - steps // 10, steps + 1, (models, batch))

    def on(backend):
        def call():
            hs, _, _, ctx = ops.lstm(xs, None, None, w_ih, w_hh, b, forget_bias=1.0,
                                     lengths=lengths, backend=backend)
            ops.lstm_backward(ctx, hs)
        return call
    return on, xs, w_hh


def stack_lstm_table(mode):
    repeats, min_block_s = SETTINGS[mode]
    sizes = STACK_LSTM_SIZES[:1] if mode == "smoke" else STACK_LSTM_SIZES
    lines = ["\n### stacked lstm with lengths (M, batch, steps, in, H), float32, fwd+bwd us per "
             "call\n", "| (M, batch, steps, in, H) | pairs | per model | stack kernel | "
             "numpy backend | route | auto | per model / stack kernel |",
             "|---|---:|---:|---:|---:|---|---|---:|"]
    r = np.random.default_rng(0)
    for size in sizes:
        on, xs, w_hh = stack_lstm_fwd_bwd(r, *size)
        # numpy's two-thread BLAS, run right before a prange kernel, leaves its threads
        # spinning on the cores that kernel needs: the numpy backend is timed on its own
        timed = timing.interleaved({"per model": routed_block("per model", on("numba-cpu")),
                                    "stack kernel": routed_block("stack kernel",
                                                                 on("numba-cpu"))},
                                   repeats=repeats, min_block_s=min_block_s)
        timed.update(timing.interleaved({"numpy": timing.cpu_block(on("numpy"))},
                                        repeats=repeats, min_block_s=min_block_s))
        us = {name: seconds * 1e6 for name, ((seconds,), _) in timed.items()}
        auto = "numba-cpu" if numba_cpu.prefer("lstm", xs, w_hh) else "numpy"
        lines.append(f"| {size} | {size[0] * size[1]} | {us['per model']:.1f} | "
                     f"{us['stack kernel']:.1f} | {us['numpy']:.1f} | "
                     f"{numba_cpu._stack_lstm_route(*size)} | {auto} | "
                     f"{us['per model'] / us['stack kernel']:.2f} |")
    print("\n".join(lines), flush=True)


# --- compile cost -----------------------------------------------------------------------

_FIRST_USE = """
import time
start = time.perf_counter()
import numpy as np
from tinynet import ops
from tinynet.backends import numba_cpu
imported = time.perf_counter()
for dtype in (np.float32, np.float64):
    for n in (2, 300):    # the tiny-loop and the BLAS path of each op
        x = np.ones((n, n), dtype)
        for act in ("linear", "sigmoid", "tanh"):
            y, ctx = ops.dense(x, x, x[0], act, backend="numba-cpu")
            ops.dense_backward(ctx, y)
        h = np.ones((n, 4), dtype)
        w_ih, w_hh, b = np.ones((n, 16), dtype), np.ones((4, 16), dtype), np.ones(16, dtype)
        h1, c1, ctx = ops.lstm_cell(x, h, h, w_ih, w_hh, b, backend="numba-cpu")
        ops.lstm_cell_backward(ctx, h1, c1)
        hs, hT, cT, ctx = ops.lstm(x[:, None, :], h, h, w_ih, w_hh, b, backend="numba-cpu")
        ops.lstm_backward(ctx, hs)
    if dtype is np.float32:
        first_dtype = time.perf_counter()
print(f"{imported - start:.2f} {first_dtype - imported:.2f} {time.perf_counter() - imported:.2f}")
"""


def compile_cost():
    print("\n### Compile cost of every numba-cpu kernel (subprocesses), seconds\n")
    print("| disk cache | import tinynet + numba-cpu | first use, float32 | "
          "first use, float32 + float64 |")
    print("|---|---:|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold (fresh NUMBA_CACHE_DIR)", "warm (same dir, new process)"):
            done = subprocess.run([sys.executable, "-c", _FIRST_USE], env=env,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the {label} first-use subprocess failed:\n{done.stderr}")
            print(f"| {label} | " + " | ".join(done.stdout.split()) + " |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python bench/numba_cpu_tuning.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter blocks")
    parser.add_argument("--crossover", action="store_true", help="the crossover tables")
    parser.add_argument("--stack-lstm", action="store_true",
                        help="the stacked LSTM's per-model crossover")
    parser.add_argument("--compile", action="store_true", help="the compile cost")
    args = parser.parse_args(argv)
    both = not (args.crossover or args.stack_lstm or args.compile)
    threads = {name: os.environ.get(name, "unset")
               for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"NumPy {np.__version__}, Numba {numba.__version__}, {os.cpu_count()} CPUs, "
          + ", ".join(f"{name}={value}" for name, value in threads.items()))
    if args.crossover or both:
        crossover(timing.mode(args.quick))
    if args.stack_lstm or both:
        stack_lstm_table(timing.mode(args.quick))
    if args.compile or both:
        compile_cost()


if __name__ == "__main__":
    main()
