"""python -m tinynet info | compile | bench"""

import argparse
import sys


def _info(_args):
    import platform

    import numpy as np

    import tinynet
    from tinynet._dispatch import status

    print(f"tinynet {tinynet.__version__}  (Python {platform.python_version()}, "
          f"NumPy {np.__version__}, {platform.machine()})")
    print(f"default backend: {tinynet.get_backend()}")
    print("backends:")
    for name, usable, reason in status():
        print(f"  {name:<11} {'usable' if usable else 'not usable: ' + reason}")
    print("devices:")
    for line in _devices():
        print(f"  {line}")
    return 0


def _devices():
    """CUDA devices as the driver reports them, or why there are none."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return ["none found (cuda-bindings is not installed, so the driver was not asked)"]
    try:
        (error,) = driver.cuInit(0)
    except Exception as missing:       # the driver library itself is absent
        return [f"none found (no NVIDIA driver: {type(missing).__name__})"]
    if error != driver.CUresult.CUDA_SUCCESS:
        return [f"none found ({error.name})"]
    _, count = driver.cuDeviceGetCount()
    lines = []
    for index in range(count):
        _, device = driver.cuDeviceGet(index)
        _, name = driver.cuDeviceGetName(64, device)
        _, major = driver.cuDeviceGetAttribute(
            driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
        _, minor = driver.cuDeviceGetAttribute(
            driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
        _, memory = driver.cuDeviceTotalMem(device)
        name = name.split(b"\0")[0].decode()
        lines.append(f"cuda:{index} {name} sm_{major}{minor} "
                     f"{memory / 2**30:.0f} GiB")
    return lines or ["none found (the driver reports 0 CUDA devices)"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinynet")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, backends usable here and why not, devices")
    compile_parser = commands.add_parser(
        "compile", help="compile every GPU kernel for an architecture, no GPU needed")
    compile_parser.add_argument("--arch", default="sm_90")
    compile_parser.add_argument("--json", action="store_true", help="print a JSON list")
    compile_parser.add_argument("--family", choices=("numba-cuda", "cupy"), action="append",
                                help="only this kernel family (repeatable; default: both)")
    commands.add_parser("bench", add_help=False,
                        help="benchmarks side by side (python -m tinynet bench --help)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from tinynet.bench.run import main as bench_main
        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"info": _info, "compile": _compile}[args.command](args)


def _compile(args):
    from tinynet._compile import main
    return main(args)


if __name__ == "__main__":
    sys.exit(main())
