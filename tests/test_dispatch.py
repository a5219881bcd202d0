"""Backend selection: defaults, the context manager across threads, the environment variable,
'auto', unusable and unknown backends, and what `import tinynet` imports."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import tinynet
from tinynet import _dispatch, ops


def run_python(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TINYNET_BACKEND"}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment, cwd="/")
    return done


def test_import_needs_numpy_alone():
    done = run_python("import sys, tinynet, tinynet.ops; "
                      "print(sorted(m for m in ('numba', 'cupy', 'torch') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_numpy_is_always_available():
    assert "numpy" in tinynet.available_backends()
    assert set(tinynet.available_backends()) <= set(_dispatch.KNOWN)


def test_default_is_auto_and_auto_keeps_host_data_on_the_host(rng):
    done = run_python("import tinynet; print(tinynet.get_backend())")
    assert done.stdout.strip() == "auto"
    x = rng.standard_normal((4, 3)).astype(np.float32)
    w = rng.standard_normal((3, 2)).astype(np.float32)
    y, ctx = ops.dense(x, w, backend="auto")
    assert isinstance(y, np.ndarray)
    assert not ctx.backend.IS_GPU


def test_environment_variable_sets_the_default():
    done = run_python("import tinynet; print(tinynet.get_backend())", TINYNET_BACKEND="numpy")
    assert done.stdout.strip() == "numpy"
    done = run_python("import tinynet; print(tinynet.get_backend())", TINYNET_BACKEND="")
    assert done.stdout.strip() == "auto", done.stderr         # `TINYNET_BACKEND= cmd`
    done = run_python("import numpy as np, tinynet\n"
                      "tinynet.ops.dense(np.ones((1, 1)), np.ones((1, 1)))",
                      TINYNET_BACKEND="nonsense")
    assert done.returncode != 0
    assert "TINYNET_BACKEND='nonsense' is not a tinynet backend" in done.stderr


def test_set_backend_and_use_backend_nest():
    before = tinynet.get_backend()
    try:
        tinynet.set_backend("numpy")
        assert tinynet.get_backend() == "numpy"
        with tinynet.use_backend("auto"):
            assert tinynet.get_backend() == "auto"
            with tinynet.use_backend("numpy"):
                assert tinynet.get_backend() == "numpy"
            assert tinynet.get_backend() == "auto"
        assert tinynet.get_backend() == "numpy"
    finally:
        tinynet.set_backend(before)


def test_use_backend_is_per_thread():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def worker():
        with tinynet.use_backend("numpy"):
            seen["worker inside"] = tinynet.get_backend()
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    with tinynet.use_backend("auto"):
        thread.start()
        inside.wait(5)
        seen["main while worker inside"] = tinynet.get_backend()
        release.set()
        thread.join()
    assert seen == {"worker inside": "numpy", "main while worker inside": "auto"}


def test_unknown_names_raise_value_error_listing_known_ones():
    expected = (r"'cuda' is not a tinynet backend; known backends: "
                r"'numpy', 'numba-cpu', 'numba-cuda', 'cupy', 'auto'")
    with pytest.raises(ValueError, match=expected):
        tinynet.set_backend("cuda")
    with pytest.raises(ValueError, match=expected):
        with tinynet.use_backend("cuda"):
            pass


def test_unusable_backend_raises_runtime_error_saying_why():
    unusable = [(name, reason) for name, usable, reason in _dispatch.status() if not usable]
    if not unusable:
        pytest.skip("every backend is usable on this machine")
    name, reason = unusable[0]
    with pytest.raises(RuntimeError, match=rf"tinynet backend '{name}' is not usable here: ") as info:
        ops.dense(np.ones((1, 1)), np.ones((1, 1)), backend=name)
    assert reason in str(info.value)
    with pytest.raises(RuntimeError, match="not usable here"):
        tinynet.set_backend(name)


def test_numpy_backend_refuses_device_arrays():
    class FakeDeviceArray:
        __cuda_array_interface__ = {"shape": (1, 1), "typestr": "<f4", "data": (0, False),
                                    "version": 3}

    with pytest.raises(ValueError, match=r"numpy backend takes host arrays.*tinynet.to_numpy"):
        ops.dense(FakeDeviceArray(), np.ones((1, 1), np.float32), backend="numpy")


def test_backward_uses_the_forward_backend_whatever_the_default(rng):
    x = rng.standard_normal((4, 3))
    w = rng.standard_normal((3, 2))
    _, ctx = ops.dense(x, w, backend="numpy")
    with tinynet.use_backend("auto"):
        dx, dw, db = ops.dense_backward(ctx, np.ones((4, 2)))
    assert ctx.backend.NAME == "numpy" and db is None
    np.testing.assert_allclose(dx, np.ones((4, 2)) @ w.T)


def test_info_command_reports_every_backend():
    done = subprocess.run([sys.executable, "-m", "tinynet", "info"], capture_output=True,
                          text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    assert f"tinynet {tinynet.__version__}" in done.stdout
    for name, usable, reason in _dispatch.status():
        line = next(l for l in done.stdout.splitlines() if l.strip().startswith(name + " "))
        assert ("usable" in line) and (usable == ("not usable" not in line))
    assert "devices:" in done.stdout
