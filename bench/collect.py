"""Assemble the result file of bench/gpu_check.sh: OUT/<date>-<gpu>.json with

    device, date, commit        from the bench JSON (else from the arguments and git)
    tests                       {passed, failed, errors, skipped, exit_status} from pytest's
                                JUnit XML (null counts, and a note, where there is none)
    bench                       the rows of `python -m tinynet bench --json` (bench/report.py)
    bench_exit_status, logs     the bench's exit status; the log files written beside
    ...                         everything else of the bench JSON (peaks, targets, errors, ...)

Standard library only, so that it runs even where installing tinynet failed.

    python bench/collect.py OUT GPU_SLUG DATE TESTS_STATUS BENCH_STATUS BENCH_JSON
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def test_counts(junit_xml, exit_status):
    counts = {"passed": None, "failed": None, "errors": None, "skipped": None,
              "exit_status": exit_status}
    try:
        root = ElementTree.parse(junit_xml).getroot()
    except (OSError, ElementTree.ParseError) as error:
        counts["note"] = f"no JUnit XML from pytest ({type(error).__name__}: {error})"
        return counts
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {key: sum(int(s.get(key, 0)) for s in suites)
             for key in ("tests", "failures", "errors", "skipped")}
    counts.update(passed=total["tests"] - total["failures"] - total["errors"] - total["skipped"],
                  failed=total["failures"], errors=total["errors"], skipped=total["skipped"])
    return counts


def _git_head():
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def collect(out, gpu_slug, date, tests_status, bench_status, bench_json):
    out = Path(out)
    try:
        bench = json.loads(Path(bench_json).read_text())
    except (OSError, ValueError) as error:
        bench = {"bench": [], "errors": [{"where": "bench",
                                          "error": f"no bench JSON ({type(error).__name__}: "
                                                   f"{error}); see bench.log"}]}
    result = {"device": bench.pop("device", {"gpu_name": gpu_slug}),
              "date": bench.pop("date", date),
              "commit": bench.pop("commit", os.environ.get("TINYNET_COMMIT") or _git_head()),
              "tests": test_counts(out / "tests.xml", tests_status),
              "bench": bench.pop("bench", []),
              "bench_exit_status": bench_status,
              "logs": sorted(p.name for p in out.iterdir() if p.suffix in (".log", ".md"))}
    result.update(bench)
    path = out / f"{date}-{gpu_slug}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path, result


def main(argv):
    out, gpu_slug, date, tests_status, bench_status, bench_json = argv
    path, result = collect(out, gpu_slug, date, int(tests_status), int(bench_status),
                           bench_json)
    tests = result["tests"]
    print(f"wrote {path}: tests passed {tests['passed']}, failed {tests['failed']}, "
          f"errors {tests['errors']}, skipped {tests['skipped']}; {len(result['bench'])} bench "
          f"rows, {len(result.get('errors', []))} bench errors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
