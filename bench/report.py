"""Rows of measurements, ratios between peers, the markdown table, the targets, the plot.

A row is one implementation ("impl") of one workload at one size, timed in this run:

    suite, workload, size, per    what was timed ("per" says what one time covers)
    impl                          "tinynet:<backend>" through tinynet.ops; "direct:<backend>"
                                  the backend function without the ops layer; peers
                                  "numpy-hand", "numpy-bare", "blas-gemm", "torch-cpu",
                                  "torch-cuda"
    time_s, repeats               median seconds per `per`, and how many timed blocks
    flops, bytes                  counted work: FLOPs, and the fewest bytes that must move
                                  (each input read once, each output written once)
    gflops, gbs                   flops / time, bytes / time
    floor_flops_s, floor_bytes_s  flops / measured peak, bytes / measured bandwidth
    floor_s, bound, x_floor       the larger floor, which one it is, time / floor_s
    speedup_vs                    {peer impl: peer time / this time} for every other impl of
                                  the same workload and size (> 1: this one is faster)
"""

import math

import numpy as np


def make_row(suite, workload, size, per, impl, seconds, *, flops, bytes_moved, peaks,
             repeats, dtype="float32", **extra):
    if not seconds > 0:
        raise ValueError(f"{workload} {size} {impl}: measured {seconds} s; the timer saw no time")
    floor_flops = flops / peaks["flops_per_s"]
    floor_bytes = bytes_moved / peaks["bytes_per_s"]
    floor = max(floor_flops, floor_bytes)
    row = {"suite": suite, "workload": workload, "size": size, "per": per, "impl": impl,
           "dtype": dtype, "time_s": seconds, "repeats": repeats, "flops": flops,
           "bytes": bytes_moved, "gflops": flops / seconds / 1e9,
           "gbs": bytes_moved / seconds / 1e9, "floor_flops_s": floor_flops,
           "floor_bytes_s": floor_bytes, "floor_s": floor,
           "bound": "compute" if floor_flops >= floor_bytes else "memory",
           "x_floor": seconds / floor if floor > 0 else None}
    row.update(extra)
    return row


def error_recorder(errors, log, where):
    """on_error for timing.interleaved: a failed implementation is recorded in `errors` and
    logged (printed again at the end; exit status 1), and the run goes on."""
    def record(impl, error):
        errors.append({"where": f"{where} {impl}", "error": f"{type(error).__name__}: {error}"})
        log(f"  ERROR {where} {impl}: {type(error).__name__}: {error}")
    return record


def _group_key(row):
    return row["suite"], row["workload"], row["size"], row["per"]


def add_ratios(rows):
    """Set each row's speedup_vs: peer time / own time, for every other impl in its group."""
    groups = {}
    for row in rows:
        groups.setdefault(_group_key(row), []).append(row)
    for row in rows:
        row["speedup_vs"] = {peer["impl"]: peer["time_s"] / row["time_s"]
                             for peer in groups[_group_key(row)] if peer is not row}
    return rows


# --- formatting ------------------------------------------------------------------------

def fmt_time(seconds):
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _fmt_rate(row):
    if row["bound"] == "memory":
        return f"{row['gbs']:.3g} GB/s"
    return f"{row['gflops']:.3g} GFLOP/s"


def _fmt_ratios(row):
    return ", ".join(f"{ratio:.3g}x {peer}" for peer, ratio in row["speedup_vs"].items()) or "-"


def _table(rows):
    lines = ["| workload | size | per | impl | time | rate | floor | x floor | speedup vs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        time_text = fmt_time(row["time_s"])
        if "per_second" in row:
            time_text += f" ({row['per_second']:,.0f} {row['per']}s/s)"
        x_floor = "-" if row["x_floor"] is None else f"{row['x_floor']:.3g}"
        lines.append(f"| {row['workload']} | {row['size']} | {row['per']} | {row['impl']} | "
                     f"{time_text} | {_fmt_rate(row)} | {fmt_time(row['floor_s'])} "
                     f"({row['bound']}) | {x_floor} | {_fmt_ratios(row)} |")
    return lines


def overhead_table(rows):
    """Per op: the bare NumPy expression, then per backend the call through ops, the backend
    function called directly, the difference (the ops layer: validation and dispatch), and
    the ratio of the call through ops to the bare expression."""
    lines = ["| op (size) | bare NumPy | backend | via ops | backend fn | ops layer | "
             "via ops / bare |", "|---|---|---|---|---|---|---|"]
    by_size = {}
    for row in rows:
        by_size.setdefault(row["size"], {})[row["impl"]] = row
    for size, impls in by_size.items():
        bare = impls.get("numpy-bare")
        for impl, row in impls.items():
            if not impl.startswith("tinynet:"):
                continue
            backend = impl.split(":", 1)[1]
            direct = impls.get(f"direct:{backend}")
            layer = None if direct is None else row["time_s"] - direct["time_s"]
            ratio = "-" if bare is None else f"{row['time_s'] / bare['time_s']:.3g}"
            lines.append(f"| {size} | {fmt_time(bare and bare['time_s'])} | {backend} | "
                         f"{fmt_time(row['time_s'])} | {fmt_time(direct and direct['time_s'])}"
                         f" | {fmt_time(layer)} | {ratio} |")
    return lines


def markdown(doc):
    """The whole report: per suite the peaks, the table, the overhead table; then targets."""
    load = doc["load_average"]
    lines = [f"Load average (1 min) {load['start']} at the start, {load['end']} at the end, "
             f"{doc['device']['cores']} logical cores: a load above the core count means "
             "other processes shared the machine; ratios are taken side by side, absolute "
             "times suffer.", ""]
    for suite in doc["suites"]:
        machine = "cpu" if suite == "stack" else suite       # the stack suite runs on the CPU
        peaks = doc["peaks"].get(machine)
        rows = [row for row in doc["bench"] if row["suite"] == suite]
        lines += [f"## {suite.upper()} suite: {doc['device'].get(machine) or '?'}", ""]
        if peaks:
            lines += [f"Peaks measured in this run: {peaks['flops_what']} "
                      f"{peaks['flops_per_s'] / 1e9:.4g} GFLOP/s; {peaks['bytes_what']} "
                      f"{peaks['bytes_per_s'] / 1e9:.4g} GB/s (read + write).", ""]
        lines += _table([r for r in rows if r["workload"] != "overhead"])
        overhead = [r for r in rows if r["workload"] == "overhead"]
        if overhead:
            lines += ["", "Per-call overhead at the smallest sizes (median per call):", ""]
            lines += overhead_table(overhead)
        lines.append("")
    for suite, reason in doc["skipped"].items():
        lines += [f"## {suite.upper()} suite: skipped", "", reason, ""]
    if doc["targets"]:
        lines += ["## Targets", ""] + _target_lines(doc["targets"]) + [""]
        loads = [value for value in load.values() if value is not None]
        if {"cpu", "stack"} & set(doc["suites"]) and loads and max(loads) > doc["device"]["cores"]:
            lines += ["The load exceeded the core count during this run: the CPU verdicts "
                      "above are not reliable; measure again on a quiet machine.", ""]
    for error in doc["errors"]:
        lines.append(f"ERROR {error['where']}: {error['error']}")
    return "\n".join(lines)


# --- targets ---------------------------------------------------------------------------

def _target(found, text, row, value, goal, at_most=False):
    if value is None or not math.isfinite(value):
        return
    found.append({"target": text, "impl": row["impl"], "workload": row["workload"],
                  "size": row["size"], "value": value, "goal": goal,
                  "direction": "at most" if at_most else "at least",
                  "met": value <= goal if at_most else value >= goal})


def targets(rows):
    """The speed targets, evaluated on this run's rows."""
    found = []
    groups = {}
    for row in rows:
        groups.setdefault(_group_key(row), {})[row["impl"]] = row
    for impls in groups.values():
        for impl, row in impls.items():
            if not impl.startswith("tinynet:"):
                continue
            peers = row["speedup_vs"]
            workload = row["workload"]
            if workload == "S7 stack" and not impl.endswith("one at a time"):
                # one at a time on the same backend on a GPU; the fastest CPU path on a CPU
                alone = peers.get(f"{impl} one at a time",
                                  peers.get("tinynet:numba-cpu one at a time"))
                _target(found, "S7 stack per model-sequence >= 10x one model at a time", row,
                        alone, 10.0)
                _target(found, "S7 stack per model-sequence >= 40x PyTorch (batched bmm)", row,
                        peers.get("torch-cpu bmm", peers.get("torch-cuda bmm")), 40.0)
                _target(found, "S7 stack per model-sequence >= 5x JAX (vmap, jit)", row,
                        peers.get("jax-cpu vmap"), 5.0)
            elif workload == "S7 online LSTM":
                _target(found, "S7 online LSTM training >= 20x PyTorch nn.LSTM sequences/s",
                        row, peers.get("torch-cpu"), 20.0)
            elif workload == "S4 MLP step":
                _target(found, "S4 MLP training step >= 1.3x PyTorch CPU", row,
                        peers.get("torch-cpu"), 1.3)
                gemm = impls.get("blas-gemm")
                _target(found, "S4 MLP step time / bare BLAS GEMMs <= 1.1", row,
                        gemm and row["time_s"] / gemm["time_s"], 1.1, at_most=True)
            elif workload == "S1 perceptron":
                _target(found, "S1 perceptron >= 1x the handwritten NumPy loop (aim 3x)",
                        row, peers.get("numpy-hand"), 1.0)
            elif workload == "dense fwd+bwd":
                _target(found, "dense fwd+bwd >= 2x PyTorch eager (Linear + tanh)", row,
                        peers.get("torch-cuda"), 2.0)
                if row.get("largest_batch"):
                    _target(found, "dense fwd+bwd at the largest batch <= 2x the "
                            "memory-traffic floor", row,
                            row["time_s"] / row["floor_bytes_s"], 2.0, at_most=True)
            elif workload == "lstm fwd+bwd" and row.get("hidden", 0) <= 64:
                _target(found, "lstm fwd+bwd (H <= 64) >= 3x PyTorch nn.LSTM (cuDNN)", row,
                        peers.get("torch-cuda"), 3.0)
        families = [impls[name] for name in ("tinynet:numba-cuda", "tinynet:cupy")
                    if name in impls]
        if len(families) == 2 and families[0]["workload"] in ("dense fwd+bwd", "lstm fwd+bwd"):
            better = min(families, key=lambda r: r["time_s"])
            best = min(r["time_s"] for r in impls.values())
            _target(found, "the better GPU family within 10% of the best time for the op",
                    better, better["time_s"] / best, 1.1, at_most=True)
    return found


def _target_lines(found):
    """One line per (target, impl): how many sizes meet it, and the worst case."""
    lines = []
    summary = {}
    for entry in found:
        summary.setdefault((entry["target"], entry["impl"]), []).append(entry)
    for (text, impl), entries in summary.items():
        met = sum(e["met"] for e in entries)
        worst = (max if entries[0]["direction"] == "at most" else min)(
            entries, key=lambda e: e["value"])
        where = f" at {worst['size']}" if len(entries) > 1 else ""
        lines.append(f"- [{'met' if met == len(entries) else 'NOT met'} {met}/{len(entries)}] "
                     f"{text}: {impl} {worst['value']:.3g}"
                     f"{' worst' + where if where else ''}")
    return lines


# --- plot ------------------------------------------------------------------------------

def plot(rows, path):
    """One panel per workload: time per `per` (log scale) for each size and impl. Needs
    matplotlib (an optional extra); the caller checks that it is importable."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys((r["suite"], r["workload"]) for r in rows))
    figure, axes = plt.subplots(len(workloads), 1, figsize=(13, 3.4 * len(workloads)),
                                squeeze=False)
    for axis, (suite, workload) in zip(axes[:, 0], workloads):
        chosen = [r for r in rows if (r["suite"], r["workload"]) == (suite, workload)]
        sizes = list(dict.fromkeys(r["size"] for r in chosen))
        impls = list(dict.fromkeys(r["impl"] for r in chosen))
        width = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            times = {r["size"]: r["time_s"] for r in chosen if r["impl"] == impl}
            positions = [i + k * width for i, s in enumerate(sizes) if s in times]
            axis.bar(positions, [times[s] for s in sizes if s in times], width, label=impl)
        axis.set_xticks(np.arange(len(sizes)) + 0.4 - width / 2)
        axis.set_xticklabels(sizes, rotation=20, ha="right", fontsize=7)
        axis.set_yscale("log")
        axis.set_ylabel(f"seconds per {chosen[0]['per']}")
        axis.set_title(f"{suite}: {workload}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
