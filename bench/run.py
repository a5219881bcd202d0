"""python -m tinynet bench [--suite cpu|stack|gpu|all] [--quick] [--json PATH] [--plot PATH]

Side-by-side benchmarks: every usable tinynet backend beside handwritten NumPy and PyTorch
(when installed), median of repeats after warm-up, each row with its floor (counted FLOPs
over a GEMM peak and bytes over a copy bandwidth, both measured in the same run) and its
speedup over every peer. A markdown report goes to stdout, progress to stderr.

    --suite cpu   the seed workloads S1, S4, S7 and the per-call overhead (bench/cpu_suite.py)
    --suite stack S7 trained for many models at once on the CPU, against one model at a time,
                  PyTorch (batched bmm) and JAX (vmap), when installed (bench/stack_suite.py)
    --suite gpu   S7 stack, per-step host time, dense, lstm and launch overhead on the GPU
                  (bench/gpu_suite.py); exits 2
                  with the reason where there is no GPU
    --suite all   all three; the GPU part is skipped, with the reason, where there is no GPU
    --quick       fewer repeats and sizes (the CPU suite in about a minute on 2 cores)
    --json PATH   everything as JSON: device, date, commit, load average, versions, peaks,
                  bench (the rows), targets, skipped, errors (keys: bench/results/README.md)
    --plot PATH   a PNG, one panel per workload; needs matplotlib (optional, never required:
                  without it the plot is skipped with a warning)

TINYNET_BENCH_SMOKE=1 cuts repeats and sizes to a few seconds in all (for the tests; the
numbers then mean nothing). TINYNET_COMMIT=<sha> names the commit where git cannot (a copy
of the tree without .git). Exit status: 0, 1 if a measurement failed (the rest still runs
and is reported), 2 if the GPU suite was asked for and cannot run.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import tinynet
from tinynet.bench import cpu_suite, gpu_suite, peaks, report, stack_suite, timing


def _git(*args):
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit():
    """(commit, dirty): TINYNET_COMMIT if set, else git's HEAD; dirty is whether tracked
    files differ from it (None where git cannot tell)."""
    named = os.environ.get("TINYNET_COMMIT")
    if named:
        return named, None
    head = _git("rev-parse", "HEAD")
    if head is None:
        return None, None
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return head, None if changes is None else bool(changes)


def load_average():
    """The 1-minute load average, where the system reports one (else None)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# the widest SIMD extension a CPU reports (/proc/cpuinfo flags), first match: machines sold
# under one name differ in it, and the CPU kernels' speed follows it
SIMD_FLAGS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


def cpu_name():
    """The CPU's model name, logical core count and widest SIMD extension (where the system
    says), e.g. 'AMD EPYC, 2 logical cores, AVX2'."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return describe_cpu(text, platform.processor() or platform.machine(), os.cpu_count())


def describe_cpu(cpuinfo, fallback_name, cores):
    """cpu_name() from the text of /proc/cpuinfo (its first processor's model name and
    flags; fallback_name where it has no model name)."""
    name, flags = fallback_name, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    simd = next((label for flag, label in SIMD_FLAGS if flag in flags), None)
    return f"{name}, {cores} logical cores" + (f", {simd}" if simd else "")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinynet bench",
                                     description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("cpu", "stack", "gpu", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot (needs matplotlib)")
    args = parser.parse_args(argv)

    def log(text):
        print(text, file=sys.stderr, flush=True)

    mode = timing.mode(args.quick)
    head, dirty = commit()
    doc = {"schema": 1, "tinynet": tinynet.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": head, "dirty": dirty, "mode": mode,
           "device": {"machine": f"{platform.system()} {platform.machine()}",
                      "cores": os.cpu_count()},
           "load_average": {"start": load_average()},
           "versions": {"python": platform.python_version()}, "suites": [], "peaks": {},
           "skipped": {}, "bench": [], "targets": [], "errors": []}

    busy = doc["load_average"]["start"]
    if busy is not None and busy > (os.cpu_count() or 1):
        log(f"warning: the machine is busy (load average {busy} on {os.cpu_count()} logical "
            "cores): CPU figures will not be representative, multithreaded BLAS and PyTorch "
            "suffer most")
    if args.suite in ("gpu", "all"):
        reason = gpu_suite.unavailable_reason()
        if reason is not None and args.suite == "gpu":
            print(f"python -m tinynet bench: the GPU suite cannot run here: {reason}",
                  file=sys.stderr)
            return 2
        if reason is not None:
            doc["skipped"]["gpu"] = reason
            log(f"gpu suite skipped: {reason}")
    if args.suite in ("cpu", "all"):
        log(f"cpu suite ({mode}): peaks (GEMM, copy)")
        doc["device"]["cpu"] = cpu_name()
        doc["versions"].update(cpu_suite.versions())
        doc["peaks"]["cpu"] = peaks.cpu_peaks(mode)
        doc["bench"] += cpu_suite.rows(mode, doc["peaks"]["cpu"], doc["errors"], log)
        doc["suites"].append("cpu")
    if args.suite in ("stack", "all"):
        log(f"stack suite ({mode})")
        if "cpu" not in doc["peaks"]:
            doc["device"]["cpu"] = cpu_name()
            doc["versions"].update(cpu_suite.versions())
            doc["peaks"]["cpu"] = peaks.cpu_peaks(mode)
        doc["versions"].update(stack_suite.versions())
        backends = [name for name in cpu_suite.overhead.cpu_backends() if name != "auto"]
        doc["bench"] += stack_suite.rows(backends, mode, doc["peaks"]["cpu"], doc["errors"], log)
        doc["suites"].append("stack")
    if args.suite in ("gpu", "all") and "gpu" not in doc["skipped"]:
        log(f"gpu suite ({mode})")
        doc["suites"].append("gpu")
        try:
            gpu_suite.run(doc, mode, log)
        except KeyboardInterrupt:      # bench/gpu_check.sh's stage timeout sends SIGINT
            doc["errors"].append({"where": "gpu suite", "error": "interrupted (Ctrl-C or "
                                  "SIGINT from a timeout): only the rows measured so far"})
            log("gpu suite interrupted: reporting the rows measured so far")

    doc["load_average"]["end"] = load_average()
    report.add_ratios(doc["bench"])
    doc["targets"] = report.targets(doc["bench"])
    print(report.markdown(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {args.json}")
    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            log(f"--plot {args.plot}: matplotlib is not installed, so no plot was written "
                "(it is optional: pip install matplotlib)")
        elif doc["bench"]:
            report.plot(doc["bench"], args.plot)
            log(f"wrote {args.plot}")
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
