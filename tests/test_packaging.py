"""A plain (non-editable) install works and ships the kernels: build the wheel from this
checkout, install it into an empty folder, and use it from outside the checkout.

pip runs with PIP_NO_INDEX=1: no package index is reachable where the GPU tests run, so the
build must use the setuptools installed beside the tests (--no-build-isolation) rather than
download one into an isolated build environment."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_finds_the_kernels(tmp_path):
    offline = {**os.environ, "PIP_NO_INDEX": "1"}
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                           capture_output=True, text=True, env=offline)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("tinynet-*.whl")
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--target", str(target), str(wheel)], capture_output=True, text=True,
                             env=offline)
    assert install.returncode == 0, install.stderr

    kernel_sources = sorted(p.relative_to(REPO / "kernels").as_posix()
                            for p in (REPO / "kernels").rglob("*")
                            if p.suffix in (".py", ".cu", ".cuh") and "__pycache__" not in p.parts)
    check = (
        "import sys, pathlib, numpy as np, tinynet\n"
        "import tinynet.kernels, tinynet.bench\n"
        f"assert pathlib.Path(tinynet.__file__).is_relative_to({str(target)!r}), tinynet.__file__\n"
        "root = pathlib.Path(tinynet.kernels.__file__).parent\n"
        f"missing = [k for k in {kernel_sources!r} if not (root / k).is_file()]\n"
        "assert not missing, missing\n"
        "y, ctx = tinynet.ops.dense(np.ones((2, 3)), np.ones((3, 1)), activation='tanh',\n"
        "                           backend='numpy')\n"
        "assert np.allclose(y, np.tanh(3.0)), y\n"
        "print('ok', len(missing))\n")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok 0"
    assert len(kernel_sources) >= 2
