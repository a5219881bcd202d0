"""A CPU-bound sweep in-process against the same sweep on a local Dask cluster.

    python bench/sweep_bench.py [--sequences 3000] [--workers 2] [--repeats 3]

The experiment is examples/hochreiter_3a.py's forget_bias sweep, cut to a fixed amount of
work: grid(forget_bias=[0, 1, 2.1, 5, 10], seed=range(10)), 50 trials in 10 chunks of 5,
each chunk one nn.Stack of its 5 trials trained online (T=100, N=3) for --sequences
sequences, then tested once on 256 fresh sequences (none gets near ST2 that soon, so every
chunk does the same work). Rows, best of --repeats (seconds for the whole sweep):

    in-process              sweep.run(client=None), after one warm-up chunk (JIT compiled)
    cluster, warm           sweep.run on an already started LocalCluster of --workers
                            single-threaded worker processes, each warmed up the same way
    client="local"          end to end: starting the cluster (one worker per core), the
                            workers' first calls, the sweep, closing the cluster; run once

Each row's rows of results must equal the in-process ones (checked; a mismatch exits 1).
The ratio is in-process time over the row's time; near --workers is the aim for chunks this
CPU-bound. The load average before and after is printed: on a shared machine it says how
much the numbers can be trusted.
"""

import argparse
import functools
import os
import sys
import time
from pathlib import Path

from tinynet import sweep

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import hochreiter_3a  # noqa: E402  (the example's trials; workers inherit this path)

CONFIGS = sweep.grid(forget_bias=[0, 1, 2.1, 5, 10], seed=range(10))
CHUNK = 5


def trials(chunk, sequences):
    """One stack of the chunk's trials, trained for `sequences` sequences and tested once."""
    return hochreiter_3a.sweep_chunk(chunk, T=100, N=3, max_sequences=sequences,
                                     test_every=sequences, optimizer_name="sgd", rate=None)


def warm_up():
    trials([{"forget_bias": 1.0, "seed": 0}], sequences=2)


def best_of(repeats, run):
    times, rows = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - started)
    return min(times), rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run_chunk = functools.partial(trials, sequences=args.sequences)
    print(f"{len(CONFIGS)} Experiment 3a trials in {len(CONFIGS) // CHUNK} chunks (stacks) of "
          f"{CHUNK}, {args.sequences} sequences each; {os.cpu_count()} cores; load average "
          f"before {os.getloadavg()[0]:.2f}")
    warm_up()
    base, expected = best_of(args.repeats, lambda: sweep.run(run_chunk, CONFIGS, CHUNK,
                                                              progress=False))
    table = [("in-process", base)]
    # the cluster client="local" starts, with --workers workers
    with sweep.local_client(args.workers) as client:
        client.run(warm_up)
        seconds, rows = best_of(args.repeats, lambda: sweep.run(
            run_chunk, CONFIGS, CHUNK, client=client, progress=False))
        table.append((f"cluster, {args.workers} workers, warm", seconds))
        same = rows == expected
    seconds, rows = best_of(1, lambda: sweep.run(run_chunk, CONFIGS, CHUNK, client="local",
                                                 progress=False))
    cores = len(os.sched_getaffinity(0))
    table.append((f"client=\"local\" ({cores} workers), end to end", seconds))
    same = same and rows == expected

    print(f"\n| {'run':<40} | {'seconds':>8} | {'configs/s':>9} | {'in-process / this':>17} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 11}|{'-' * 19}|")
    for name, seconds in table:
        print(f"| {name:<40} | {seconds:8.2f} | {len(CONFIGS) / seconds:9.1f} | "
              f"{base / seconds:16.2f}x |")
    print(f"\nload average after {os.getloadavg()[0]:.2f}; rows identical to in-process: "
          f"{'yes' if same else 'NO'}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
