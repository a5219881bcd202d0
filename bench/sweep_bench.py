"""A CPU-bound sweep in-process against the same sweep on a local Dask cluster.

    python bench/sweep_bench.py [--steps 5000] [--workers 2] [--repeats 3]

The experiment is S1's net with its hidden layer (3 -> hidden tanh -> 1 tanh, full-batch SGD
on the 8 patterns of 3-bit parity), one model per config, trained through tinynet.nn on its
default backend; the sweep is grid(hidden=[2, 3, 4, 8], rate=[0.5, 1.0], seed=range(4)),
32 configs in 8 chunks of 4. Rows, best of --repeats (seconds for the whole sweep):

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

import numpy as np

from tinynet import nn, sweep

PATTERNS = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)],
                    dtype=np.float32)                                       # (8, 3)
TARGETS = (PATTERNS.sum(1) % 2 == 0).astype(np.float32)[:, None]            # (8, 1) parity
CONFIGS = sweep.grid(hidden=[2, 3, 4, 8], rate=[0.5, 1.0], seed=range(4))
CHUNK = 4


def parity(chunk, steps):
    """Train one S1 net with a hidden layer per config; its final error and fit."""
    rows = []
    for config in chunk:
        model = nn.Sequential([nn.Dense(3, config["hidden"], "tanh", seed=config["seed"]),
                               nn.Dense(config["hidden"], 1, "tanh", seed=config["seed"] + 1)])
        model.compile(optimizer=nn.SGD(config["rate"]), loss="mse")
        model.fit(PATTERNS, TARGETS, epochs=steps, batch_size=len(PATTERNS), shuffle=False,
                  verbose=0)
        outputs = model.predict(PATTERNS)
        rows.append({"mse": float(np.mean((outputs - TARGETS) ** 2)),
                     "right": int(((outputs > 0.5) == (TARGETS > 0.5)).sum())})
    return rows


def warm_up():
    parity([{"hidden": 2, "rate": 1.0, "seed": 0}], steps=2)


def best_of(repeats, run):
    times, rows = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run()
        times.append(time.perf_counter() - started)
    return min(times), rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import dask
    from dask.distributed import Client, LocalCluster

    run_chunk = functools.partial(parity, steps=args.steps)
    print(f"{len(CONFIGS)} configs in {len(CONFIGS) // CHUNK} chunks of {CHUNK}, "
          f"{args.steps} full-batch steps each; {os.cpu_count()} cores; load average before "
          f"{os.getloadavg()[0]:.2f}")
    warm_up()
    base, expected = best_of(args.repeats, lambda: sweep.run(run_chunk, CONFIGS, CHUNK,
                                                              progress=False))
    table = [("in-process", base)]
    # the cluster client="local" starts, with --workers workers
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0,
                          "distributed.worker.profile.enabled": False}), \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                         host="127.0.0.1", dashboard_address=None,
                         scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                         env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            Client(cluster, set_as_default=False) as client:
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
