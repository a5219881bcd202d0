"""Checks specific to the cupy backend (CUDA C kernels in kernels/cuda, loaded by CuPy).
tests/test_backends_agree.py already compares every op of it with the NumPy reference on the
shared shapes whenever it is usable.

Without a GPU (CI):
- `python -m tinynet compile --arch sm_90 --json` compiles every kernels/cuda/*.cu through
  NVRTC: every entry point compiles without spilling, each has a float and a double
  version, and the entry points the backend launches are exactly the ones that exist;
- the text CuPy compiles (headers inlined by the backend) compiles with the backend's own
  NVRTC options;
- without CuPy, importing the backend raises ImportError and the registry says what to install.

With a GPU (skipped with the reason otherwise), at real sizes (batch 256, width 500, T = 100,
H in {3, 32, 64, 128}), with both paths of every op forced in turn (fused kernels / cuBLAS,
persistent LSTM / per step):
- every op x activation x dtype against the NumPy reference, forward and every gradient;
- the same against the numba-cuda backend on the same inputs (needs a real GPU for it too);
- two runs bit-identical; CuPy and other CUDA arrays are used without a copy;
- stacks of models (stack_dense.cu, stack_lstm.cu) against the NumPy reference, with a length
  per sequence: up to 2,000 models of Experiment 3a's shape in one call; two runs bit-identical.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _compare import assert_close, lstm_grad_scale
from _problems import ACTIVATIONS, dense_problem, lstm_problem
from conftest import SIMULATED, USABLE, WHY
from tinynet import ops

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "kernels" / "cuda"
BACKEND_SOURCE = ROOT / "tinynet" / "backends" / "cupy_cuda.py"
DTYPES = [np.float32, np.float64]
LSTM_ACTIVATION_PAIRS = [("tanh", "sigmoid"), ("linear", "linear"), ("relu", "sigmoid"),
                         ("sigmoid", "tanh"), ("tanh", "relu")]

gpu = pytest.mark.skipif(not USABLE["cupy"], reason=f"cupy not usable: {WHY['cupy']}")
numba_cuda_on_gpu = pytest.mark.skipif(
    SIMULATED or not USABLE["numba-cuda"],
    reason="needs the numba-cuda backend on a real GPU (TINYNET_GPU_TESTS=1): "
           + ("it runs under the simulator here" if SIMULATED else str(WHY["numba-cuda"])))


# --- without a GPU -------------------------------------------------------------------

@pytest.fixture(scope="module")
def compiled():
    """The cupy family's rows of the compile command, run on the real CUDA target (without
    the simulator)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-m", "tinynet", "compile", "--arch", "sm_90", "--json",
                           "--family", "cupy"],
                          capture_output=True, text=True, env=env, timeout=600,
                          cwd="/")
    try:
        rows = [row for row in json.loads(done.stdout) if row["family"] == "cupy"]
    except ValueError:
        pytest.fail(f"the compile command printed no JSON:\n{done.stderr[-2000:]}")
    assert rows, f"no cupy kernels reported:\n{done.stderr[-2000:]}"
    return rows


def entry_points(rows):
    """{(file stem, entry point)} of the rows that compiled ("dense:dense_forward_fused_f32")."""
    return {tuple(row["kernel"].split(":", 1)) for row in rows if "error" not in row}


def test_every_kernel_compiles_without_spilling(compiled):
    failed = [f"{row['kernel']}: {row['error']}" for row in compiled if "error" in row]
    assert not failed, "\n".join(failed)
    spilling = [f"{row['kernel']}: {row['spill_bytes']} B spilled, {row['local_bytes']} B local"
                for row in compiled if row["spill_bytes"] or row["local_bytes"]]
    assert not spilling, "\n".join(spilling)
    assert {stem for stem, _ in entry_points(compiled)} == {p.stem for p in SOURCES.glob("*.cu")}


def test_every_entry_point_has_float_and_double(compiled):
    found = entry_points(compiled)
    for stem in {stem for stem, _ in found}:
        names = {name for s, name in found if s == stem}
        f32 = {name[:-4] for name in names if name.endswith("_f32")}
        f64 = {name[:-4] for name in names if name.endswith("_f64")}
        assert names == {f"{n}_f32" for n in f32} | {f"{n}_f64" for n in f64}, \
            f"{stem}.cu: entry points without an _f32/_f64 suffix: {sorted(names)}"
        assert f32 == f64, (f"{stem}.cu: float only {sorted(f32 - f64)}, "
                            f"double only {sorted(f64 - f32)}")


def test_backend_launches_exactly_the_entry_points_that_exist(compiled):
    """Kernel names are strings to CuPy: a typo would only show on a GPU. Every
    ("<file>.cu", "<entry>") the backend names must exist, and every entry point be used."""
    named = re.findall(r'(\w+)\(\s*"(\w+)\.cu",\s*"(\w+)"', BACKEND_SOURCE.read_text())
    used = {(stem, entry) for function, stem, entry in named if function != "_constant"}
    assert used, "found no kernel launches in the backend source"
    existing = {(stem, name[:-4]) for stem, name in entry_points(compiled)}
    assert used - existing == set(), f"launched but not defined: {sorted(used - existing)}"
    assert existing - used == set(), f"defined but never launched: {sorted(existing - used)}"


def test_sources_as_cupy_compiles_them():
    """The backend inlines the .cuh headers into the text it gives cupy.RawModule; that text
    must compile with the backend's options alone (no include path)."""
    pytest.importorskip("cupy", reason="the backend module needs CuPy")
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    from tinynet.backends import cupy_cuda

    for path in sorted(SOURCES.glob("*.cu")):
        text = cupy_cuda._source(path.name)
        assert "#include" not in text
        err, program = nvrtc.nvrtcCreateProgram(text.encode(), path.name.encode(), 0, [], [])
        options = [option.encode() for option in cupy_cuda._OPTIONS] + [b"--gpu-architecture=sm_90"]
        (err,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        _, size = nvrtc.nvrtcGetProgramLogSize(program)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(program, log)
        nvrtc.nvrtcDestroyProgram(program)
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"{path.name}:\n{log.decode()}"
        assert "warning" not in log.decode(), f"{path.name}:\n{log.decode()}"


def test_without_cupy_the_backend_is_absent_with_a_reason():
    script = ("import sys; sys.modules['cupy'] = None\n"
              "try:\n    import tinynet.backends.cupy_cuda\nexcept ImportError:\n    pass\n"
              "else:\n    raise SystemExit('imported without cupy')\n"
              "from tinynet._dispatch import status\n"
              "print(dict((n, r) for n, _, r in status())['cupy'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install" in done.stdout and "cupy" in done.stdout, done.stdout


# --- with a GPU ----------------------------------------------------------------------

if USABLE["cupy"]:
    import cupy

    from tinynet.backends import cupy_cuda as backend

PATHS = ["fused", "cublas"]     # fused / persistent kernels, or cuBLAS / per-step


def force(monkeypatch, path):
    """Make every op take one path, whatever the width."""
    for op in backend.FUSED_MAX_WIDTH:
        monkeypatch.setitem(backend.FUSED_MAX_WIDTH, op, 10**9 if path == "fused" else -1)


def run_dense(backend_name, x, w, b, dy, activation):
    y, ctx = ops.dense(x, w, b, activation, backend=backend_name)
    return (y, *ops.dense_backward(ctx, dy))


def run_cell(backend_name, inputs, dh1, dc1, activation, recurrent_activation):
    kw = dict(activation=activation, recurrent_activation=recurrent_activation, forget_bias=1.0)
    h1, c1, ctx = ops.lstm_cell(*inputs, backend=backend_name, **kw)
    return (h1, c1, *ops.lstm_cell_backward(ctx, dh1, dc1))


def run_lstm(backend_name, inputs, grads, activation, recurrent_activation):
    kw = dict(activation=activation, recurrent_activation=recurrent_activation, forget_bias=0.5)
    *outs, ctx = ops.lstm(*inputs, backend=backend_name, **kw)
    return (*outs, *ops.lstm_backward(ctx, *grads))


DENSE_NAMES = ("y", "dx", "dw", "db")
CELL_NAMES = ("h1", "c1", "dx", "dh", "dc", "dw_ih", "dw_hh", "db")
LSTM_NAMES = ("hs", "hT", "cT", "dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db")


def compare(case, names, got, ref, scales):
    for name, g, r, scale in zip(names, got, ref, scales):
        assert_close(f"{case} {name}", g, r, scale=scale)


# (batch, in, out): S4's width, and the widths of the fused kernels' target
DENSE_REAL = [(256, 500, 500), (256, 64, 64), (256, 128, 128)]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_real_sizes_both_paths(rng, monkeypatch, dtype, activation):
    for batch, n_in, n_out in DENSE_REAL:
        x, w, b, dy = dense_problem(rng, batch, n_in, n_out, dtype)
        ref = run_dense("numpy", x, w, b, dy, activation)
        for path in PATHS:
            force(monkeypatch, path)
            got = run_dense("cupy", x, w, b, dy, activation)
            compare(f"dense {path} {activation} {np.dtype(dtype)} {(batch, n_in, n_out)}",
                    DENSE_NAMES, got, ref, (1, *[np.sqrt(batch)] * 3))


@gpu
@numba_cuda_on_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_matches_numba_cuda(rng, dtype, activation):
    for batch, n_in, n_out in DENSE_REAL:
        x, w, b, dy = dense_problem(rng, batch, n_in, n_out, dtype)
        compare(f"dense cupy vs numba-cuda {activation} {np.dtype(dtype)} {(batch, n_in, n_out)}",
                DENSE_NAMES, run_dense("cupy", x, w, b, dy, activation),
                run_dense("numba-cuda", x, w, b, dy, activation), (1, *[np.sqrt(batch)] * 3))


HIDDEN_REAL = [3, 32, 64, 128]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_lstm_cell_real_sizes_both_paths(rng, monkeypatch, dtype, activation, recurrent_activation):
    for hidden in HIDDEN_REAL:
        inputs, (dh1, _, dc1) = lstm_problem(rng, 256, None, 500, hidden, dtype)
        ref = run_cell("numpy", inputs, dh1, dc1, activation, recurrent_activation)
        for path in PATHS:
            force(monkeypatch, path)
            got = run_cell("cupy", inputs, dh1, dc1, activation, recurrent_activation)
            compare(f"lstm_cell {path} {activation}/{recurrent_activation} {np.dtype(dtype)} "
                    f"H={hidden}", CELL_NAMES, got, ref, (1, 1, *[np.sqrt(256)] * 6))


@gpu
@numba_cuda_on_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_lstm_cell_matches_numba_cuda(rng, dtype, activation, recurrent_activation):
    for hidden in HIDDEN_REAL:
        inputs, (dh1, _, dc1) = lstm_problem(rng, 256, None, 500, hidden, dtype)
        compare(f"lstm_cell cupy vs numba-cuda {activation}/{recurrent_activation} "
                f"{np.dtype(dtype)} H={hidden}", CELL_NAMES,
                run_cell("cupy", inputs, dh1, dc1, activation, recurrent_activation),
                run_cell("numba-cuda", inputs, dh1, dc1, activation, recurrent_activation),
                (1, 1, *[np.sqrt(256)] * 6))


def lstm_real_problem(rng, dtype, hidden, activation, recurrent_activation):
    weight_scale = 0.1 if activation == recurrent_activation == "linear" else 1.0
    return lstm_problem(rng, 256, 100, 8, hidden, dtype, weight_scale=weight_scale)


LSTM_SCALES = (*[np.sqrt(100)] * 3, *[lstm_grad_scale(256, 100)] * 6)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_lstm_real_sizes_both_paths(rng, monkeypatch, dtype, activation, recurrent_activation):
    for hidden in HIDDEN_REAL:
        inputs, grads = lstm_real_problem(rng, dtype, hidden, activation, recurrent_activation)
        ref = run_lstm("numpy", inputs, grads, activation, recurrent_activation)
        for path in PATHS:
            force(monkeypatch, path)
            got = run_lstm("cupy", inputs, grads, activation, recurrent_activation)
            compare(f"lstm {path} {activation}/{recurrent_activation} {np.dtype(dtype)} "
                    f"(256, 100, 8, {hidden})", LSTM_NAMES, got, ref, LSTM_SCALES)


@gpu
@numba_cuda_on_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", LSTM_ACTIVATION_PAIRS)
def test_lstm_matches_numba_cuda(rng, dtype, activation, recurrent_activation):
    for hidden in HIDDEN_REAL:
        inputs, grads = lstm_real_problem(rng, dtype, hidden, activation, recurrent_activation)
        compare(f"lstm cupy vs numba-cuda {activation}/{recurrent_activation} {np.dtype(dtype)} "
                f"(256, 100, 8, {hidden})", LSTM_NAMES,
                run_lstm("cupy", inputs, grads, activation, recurrent_activation),
                run_lstm("numba-cuda", inputs, grads, activation, recurrent_activation),
                LSTM_SCALES)


@gpu
@pytest.mark.parametrize("path", PATHS)
def test_two_runs_are_bit_identical(rng, monkeypatch, path):
    """Every reduction (db, split-K dw, the LSTM's dW) sums per-block partials in a fixed
    order: the shapes here split the batch into many partials."""
    force(monkeypatch, path)
    x, w, b, dy = dense_problem(rng, 20000, 64, 64, np.float32)
    inputs, grads = lstm_problem(rng, 256, 100, 8, 32, np.float32)
    runs = [[cupy.asnumpy(a) for a in (*run_dense("cupy", x, w, b, dy, "tanh"),
                                       *run_lstm("cupy", inputs, grads, "tanh", "sigmoid"))]
            for _ in range(2)]
    for name, first, second in zip(DENSE_NAMES + LSTM_NAMES, *runs):
        assert np.array_equal(first, second), f"{path} {name} differs between two runs"


class CudaArrayInterfaceOnly:
    """A foreign CUDA array: only __cuda_array_interface__ (like a Numba device array)."""

    def __init__(self, a):
        self.__cuda_array_interface__ = a.__cuda_array_interface__


class DLPackOnly:
    """A foreign CUDA array: only __dlpack__ (like a PyTorch CUDA tensor)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


@gpu
def test_device_arrays_are_used_without_a_copy(rng):
    x, w, b, _ = dense_problem(rng, 33, 7, 5, np.float32)
    x_device = cupy.asarray(x)
    assert backend.asarray(x_device) is x_device
    for foreign in (CudaArrayInterfaceOnly(x_device), DLPackOnly(x_device)):
        shared = backend.asarray(foreign)
        assert shared.data.ptr == x_device.data.ptr, type(foreign).__name__
    host_copy = backend.asarray(x)
    assert isinstance(host_copy, cupy.ndarray) and host_copy.data.ptr != x_device.data.ptr
    y, _ = ops.dense(x_device, cupy.asarray(w), cupy.asarray(b), "relu", backend="cupy")
    assert isinstance(y, cupy.ndarray)
    assert_close("dense on CuPy inputs", y, ops.dense(x, w, b, "relu", backend="numpy")[0])
    # A non-contiguous CuPy view is read through a contiguous copy, never written.
    wide = cupy.zeros((33, 14), np.float32)
    wide[:, ::2] = x_device
    before = wide.copy()
    y_strided, _ = ops.dense(wide[:, ::2], w, b, "relu", backend="cupy")
    assert cupy.array_equal(y_strided, y) and cupy.array_equal(wide, before)


@gpu
def test_each_source_compiles_once_per_device(rng):
    x, w, b, dy = dense_problem(rng, 9, 4, 3, np.float32)
    for _ in range(3):
        run_dense("cupy", x, w, b, dy, "tanh")
    modules = dict(backend._modules)
    run_dense("cupy", x, w, b, dy, "tanh")
    assert backend._modules == modules
    assert {source for _, source, _ in modules} <= {p.name for p in SOURCES.glob("*.cu")}


# --- stacks at GPU sizes --------------------------------------------------------------
# (M, batch, steps, in, H): Experiment 3a's shape (T = 100, one input, H = 3) for 2,000
# models, then wider models, fewer of them; every sequence its own length from 0 to steps.
STACK_LSTM_REAL = [(2000, 1, 100, 1, 3), (100, 16, 100, 8, 32), (8, 16, 50, 8, 128)]
STACK_DENSE_REAL = [(200, 256, 30, 20), (16, 1000, 128, 64)]   # (M, batch, in, out)


def stack_lstm_real_problem(rng, models, batch, steps, n_in, hidden, dtype):
    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    inputs = (normal(models, batch, steps, n_in), normal(models, batch, hidden, scale=0.5),
              normal(models, batch, hidden, scale=0.5),
              normal(models, n_in, 4 * hidden, scale=1 / np.sqrt(n_in)),
              normal(models, hidden, 4 * hidden, scale=1 / np.sqrt(hidden)),
              normal(models, 4 * hidden, scale=0.5))
    grads = (normal(models, batch, steps, hidden), normal(models, batch, hidden),
             normal(models, batch, hidden))
    forget_bias = rng.uniform(-1.0, 2.0, models).astype(dtype)
    lengths = rng.integers(0, steps + 1, (models, batch))
    lengths.flat[:2] = (0, steps)
    return inputs, grads, forget_bias, lengths


def run_stack_lstm(backend_name, inputs, grads, forget_bias, lengths, activation,
                   recurrent_activation):
    *outs, ctx = ops.lstm(*inputs, activation, recurrent_activation, forget_bias, lengths,
                          backend=backend_name)
    return (*outs, *ops.lstm_backward(ctx, *grads))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,recurrent_activation", [("tanh", "sigmoid"),
                                                             ("relu", "sigmoid")])
def test_stack_lstm_real_sizes(rng, dtype, activation, recurrent_activation):
    for shape in STACK_LSTM_REAL:
        inputs, grads, forget_bias, lengths = stack_lstm_real_problem(rng, *shape, dtype)
        args = (inputs, grads, forget_bias, lengths, activation, recurrent_activation)
        batch, steps = shape[1:3]
        compare(f"stack lstm {activation}/{recurrent_activation} {np.dtype(dtype)} {shape}",
                LSTM_NAMES, run_stack_lstm("cupy", *args), run_stack_lstm("numpy", *args),
                (*[np.sqrt(steps)] * 3, *[lstm_grad_scale(batch, steps)] * 6))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_stack_dense_real_sizes(rng, dtype, activation):
    for models, batch, n_in, n_out in STACK_DENSE_REAL:
        x, w, b, dy = (np.stack(parts) for parts in zip(
            *(dense_problem(rng, batch, n_in, n_out, dtype) for _ in range(models))))
        compare(f"stack dense {activation} {np.dtype(dtype)} {(models, batch, n_in, n_out)}",
                DENSE_NAMES, run_dense("cupy", x, w, b, dy, activation),
                run_dense("numpy", x, w, b, dy, activation), (1, *[np.sqrt(batch)] * 3))


@gpu
def test_stack_two_runs_are_bit_identical(rng):
    """The stacks' reductions (db per model, the LSTM's dW per model) sum in a fixed order."""
    models, batch, n_in, n_out = STACK_DENSE_REAL[1]
    x, w, b, dy = (np.stack(parts) for parts in zip(
        *(dense_problem(rng, batch, n_in, n_out, np.float32) for _ in range(models))))
    lstm_args = (*stack_lstm_real_problem(rng, *STACK_LSTM_REAL[1], np.float32), "tanh",
                 "sigmoid")
    runs = [[cupy.asnumpy(a) for a in (*run_dense("cupy", x, w, b, dy, "tanh"),
                                       *run_stack_lstm("cupy", *lstm_args))]
            for _ in range(2)]
    for name, first, second in zip(DENSE_NAMES + LSTM_NAMES, *runs):
        assert np.array_equal(first, second), f"stack {name} differs between two runs"
