"""The two ceilings every floor is measured against, taken in the same run as the rows:
a large float32 GEMM (FLOP/s) and a large copy (bytes/s, counting bytes read plus written)."""

import os

import numpy as np

from tinynet.bench import timing

GEMM_SIZE = {"full": 2048, "quick": 1024, "smoke": 128}             # CPU: n of an n^3 GEMM
COPY_MIB = {"full": 256, "quick": 64, "smoke": 4}
GPU_GEMM_SIZE = {"full": 8192, "quick": 4096, "smoke": 512}
GPU_COPY_MIB = {"full": 2048, "quick": 512, "smoke": 16}


def cpu_peaks(mode):
    rng = np.random.default_rng(1)
    n = GEMM_SIZE[mode]
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    c = np.empty((n, n), np.float32)
    repeats = 3 if mode == "smoke" else 5
    (gemm_s,), _ = timing.seconds_per_call(timing.cpu_block(lambda: np.matmul(a, b, out=c)),
                                           repeats=repeats, min_block_s=0.0)
    src = rng.standard_normal(COPY_MIB[mode] * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    (copy_s,), _ = timing.seconds_per_call(timing.cpu_block(lambda: np.copyto(dst, src)),
                                           repeats=repeats, min_block_s=0.0)
    return {"flops_per_s": 2 * n**3 / gemm_s,
            "flops_what": f"float32 GEMM {n}^3 (np.matmul)",
            "bytes_per_s": 2 * src.nbytes / copy_s,
            "bytes_what": f"copy of {COPY_MIB[mode]} MiB (np.copyto)"}


def _gpu_seconds(clock, call, repeats):
    (seconds, _), _ = timing.seconds_per_call(clock.block(call, lambda k: [()] * k),
                                              repeats=repeats, min_block_s=0.0)
    return seconds


def _gpu_gemm_seconds(cupy, clock, n, repeats):
    a, b = (cupy.random.standard_normal((n, n), dtype=cupy.float32) for _ in range(2))
    c = cupy.empty((n, n), cupy.float32)
    return _gpu_seconds(clock, lambda: cupy.matmul(a, b, out=c), repeats)


def _gpu_copy_seconds(cupy, clock, nbytes, repeats):
    src = cupy.random.standard_normal(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    return _gpu_seconds(clock, lambda: cupy.copyto(dst, src), repeats)


def gpu_peaks(cupy, clock, mode):
    n, nbytes = GPU_GEMM_SIZE[mode], GPU_COPY_MIB[mode] * 2**20
    repeats = 3 if mode == "smoke" else 5
    gemm_s = _gpu_gemm_seconds(cupy, clock, n, repeats)
    copy_s = _gpu_copy_seconds(cupy, clock, nbytes, repeats)
    cupy.get_default_memory_pool().free_all_blocks()
    tf32 = "on" if os.environ.get("CUPY_TF32") == "1" else "off"
    return {"flops_per_s": 2 * n**3 / gemm_s,
            "flops_what": f"float32 GEMM {n}^3 (cupy.matmul: cuBLAS, TF32 {tf32})",
            "bytes_per_s": 2 * nbytes / copy_s,
            "bytes_what": f"device copy of {GPU_COPY_MIB[mode]} MiB (cupy.copyto)"}
