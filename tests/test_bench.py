"""The benchmarks run end to end and report what they say they report.

The CPU suite runs through the real command line in smoke mode (TINYNET_BENCH_SMOKE=1: tiny
repeats and sizes, seconds in all; the numbers mean nothing and nothing here asserts on
them). Ratios, floors and targets are recomputed here from the rows' own times and counts.
The GPU suite, with no GPU visible, must say why and exit 2 -- never a traceback.
"""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinynet import _dispatch, available_backends, ops
from tinynet.bench import collect, report, timing

REPO = Path(__file__).resolve().parent.parent
ROW_KEYS = {"suite", "workload", "size", "per", "impl", "dtype", "time_s", "repeats", "flops",
            "bytes", "gflops", "gbs", "floor_flops_s", "floor_bytes_s", "floor_s", "bound",
            "x_floor", "speedup_vs"}


def run_bench(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "TINYNET_BACKEND"}
    env.update(TINYNET_BENCH_SMOKE="1", CUDA_VISIBLE_DEVICES="")    # no GPU, even on one
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd or "/", timeout=600)   # outside the checkout: the installed tinynet


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "cpu.json"
    done = run_bench("-m", "tinynet", "bench", "--suite", "all", "--quick", "--json", str(path))
    return done, json.loads(path.read_text()) if path.exists() else None


def test_cpu_suite_runs_and_writes_the_documented_json(cpu_run):
    done, doc = cpu_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert doc is not None
    for key in ("device", "date", "commit", "dirty", "load_average", "versions", "suites",
                "peaks", "bench", "targets", "skipped", "errors"):
        assert key in doc, key
    assert doc["suites"] == ["cpu", "stack"] and doc["errors"] == []
    assert "gpu" in doc["skipped"]                    # --suite all without a GPU says why
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", doc["date"])
    assert doc["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", doc["commit"])
    for row in doc["bench"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["suite"] == ("stack" if row["workload"] == "S7 stack" else "cpu")
        assert row["time_s"] > 0 and math.isfinite(row["time_s"])
    # the markdown on stdout has every row (the overhead table: one line per op and backend)
    for row in doc["bench"]:
        if row["workload"] == "overhead":
            backend = row["impl"].split(":")[-1] if ":" in row["impl"] else ""
            assert re.search(rf"\| {re.escape(row['size'])} \|.*\| {backend}", done.stdout)
        else:
            assert (f"| {row['workload']} | {row['size']} | {row['per']} | {row['impl']} |"
                    in done.stdout)


def test_cpu_suite_covers_every_workload_backend_and_peer(cpu_run):
    _, doc = cpu_run
    impls = {}
    for row in doc["bench"]:
        impls.setdefault(row["workload"], set()).add(row["impl"])
    cpu_backends = {f"tinynet:{n}" for n in available_backends()
                    if not _dispatch.module(n).IS_GPU}
    torch = {"torch-cpu"} if importlib.util.find_spec("torch") else set()
    assert impls["S1 perceptron"] == {"numpy-hand"} | cpu_backends
    assert impls["S4 MLP step"] == {"numpy-hand", "blas-gemm"} | torch | cpu_backends
    assert impls["S7 online LSTM"] == torch | cpu_backends
    stack_peers = ({"torch-cpu bmm"} if torch else set()) | (
        {"jax-cpu vmap"} if importlib.util.find_spec("jax") else set())
    assert impls["S7 stack"] == cpu_backends | stack_peers | (
        {"tinynet:numba-cpu one at a time"} if "tinynet:numba-cpu" in cpu_backends else set())
    direct = {name.replace("tinynet:", "direct:") for name in cpu_backends}
    assert impls["overhead"] == {"numpy-bare", "tinynet:auto"} | cpu_backends | direct
    ops = {row["op"] for row in doc["bench"] if row["workload"] == "overhead"}
    assert ops == {"dense", "dense_backward", "lstm_cell", "lstm_cell_backward", "lstm",
                   "lstm_backward"}


def test_ratios_and_floors_agree_with_the_rows_own_numbers(cpu_run):
    _, doc = cpu_run
    peaks = doc["peaks"]["cpu"]
    groups = {}
    for row in doc["bench"]:
        groups.setdefault((row["workload"], row["size"]), {})[row["impl"]] = row
    for group in groups.values():
        for impl, row in group.items():
            assert set(row["speedup_vs"]) == set(group) - {impl}
            for peer, ratio in row["speedup_vs"].items():
                assert ratio > 0 and math.isfinite(ratio)
                assert ratio == pytest.approx(group[peer]["time_s"] / row["time_s"], rel=1e-12)
            floor = max(row["flops"] / peaks["flops_per_s"], row["bytes"] / peaks["bytes_per_s"])
            assert row["floor_s"] == pytest.approx(floor, rel=1e-12)
            assert row["x_floor"] == pytest.approx(row["time_s"] / floor, rel=1e-12)
    s7 = [row for row in doc["bench"] if row["workload"] == "S7 online LSTM"]
    assert all(row["per_second"] == pytest.approx(1 / row["time_s"]) for row in s7)


def test_targets_are_evaluated_on_the_rows(cpu_run):
    _, doc = cpu_run
    assert doc["targets"]
    tinynet_rows = {(r["workload"], r["impl"]) for r in doc["bench"]}
    for target in doc["targets"]:
        assert (target["workload"], target["impl"]) in tinynet_rows
        at_most = target["direction"] == "at most"
        assert target["met"] == (target["value"] <= target["goal"] if at_most
                                 else target["value"] >= target["goal"])


def test_cpu_description_names_the_widest_simd_extension():
    """bench/run.py describe_cpu: the first processor's model name and its widest SIMD
    extension from /proc/cpuinfo's text; none named where no flag says."""
    from tinynet.bench.run import describe_cpu
    block = "processor\t: {0}\nmodel name\t: {1}\nflags\t\t: fpu sse4_2 avx {2}\n\n"
    avx512 = block.format(0, "Some CPU", "avx2 fma avx512f avx512vl") + block.format(1, "x", "")
    assert describe_cpu(avx512, "cpu", 2) == "Some CPU, 2 logical cores, AVX-512"
    assert describe_cpu(block.format(0, "Other", "avx2 fma"), "cpu", 4) == \
        "Other, 4 logical cores, AVX2"
    assert describe_cpu("", "x86_64", 1) == "x86_64, 1 logical cores"


def test_gpu_suite_without_a_gpu_says_why_and_exits_2():
    done = run_bench("-m", "tinynet", "bench", "--suite", "gpu")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the GPU suite cannot run here" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_overhead_script_runs_alone():
    done = run_bench(str(REPO / "bench" / "overhead.py"), "--quick", cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    ratios = re.findall(r"ops\.dense on 8x3 \(tinynet:numpy\): .* per call vs the bare NumPy "
                        r"expression .*: ([0-9.e+]+)x", done.stdout)
    assert len(ratios) == 1 and float(ratios[0]) > 0


def test_numba_cpu_tuning_script_runs_its_crossover_tables():
    done = run_bench(str(REPO / "bench" / "numba_cpu_tuning.py"), "--crossover", cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    for header in ("| (batch, in, out) |", "| (batch, in, H) |", "| (batch, steps, in, H) |"):
        assert header in done.stdout
    rows = re.findall(r"^\| \([0-9, ]+\) \| [0-9,]+ \| (.*) \|$", done.stdout, re.MULTILINE)
    assert len(rows) == 3                             # smoke mode: one size per op
    for cells in rows:                                # loops, BLAS, numba-cpu, numpy, ratio
        assert [float(cell) > 0 for cell in cells.split(" | ")] == [True] * 5
    assert "Compile cost" not in done.stdout          # --crossover alone
    assert "stacked lstm" not in done.stdout


def test_numba_cpu_tuning_script_runs_its_stack_lstm_table():
    done = run_bench(str(REPO / "bench" / "numba_cpu_tuning.py"), "--stack-lstm", cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\| \(([0-9, ]+)\) \| ([0-9]+) \| ([0-9.]+) \| ([0-9.]+) \| "
                      r"([0-9.]+) \| (per model|rows as models|lanes) \| (numba-cpu|numpy) \| "
                      r"([0-9.]+) \|$", done.stdout, re.MULTILINE)
    assert len(rows) == 1, done.stdout                # smoke mode: one size
    size, pairs, per_model, stack_kernel, numpy_backend, _, _, ratio = rows[0]
    models, batch = (int(v) for v in size.split(", ")[:2])
    assert int(pairs) == models * batch
    assert float(per_model) > 0 and float(stack_kernel) > 0 and float(numpy_backend) > 0
    assert abs(float(ratio) - float(per_model) / float(stack_kernel)) < 0.02


def test_stack_predict_script_runs_its_table():
    done = run_bench(str(REPO / "bench" / "stack_predict.py"), cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\| ([0-9]+) \| ([0-9]+) \| ([0-9]+) \| ([0-9.]+) \| ([0-9]+|-) \| "
                      r"([0-9.]+) \|$", done.stdout, re.MULTILINE)
    assert len(rows) >= 2, done.stdout                # smoke mode: one stack, a few chunks
    for models, rows_per_forward, pairs, ms, faults, ratio in rows:
        assert int(pairs) == int(models) * int(rows_per_forward)
        assert float(ms) > 0 and float(ratio) >= 1.0
        assert faults != "-" or sys.platform == "win32"     # counted wherever Python can
    assert min(float(ratio) for *_, ratio in rows) == 1.0


def test_stack_update_script_times_every_layer_of_each_stack():
    done = run_bench(str(REPO / "bench" / "stack_update.py"), cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^\| ([0-9]+) \| (nn.Stack|ops|backend) \| ([0-9.]+) \| ([0-9.]+) s \| "
                      r"([0-9.]+) \|$", done.stdout, re.MULTILINE)
    assert [(m, layer) for m, layer, *_ in rows] == [
        (m, layer) for m in ("1", "3") for layer in ("nn.Stack", "ops", "backend")], done.stdout
    for _, layer, us, cap_s, share in rows:
        assert float(us) > 0
        assert abs(float(cap_s) - float(us) * 0.1) <= 0.05 + 1e-3 * float(cap_s)
        assert layer != "nn.Stack" or share == "1.00"

# --- the arithmetic, on rows made up here ---------------------------------------------------

PEAKS = {"flops_per_s": 1e9, "bytes_per_s": 1e8}


def made_up(workload, size, impl, seconds, **extra):
    return report.make_row("gpu", workload, size, "fwd+bwd", impl, seconds, flops=2e6,
                           bytes_moved=5e5, peaks=PEAKS, repeats=3, **extra)


def test_make_row_floors_and_rates():
    row = made_up("dense fwd+bwd", "w64", "tinynet:cupy", 0.01)
    assert row["floor_flops_s"] == pytest.approx(2e-3) and row["floor_bytes_s"] == 5e-3
    assert row["floor_s"] == 5e-3 and row["bound"] == "memory"
    assert row["x_floor"] == pytest.approx(2.0)
    assert row["gflops"] == pytest.approx(0.2) and row["gbs"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="saw no time"):
        made_up("dense fwd+bwd", "w64", "tinynet:cupy", 0.0)


def test_targets_on_made_up_rows():
    rows = report.add_ratios([
        made_up("dense fwd+bwd", "w64 b2^20", "tinynet:numba-cuda", 1.0, largest_batch=True),
        made_up("dense fwd+bwd", "w64 b2^20", "tinynet:cupy", 4.0, largest_batch=True),
        made_up("dense fwd+bwd", "w64 b2^20", "torch-cuda", 3.0, largest_batch=True),
        made_up("lstm fwd+bwd", "T100 H128 b1", "tinynet:cupy", 1.0, hidden=128),
        made_up("lstm fwd+bwd", "T100 H128 b1", "torch-cuda", 1.0, hidden=128),
    ])
    targets = report.targets(rows)

    def target(words, impl):
        (found,) = [t for t in targets if words in t["target"] and t["impl"] == impl]
        return found

    assert target("2x PyTorch eager", "tinynet:numba-cuda")["value"] == pytest.approx(3.0)
    assert target("2x PyTorch eager", "tinynet:numba-cuda")["met"]
    assert target("2x PyTorch eager", "tinynet:cupy")["value"] == pytest.approx(0.75)
    assert not target("2x PyTorch eager", "tinynet:cupy")["met"]
    assert target("memory-traffic floor", "tinynet:numba-cuda")["value"] == pytest.approx(200)
    assert target("memory-traffic floor", "tinynet:cupy")["value"] == pytest.approx(800)
    family = [t for t in targets if "GPU family" in t["target"]]          # dense group only
    assert [(t["impl"], t["value"], t["met"]) for t in family] == [
        ("tinynet:numba-cuda", 1.0, True)]
    assert not any("lstm" in t["target"] for t in targets)              # H=128: no target


def test_interleaved_calibrates_medians_and_reports_failures():
    def steady(n):                      # a made-up clock: 1 ms per call
        return (n * 1e-3,)

    calls = []

    def breaks_later(n):
        calls.append(n)
        if len(calls) > 4:
            raise RuntimeError("broke")
        return (n * 2e-3,)

    failures = []
    timed = timing.interleaved({"steady": steady, "breaks": breaks_later}, repeats=5,
                               min_block_s=0.01, on_error=lambda n, e: failures.append((n, e)))
    assert list(timed) == ["steady"]
    (per_call,), rounds = timed["steady"]
    assert per_call == pytest.approx(1e-3) and rounds == 5
    assert [name for name, _ in failures] == ["breaks"]


def test_collect_counts_junit_and_keeps_the_bench(tmp_path):
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite tests="10" failures="1" errors="2" skipped="3"/></testsuites>')
    (tmp_path / "tests.log").write_text("log")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"device": {"gpu": "X"}, "date": "2026-01-02T00:00:00+00:00",
                                 "commit": "c" * 40, "bench": [{"impl": "a"}], "peaks": {}}))
    path, result = collect.collect(tmp_path, "nvidia-x", "2026-01-02", 1, 0, bench)
    assert path == tmp_path / "2026-01-02-nvidia-x.json"
    assert json.loads(path.read_text()) == result
    assert result["tests"] == {"passed": 4, "failed": 1, "errors": 2, "skipped": 3,
                               "exit_status": 1}
    assert result["bench"] == [{"impl": "a"}] and result["commit"] == "c" * 40
    assert result["device"] == {"gpu": "X"} and result["peaks"] == {}
    assert result["logs"] == ["tests.log"]
    (tmp_path / "tests.xml").unlink()
    _, missing = collect.collect(tmp_path, "nvidia-x", "2026-01-02", 124, 124,
                                 tmp_path / "none.json")
    assert missing["tests"]["passed"] is None and "no JUnit XML" in missing["tests"]["note"]
    assert missing["bench"] == [] and "no bench JSON" in missing["errors"][0]["error"]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rows = report.add_ratios([made_up("dense fwd+bwd", "w64", "a", 1.0),
                              made_up("dense fwd+bwd", "w64", "b", 2.0)])
    report.plot(rows, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the implementations of a workload train the same weights ------------------------------

def _cpu_backends():
    return [name for name in ("numpy", "numba-cpu") if name in available_backends()]


def _assert_same_weights(what, got, expected):
    assert len(got) == len(expected), f"{what}: {len(got)} weights, expected {len(expected)}"
    for k, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-5, err_msg=f"{what}, weight {k}")


def test_cpu_workloads_compute_what_their_peers_compute():
    """A speed ratio means something only if both sides do the same work: S1, S4 and S7 as
    written with tinynet.ops end with the weights the handwritten versions reach."""
    from tinynet.bench import cpu_suite
    # 10 steps: at rate 1 on parity (not linearly separable) the weights oscillate, and
    # rounding differences of 1e-7 grow to 1e-2 by step 40
    w0 = np.random.default_rng(1).uniform(-1, 1, (3, 1)).astype(np.float32)
    hand = cpu_suite.s1_numpy_hand(w0.copy(), 10)
    for backend in _cpu_backends():
        _assert_same_weights(f"S1 {backend}", [cpu_suite.s1_tinynet(backend)(w0.copy(), 10)],
                             [hand])

    x, target, params = cpu_suite._s4_problem()
    hand = cpu_suite.s4_numpy_hand(x, target, params)
    hand()
    hand()
    for backend in _cpu_backends():
        step = cpu_suite.s4_tinynet(backend, x, target, params)
        step()
        step()
        _assert_same_weights(f"S4 {backend}", step.params, hand.params)

    # S7 folds the learning rate into the output gradient: check it against the plain
    # update p -= rate * g, at a rate that is not 1
    xs, targets, params = cpu_suite._s7_problem()
    rate = 0.3
    plain = [p.copy() for p in params]
    for k in range(3):
        _, hT, _, ctx = ops.lstm(xs[k], None, None, *plain[:3],
                                 forget_bias=cpu_suite.S7_FORGET_BIAS, backend="numpy")
        y, out_ctx = ops.dense(hT, plain[3], plain[4], "sigmoid", backend="numpy")
        dhT, dw_out, db_out = ops.dense_backward(out_ctx, y - targets[k])
        grads = ops.lstm_backward(ctx, None, dhT)[3:] + (dw_out, db_out)
        for p, g in zip(plain, grads):
            p -= rate * g
    for backend in _cpu_backends():
        train_one = cpu_suite.s7_tinynet(backend, params, rate)
        for k in range(3):
            train_one(xs[k], targets[k])
        _assert_same_weights(f"S7 {backend}", train_one.params, plain)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed (it is not in the test extra)")
def test_pytorch_peers_compute_what_tinynet_computes():
    import torch
    from tinynet.bench import cpu_suite
    x, target, params = cpu_suite._s4_problem()
    ours = cpu_suite.s4_tinynet("numpy", x, target, params)
    theirs = cpu_suite.s4_torch(torch, x, target, params)
    for step in (ours, theirs, ours, theirs):
        step()
    _assert_same_weights("S4 torch", theirs.params, ours.params)

    xs, targets, params = cpu_suite._s7_problem()
    ours = cpu_suite.s7_tinynet("numpy", params, 0.3)
    theirs = cpu_suite.s7_torch(torch, params, 0.3)
    for k in range(3):
        ours(xs[k], targets[k])
        theirs(torch.from_numpy(xs[k]), torch.from_numpy(targets[k]))
    _assert_same_weights("S7 torch", theirs.weights(), ours.params)
