"""The cupy backend and its CUDA C kernels (kernels/cuda/*.cu), run on the CPU without a GPU.

tests/cuda_emulator/ holds a fake `cupy` whose RawModule compiles the .cu files with g++ and
runs the kernels block by block, checking every launch: arguments against the kernel's C
signature, launch limits, writes out of bounds, reads of unwritten shared memory, barriers
that not every thread reaches (see tests/cuda_emulator/README.md). Each run here is a
subprocess with the emulator first on PYTHONPATH, so its `cupy` never shadows a real one in
this process.

A run forces every op down one path of the backend's FUSED_MAX_WIDTH table (our fused
kernels and the persistent LSTM, or cuBLAS with our epilogue/prologue/gate kernels and the
per-step LSTM) and runs:
- tests/test_backends_agree.py -k cupy: every op x activation x dtype against the NumPy
  reference, forward and every gradient, on its small shapes;
- tests/cuda_emulator/emulated_cupy_checks.py: the same on device arrays, at shapes that span
  several tiles and split-K splits, and with size-0 axes; inputs never written; and the
  stacked ops (many models per call, lengths, NaN isolation between models);
- tests/test_stacks.py -k cupy: stacks of models and sequences of different lengths through
  tinynet.ops, each model against the NumPy reference run on its own.
Each file must pass exactly the number of tests written down for it, and between them the
two paths must launch every kernel the .cu files define.

Skipped in a real GPU run (TINYNET_GPU_TESTS=1: tests/test_cupy_cuda.py runs the real thing)
and where g++ cannot compile C++17 with <ucontext.h>.
"""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMULATOR = ROOT / "tests" / "cuda_emulator"
# FUSED_MAX_WIDTH for every op: each op takes the path whatever its width
PATHS = {"fused": 10**9, "cublas": -1}
# The tests each file passes under -k cupy, per path (file relative to the repository): fewer
# means tests were lost on the way (a rename, a changed selection, a file not collected);
# more, that this count was not updated.
EXPECTED_PASSED = {
    "tests/test_backends_agree.py": 29,
    "tests/cuda_emulator/emulated_cupy_checks.py": 57,
    "tests/test_stacks.py": 29,
}

# pytest's last line, e.g. "115 passed, 59 deselected in 9.69s"
SUMMARY = re.compile(r"^=* ?(\d+ \w+(?:, \d+ \w+)*) in [\d.]+s", re.MULTILINE)

# In the subprocess: force the path, run pytest counting the passed tests of each file, then
# report those counts and which kernels existed and ran.
RUNNER = """
import collections, json, sys
import cupy, pytest
from tinynet.backends import cupy_cuda
assert cupy.__version__ == "cuda-emulator", f"not the emulator's cupy: {cupy.__file__}"
cupy_cuda.FUSED_MAX_WIDTH.update(dict.fromkeys(cupy_cuda.FUSED_MAX_WIDTH, int(sys.argv[1])))

class PassedPerFile(collections.Counter):
    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.passed:
            self[report.nodeid.split("::")[0]] += 1

passed = PassedPerFile()
status = pytest.main(sys.argv[2:], plugins=[passed])
print("passed:", json.dumps(passed))
print("kernels:", json.dumps({"defined": sorted(cupy.kernels_defined()),
                              "launched": sorted(cupy.kernels_launched())}))
sys.exit(status)
"""

PROBE = """
#include <ucontext.h>
static_assert(sizeof(ucontext_t) > 0);   // C++17: a static_assert without a message
"""


def compiler_problem():
    """None if g++ can build the emulator, else why not."""
    if shutil.which("g++") is None:
        return "g++ is not installed (the CUDA emulator compiles kernels/cuda/*.cu with it)"
    done = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-x", "c++", "-"], input=PROBE,
                          capture_output=True, text=True)
    if done.returncode:
        return f"g++ cannot compile C++17 with <ucontext.h> for the CUDA emulator: {done.stderr}"
    return None


@pytest.fixture(scope="module", autouse=True)
def emulator_usable():
    if os.environ.get("TINYNET_GPU_TESTS") == "1":
        pytest.skip("a real GPU run: tests/test_cupy_cuda.py runs the cupy backend on the GPU")
    problem = compiler_problem()
    if problem:
        pytest.skip(problem)


@functools.cache
def run_emulated(path):
    """(exit status, output, {outcome: count}, {file: tests passed},
    {"defined"/"launched": kernel names})."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(EMULATOR), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(PATHS[path]), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(ROOT), *(str(ROOT / name) for name in EXPECTED_PASSED),
         "-k", "cupy"],
        cwd="/", env=env, capture_output=True, text=True, timeout=600)   # "/": import the installed tinynet
    summaries = SUMMARY.findall(done.stdout)
    counts = {outcome: int(n) for n, outcome in re.findall(r"(\d+) (\w+)", summaries[-1])} \
        if summaries else {}
    found = re.search(r"^passed: (.*)$", done.stdout, re.MULTILINE)
    passed = json.loads(found.group(1)) if found else {}
    found = re.search(r"^kernels: (.*)$", done.stdout, re.MULTILINE)
    kernels = json.loads(found.group(1)) if found else {}
    return done.returncode, done.stdout + done.stderr, counts, passed, kernels


@pytest.mark.parametrize("path", PATHS)
def test_cupy_backend_on_emulated_gpu(path):
    status, output, counts, passed, _ = run_emulated(path)
    assert status == 0, f"{path} path, in the CUDA emulator:\n{output[-6000:]}"
    assert passed == EXPECTED_PASSED, (f"{path} path: tests passed per file {passed}, "
                                       f"expected {EXPECTED_PASSED}:\n{output[-3000:]}")
    assert not counts.get("skipped"), \
        f"{path} path: tests skipped in the CUDA emulator:\n{output[-3000:]}"


def test_every_kernel_ran():
    runs = [run_emulated(path) for path in PATHS]
    defined = set().union(*(set(kernels.get("defined", [])) for *_, kernels in runs))
    launched = set().union(*(set(kernels.get("launched", [])) for *_, kernels in runs))
    assert defined, "the emulator compiled no kernels:\n" + runs[0][1][-3000:]
    assert defined <= launched, f"never launched on either path: {sorted(defined - launched)}"
