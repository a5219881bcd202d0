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
  compiles every numba-cuda kernel without spilling.

Under the simulator each CUDA thread is a Python thread, so the shapes here are small but
chosen to cross every block and tile boundary. Small limits (MAX_HIDDEN, the rows per chunk)
are lowered with monkeypatch where that reaches the same code path with fewer threads.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _compare import assert_close, lstm_grad_scale
from _problems import dense_problem, lstm_problem
from conftest import SIMULATED, USABLE, WHY
from tinynet import ops

pytestmark = pytest.mark.skipif(not USABLE["numba-cuda"],
                                reason=f"numba-cuda not usable: {WHY['numba-cuda']}")

if USABLE["numba-cuda"]:
    from tinynet.backends import numba_cuda as backend
    from tinynet.kernels.numba_cuda import compile_targets, dense, lstm

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
    monkeypatch.setattr(dense, "ROWS_PER_CHUNK_MIN", 32)
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
    monkeypatch.setattr(dense, "ROWS_PER_CHUNK_MIN", 16)
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


def test_kernels_compile_once(rng):
    """A second call, even with another batch size, compiles nothing new."""
    def calls(batch):
        x, w, b, dy = dense_problem(rng, batch, 4, 3, np.float32)
        _, ctx = ops.dense(x, w, b, "relu", backend="numba-cuda")
        ops.dense_backward(ctx, dy)
        inputs, (dhs, dhT, dcT) = lstm_problem(rng, batch, 2, 2, 3, np.float32)
        *_, ctx = ops.lstm(*inputs, backend="numba-cuda")
        ops.lstm_backward(ctx, dhs, dhT, dcT)

    calls(5)
    compiled = backend._kernel.cache_info().currsize
    misses = backend._kernel.cache_info().misses
    calls(6)
    assert backend._kernel.cache_info().misses == misses
    assert backend._kernel.cache_info().currsize == compiled
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
