"""Ahead-of-time compilation of every GPU kernel for a real architecture, without a GPU.

    python -m tinynet compile --arch sm_90 [--json] [--family numba-cuda|cupy]

numba-cuda: each kernel of kernels/numba_cuda (listed by its compile_targets()) goes
    through Numba's compile_ptx, then nvJitLink (-verbose) assembles the PTX for the
    architecture and reports ptxas' resource use.
cupy: each kernels/cuda/*.cu file goes through NVRTC with -Xptxas=-v, exactly as CuPy
    would compile it at run time, and every extern "C" entry point is reported.

Both report, per kernel: registers, static shared bytes, local (stack) bytes and spill
stores. A compile error is reported and makes the command exit non-zero.
"""

import re
import types
from pathlib import Path


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_REGISTERS = re.compile(r"[Uu]sed (\d+) registers")   # ptxas: "Used", nvJitLink: "used"
_SMEM = re.compile(r"(\d+) bytes smem")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores")


def parse_ptxas_log(log):
    """{entry name: {registers, shared_bytes, local_bytes, spill_bytes}} from ptxas -v text."""
    found = {}
    current = None
    for line in log.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            current = found.setdefault(entry.group(1), {"registers": 0, "shared_bytes": 0,
                                                        "local_bytes": 0, "spill_bytes": 0})
            continue
        if current is None:
            continue
        stack = _STACK.search(line)
        if stack:
            current["local_bytes"] = int(stack.group(1))
            current["spill_bytes"] = int(stack.group(2))
        registers = _REGISTERS.search(line)
        if registers:
            current["registers"] = int(registers.group(1))
            smem = _SMEM.search(line)
            current["shared_bytes"] = int(smem.group(1)) if smem else 0
    return found


def _allow_device_functions_without_a_gpu(cc):
    """Numba-CUDA compiles a kernel's device functions for the *current device's* compute
    capability (dispatcher.compile_device asks get_current_device()), which needs a driver.
    For ahead-of-time checks there is no device: answer with the target architecture. This
    is used by this command only, never by the library at run time."""
    from numba.cuda import dispatcher
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)


def compile_numba(arch):
    from cuda.bindings import nvjitlink
    from numba import cuda

    from tinynet.kernels.numba_cuda import compile_targets

    cc = (int(arch[3:-1]), int(arch[-1]))
    _allow_device_functions_without_a_gpu(cc)
    rows = []
    for name, pyfunc, argtypes in compile_targets():
        row = {"family": "numba-cuda", "kernel": name, "arch": arch}
        try:
            ptx, _ = cuda.compile_ptx(pyfunc, argtypes, cc=cc)
            linker = nvjitlink.create(2, [f"-arch={arch}", "-verbose"])
            data = ptx.encode()
            nvjitlink.add_data(linker, nvjitlink.InputType.PTX, data, len(data), name)
            nvjitlink.complete(linker)
            log = bytearray(nvjitlink.get_info_log_size(linker))
            nvjitlink.get_info_log(linker, log)
            nvjitlink.destroy(linker)
            (usage,) = parse_ptxas_log(log.decode(errors="replace")).values()
            row.update(usage)
        except Exception as error:   # reported per kernel; the command then exits non-zero
            row["error"] = f"{type(error).__name__}: {error}"
        rows.append(row)
    return rows


def compile_cuda_c(arch):
    from cuda.bindings import nvrtc

    import tinynet.kernels

    sources = Path(tinynet.kernels.__file__).parent / "cuda"
    rows = []
    for source in sorted(sources.glob("*.cu")):
        program_rows = []
        err, program = nvrtc.nvrtcCreateProgram(source.read_bytes(), source.name.encode(),
                                                0, [], [])
        options = [f"--gpu-architecture={arch}".encode(), b"-Xptxas=-v", b"--std=c++17",
                   f"--include-path={sources}".encode()]
        (err,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        _, size = nvrtc.nvrtcGetProgramLogSize(program)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(program, log)
        nvrtc.nvrtcDestroyProgram(program)
        text = log.decode(errors="replace").rstrip("\x00")
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            rows.append({"family": "cupy", "kernel": source.name, "arch": arch,
                         "error": text.strip() or str(err)})
            continue
        for name, usage in parse_ptxas_log(text).items():
            program_rows.append({"family": "cupy", "kernel": f"{source.stem}:{name}",
                                 "arch": arch, **usage})
        if not program_rows:
            program_rows.append({"family": "cupy", "kernel": source.name, "arch": arch,
                                 "error": "no extern \"C\" __global__ entry point found"})
        rows.extend(program_rows)
    return rows


FAMILIES = {"numba-cuda": compile_numba, "cupy": compile_cuda_c}


def compile_all(arch, families=tuple(FAMILIES)):
    rows = []
    for family in families:
        try:
            rows.extend(FAMILIES[family](arch))
        except ImportError as error:
            rows.append({"family": family, "kernel": "*", "arch": arch,
                         "error": f"cannot compile without {error.name}: "
                                  "pip install 'tinynet[test]'"})
    return rows


def main(args):
    import json

    if not re.fullmatch(r"sm_\d{2,3}", args.arch):
        raise SystemExit(f"--arch must look like sm_90, got {args.arch!r}")
    rows = compile_all(args.arch, tuple(args.family or FAMILIES))
    failed = [row for row in rows if "error" in row]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'family':<11} {'kernel':<44} {'arch':<6} {'regs':>5} {'shared B':>9} "
              f"{'local B':>8} {'spill B':>8}")
        for row in rows:
            if "error" in row:
                print(f"{row['family']:<11} {row['kernel']:<44} {row['arch']:<6} "
                      f"FAILED: {row['error']}")
            else:
                print(f"{row['family']:<11} {row['kernel']:<44} {row['arch']:<6} "
                      f"{row['registers']:>5} {row['shared_bytes']:>9} {row['local_bytes']:>8} "
                      f"{row['spill_bytes']:>8}")
        print(f"{len(rows) - len(failed)} kernels compiled, {len(failed)} failed")
    return 1 if failed or not rows else 0
