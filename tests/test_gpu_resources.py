"""GPU resources, on a real GPU only: training leaks no device memory (CuPy's memory pool does
not grow epoch after epoch), and the GPU kernels are deterministic (no reduction whose order
varies, so two runs agree bit for bit). Skipped, with the reason, where no GPU backend is
usable or under the simulator."""

import numpy as np
import pytest

import tinynet
from tinynet import nn, ops
from _problems import dense_problem, lstm_problem
from conftest import SIMULATED, USABLE, WHY


def _gpu_param(name):
    if name == "numba-cuda" and SIMULATED:
        reason = "needs a real GPU: numba-cuda runs in the CUDA simulator here"
    elif not USABLE[name]:
        reason = f"needs a real GPU: {name} not usable: {WHY[name]}"
    else:
        return name
    return pytest.param(name, marks=pytest.mark.skip(reason=reason))


GPU_BACKENDS = [_gpu_param(name) for name in ("numba-cuda", "cupy")]


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_memory_pool_does_not_grow_across_epochs(backend):
    import cupy

    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 20, 1)).astype(np.float32)
    y = x.sum(axis=1)
    nn.set_seed(0)
    model = nn.Sequential([nn.LSTM(1, 16), nn.Dense(16, 1)]).to(backend)
    model.compile(optimizer=nn.Adam(1e-3), loss="mse")
    pool = cupy.get_default_memory_pool()
    used = []
    for _ in range(4):
        model.fit(x, y, epochs=1, batch_size=64, verbose=0)
        cupy.cuda.Device().synchronize()
        used.append(pool.used_bytes())
    assert used[3] <= used[1], f"pool bytes in use after epochs 1..4: {used}"


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_kernels_are_bit_identical_run_to_run(backend):
    rng = np.random.default_rng(1)
    x, w, b, dy = dense_problem(rng, 4096, 64, 64, np.float32)
    inputs, grads = lstm_problem(rng, 256, 100, 8, 32, np.float32)

    def run():
        y, ctx = ops.dense(x, w, b, "tanh", backend=backend)
        *out, lctx = ops.lstm(*inputs, forget_bias=1.0, backend=backend)
        results = [y, *ops.dense_backward(ctx, dy), *out, *ops.lstm_backward(lctx, *grads)]
        return [tinynet.to_numpy(r) for r in results]

    for first, second in zip(run(), run()):
        assert np.array_equal(first, second)
