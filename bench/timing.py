"""Timers for the benchmarks: medians of repeated blocks, after warm-up, peers interleaved.

A block runs one workload `n` times back to back; `n` is chosen so that a block lasts at
least `min_block_s` (short calls are timed in bulk, never one by one). The implementations
of one workload are timed in rounds, one block of each per round, so that a change in the
machine's load (other processes on a shared machine) falls on all of them alike and the
ratios between them stay fair. The CPU is timed with time.perf_counter; the GPU with CUDA
events around the block after a device synchronize, the wall clock of the same block kept
beside it (for launch overhead, and as a check that the events saw all the work).
"""

import os
import statistics
import time

MAX_CALLS = 1 << 20        # calls per block, at most
BUDGET_S = 12.0            # rounds are cut (to 3 at least) when a group would take longer


def mode(quick):
    """'smoke' when TINYNET_BENCH_SMOKE=1 (tiny repeats and sizes, for the tests: seconds,
    numbers meaningless), else 'quick' or 'full'."""
    if os.environ.get("TINYNET_BENCH_SMOKE") == "1":
        return "smoke"
    return "quick" if quick else "full"


def _calibrate(block, min_block_s):
    """The number of calls that makes a block last at least min_block_s, and its seconds."""
    n = 1
    while True:
        seconds = block(n)[-1]
        if seconds >= min_block_s or n >= MAX_CALLS:
            return n, seconds
        grow = int(n * 1.2 * min_block_s / max(seconds, 1e-9))
        n = min(MAX_CALLS, max(2 * n, grow))


def _raise(name, error):
    raise error


def interleaved(blocks, *, repeats, min_block_s, warmup=1, on_error=_raise):
    """{name: (medians per call, rounds)} for blocks {name: block}, where block(n) runs n
    calls and returns a tuple of seconds whose last entry is the wall clock (what the
    calibration uses). Each block is warmed up (compilation, caches, first allocations) and
    calibrated, then timed once per round. A block that raises is reported to
    on_error(name, error) and left out; the others go on."""
    ready = {}
    for name, block in blocks.items():
        try:
            block(warmup)
            n, seconds = _calibrate(block, min_block_s)
        except Exception as error:          # handed to on_error, which records or raises it
            on_error(name, error)
            continue
        ready[name] = (block, n, seconds)
    round_s = sum(seconds for _, _, seconds in ready.values())
    rounds = max(min(3, repeats), min(repeats, int(BUDGET_S / max(round_s, 1e-9))))
    samples = {name: [] for name in ready}
    for _ in range(rounds):
        for name in list(ready):
            block, n, _ = ready[name]
            try:
                samples[name].append([seconds / n for seconds in block(n)])
            except Exception as error:      # as above
                on_error(name, error)
                del ready[name], samples[name]
    return {name: ([statistics.median(column) for column in zip(*rows)], len(rows))
            for name, rows in samples.items()}


def cpu_block(call, prepare=None):
    """block(n) -> (wall seconds,) of n calls. Without `prepare`, call() takes no arguments;
    with it, prepare(n) -> n argument tuples is built before the block, untimed (fresh
    inputs, fresh contexts for a backward op, which may be single-use)."""
    def block(n):
        argument_sets = prepare(n) if prepare is not None else None
        start = time.perf_counter()
        if argument_sets is None:
            for _ in range(n):
                call()
        else:
            for arguments in argument_sets:
                call(*arguments)
        return (time.perf_counter() - start,)
    return block


def seconds_per_call(block, *, repeats, min_block_s):
    """Median seconds per call of one block alone (the peaks)."""
    (medians, rounds), = interleaved({"only": block}, repeats=repeats,
                                     min_block_s=min_block_s).values()
    return medians, rounds


class CudaClock:
    """CUDA events on CuPy's current stream (the legacy default stream, which PyTorch's and
    Numba's default launches also use), after a device synchronize."""

    def __init__(self, cupy):
        self.cupy = cupy

    def synchronize(self):
        self.cupy.cuda.runtime.deviceSynchronize()

    def block(self, call, prepare):
        """block(n) -> (event seconds, wall seconds) of call(*arguments) for each of the
        n argument tuples prepare(n) builds, untimed, before the block."""
        cuda = self.cupy.cuda

        def block(n):
            argument_sets = prepare(n)
            start, end = cuda.Event(), cuda.Event()
            self.synchronize()
            wall_start = time.perf_counter()
            start.record()
            for arguments in argument_sets:
                call(*arguments)
            end.record()
            end.synchronize()
            self.synchronize()     # work on another stream would show in the wall time
            wall = time.perf_counter() - wall_start
            return cuda.get_elapsed_time(start, end) / 1e3, wall
        return block
