#!/usr/bin/env bash
# bench/gpu_check.sh: the GPU tests and the GPU benchmarks of this checkout in one run, on a
# machine with an NVIDIA GPU, in 8 minutes at most, 9 with carried wheels (the stage limits
# below).
#
# Run it from anywhere, on the GPU machine:
#
#   OUT=/some/folder TINYNET_COMMIT=<sha> bash bench/gpu_check.sh
#
# OUT (default ./gpu_check_out) receives:
#   <date>-<gpu>.json   device, date, commit, tests {passed, failed, errors, skipped},
#                       bench [rows], peaks, targets, errors  -> copy into bench/results/
#   setup.log tests.log tests.xml bench.md bench.log bench.png    the logs and the plot
# and the end of its output is a summary (tests, targets, errors). TINYNET_COMMIT names the
# commit the results measured where the checkout has no .git (git is asked when it is
# unset); commit local changes first, so that the results name the code they measured.
#
# What it needs there. No network: nothing is downloaded.
#   - an NVIDIA GPU and its driver (nvidia-smi);
#   - python3 (or PYTHON=/path/to/python) with numpy, numba, numba-cuda, cupy (cupy-cuda13x
#     for a CUDA 13 driver, cupy-cuda12x for 12), pytest, pytest-xdist, hypothesis and
#     setuptools; torch (the PyTorch peer rows and tests) and matplotlib (bench.png) are
#     optional. Without pytest-xdist the tests run in one process and will likely not
#     finish in their 190 s (setup.log says so).
#   - libNVVM for numba-cuda: from the pip wheels (cuda-toolkit[nvvm]) or from a system CUDA
#     toolkit; when CUDA_HOME is unset and /usr/local/cuda (or the toolkit of the nvcc on
#     PATH) has nvvm/, CUDA_HOME is pointed at it.
#   tinynet itself is installed editable from this checkout (pip --no-index --no-deps
#   --no-build-isolation). A package missing or too old there can be brought as wheels in
#   .whl/ (keep it out of git): .whl/*.whl are installed into /tmp/wheels, which goes first
#   on PYTHONPATH.
#
# Stages, each under a hard timeout (SIGINT first, so that pytest and the bench still
# write what they have; SIGKILL 15 s later). Their limits add up to 420 s; at the very worst
# (every stage killed 15 s after its limit) 480 s, and 525 s with carried wheels:
#   setup   30 s + 30 s  versions, nvidia-smi, install; python -m tinynet info  -> setup.log
#           (+ 30 s      installing carried wheels, when .whl/ is there)
#   tests   190 s        TINYNET_GPU_TESTS=1 python3 -m pytest tests -n 16 --dist worksteal
#                        (every test file, the stack tests included)   -> tests.log/xml
#   bench   170 s        python3 -m tinynet bench --suite gpu: the S7 stack at M = 10,000
#                        and the per-step host rows first, then dense, lstm, launch overhead
#                                                                       -> bench.md/log/png
# then bench/collect.py writes $OUT/<date>-<gpu>.json (a bench cut short keeps its rows so
# far). Exit status 0 when tests and bench both passed, else 1.
#
# The tests stage, planned. Its CPU-side part (the same command on a machine without a GPU,
# every GPU test skipped) took 252 s in one process on a shared 2-core machine: 126 s of
# CPU, 420 tests run, 243 skipped, the longest test 24 s (the sm_90 compile check). On 16
# workers that is 10 to 30 s. Each worker also compiles the numba-cuda kernels its tests
# use, about 1.2 s of CPU each (`python -m tinynet compile --arch sm_90 --family numba-cuda`:
# 26 kernels, 31 s of CPU); worksteal first hands each worker a contiguous run of tests, so
# that a file's tests, and their kernels, stay on few workers. Expected 60 to 100 s in all,
# against the 190 s limit; tests.log ends with the 25 slowest tests.

set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
DATE=$(date -u +%Y-%m-%d)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
SLUG=$(printf '%s' "${GPU:-unknown-gpu}" | tr '[:upper:] ' '[:lower:]-' | tr -cd 'a-z0-9.-')
BENCH_JSON=/tmp/tinynet-gpu-bench.json
rm -f "$BENCH_JSON"

# A stage's command: under `timeout`, with SIGINT restored to its default (a shell that
# runs us in the background may pass it on ignored, and Python would then never see it).
staged() {
    local seconds=$1
    shift
    timeout -s INT -k 15 "$seconds" env --default-signal=INT "$@"
}

# numba-cuda finds libNVVM in the pip wheels first, then through CUDA_HOME: point it at a
# system toolkit that has one, when it is unset (CuPy looks in /usr/local/cuda by itself).
if [ -z "${CUDA_HOME:-}" ]; then
    NVCC=$(command -v nvcc 2>/dev/null)
    for toolkit in /usr/local/cuda ${NVCC:+"$(dirname "$(dirname "$NVCC")")"}; do
        if [ -d "$toolkit/nvvm" ]; then
            export CUDA_HOME=$toolkit
            break
        fi
    done
fi

echo "== setup"
{
    echo "== $(date -u '+%F %T') UTC, $(hostname), TINYNET_COMMIT=${TINYNET_COMMIT:-unset}"
    nvidia-smi
    "$PYTHON" --version
    "$PYTHON" -m pip list 2>/dev/null | grep -i -E -e '^(numpy|numba|numba-cuda|cupy-cuda.*) ' \
        -e '^(cuda-bindings|torch|pytest|pytest-xdist|hypothesis|matplotlib|setuptools) '
    echo "CUDA_HOME=${CUDA_HOME:-unset (numba-cuda uses the NVVM of the pip wheels)}"
    if [ -d .whl ]; then
        echo "== carried wheels: $(ls .whl)"
        staged 30 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
            --no-cache-dir --upgrade --target /tmp/wheels .whl/*.whl
        export PYTHONPATH=/tmp/wheels
    fi
    echo "== install tinynet (editable, no network)"
    staged 30 "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e .
    echo "== python -m tinynet info"
    staged 30 "$PYTHON" -m tinynet info
} > "$OUT/setup.log" 2>&1

# The tests run on 16 workers with pytest-xdist; worksteal (xdist 3.2 and later) keeps a
# file's tests together and still balances the end. Without xdist: one process, warned.
if "$PYTHON" -c "from xdist.scheduler import WorkStealingScheduling" 2>/dev/null; then
    PARALLEL=(-n 16 --dist worksteal)
elif "$PYTHON" -c "import xdist" 2>/dev/null; then
    PARALLEL=(-n 16)
else
    PARALLEL=()
    echo "WARNING: pytest-xdist is not installed: the tests run in one process and will" \
        "likely be cut off at 190 s" >> "$OUT/setup.log"
fi
tail -n 14 "$OUT/setup.log"

echo "== tests (at most 190 s; ${PARALLEL[*]:-one process})"
TINYNET_GPU_TESTS=1 staged 190 "$PYTHON" -m pytest tests -q -p no:cacheprovider \
    "${PARALLEL[@]}" --durations=25 --junitxml="$OUT/tests.xml" > "$OUT/tests.log" 2>&1
TESTS_STATUS=$?
tail -n 15 "$OUT/tests.log"

echo "== bench (at most 170 s)"
staged 170 "$PYTHON" -m tinynet bench --suite gpu --json "$BENCH_JSON" \
    --plot "$OUT/bench.png" > "$OUT/bench.md" 2> "$OUT/bench.log"
BENCH_STATUS=$?
sed -n '/^## Targets/,$p' "$OUT/bench.md"
tail -n 5 "$OUT/bench.log"

echo "== result (tests exit $TESTS_STATUS, bench exit $BENCH_STATUS)"
"$PYTHON" bench/collect.py "$OUT" "$SLUG" "$DATE" "$TESTS_STATUS" "$BENCH_STATUS" "$BENCH_JSON"
[ "$TESTS_STATUS" -eq 0 ] && [ "$BENCH_STATUS" -eq 0 ]
