"""Test setup shared by every test file.

Numba's CUDA simulator must be switched on before Numba is first imported, so it is set
here, at collection, for the whole run: numba-cuda kernels then run on the CPU, one Python
thread per CUDA thread. On a machine with a GPU, TINYNET_GPU_TESTS=1 leaves it off so the
same tests run on the device (bench/gpu_check.sh does this). The sm_90 compile check needs
the real CUDA target and runs in a subprocess without the simulator.
"""

import os
import zlib

if os.environ.get("TINYNET_GPU_TESTS") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np
import pytest

from tinynet._dispatch import status

BACKENDS = [name for name, usable, _ in status()]
USABLE = {name: usable for name, usable, _ in status()}
WHY = {name: reason for name, _, reason in status()}
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def backend_param(name):
    """A pytest param for a backend that skips, with the reason, where it is not usable."""
    marks = [] if USABLE[name] else [pytest.mark.skip(reason=f"{name} not usable: {WHY[name]}")]
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture
def rng(request):
    # Fresh inputs in every test, reproducible: the seed is a checksum of the test's id.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
