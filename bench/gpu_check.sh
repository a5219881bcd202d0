#!/usr/bin/env bash
# bench/gpu_check.sh: the GPU tests and the GPU benchmarks in one prepared run on a machine
# with an NVIDIA GPU (the H200 lent through the `device` tool), in 7.5 minutes at most when
# every stage ends within its limit (worst cases below).
#
# How to run it through the device tool (from the session whose checkout this is):
#
#   run(command="TINYNET_COMMIT=<sha> bash bench/gpu_check.sh", timeout_s=600)
#
# with <sha> pasted from `git rev-parse HEAD` here (the command runs there, so no $(...)).
# carry: nothing (see "missing packages" below for the one case that needs carry=[".whl"]).
# TINYNET_COMMIT names the commit because the copied tree may come without .git (git is
# asked only when it is unset); commit or note your local changes first, the results say
# which code they measured. The reply's files (at most 8, under files_at):
#   <date>-<gpu>.json   device, date, commit, tests {passed, failed, errors, skipped},
#                       bench [rows], peaks, targets, errors  -> copy into bench/results/
#   setup.log tests.log tests.xml bench.md bench.log bench.png    the logs and the plot
# and the end of its output is a summary (tests, targets, errors).
# By hand on any CUDA machine: OUT=/some/folder bash bench/gpu_check.sh
#
# What it uses there -- it installs nothing over the network (the device machine has none):
# the image's python3 (/opt/torch/.venv/bin/python3 on the H200 image) with numpy, numba,
# numba-cuda, cupy-cuda13x, torch, pytest, hypothesis, setuptools and matplotlib, all on the
# H200 image's package list (/work/.library/device/KINDS.md, read 2026-11-17); tinynet itself
# is installed editable from this tree with pip --no-index --no-deps --no-build-isolation.
# Missing packages: if one of those is missing or too old there, download its wheel here
# into .whl/ (git-ignored: `echo /.whl/ >> .git/info/exclude`; the pip download command is in
# /work/.library/device/README.md) and add carry=[".whl"]; .whl/*.whl is then installed
# into /tmp/wheels and put first on PYTHONPATH.
#
# Stages, each under a hard timeout (SIGINT first, so that pytest and the bench still
# write what they have; SIGKILL 15 s later). Their limits add up to 450 s; at the very worst
# (every stage killed 15 s after its limit) 510 s, and 565 s with carried wheels, hence the
# timeout_s=600 above (the device tool's per-call maximum):
#   setup   40 s + 40 s  versions, nvidia-smi, install; python -m tinynet info  -> setup.log
#           (+ 40 s      installing carried wheels, when .whl/ is there)
#   tests   220 s        TINYNET_GPU_TESTS=1 python3 -m pytest tests -q       -> tests.log/xml
#   bench   150 s        python3 -m tinynet bench --suite gpu                 -> bench.md/log/png
# then bench/collect.py writes $OUT/<date>-<gpu>.json (a bench cut short keeps its rows so
# far). Exit status 0 when tests and bench both passed, else 1.

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

echo "== setup"
{
    echo "== $(date -u '+%F %T') UTC, $(hostname), TINYNET_COMMIT=${TINYNET_COMMIT:-unset}"
    nvidia-smi
    "$PYTHON" --version
    "$PYTHON" -m pip list 2>/dev/null | grep -i -E -e '^(numpy|numba|numba-cuda|cupy-cuda.*) ' \
        -e '^(cuda-bindings|torch|pytest|hypothesis|matplotlib|setuptools) '
    if [ -d .whl ]; then
        echo "== carried wheels: $(ls .whl)"
        staged 40 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
            --no-cache-dir --upgrade --target /tmp/wheels .whl/*.whl
        export PYTHONPATH=/tmp/wheels
    fi
    echo "== install tinynet (editable, no network)"
    staged 40 "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e .
    echo "== python -m tinynet info"
    staged 40 "$PYTHON" -m tinynet info
} > "$OUT/setup.log" 2>&1
tail -n 12 "$OUT/setup.log"

echo "== tests (at most 220 s)"
TINYNET_GPU_TESTS=1 staged 220 "$PYTHON" -m pytest tests -q -p no:cacheprovider \
    --junitxml="$OUT/tests.xml" > "$OUT/tests.log" 2>&1
TESTS_STATUS=$?
tail -n 15 "$OUT/tests.log"

echo "== bench (at most 150 s)"
staged 150 "$PYTHON" -m tinynet bench --suite gpu --json "$BENCH_JSON" \
    --plot "$OUT/bench.png" > "$OUT/bench.md" 2> "$OUT/bench.log"
BENCH_STATUS=$?
sed -n '/^## Targets/,$p' "$OUT/bench.md"
tail -n 5 "$OUT/bench.log"

echo "== result (tests exit $TESTS_STATUS, bench exit $BENCH_STATUS)"
"$PYTHON" bench/collect.py "$OUT" "$SLUG" "$DATE" "$TESTS_STATUS" "$BENCH_STATUS" "$BENCH_JSON"
[ "$TESTS_STATUS" -eq 0 ] && [ "$BENCH_STATUS" -eq 0 ]
