"""Packaging that pyproject.toml cannot say alone: the kernel sources live in the top-level
kernels/ folder (beside tinynet/, where both GPU families can find them in a checkout) and
are shipped inside the installed package as tinynet.kernels, .cu files included; the
benchmarks in bench/ ship as tinynet.bench so that `python -m tinynet bench` works after a
plain install."""

from setuptools import setup

setup(
    packages=["tinynet", "tinynet.backends", "tinynet.nn", "tinynet.kernels",
              "tinynet.kernels.numba_cuda", "tinynet.kernels.numba_cpu", "tinynet.bench"],
    package_dir={"tinynet": "tinynet", "tinynet.kernels": "kernels", "tinynet.bench": "bench"},
    package_data={"tinynet.kernels": ["cuda/*.cu", "cuda/*.cuh"], "tinynet.bench": ["*.sh"]},
)
