"""Sweeps: many configurations, run in chunks, in this process or on a Dask cluster.

    from tinynet import sweep
    configs = sweep.grid(forget_bias=[0, 1, 2.1, 5, 10], seed=range(10))
    results = sweep.run(experiment, configs, chunk_size=10, out="results.jsonl")

`experiment(chunk)` takes a list of configs (dicts) and returns one result dict per config,
in the same order; typically it trains one stack of models, one per config. `run` splits the
configs into chunks of `chunk_size` and runs them:

- client=None: here, chunk after chunk. Dask is not imported.
- client="local": on a dask.distributed LocalCluster of one single-threaded worker process
  per core, on the loopback interface, started and closed by `run`.
- a dask.distributed.Client, or a scheduler address ("tcp://host:8786"): on that cluster.
  Workers must be able to import the experiment's module (a function defined in a script's
  __main__ travels by value) and everything it imports.
A script that starts worker processes (client="local") must call `run` under
`if __name__ == "__main__":`: each worker process starts by importing the script.

With out="results.jsonl" each finished chunk is appended as JSON lines,
{"config": ..., "result": ...}, flushed and fsynced; running again with the same `out`
skips the configs already there, so a killed sweep resumes where it stopped. Chunks are
cut from the whole config list (configs[0:chunk_size], ...), so a resumed chunk holds the
same configs as before, less those already done.

A worker process that dies while running a chunk (crash, out of memory, killed) is seen by
the scheduler at once, its connection closing, and the chunk is run again, on another
worker or on the worker the nanny restarts, up to `retries` times. On a cluster that `run`
starts, this is the only retry; a cluster of your own also retries as many times as its
scheduler's `distributed.scheduler.allowed-failures` says (3 unless configured) first. A
worker process that hangs is dropped, and its chunk treated the same way, when its heartbeats
stop for the scheduler's `distributed.scheduler.worker-ttl` (5 minutes unless configured).
In-process, a crash ends the sweep itself: `out` is what resumes it. An experiment that
raises is not retried: `run` raises SweepError naming the chunk, after writing the chunks
that had finished.

Each returned row is the config merged with its result ({**config, **result}); a result key
that is also a config key is refused. With `out`, every row is returned as JSON reads it
back (tuples become lists), so a resumed sweep returns exactly what an uninterrupted one
does; results must then be JSON-serialisable (non-finite floats are written as NaN and
Infinity, as Python's json module does). Results must not depend on which chunk a config
lands in (seed from the config), or in-process, cluster and resumed runs differ.
"""

import contextlib
import itertools
import json
import os
import sys
import time
import uuid
import warnings

__all__ = ["grid", "run", "local_client", "SweepError"]


class SweepError(RuntimeError):
    """A chunk failed: the experiment raised, returned something else than one result dict
    per config, or its worker died more than `retries` times. `index` is the chunk's index,
    `chunk` its configs; the experiment's own exception is the __cause__."""

    def __init__(self, message, index, chunk):
        super().__init__(message)
        self.index = index
        self.chunk = chunk


def grid(**axes):
    """Every combination of the axes' values, as a list of dicts.

    The order is itertools.product's over the axes in the order given: the first axis
    varies slowest, the last fastest. grid(a=[1, 2], b="xy") is refused (a string is one
    value: write b=["x", "y"]); grid(a=[1, 2], b=["x", "y"]) is
    [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}].
    """
    if not axes:
        raise ValueError("grid() needs at least one axis, e.g. grid(seed=range(10))")
    values = {}
    for name, axis in axes.items():
        if isinstance(axis, (str, bytes, dict)) or not hasattr(axis, "__iter__"):
            raise ValueError(f"grid axis {name!r} must be a list of values, got "
                             f"{type(axis).__name__} {axis!r}; for one value write "
                             f"{name}=[{axis!r}]")
        values[name] = list(axis)
        if not values[name]:
            raise ValueError(f"grid axis {name!r} is empty: the grid would have no configs")
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def run(experiment, configs, chunk_size=64, client=None, out=None, retries=2, progress=True):
    """Run `experiment` over `configs` in chunks; return one row per config, in config order.

    See the module docstring for `client`, `out` and `retries`. `progress` writes a one-line
    progress bar (chunks done, configs done, elapsed seconds) to stderr.
    """
    if not callable(experiment):
        raise ValueError(f"experiment must be a function of a list of configs, got "
                         f"{type(experiment).__name__}")
    keys = _check_configs(configs)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    if not (client is None or isinstance(client, str) or hasattr(client, "submit")):
        raise ValueError(f"client must be None, 'local', a scheduler address such as "
                         f"'tcp://host:8786' or a dask.distributed.Client, got "
                         f"{type(client).__name__}")

    rows = [None] * len(configs)
    if out is not None:
        for i, result in _read_out(out, keys).items():
            rows[i] = _row(configs[i], result, json_only=True)
    chunks = []                               # (index, positions of the configs left to run)
    for index, start in enumerate(range(0, len(configs), chunk_size)):
        left = [i for i in range(start, min(start + chunk_size, len(configs))) if rows[i] is None]
        if left:
            chunks.append((index, left))

    def finish(index, positions, results):
        """Check a finished chunk's results, append them to `out`, keep its rows."""
        chunk = [configs[i] for i in positions]
        new = _chunk_rows(index, chunk, results, json_only=sink is not None)
        if sink is not None:
            sink.write("".join(json.dumps({"config": config, "result": result}) + "\n"
                               for config, result in zip(chunk, results)))
            sink.flush()
            os.fsync(sink.fileno())
        for i, row in zip(positions, new):
            rows[i] = row
        bar.update(len(positions))

    bar = _Progress(len(chunks), sum(len(left) for _, left in chunks), progress)
    sink = None if out is None else open(out, "a", encoding="utf-8")
    try:
        if client is None:
            for index, positions in chunks:
                chunk = [configs[i] for i in positions]
                try:
                    results = experiment(chunk)
                except Exception as error:
                    raise _failed(index, chunk, f"the experiment raised {error!r}") from error
                finish(index, positions, results)
        elif chunks:                                # (no cluster when `out` had them all)
            _run_on_dask(experiment, configs, chunks, client, retries, finish)
    finally:
        if sink is not None:
            sink.close()
        bar.close()
    return rows


def _check_configs(configs):
    """Validate configs; return each config's canonical JSON text (its identity in `out`)."""
    if not isinstance(configs, (list, tuple)):
        raise ValueError(f"configs must be a list of dicts (sweep.grid makes one), got "
                         f"{type(configs).__name__}")
    if not configs:
        raise ValueError("configs is empty: there is nothing to run")
    keys = []
    first = {}
    for i, config in enumerate(configs):
        if not isinstance(config, dict):
            raise ValueError(f"configs[{i}] must be a dict, got {type(config).__name__} "
                             f"{config!r}")
        for key in config:
            if not isinstance(key, str):
                raise ValueError(f"configs[{i}] has the key {key!r} of type "
                                 f"{type(key).__name__}; config keys must be str")
        try:
            key = json.dumps(config, sort_keys=True)
        except (TypeError, ValueError) as error:
            raise ValueError(f"configs[{i}] = {config!r} is not JSON-serialisable ({error}); "
                             f"use str, int, float, bool, None and lists or dicts of those "
                             f"(int()/float() for NumPy scalars)") from None
        if key in first:
            raise ValueError(f"configs[{first[key]}] and configs[{i}] are the same config "
                             f"{config!r}; each config runs once: add a key that tells them "
                             f"apart (e.g. trial=...)")
        first[key] = i
        keys.append(key)
    return keys


def _read_out(out, keys):
    """Results already in `out` for these configs: {position: result}.

    A last line without its newline is what a process killed while writing leaves: it is cut
    off (with a warning) and its configs run again.
    """
    if not os.path.exists(out):
        return {}
    with open(out, "rb") as f:
        data = f.read()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        warnings.warn(f"{out}: dropping an unfinished last line ({len(data) - complete} "
                      f"bytes, a write that was cut off); its configs run again", stacklevel=3)
        with open(out, "r+b") as f:
            f.truncate(complete)
    position = {key: i for i, key in enumerate(keys)}
    found, line_of, others = {}, {}, 0
    for number, line in enumerate(data[:complete].decode("utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            config, result = row["config"], row["result"]
            key = json.dumps(config, sort_keys=True)
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{out} line {number} is not a sweep row "
                             f"{{\"config\": ..., \"result\": ...}} ({error!r}): the file was "
                             f"not written by sweep.run, or was edited") from None
        if key not in position:
            others += 1
            continue
        if key in line_of:
            raise ValueError(f"{out} lines {line_of[key]} and {number} both hold config "
                             f"{config!r}: two sweeps wrote to the same file at once?")
        line_of[key] = number
        found[position[key]] = result
    if others:
        warnings.warn(f"{out}: {others} rows are for configs not in this sweep; they are left "
                      f"in the file and not returned", stacklevel=3)
    return found


def _chunk_rows(index, chunk, results, json_only):
    """Check what the experiment returned for a chunk; return the merged rows."""
    if not isinstance(results, (list, tuple)) or len(results) != len(chunk):
        got = (f"{len(results)} results" if isinstance(results, (list, tuple))
               else type(results).__name__)
        raise _failed(index, chunk, f"the experiment must return a list of {len(chunk)} "
                                    f"result dicts, one per config in order; it returned {got}")
    rows = []
    for config, result in zip(chunk, results):
        if not isinstance(result, dict):
            raise _failed(index, chunk, f"the result for {config!r} is a "
                                        f"{type(result).__name__}, not a dict")
        clash = sorted(set(config) & set(result), key=str)
        if clash:
            raise _failed(index, chunk, f"the result for {config!r} has the key {clash[0]!r}, "
                                        f"which is a config key; rename it in the result")
        try:
            rows.append(_row(config, result, json_only))
        except (TypeError, ValueError) as error:
            raise _failed(index, chunk, f"the result for {config!r} is not "
                                        f"JSON-serialisable ({error}), as out= needs") from None
    return rows


def _row(config, result, json_only):
    row = {**config, **result}
    return json.loads(json.dumps(row)) if json_only else row


def _failed(index, chunk, why):
    shown = ", ".join(repr(c) for c in chunk[:3]) + (", ..." if len(chunk) > 3 else "")
    return SweepError(f"chunk {index} ({len(chunk)} configs: {shown}) failed: {why}",
                      index, chunk)


@contextlib.contextmanager
def local_client(workers=None):
    """A dask.distributed Client on the LocalCluster that run(client="local") starts (one
    single-threaded worker process per core, or `workers`, on the loopback interface),
    closed on leaving the `with`: to run several sweeps on one started cluster, pass it as
    run(..., client=client)."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise _needs_dask("local", error) from error
    # allowed-failures=0: a worker death reaches us at once, so `retries` is the only
    # retry count; worker-saturation=1.0: a worker holds only the chunk it runs (1.1
    # would hand it a second to wait, which its death would count as failed too).
    # One single-threaded worker per core, and one Numba thread in each.
    # No dashboard, so no statistical profiler either: it samples each running task's
    # stack every 10 ms, for the dashboard alone, and costs a Python-heavy chunk CPU
    # time. The scheduler's HTTP endpoint (health, metrics) on a free loopback port
    # rather than 8787, which another cluster may hold.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0,
                          "distributed.worker.profile.enabled": False}), \
            LocalCluster(n_workers=workers or _cores(), threads_per_worker=1, processes=True,
                         host="127.0.0.1", dashboard_address=None,
                         scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                         env={"NUMBA_NUM_THREADS": "1"}) as cluster, \
            Client(cluster, set_as_default=False) as client:
        yield client


def _needs_dask(client, error):
    return ImportError(f"sweep.run(client={client!r}) needs dask.distributed ({error}): "
                       f"pip install 'tinynet[sweep]', or client=None to run in this process")


def _run_on_dask(experiment, configs, chunks, client, retries, finish):
    """Submit every chunk; pass each result to finish() as it arrives; resubmit a chunk
    whose worker died, up to `retries` times."""
    try:
        from distributed import Client, KilledWorker, as_completed
    except ImportError as error:
        raise _needs_dask(client, error) from error

    if client == "local":
        with local_client() as local:
            _run_on_dask(experiment, configs, chunks, local, retries, finish)
        return
    if isinstance(client, str):
        with Client(client, set_as_default=False) as remote:
            _run_on_dask(experiment, configs, chunks, remote, retries, finish)
        return

    token = uuid.uuid4().hex[:12]
    futures = {}                                    # future -> (index, positions, attempt)

    def submit(index, positions, attempt):
        future = client.submit(experiment, [configs[i] for i in positions], pure=False,
                               key=f"tinynet-sweep-{token}-chunk-{index}-try-{attempt}")
        futures[future] = (index, positions, attempt)
        return future

    try:
        arrived = as_completed([submit(index, positions, 0) for index, positions in chunks],
                               loop=client.loop)
        for future in arrived:
            index, positions, attempt = futures.pop(future)
            if future.status == "finished":
                finish(index, positions, future.result())
                continue
            error = future.exception()
            chunk = [configs[i] for i in positions]
            if isinstance(error, KilledWorker):
                if attempt < retries:
                    arrived.add(submit(index, positions, attempt + 1))
                    continue
                raise _failed(index, chunk, f"its worker died {attempt + 1} times "
                                            f"(retries={retries})") from error
            raise _failed(index, chunk, f"the experiment raised {error!r}") from error
    except BaseException:
        # Write the chunks that had already finished, then drop the rest. A finished chunk
        # that fails its own checks is left out: it is named when it runs again.
        for future, (index, positions, _) in list(futures.items()):
            if future.status == "finished":
                try:
                    finish(index, positions, future.result())
                except SweepError:
                    pass
        client.cancel(list(futures))
        raise


def _cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class _Progress:
    """`sweep [#####-----] 3/10 chunks  192/640 configs  12.3 s` on stderr: redrawn in
    place on a terminal, otherwise a line at most every 5 seconds and at the end."""

    def __init__(self, chunks, configs, enabled):
        self.total = (chunks, configs)
        self.done = [0, 0]
        self.enabled = enabled and chunks > 0
        self.tty = sys.stderr.isatty()
        self.started = self.shown = time.perf_counter()
        if self.enabled:
            self._show()

    def update(self, configs):
        self.done[0] += 1
        self.done[1] += configs
        now = time.perf_counter()
        if self.enabled and (self.tty or now - self.shown >= 5
                             or self.done[0] == self.total[0]):
            self.shown = now
            self._show()

    def close(self):
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _show(self):
        width = 20
        filled = width * self.done[0] // self.total[0]
        text = (f"sweep [{'#' * filled}{'-' * (width - filled)}] "
                f"{self.done[0]}/{self.total[0]} chunks  {self.done[1]}/{self.total[1]} configs"
                f"  {time.perf_counter() - self.started:.1f} s")
        sys.stderr.write(("\r" + text) if self.tty else (text + "\n"))
        sys.stderr.flush()
