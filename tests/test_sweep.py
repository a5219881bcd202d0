"""tinynet.sweep: in-process and on real Dask clusters (loopback only).

The same configs run in-process, on a 2-worker LocalCluster through a Client, through its
scheduler address and through client="local" must give identical rows. A worker killed in
the middle of a chunk, a sweep process killed in the middle of a run and an experiment that
raises must each leave every config written exactly once (or named in the error).

The experiments are module-level functions: Dask sends them by reference, and the worker
processes import this module (they start with this process's sys.path).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tinynet
from tinynet import sweep

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


LIMIT = 60                 # seconds: a test that passes it fails rather than hangs


@contextlib.contextmanager
def time_limit(seconds, what):
    def expire(signum, frame):
        raise TimeoutError(f"{what} ran past its {seconds} s limit")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def limited(request):
    with time_limit(LIMIT, request.node.name):
        yield


# --- experiments (module level, so that workers import them) ----------------------------

def score(chunk):
    """A deterministic result per config, through tinynet.ops on the NumPy reference."""
    rows = []
    for config in chunk:
        rng = np.random.default_rng(config["seed"])
        x = rng.standard_normal((5, 3)).astype(np.float32)
        w = rng.standard_normal((3, 2)).astype(np.float32)
        y, _ = tinynet.ops.dense(x, w * config["scale"], None, "tanh", backend="numpy")
        rows.append({"loss": float(np.mean(y ** 2)), "first": [float(v) for v in y[0]]})
    return rows


def score_dying_once(chunk):
    """score(), but the first process to find the marker file dies half way through its
    chunk. Each start of a chunk is logged with its process id."""
    with open(chunk[0]["log"], "a") as log:
        log.write(f"{chunk[0]['seed']} {os.getpid()}\n")
    rows = score(chunk[:1])
    try:
        os.remove(chunk[0]["marker"])             # only one process can remove it
    except FileNotFoundError:
        pass
    else:
        os._exit(1)
    return rows + score(chunk[1:])


def score_raising_on_seed_5(chunk):
    if any(config == {"scale": 0.5, "seed": 5} for config in chunk):        # in chunk 1 of 4
        raise ArithmeticError("seed 5 is cursed")
    return score(chunk)


def score_slowly(chunk):
    time.sleep(0.3)
    return score(chunk)


CONFIGS = sweep.grid(scale=[0.5, 2.0], seed=range(7))           # 14 configs


def rows_of(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# --- grid and argument checks ------------------------------------------------------------

def test_grid_is_the_product_with_the_first_axis_slowest():
    assert sweep.grid(a=[1, 2], b=["x", "y"]) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert sweep.grid(seed=range(3)) == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    assert len(CONFIGS) == 14 and CONFIGS[7] == {"scale": 2.0, "seed": 0}


@pytest.mark.parametrize("axes, match", [
    ({}, "at least one axis"),
    ({"a": [1], "b": "xy"}, r"axis 'b' must be a list .* b=\['xy'\]"),
    ({"a": 3}, r"axis 'a' must be a list .* a=\[3\]"),
    ({"a": [1], "b": []}, "axis 'b' is empty"),
])
def test_grid_refuses_bad_axes(axes, match):
    with pytest.raises(ValueError, match=match):
        sweep.grid(**axes)


@pytest.mark.parametrize("configs, match", [
    ([], "configs is empty"),
    ({"seed": 1}, "configs must be a list of dicts .* got dict"),
    ((c for c in [{"seed": 1}]), "configs must be a list of dicts .* got generator"),
    ([{"seed": 1}, 2], r"configs\[1\] must be a dict, got int"),
    ([{1: "a"}], r"configs\[0\] has the key 1 of type int; config keys must be str"),
    ([{"seed": np.int64(3)}], r"configs\[0\] = .* is not JSON-serialisable .*int\(\)"),
    ([{"seed": 1, "f": object()}], r"configs\[0\] = .* is not JSON-serialisable"),
    ([{"seed": 1}, {"seed": 2}, {"seed": 1}],
     r"configs\[0\] and configs\[2\] are the same config"),
])
def test_run_refuses_bad_configs(configs, match):
    with pytest.raises(ValueError, match=match):
        sweep.run(score, configs, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"chunk_size": 0}, "chunk_size must be a positive int, got 0"),
    ({"chunk_size": 2.0}, "chunk_size must be a positive int, got 2.0"),
    ({"retries": -1}, "retries must be an int >= 0, got -1"),
    ({"client": 8786}, "client must be None, 'local', a scheduler address"),
    ({"experiment": "score"}, "experiment must be a function of a list of configs, got str"),
])
def test_run_refuses_bad_arguments(kwargs, match):
    kwargs = {"experiment": score, "configs": CONFIGS, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        sweep.run(**kwargs)


# --- in-process ---------------------------------------------------------------------------

def test_in_process_rows_are_config_and_result_in_order(capsys):
    rows = sweep.run(score, CONFIGS, chunk_size=4)
    assert rows == [{**config, **result} for config in CONFIGS for result in score([config])]
    assert "4/4 chunks  14/14 configs" in capsys.readouterr().err


def test_neither_tinynet_nor_an_in_process_sweep_imports_dask():
    code = ("import sys; from tinynet import sweep; "
            "assert 'dask' not in sys.modules and 'distributed' not in sys.modules; "
            "rows = sweep.run(lambda chunk: [{'y': c['x'] + 1} for c in chunk], "
            "sweep.grid(x=range(5)), chunk_size=2, progress=False); "
            "assert rows[4] == {'x': 4, 'y': 5}, rows; "
            "assert 'dask' not in sys.modules and 'distributed' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=40)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("experiment, match", [
    (lambda chunk: [{"seed": 0} for _ in chunk], "has the key 'seed', which is a config key"),
    (lambda chunk: [{"y": 1}], "must return a list of 2 result dicts.* returned 1 results"),
    (lambda chunk: {"y": 1}, "must return a list of 2 result dicts.* returned dict"),
    (lambda chunk: [1.5, 2.5], "is a float, not a dict"),
])
def test_bad_results_are_refused_with_the_chunk_named(experiment, match):
    with pytest.raises(sweep.SweepError, match=r"chunk 0 \(2 configs: .*\) failed: .*" + match):
        sweep.run(experiment, CONFIGS[:2], progress=False)


def test_a_result_that_json_cannot_write_is_refused_when_there_is_an_out(tmp_path):
    def arrays(chunk):
        return [{"y": np.zeros(2)} for _ in chunk]
    assert sweep.run(arrays, CONFIGS[:2], progress=False)[0]["y"].shape == (2,)
    with pytest.raises(sweep.SweepError, match="is not JSON-serialisable .* as out= needs"):
        sweep.run(arrays, CONFIGS[:2], out=tmp_path / "out.jsonl", progress=False)


def test_an_experiment_that_raises_is_named_after_what_finished_is_written(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(sweep.SweepError, match=r"chunk 1 \(4 configs: .*'seed': 4.*\) failed: "
                                               r"the experiment raised ArithmeticError") as caught:
        sweep.run(score_raising_on_seed_5, CONFIGS, chunk_size=4, out=out, progress=False)
    assert caught.value.index == 1 and caught.value.chunk == CONFIGS[4:8]
    assert isinstance(caught.value.__cause__, ArithmeticError)
    assert [row["config"] for row in rows_of(out)] == CONFIGS[:4]


def test_resume_skips_configs_in_out_and_drops_a_cut_off_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    expected = sweep.run(score, CONFIGS, chunk_size=4, out=out, progress=False)
    with open(out) as f:
        lines = f.readlines()
    with open(out, "w") as f:                     # 5 rows kept, the 6th cut half way
        f.writelines(lines[:5] + [lines[5][:20]])
    ran = []

    def counting(chunk):
        ran.extend(config["seed"] + 10 * config["scale"] for config in chunk)
        return score(chunk)
    with pytest.warns(UserWarning, match="dropping an unfinished last line"):
        rows = sweep.run(counting, CONFIGS, chunk_size=4, out=out, progress=False)
    assert rows == expected
    assert len(ran) == 9                          # chunk 1 less its one written config, 2, 3
    written = [json.dumps(row["config"], sort_keys=True) for row in rows_of(out)]
    assert sorted(written) == sorted(json.dumps(c, sort_keys=True) for c in CONFIGS)
    # nothing left to run: no experiment call, and no cluster (there is none at that address)
    assert sweep.run(counting, CONFIGS, chunk_size=4, out=out, client="tcp://127.0.0.1:9",
                     progress=False) == expected
    assert len(ran) == 9


def test_a_damaged_out_file_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"config": {"seed": 1}}\n')
    with pytest.raises(ValueError, match="line 1 is not a sweep row"):
        sweep.run(score, CONFIGS, out=out, progress=False)


def test_a_sweep_process_killed_mid_run_resumes_to_the_same_rows(tmp_path):
    out = tmp_path / "out.jsonl"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {HERE!r})
        from test_sweep import CONFIGS, score_slowly
        from tinynet import sweep
        sweep.run(score_slowly, CONFIGS, chunk_size=2, out={str(out)!r}, progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 40
        while not (out.exists() and out.read_text().count("\n") >= 4):
            assert process.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "the sweep wrote nothing in 40 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert 4 <= out.read_text().count("\n") < len(CONFIGS)
    rows = sweep.run(score_slowly, CONFIGS, chunk_size=2, out=out, progress=False)
    assert rows == sweep.run(score, CONFIGS, chunk_size=5, progress=False)
    configs = [row["config"] for row in rows_of(out)]
    assert len(configs) == len(CONFIGS) and all(c in configs for c in CONFIGS)


# --- on Dask --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """One 2-worker cluster for the module, the one client="local" starts
    (sweep.local_client): a worker death reaches sweep.run at once (allowed-failures 0) and
    kills only the chunk it runs (worker-saturation 1.0)."""
    pytest.importorskip("distributed")
    with contextlib.ExitStack() as stack:
        with time_limit(LIMIT, "starting the cluster"):
            client = stack.enter_context(sweep.local_client(2))
        yield client


def test_a_cluster_gives_the_in_process_rows(cluster, tmp_path):
    expected = sweep.run(score, CONFIGS, chunk_size=3, progress=False)
    assert sweep.run(score, CONFIGS, chunk_size=3, client=cluster, progress=False) == expected
    address = cluster.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    out = tmp_path / "out.jsonl"
    assert sweep.run(score, CONFIGS, chunk_size=3, client=address, out=out,
                     progress=False) == expected
    assert len(rows_of(out)) == len(CONFIGS)


def test_a_worker_killed_mid_chunk_reruns_the_chunk_and_writes_each_config_once(cluster,
                                                                                 tmp_path):
    marker, log, out = tmp_path / "marker", tmp_path / "log", tmp_path / "out.jsonl"
    marker.touch()
    configs = sweep.grid(scale=[1.0], seed=range(8), marker=[str(marker)], log=[str(log)])
    rows = sweep.run(score_dying_once, configs, chunk_size=2, client=cluster, out=out,
                     retries=1, progress=False)
    assert not marker.exists()                    # a worker did die
    assert rows == sweep.run(score, configs, progress=False)
    starts = [line.split() for line in log.read_text().splitlines()]
    assert len(starts) == 5                        # 4 chunks, one of them twice
    died = [seed for seed, _ in starts if sum(s == seed for s, _ in starts) == 2][0]
    assert len({pid for seed, pid in starts if seed == died}) == 2    # in another process
    assert sorted(row["config"]["seed"] for row in rows_of(out)) == list(range(8))


def test_a_worker_that_dies_more_than_retries_times_fails_the_chunk(cluster, tmp_path):
    marker, log = tmp_path / "marker", tmp_path / "log"
    marker.touch()
    configs = sweep.grid(scale=[1.0], seed=range(2), marker=[str(marker)], log=[str(log)])
    with pytest.raises(sweep.SweepError, match=r"chunk 0 .* its worker died 1 times "
                                               r"\(retries=0\)"):
        sweep.run(score_dying_once, configs, chunk_size=2, client=cluster, retries=0,
                  progress=False)


def test_an_experiment_that_raises_on_a_worker_is_named(cluster, tmp_path):
    with pytest.raises(sweep.SweepError, match=r"chunk 1 .* the experiment raised "
                                               r"ArithmeticError\('seed 5 is cursed'\)") as caught:
        sweep.run(score_raising_on_seed_5, CONFIGS, chunk_size=4, client=cluster,
                  out=tmp_path / "out.jsonl", progress=False)
    assert isinstance(caught.value.__cause__, ArithmeticError)
    written = [row["config"] for row in rows_of(tmp_path / "out.jsonl")]
    assert CONFIGS[4] not in written and len(written) == len({json.dumps(c) for c in written})


def test_client_local_starts_and_closes_its_own_cluster(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(sweep, "_cores", lambda: 2)       # 2 workers, whatever the machine
    psutil = pytest.importorskip("psutil")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    expected = sweep.run(score, CONFIGS, chunk_size=5, progress=False)
    assert sweep.run(score, CONFIGS, chunk_size=5, client="local", progress=False) == expected
    left = [p.cmdline() for p in psutil.Process().children(recursive=True)
            if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline())]
    assert not left, f"the cluster's processes outlived the sweep: {left}"
