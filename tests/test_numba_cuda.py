"""Checks specific to the numba-cuda backend (tests/test_backends_agree.py already compares
every op of it with the NumPy reference on small shapes):

- the persistent whole-sequence LSTM kernels and the per-step fallback (H above
  kernels/numba_cuda/lstm.py MAX_HIDDEN) both agree with the reference, forward and every
  gradient, on batches spanning several blocks;
- dense on shapes spanning several tiles in every direction, with the batch split into
  chunks whose partial dw/db are summed by partials.sum_partials;
- repeated runs give bit-identical results (no order-dependent float atomics);
- kernels are compiled once per (dtype, static parameters), not per call or shape;
- `python -m tinynet compile --arch sm_90 --json`, on the real CUDA target (no simulator),
  compiles every numba-cuda kernel without spilling;
- stacks (stack_dense.py, stack_lstm.py): every model against the reference with lengths,
  NaN in padding and in one model, the models grid wrapping around, empty axes;
- launches: an empty grid is refused as CUDA refuses it, numba-cuda's low-occupancy warning
  stays off, a failing compile becomes the backend's reason, CuPy's current stream is used.

Under the simulator each CUDA thread is a Python thread, so the shapes here are small but
chosen to cross every block and tile boundary. Small limits (MAX_HIDDEN, the rows per chunk)
are lowered with monkeypatch where that reaches the same code path with fewer threads.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from _compare import assert_close, lstm_grad_scale
from _problems import dense_problem, lstm_problem, lstm_stack_problem
from conftest import SIMULATED, USABLE, WHY
from tinynet import ops

pytestmark = pytest.mark.skipif(not USABLE["numba-cuda"],
                                reason=f"numba-cuda not usable: {WHY['numba-cuda']}")

if USABLE["numba-cuda"]:
    from tinynet.backends import numba_cuda as backend
    from tinynet.kernels import split_k
    from tinynet.kernels.numba_cuda import compile_targets, dense, lstm, stack_dense

DTYPES = [np.float32, np.float64]


@pytest.fixture
def launched(monkeypatch):
    """The names of the kernels the backend launches, in order."""
    names = []
    launch = backend._launch

    def recording(kernel, *rest):
        names.append(kernel.py_func.__name__)
        launch(kernel, *rest)

    monkeypatch.setattr(backend, "_launch", recording)
    return names


def lstm_against_reference(rng, dtype, batch, steps, n_in, hidden, **kw):
    """Run ops.lstm forward and backward on numba-cuda and the reference; compare all."""
    inputs, (dhs, dhT, dcT) = lstm_problem(rng, batch, steps, n_in, hidden, dtype)
    kw = dict(activation="tanh", recurrent_activation="sigmoid", forget_bias=1.0, **kw)
    *out_ref, ctx_ref = ops.lstm(*inputs, backend="numpy", **kw)
    grads_ref = ops.lstm_backward(ctx_ref, dhs, dhT, dcT)
    *out, ctx = ops.lstm(*inputs, backend="numba-cuda", **kw)
    grads = ops.lstm_backward(ctx, dhs, dhT, dcT)
    case = f"lstm {np.dtype(dtype)} {(batch, steps, n_in, hidden)}"
    for name, got, ref in zip(("hs", "hT", "cT"), out, out_ref):
        assert_close(f"{case} {name}", got, ref, scale=np.sqrt(steps))
    for name, got, ref in zip(("dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db"), grads, grads_ref):
        assert_close(f"{case} {name}", got, ref, scale=lstm_grad_scale(batch, steps))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_persistent_path_spans_blocks(rng, launched, dtype):
    # batch 9: three blocks of lstm.ROWS = 4 rows, the last one partly empty
    lstm_against_reference(rng, dtype, batch=9, steps=4, n_in=3, hidden=5)
    assert launched == ["lstm_forward", "lstm_backward", "sum_partials"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_stepwise_fallback_small_limit(rng, launched, monkeypatch, dtype):
    # The fallback's code path with a lowered limit: H = 5 > 4, cheap under the simulator.
    monkeypatch.setattr(lstm, "MAX_HIDDEN", {np.dtype(dtype): 4})
    lstm_against_reference(rng, dtype, batch=3, steps=3, n_in=2, hidden=5)
    assert "lstm_forward" not in launched and "lstm_backward" not in launched
    assert launched.count("lstm_cell_forward") == 3
    assert launched.count("lstm_cell_backward_dz") == 3


def test_lstm_stepwise_fallback_above_real_limit(rng, launched):
    # float64's real limit (32): H = 33 runs per step without any patching.
    hidden = lstm.max_hidden(np.float64) + 1
    lstm_against_reference(rng, np.float64, batch=2, steps=2, n_in=2, hidden=hidden)
    assert "lstm_forward" not in launched and launched.count("lstm_cell_forward") == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_cell_both_paths(rng, launched, monkeypatch, dtype):
    """lstm_cell is a one-step sequence: persistent kernels for small H, the tiled cell
    kernel above the limit; both against the reference."""
    for limit, expected in ((64, "lstm_forward"), (2, "lstm_cell_forward")):
        monkeypatch.setattr(lstm, "MAX_HIDDEN", {np.dtype(dtype): limit})
        launched.clear()
        inputs, (dh1, _, dc1) = lstm_problem(rng, 6, None, 3, 3, dtype)
        kw = dict(activation="sigmoid", recurrent_activation="tanh", forget_bias=0.5)
        h_ref, c_ref, ctx_ref = ops.lstm_cell(*inputs, backend="numpy", **kw)
        grads_ref = ops.lstm_cell_backward(ctx_ref, dh1, dc1)
        h1, c1, ctx = ops.lstm_cell(*inputs, backend="numba-cuda", **kw)
        grads = ops.lstm_cell_backward(ctx, dh1, dc1)
        assert launched[0] == expected
        assert_close(f"{expected} h1", h1, h_ref)
        assert_close(f"{expected} c1", c1, c_ref)
        for name, got, ref in zip(("dx", "dh", "dc", "dw_ih", "dw_hh", "db"), grads, grads_ref):
            assert_close(f"{expected} {name}", got, ref, scale=np.sqrt(6))


@pytest.mark.parametrize("dtype,activation", [(np.float32, "sigmoid"), (np.float64, "relu")])
def test_dense_spans_tiles_and_chunks(rng, launched, monkeypatch, dtype, activation):
    # 70 rows, 20 inputs, 67 outputs: two 64-tiles along every axis of every GEMM and two
    # 16-deep stages; 32 rows per chunk splits the batch of dw into 3 chunks.
    monkeypatch.setattr(split_k, "MIN_ROWS", 32)
    batch, n_in, n_out = 70, 20, 67
    assert dense.batch_split(batch, n_in, n_out)[0] == 3
    x, w, b, dy = dense_problem(rng, batch, n_in, n_out, dtype)
    y_ref, ctx_ref = ops.dense(x, w, b, activation, backend="numpy")
    grads_ref = ops.dense_backward(ctx_ref, dy)
    y, ctx = ops.dense(x, w, b, activation, backend="numba-cuda")
    grads = ops.dense_backward(ctx, dy)
    assert launched == ["dense_forward", "dense_backward_dx", "dense_backward_dw",
                        "sum_partials"]
    assert_close("dense y", y, y_ref)
    for name, got, ref in zip(("dx", "dw", "db"), grads, grads_ref):
        assert_close(f"dense {name}", got, ref, scale=np.sqrt(batch))


def test_repeated_runs_are_bit_identical(rng, monkeypatch):
    monkeypatch.setattr(split_k, "MIN_ROWS", 16)
    x, w, b, dy = dense_problem(rng, 40, 5, 3, np.float32)
    inputs, (dhs, dhT, dcT) = lstm_problem(rng, 7, 3, 2, 3, np.float32)
    runs = []
    for _ in range(2):
        _, ctx = ops.dense(x, w, b, "tanh", backend="numba-cuda")
        *_, lstm_ctx = ops.lstm(*inputs, backend="numba-cuda")
        runs.append([backend.to_numpy(g) for g in ops.dense_backward(ctx, dy)
                     + ops.lstm_backward(lstm_ctx, dhs, dhT, dcT)])
    for first, second in zip(*runs):
        assert np.array_equal(first, second)


def test_kernels_compile_once(rng, monkeypatch):
    """A second call, even with another batch size, compiles nothing new: every cuda.jit
    call of the backend is counted (the simulator's too), so a kernel built per call or per
    shape fails this."""
    compiled = []
    jit = backend.cuda.jit

    def counting(*args, **kw):
        compiled.append(args)
        return jit(*args, **kw)

    monkeypatch.setattr(backend.cuda, "jit", counting)

    def calls(batch):
        x, w, b, dy = dense_problem(rng, batch, 4, 3, np.float32)
        _, ctx = ops.dense(x, w, b, "relu", backend="numba-cuda")
        ops.dense_backward(ctx, dy)
        inputs, (dhs, dhT, dcT) = lstm_problem(rng, batch, 2, 2, 3, np.float32)
        *_, ctx = ops.lstm(*inputs, backend="numba-cuda")
        ops.lstm_backward(ctx, dhs, dhT, dcT)
        inputs, grads = lstm_stack_problem(rng, 2, batch, 2, 2, 3, np.float32)
        *_, ctx = ops.lstm(*inputs, backend="numba-cuda", lengths=np.ones((2, batch), int))
        ops.lstm_backward(ctx, *grads)

    calls(5)
    compiled.clear()
    calls(6)
    assert compiled == []
    if not SIMULATED:
        kernel = backend._kernel(dense, "dense_forward", np.float32)
        assert len(kernel.overloads) == 1


def test_asarray_and_outputs():
    a = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    got = backend.asarray(a)
    assert got.flags.c_contiguous and np.array_equal(backend.to_numpy(got), a)
    y, _ = ops.dense(a, np.ones((3, 2)), backend="numba-cuda")
    assert type(y) is (np.ndarray if SIMULATED else type(backend.asarray(a)))
    if SIMULATED:
        class OnTheDevice:
            __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (0, False),
                                        "version": 3}
        with pytest.raises(ValueError, match="simulator"):
            backend.asarray(OnTheDevice())


@pytest.mark.skipif(SIMULATED, reason="real sizes need a GPU (TINYNET_GPU_TESTS=1); the "
                                      "simulator runs the small shapes above")
@pytest.mark.parametrize("dtype", DTYPES)
def test_real_sizes_on_the_gpu(rng, dtype):
    for batch, steps, n_in, hidden in ((256, 100, 8, 64), (64, 30, 16, 32), (33, 10, 5, 130)):
        lstm_against_reference(rng, dtype, batch, steps, n_in, hidden)
    x, w, b, dy = dense_problem(rng, 70_000, 128, 129, dtype)
    y_ref, ctx_ref = ops.dense(x, w, b, "tanh", backend="numpy")
    y, ctx = ops.dense(x, w, b, "tanh", backend="numba-cuda")
    assert_close("dense y", y, y_ref)
    for name, got, ref in zip(("dx", "dw", "db"), ops.dense_backward(ctx, dy),
                              ops.dense_backward(ctx_ref, dy)):
        assert_close(f"dense {name}", got, ref, scale=np.sqrt(70_000))


def test_compile_for_sm_90_without_spills():
    """The real CUDA target, in a process without the simulator."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-m", "tinynet", "compile", "--arch", "sm_90",
                           "--json", "--family", "numba-cuda"], env=env, capture_output=True,
                          text=True, timeout=600, cwd="/")
    try:
        rows = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON from tinynet compile (exit {done.returncode}):\n"
                    f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    ours = {row["kernel"]: row for row in rows if row["family"] == "numba-cuda"}
    assert set(ours) == {name for name, _, _ in compile_targets()}
    for name, row in ours.items():
        assert "error" not in row, f"{name}: {row.get('error')}"
        assert {"family", "kernel", "arch", "registers", "shared_bytes",
                "local_bytes"} <= set(row)
        assert row["arch"] == "sm_90"
        assert row["spill_bytes"] == 0 and row["local_bytes"] == 0, f"{name} spills: {row}"
        assert 0 < row["registers"] <= 255


@pytest.mark.parametrize("path", ["persistent", "stepwise"])
def test_empty_axes(rng, monkeypatch, path):
    """Sizes 0 on any axis: the same shapes and values as the reference."""
    if path == "stepwise":
        monkeypatch.setattr(lstm, "MAX_HIDDEN", {np.dtype(np.float64): 1})
    for batch, steps, n_in, hidden in ((0, 2, 2, 2), (2, 0, 2, 2), (2, 2, 0, 2), (2, 2, 2, 0)):
        inputs, (dhs, dhT, dcT) = lstm_problem(rng, batch, steps, n_in, hidden, np.float64)
        *out_ref, ctx_ref = ops.lstm(*inputs, backend="numpy")
        *out, ctx = ops.lstm(*inputs, backend="numba-cuda")
        grads = ops.lstm_backward(ctx, dhs, dhT, dcT)
        grads_ref = ops.lstm_backward(ctx_ref, dhs, dhT, dcT)
        for got, ref in zip(out + list(grads), out_ref + list(grads_ref)):
            assert_close(f"lstm {(batch, steps, n_in, hidden)}", got, ref)
    for batch, n_in, n_out in ((0, 3, 2), (3, 0, 2), (3, 2, 0)):
        x, w, b, dy = dense_problem(rng, batch, n_in, n_out, np.float64)
        y_ref, ctx_ref = ops.dense(x, w, b, "sigmoid", backend="numpy")
        y, ctx = ops.dense(x, w, b, "sigmoid", backend="numba-cuda")
        for got, ref in zip([y, *ops.dense_backward(ctx, dy)],
                            [y_ref, *ops.dense_backward(ctx_ref, dy)]):
            assert_close(f"dense {(batch, n_in, n_out)}", got, ref)


# --- stacks ------------------------------------------------------------------------------

def stack_lstm_both(inputs, grads, **kw):
    """ops.lstm forward and backward on numba-cuda and on the reference: (ours, reference),
    each the 3 outputs followed by the 6 gradients."""
    results = []
    for name in ("numba-cuda", "numpy"):
        *out, ctx = ops.lstm(*inputs, backend=name, **kw)
        results.append([backend.to_numpy(a) if name == "numba-cuda" else a
                        for a in out + list(ops.lstm_backward(ctx, *grads))])
    return results


LSTM_NAMES = ("hs", "hT", "cT", "dxs", "dh0", "dc0", "dw_ih", "dw_hh", "db")


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_lstm_lengths_and_nan_padding(rng, launched, dtype):
    """3 models x 3 rows, lengths 0 .. steps, NaN in every padding step of xs, a forget_bias
    per model: every output and gradient against the reference, NaN nowhere."""
    models, batch, steps, n_in, hidden = 3, 3, 4, 2, 5
    inputs, grads = lstm_stack_problem(rng, models, batch, steps, n_in, hidden, dtype)
    lengths = np.array([[4, 0, 2], [1, 3, 4], [0, 0, 3]])
    xs = inputs[0].copy()
    xs[np.arange(steps) >= lengths[..., None]] = np.nan
    forget_bias = np.array([0.0, 1.0, 2.5])
    ours, ref = stack_lstm_both([xs, *inputs[1:]], grads, lengths=lengths,
                                forget_bias=forget_bias)
    assert launched == ["stack_lstm_forward", "stack_lstm_backward", "sum_partials"]
    for name, got, want in zip(LSTM_NAMES, ours, ref):
        assert not np.isnan(got).any(), f"{name}: NaN from the padding"
        assert_close(f"stack lstm {np.dtype(dtype)} {name}", got, want,
                     scale=lstm_grad_scale(batch, steps))
    padding = np.arange(steps) >= lengths[..., None]
    assert not ours[0][padding].any() and not ours[3][padding].any()    # hs, dxs zero there


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_lstm_cell_and_nan_isolation(rng, dtype):
    """A NaN in model 1's weights: models 0 and 2 give exactly what they give without it
    (a sequence of one row, so no sum over rows; and a cell)."""
    inputs, grads = lstm_stack_problem(rng, 3, 1, 3, 2, 4, dtype)
    poisoned = [a.copy() for a in inputs]
    poisoned[4][1, 0, 0] = np.nan                      # w_hh of model 1
    clean, _ = stack_lstm_both(inputs, grads)
    dirty, ref = stack_lstm_both(poisoned, grads)
    assert np.isnan(dirty[0][1, :, -1]).all()          # model 1: the NaN took effect
    for name, got, want, clean_one in zip(LSTM_NAMES, dirty, ref, clean):
        assert np.array_equal(got[[0, 2]], clean_one[[0, 2]]), name
        assert_close(f"stack lstm {name}", got[[0, 2]], want[[0, 2]], scale=np.sqrt(3))
    x, h, c = (a[:, :, 0] if a.ndim == 4 else a for a in inputs[:3])
    dh1, dc1 = grads[1], grads[2]
    results = []
    for name in ("numba-cuda", "numpy"):
        h1, c1, ctx = ops.lstm_cell(x, h, c, *inputs[3:], backend=name, forget_bias=0.5)
        results.append([backend.to_numpy(a) for a in
                        [h1, c1, *ops.lstm_cell_backward(ctx, dh1, dc1)]])
    for name, got, want in zip(("h1", "c1", "dx", "dh", "dc", "dw_ih", "dw_hh", "db"),
                               *results):
        assert_close(f"stack lstm_cell {name}", got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stack_dense_wraps_models_and_chunks(rng, launched, monkeypatch, dtype):
    """3 models on a models grid of 2 (blocks take models 0, 2 and 1) and a batch of 20 in
    two chunks of 16 rows: every model's y, dx, dw, db against the reference; then without
    a bias."""
    monkeypatch.setattr(stack_dense, "MAX_GRID_YZ", 2)
    monkeypatch.setattr(split_k, "MIN_ROWS", 16)
    models, batch, n_in, n_out = 3, 20, 3, 5
    assert dense.batch_split(batch, n_in, n_out)[0] == 2
    problems = [dense_problem(rng, batch, n_in, n_out, dtype) for _ in range(models)]
    x, w, b, dy = (np.stack(parts) for parts in zip(*problems))
    for bias in (b, None):
        launched.clear()
        y_ref, ctx_ref = ops.dense(x, w, bias, "sigmoid", backend="numpy")
        y, ctx = ops.dense(x, w, bias, "sigmoid", backend="numba-cuda")
        grads = ops.dense_backward(ctx, dy)
        assert launched == ["stack_dense_forward", "stack_dense_backward_dx",
                            "stack_dense_backward_dw", "sum_partials"]
        assert_close("stack dense y", y, y_ref)
        for name, got, ref in zip(("dx", "dw", "db"), grads, ops.dense_backward(ctx_ref, dy)):
            if ref is None:
                assert got is None
            else:
                assert_close(f"stack dense {name}", got, ref, scale=np.sqrt(batch))


def test_stack_empty_axes(rng):
    """M, batch, steps, in or H of 0: the reference's shapes and values, and no launch of
    an empty grid (refused by _launch)."""
    for models, batch, steps, n_in, hidden in ((0, 2, 2, 2, 2), (2, 0, 2, 2, 2), (2, 2, 0, 2, 2),
                                               (2, 2, 2, 0, 2), (2, 2, 2, 2, 0)):
        inputs, grads = lstm_stack_problem(rng, models, batch, steps, n_in, hidden, np.float64)
        ours, ref = stack_lstm_both(inputs, grads)
        for name, got, want in zip(LSTM_NAMES, ours, ref):
            assert_close(f"stack lstm {(models, batch, steps, n_in, hidden)} {name}", got, want)
    for models, batch, n_in, n_out in ((0, 2, 3, 2), (2, 0, 3, 2), (2, 3, 0, 2), (2, 3, 2, 0)):
        x = rng.standard_normal((models, batch, n_in))
        w = rng.standard_normal((models, n_in, n_out))
        b = rng.standard_normal((models, n_out))
        dy = rng.standard_normal((models, batch, n_out))
        y_ref, ctx_ref = ops.dense(x, w, b, "tanh", backend="numpy")
        y, ctx = ops.dense(x, w, b, "tanh", backend="numba-cuda")
        for got, ref in zip([y, *ops.dense_backward(ctx, dy)],
                            [y_ref, *ops.dense_backward(ctx_ref, dy)]):
            assert_close(f"stack dense {(models, batch, n_in, n_out)}", got, ref)


def test_stack_runs_are_bit_identical(rng):
    """dw sums over rows (sum_partials) and chunks in a fixed order: two runs agree bit for
    bit."""
    inputs, grads = lstm_stack_problem(rng, 2, 3, 3, 2, 3, np.float32)
    runs = [stack_lstm_both(inputs, grads)[0] for _ in range(2)]
    for name, first, second in zip(LSTM_NAMES, *runs):
        assert np.array_equal(first, second), name


# --- launches ----------------------------------------------------------------------------

def test_launch_refuses_an_empty_grid():
    """numba-cuda refuses a grid with a 0 (LaunchConfig.grid values must be >= 1) where the
    simulator would run nothing: _launch refuses it on both."""
    kernel = backend._kernel(backend.partials, "sum_partials", np.float64)
    with pytest.raises(ValueError, match="empty grid"):
        backend._launch(kernel, (0,), 1, np.zeros((1, 1)), np.zeros(1))


def test_no_low_occupancy_warning(rng, monkeypatch):
    """numba-cuda warns NumbaPerformanceWarning when it configures a launch of fewer than 128
    blocks while config.CUDA_LOW_OCCUPANCY_WARNINGS is set (it is by default); the simulator
    never does. Its launches are made to warn the same way here: tinynet's small launches
    must not warn, and the setting is left as it was."""
    from numba.core.errors import NumbaPerformanceWarning
    from numba.cuda.simulator import kernel as simulated

    configure = simulated.FakeCUDAKernel.__getitem__

    def warning_like_numba_cuda(self, configuration):
        if backend.cuda.config.CUDA_LOW_OCCUPANCY_WARNINGS:
            warnings.warn(NumbaPerformanceWarning("Grid size 1 will likely result in GPU "
                                                  "under-utilization due to low occupancy."))
        return configure(self, configuration)

    monkeypatch.setattr(simulated.FakeCUDAKernel, "__getitem__", warning_like_numba_cuda)
    monkeypatch.setattr(backend.cuda.config, "CUDA_LOW_OCCUPANCY_WARNINGS", 1)
    x, w, b, dy = dense_problem(rng, 3, 2, 2, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, ctx = ops.dense(x, w, b, "tanh", backend="numba-cuda")
        ops.dense_backward(ctx, dy)
    assert backend.cuda.config.CUDA_LOW_OCCUPANCY_WARNINGS == 1
    with pytest.warns(NumbaPerformanceWarning):     # the imitation does warn
        backend._kernel(backend.partials, "sum_partials", np.float32)[1, 1]


def test_a_failing_compile_is_the_reason(monkeypatch):
    """On a GPU, a kernel that cannot be compiled or launched (no libNVVM) makes the backend
    unusable with that reason, instead of failing every op."""
    backend._compile_and_launch_one()      # the check itself runs (under the simulator)

    def no_nvvm():
        raise RuntimeError("libNVVM cannot be found")

    monkeypatch.setattr(backend, "SIMULATED", False)
    monkeypatch.setattr(backend, "xp", np)
    monkeypatch.setattr(backend.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backend, "_compile_and_launch_one", no_nvvm)
    reason = backend.unavailable_reason()
    assert "libNVVM cannot be found" in reason and "CUDA_HOME" in reason


@pytest.mark.skipif(SIMULATED, reason="needs a GPU and CuPy (TINYNET_GPU_TESTS=1)")
def test_launches_on_cupys_current_stream(rng):
    """On a non-blocking CuPy stream (not ordered with the default stream) kernels launch on
    that stream: the results read on it are complete."""
    import cupy

    x, w, b, dy = dense_problem(rng, 3000, 64, 65, np.float32)
    y_ref, _ = ops.dense(x, w, b, "tanh", backend="numpy")
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        assert int(backend._stream().handle) == stream.ptr
        x_gpu = cupy.asarray(x)                  # copied on the stream, then used at once
        y, _ = ops.dense(x_gpu, cupy.asarray(w), cupy.asarray(b), "tanh",
                         backend="numba-cuda")
        y_host = cupy.asnumpy(y, stream=stream)
        stream.synchronize()
    assert_close("dense y on a non-blocking stream", y_host, y_ref)
