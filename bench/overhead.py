"""Per-call overhead of each op at its smallest size, against the bare NumPy expression.

At the seed workloads' sizes (an 8x3 perceptron, a 3-cell LSTM at batch 1) the arithmetic
takes nanoseconds and a call costs what Python does around it. For each op this times, in
one run, median per call:

    numpy-bare          the NumPy expression a person would write for the same result
    tinynet:<backend>   the call through tinynet.ops (validation, dispatch, backend)
    direct:<backend>    the backend function alone, called with arguments ops would pass
    tinynet:auto        the call through ops with backend="auto"

so "via ops / bare" is what tinynet costs over hand-written NumPy, and "via ops - direct" is
the ops layer itself. Backward ops are timed on fresh contexts, made untimed before each
block (a context may be single-use).

Run alone:  python bench/overhead.py [--quick]     (part of `python -m tinynet bench` too)
"""

import argparse
import sys

import numpy as np

from tinynet import _dispatch, available_backends, ops
from tinynet.bench import peaks, report, timing, work

DENSE = (8, 3, 1)          # (batch, in, out): S1's perceptron, tanh, no bias
CELL = (1, 1, 3)           # (batch, in, H): one step of Experiment 3a's 3 cells
SEQUENCE = (1, 1, 1, 3)    # (batch, steps, in, H)

SETTINGS = {"full": (7, 0.05), "quick": (5, 0.02), "smoke": (1, 0.0005)}  # repeats, block s


# --- the bare NumPy expressions (tanh cell activation, sigmoid gates) -----------------------

def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def bare_dense(x, w):
    return np.tanh(x @ w)


def bare_dense_backward(x, w, y, dy):
    dz = dy * (1 - y * y)
    return dz @ w.T, x.T @ dz


def bare_cell(x, h, c, w_ih, w_hh, b):
    hidden = h.shape[1]
    z = x @ w_ih + h @ w_hh + b
    i = _sigmoid(z[:, :hidden])
    f = _sigmoid(z[:, hidden:2 * hidden])
    g = np.tanh(z[:, 2 * hidden:3 * hidden])
    o = _sigmoid(z[:, 3 * hidden:])
    c1 = f * c + i * g
    tanh_c1 = np.tanh(c1)
    return o * tanh_c1, c1, (i, f, g, o, tanh_c1)


def bare_cell_backward(x, h, c, w_ih, w_hh, gates, dh1, dc1):
    i, f, g, o, tanh_c1 = gates
    dc1 = dc1 + dh1 * o * (1 - tanh_c1 * tanh_c1)
    dz = np.concatenate([dc1 * g * i * (1 - i), dc1 * c * f * (1 - f), dc1 * i * (1 - g * g),
                         dh1 * tanh_c1 * o * (1 - o)], axis=1)
    return dz @ w_ih.T, dz @ w_hh.T, dc1 * f, x.T @ dz, h.T @ dz, dz.sum(axis=0)


def bare_lstm(xs, h, c, w_ih, w_hh, b):
    hs = np.empty((xs.shape[0], xs.shape[1], h.shape[1]), xs.dtype)
    steps = []
    for t in range(xs.shape[1]):
        h1, c1, gates = bare_cell(xs[:, t], h, c, w_ih, w_hh, b)
        steps.append((h, c, gates))
        hs[:, t] = h1
        h, c = h1, c1
    return hs, h, c, steps


def bare_lstm_backward(xs, w_ih, w_hh, steps, dhs):
    dh = np.zeros_like(dhs[:, 0])
    dc = np.zeros_like(dh)
    dxs = np.empty_like(xs)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db = np.zeros(w_hh.shape[1], xs.dtype)
    for t in reversed(range(xs.shape[1])):
        h, c, gates = steps[t]
        dx, dh, dc, dwi, dwh, dbt = bare_cell_backward(xs[:, t], h, c, w_ih, w_hh, gates,
                                                       dhs[:, t] + dh, dc)
        dxs[:, t] = dx
        dw_ih += dwi
        dw_hh += dwh
        db += dbt
    return dxs, dh, dc, dw_ih, dw_hh, db


# --- the cases: per op, {impl: (call, prepare or None)} ------------------------------------

def _normal(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _cases(backends, rng):
    """[(op, size label, (flops, bytes), {impl: (call, prepare)})] for every op."""
    batch, n_in, n_out = DENSE
    x, w = _normal(rng, (batch, n_in)), _normal(rng, (n_in, n_out))
    dy = _normal(rng, (batch, n_out))
    cb, ci, hidden = CELL
    cx, ch, cc = _normal(rng, (cb, ci)), _normal(rng, (cb, hidden)), _normal(rng, (cb, hidden))
    w_ih, w_hh = _normal(rng, (ci, 4 * hidden)) * 0.5, _normal(rng, (hidden, 4 * hidden)) * 0.5
    b = _normal(rng, (4 * hidden,)) * 0.5
    dh1, dc1 = _normal(rng, (cb, hidden)), _normal(rng, (cb, hidden))
    sb, steps, si, _ = SEQUENCE
    xs = _normal(rng, (sb, steps, si))
    dhs = _normal(rng, (sb, steps, hidden))
    cell_args = (cx, ch, cc, w_ih, w_hh, b)
    seq_args = (xs, ch, cc, w_ih, w_hh, b)
    y = bare_dense(x, w)
    _, _, cell_gates = bare_cell(*cell_args)
    _, _, _, seq_steps = bare_lstm(*seq_args)

    def repeat(make):
        return lambda n: [(make(),) for _ in range(n)]

    cases = {
        "dense": {"numpy-bare": (lambda: bare_dense(x, w), None)},
        "dense_backward": {"numpy-bare": (lambda: bare_dense_backward(x, w, y, dy), None)},
        "lstm_cell": {"numpy-bare": (lambda: bare_cell(*cell_args), None)},
        "lstm_cell_backward": {"numpy-bare": (
            lambda: bare_cell_backward(cx, ch, cc, w_ih, w_hh, cell_gates, dh1, dc1), None)},
        "lstm": {"numpy-bare": (lambda: bare_lstm(*seq_args), None)},
        "lstm_backward": {"numpy-bare": (
            lambda: bare_lstm_backward(xs, w_ih, w_hh, seq_steps, dhs), None)},
    }
    for name in backends:
        via = f"tinynet:{name}"
        cases["dense"][via] = (lambda n=name: ops.dense(x, w, None, "tanh", backend=n), None)
        cases["dense_backward"][via] = (
            lambda ctx: ops.dense_backward(ctx, dy),
            repeat(lambda n=name: ops.dense(x, w, None, "tanh", backend=n)[1]))
        cases["lstm_cell"][via] = (lambda n=name: ops.lstm_cell(*cell_args, backend=n), None)
        cases["lstm_cell_backward"][via] = (
            lambda ctx: ops.lstm_cell_backward(ctx, dh1, dc1),
            repeat(lambda n=name: ops.lstm_cell(*cell_args, backend=n)[2]))
        cases["lstm"][via] = (lambda n=name: ops.lstm(*seq_args, backend=n), None)
        cases["lstm_backward"][via] = (
            lambda ctx: ops.lstm_backward(ctx, dhs),
            repeat(lambda n=name: ops.lstm(*seq_args, backend=n)[3]))
        if name == "auto":
            continue
        be = _dispatch.module(name)
        bx, bw, bdy = be.asarray(x), be.asarray(w), be.asarray(dy)
        bcell = tuple(be.asarray(a) for a in cell_args)
        bseq = tuple(be.asarray(a) for a in seq_args)
        bdh1, bdc1, bdhs = be.asarray(dh1), be.asarray(dc1), be.asarray(dhs)
        gate_kw = ("tanh", "sigmoid", 0.0)
        direct = f"direct:{name}"
        cases["dense"][direct] = (lambda be=be: be.dense_forward(bx, bw, None, "tanh"), None)
        cases["dense_backward"][direct] = (
            lambda saved, be=be: be.dense_backward(saved, bdy),
            repeat(lambda be=be: be.dense_forward(bx, bw, None, "tanh")[1]))
        if hasattr(be, "lstm_cell_forward"):    # else ops runs a cell as a one-step lstm
            cases["lstm_cell"][direct] = (lambda be=be: be.lstm_cell_forward(*bcell, *gate_kw),
                                          None)
            cases["lstm_cell_backward"][direct] = (
                lambda saved, be=be: be.lstm_cell_backward(saved, bdh1, bdc1),
                repeat(lambda be=be: be.lstm_cell_forward(*bcell, *gate_kw)[2]))
        cases["lstm"][direct] = (lambda be=be: be.lstm_forward(*bseq, *gate_kw), None)
        # a backend's own functions take complete arrays: the zeros ops makes of None
        bzeros = be.asarray(np.zeros((sb, hidden), np.float32))
        cases["lstm_backward"][direct] = (
            lambda saved, be=be, bzeros=bzeros: be.lstm_backward(saved, bdhs, bzeros, bzeros),
            repeat(lambda be=be: be.lstm_forward(*bseq, *gate_kw)[3]))

    sizes = op_sizes()
    return [(op, *sizes[op], impls) for op, impls in cases.items()]


def op_sizes():
    """{op: (size label, (flops, bytes))} at the smallest sizes (float32)."""
    batch, n_in, n_out = DENSE
    cb, ci, hidden = CELL
    sb, steps, si, _ = SEQUENCE
    return {
        "dense": (f"dense {batch}x{n_in}->{n_out} tanh",
                  work.dense_forward(batch, n_in, n_out, False)),
        "dense_backward": (f"dense_backward {batch}x{n_in}->{n_out}",
                           work.dense_backward(batch, n_in, n_out, False)),
        "lstm_cell": (f"lstm_cell b{cb} in{ci} H{hidden}", work.lstm_cell_forward(cb, ci, hidden)),
        "lstm_cell_backward": (f"lstm_cell_backward b{cb} in{ci} H{hidden}",
                               work.lstm_cell_backward(cb, ci, hidden)),
        "lstm": (f"lstm b{sb} T{steps} in{si} H{hidden}",
                 work.lstm_forward(sb, steps, si, hidden)),
        "lstm_backward": (f"lstm_backward b{sb} T{steps} in{si} H{hidden}",
                          work.lstm_backward(sb, steps, si, hidden)),
    }


def cpu_backends():
    """The usable CPU backends, then 'auto'."""
    return [n for n in available_backends() if not _dispatch.module(n).IS_GPU] + ["auto"]


def rows(mode, cpu_peaks, errors, log=print):
    """The overhead rows of the CPU suite; failures go to `errors` (and the log), not up."""
    repeats, min_block_s = SETTINGS[mode]
    found = []
    for op, size, (flops, moved), impls in _cases(cpu_backends(), np.random.default_rng(7)):
        log(f"cpu overhead: {size}")
        blocks = {impl: timing.cpu_block(call, prepare) for impl, (call, prepare) in impls.items()}
        timed = timing.interleaved(blocks, repeats=repeats, min_block_s=min_block_s,
                                   on_error=report.error_recorder(errors, log, f"cpu {size}"))
        for impl, ((seconds,), rounds) in timed.items():
            found.append(report.make_row("cpu", "overhead", size, "call", impl, seconds,
                                         flops=flops, bytes_moved=moved, peaks=cpu_peaks,
                                         repeats=rounds, op=op))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python bench/overhead.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter blocks")
    args = parser.parse_args(argv)
    mode = timing.mode(args.quick)
    errors = []
    found = rows(mode, peaks.cpu_peaks(mode), errors,
                 log=lambda text: print(text, file=sys.stderr))
    lines = report.overhead_table(found) + [""]
    bare = [r for r in found if r["op"] == "dense" and r["impl"] == "numpy-bare"]
    for row in found:
        if bare and row["op"] == "dense" and row["impl"].startswith("tinynet:"):
            lines.append(f"ops.dense on {DENSE[0]}x{DENSE[1]} ({row['impl']}): "
                         f"{report.fmt_time(row['time_s'])} per call vs the bare NumPy "
                         f"expression {report.fmt_time(bare[0]['time_s'])}: "
                         f"{row['time_s'] / bare[0]['time_s']:.3g}x")
    print("\n".join(lines))
    for error in errors:
        print(f"ERROR {error['where']}: {error['error']}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
