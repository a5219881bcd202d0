"""The GPU suite's code, checked without a GPU (its numbers need one: bench/gpu_check.sh):

- its PyTorch peer of the stack workload (stacked weights, a baddbmm loop, on the device of
  its inputs: the CPU here) trains the same weights as the stacked ops, so the ratio between
  them compares the same work;
- the whole suite runs end to end at tiny sizes, with numba-cuda under the simulator and a
  NumPy stand-in for CuPy's few calls, every workload giving rows and no errors, so that a
  mistake in its code shows here rather than in the one run on a GPU.
"""

import importlib.util
import sys
import time
import types

import numpy as np
import pytest

from tinynet import _dispatch
from tinynet.bench import cpu_suite, gpu_suite, report, stack_suite
from conftest import SIMULATED, USABLE, WHY


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
def test_stack_torch_peer_trains_the_same_weights_as_the_stacked_ops():
    import torch

    xs, targets, params = stack_suite.problem(3, pool=2)
    ours = stack_suite.tinynet_stack("numpy", params)
    theirs = stack_suite.torch_stack(torch, params, gpu_suite.torch_copy(torch))
    for x, target in zip(xs, targets):
        ours(x, target)
        theirs(torch.from_numpy(x), torch.from_numpy(target))
    for name, got, want, start in zip(("w_ih", "w_hh", "b", "w_out", "b_out"), theirs.params,
                                      ours.params, params):
        assert not np.allclose(want, start, rtol=0, atol=1e-5), f"{name} did not train"
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-4, atol=1e-6,
                                   err_msg=name)


class _Event:
    def record(self):
        self.at = time.perf_counter()

    def synchronize(self):
        pass


def _numpy_stand_in_for_cupy():
    """The CuPy calls the GPU suite makes itself, on NumPy, for numba-cuda under the
    simulator (which takes NumPy arrays); the cupy backend, unusable here, is left out."""
    rng = np.random.default_rng(0)
    properties = {"name": b"NumPy stand-in", "major": 9, "minor": 0,
                  "multiProcessorCount": 1, "totalGlobalMem": 2**30, "l2CacheSize": 2**20}
    pool = types.SimpleNamespace(free_all_blocks=lambda: None)
    runtime = types.SimpleNamespace(
        getDeviceProperties=lambda device: properties, runtimeGetVersion=lambda: 0,
        driverGetVersion=lambda: 0, deviceSynchronize=lambda: None)
    return types.SimpleNamespace(
        __version__="numpy-stand-in", float32=np.float32, asarray=np.asarray,
        empty=np.empty, empty_like=np.empty_like, matmul=np.matmul, copyto=np.copyto,
        random=types.SimpleNamespace(
            standard_normal=lambda shape, dtype: rng.standard_normal(shape, dtype=dtype)),
        get_default_memory_pool=lambda: pool,
        cuda=types.SimpleNamespace(Event=_Event, runtime=runtime,
                                   get_elapsed_time=lambda a, b: (b.at - a.at) * 1e3))


@pytest.mark.skipif(not SIMULATED, reason="runs numba-cuda under the CUDA simulator; on a GPU "
                    "bench/gpu_check.sh runs the suite itself")
@pytest.mark.skipif(not USABLE["numba-cuda"], reason=f"numba-cuda not usable: {WHY['numba-cuda']}")
@pytest.mark.skipif(USABLE["cupy"], reason="the cupy backend is usable here, and would get the "
                    "NumPy stand-in's arrays: run the suite itself (bench/gpu_check.sh)")
def test_gpu_suite_runs_end_to_end_at_tiny_sizes(monkeypatch):
    _dispatch.status()                    # every backend tried before the stand-in exists
    monkeypatch.setitem(sys.modules, "cupy", _numpy_stand_in_for_cupy())
    monkeypatch.setattr(cpu_suite, "S7_STEPS", 3)       # the stack workload's T
    monkeypatch.setattr(gpu_suite, "DENSE_LOG2_BATCHES", {"smoke": (3,)})
    monkeypatch.setattr(gpu_suite, "DENSE_WIDTHS", (4,))
    monkeypatch.setattr(gpu_suite, "LSTM_HIDDEN", (3,))
    monkeypatch.setattr(gpu_suite, "LSTM_BATCHES", (2,))
    doc = {"device": {"cores": 1}, "versions": {}, "peaks": {}, "bench": [], "errors": []}
    gpu_suite.run(doc, "smoke", log=lambda text: None)
    assert doc["errors"] == []
    impls = {(row["workload"], row["impl"]) for row in doc["bench"]}
    workloads = ("S7 stack", "per-step host", "dense fwd+bwd", "lstm fwd+bwd", "launch overhead")
    assert {w for w, impl in impls if impl == "tinynet:numba-cuda"} == set(workloads)
    assert ("S7 stack", "tinynet:numba-cuda one at a time") in impls
    stack = [r for r in doc["bench"] if r["workload"] == "S7 stack"]
    assert {r["models"] for r in stack} == {gpu_suite.STACK_MODELS["smoke"]}
    host = [r for r in doc["bench"] if r["workload"] == "per-step host"]
    assert all(0 < r["host_s"] == r["time_s"] and r["wall_s"] >= r["host_s"] for r in host)
    report.add_ratios(doc["bench"])
    doc.update(load_average={"start": None, "end": None}, suites=["gpu"], skipped={},
               targets=report.targets(doc["bench"]))
    assert "S7 stack" in report.markdown(doc)
