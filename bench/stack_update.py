"""Where the time of one update of a small stack goes: experiment 3a's online training
(one sequence per model per update, T = 100, 1 input, 3 cells, a sigmoid output unit on the
last h, SGD at rate 1.0 on the squared error) for a few stack sizes M, on one CPU backend.

    nn.Stack   Stack.fit(batch_size=1, shuffle=False) over a run of sequences: the update of
               examples/hochreiter_3a.py
    ops        the same update written with tinynet.ops (bench/stack_suite.py's S7 stack)
    backend    the backend functions those ops call, given the arguments the ops would pass:
               the kernels and the arrays around them, nothing else

All three start from the same weights, see the same sequences and make the same updates
(tests/test_bench_stack_update.py checks it). They are timed in interleaved blocks; the table
gives the median time per update, and what 100,000 updates take at that rate: a trial of
experiment 3a that never reaches ST2 trains to the example's cap of 100,000 sequences, and
the stack trains as long as its slowest trial.

    python bench/stack_update.py [--backend numba-cpu] [--models 1,10,50] [--quick]

With TINYNET_BENCH_SMOKE=1: stacks of 1 and 3, one short round (the numbers mean nothing).
"""

import argparse
import itertools
import time

import numpy as np

import tinynet
from tinynet import _dispatch, nn
from tinynet.bench import cpu_suite, stack_suite, timing

# mode -> (stack sizes, repeats, block seconds)
SETTINGS = {"full": ((1, 10, 50), 5, 0.5), "quick": ((1, 10, 50), 3, 0.2),
            "smoke": ((1, 3), 1, 0.0)}
CAP = 100_000
WEIGHTS = ("lstm/kernel", "lstm/recurrent_kernel", "lstm/bias", "dense/kernel", "dense/bias")


def stacked_net(params):
    """An nn.Stack of the S7 net, model m with weights [p[m] for p in params]."""
    models = []
    for m in range(params[0].shape[0]):
        model = nn.Sequential([
            nn.LSTM(1, cpu_suite.S7_CELLS, forget_bias=cpu_suite.S7_FORGET_BIAS,
                    unit_forget_bias=False),
            nn.Dense(cpu_suite.S7_CELLS, 1, "sigmoid"),
        ])
        model.set_weights({name: p[m] for name, p in zip(WEIGHTS, params)})
        models.append(model)
    stack = nn.Stack(models)
    # our MSE's gradient is 2 (y - t): SGD at half the rate makes S7's update
    stack.compile(optimizer=nn.SGD(cpu_suite.S7_RATE / 2), loss="mse")
    return stack


def nn_stack(backend, params):
    """train(x, y): one update per sequence through Stack.fit, x (M, updates, T, 1) and
    y (M, updates, 1) (see example_layout)."""
    stack = stacked_net(params).to(backend)

    def train(x, y):
        stack.fit(x, y, batch_size=1, shuffle=False, verbose=0)
    train.current = lambda: [np.stack([stack.model(m).get_weights()[name]
                                       for m in range(len(stack))]) for name in WEIGHTS]
    return train


def example_layout(xs, targets):
    """Sequences (updates, M, 1, T, 1) and targets (updates, M, 1, 1), one update's each
    after another, as examples/hochreiter_3a.py passes them to fit: C-contiguous
    x (M, updates, T, 1), y (M, updates, 1)."""
    return (np.ascontiguousarray(xs[:, :, 0].swapaxes(0, 1)),
            np.ascontiguousarray(targets[:, :, 0].swapaxes(0, 1)))


def backend_stack(backend, params):
    """train(xs, target): one update, xs (M, 1, T, 1), target (M, 1, 1), through the
    backend's stack functions alone."""
    be = _dispatch.module(backend)
    w_ih, w_hh, b, w_out, b_out = params = [p.copy() for p in params]
    models, hidden = w_hh.shape[0], w_hh.shape[1]
    steps = cpu_suite.S7_STEPS
    state = be.stack_zeros((models, 1, hidden), np.float32)
    no_dhs = be.stack_zeros((models, 1, steps, hidden), np.float32)
    forget_bias = np.full(models, cpu_suite.S7_FORGET_BIAS, np.float32)
    lengths = np.full((models, 1), steps, np.int32)

    def train(xs, target):
        _, hT, _, lstm_saved = be.stack_lstm_forward(xs, state, state, w_ih, w_hh, b, "tanh",
                                                     "sigmoid", forget_bias, lengths)
        y, dense_saved = be.stack_dense_forward(hT, w_out, b_out, "sigmoid")
        dhT, dw_out, db_out = be.stack_dense_backward(dense_saved,
                                                      cpu_suite.S7_RATE * (y - target))
        *_, dw_ih, dw_hh, db = be.stack_lstm_backward(lstm_saved, no_dhs, dhT, state)
        for p, step in zip(params, (dw_ih, dw_hh, db, dw_out, db_out)):
            p -= step
    train.current = lambda: params
    return train


def blocks(backend, pool):
    """{layer: block(n) -> (seconds,)}, every block making n updates on the pool's
    sequences, taken in turn."""
    xs, targets, params = pool
    out = {}
    fit = nn_stack(backend, params)

    def nn_block(n):
        run = np.arange(n) % len(xs)
        x, y = example_layout(xs[run], targets[run])        # untimed
        start = time.perf_counter()
        fit(x, y)
        return (time.perf_counter() - start,)
    out["nn.Stack"] = nn_block
    for name, train in (("ops", stack_suite.tinynet_stack(backend, params)),
                        ("backend", backend_stack(backend, params))):
        cycle = itertools.cycle(list(zip(xs, targets)))
        out[name] = timing.cpu_block(train, lambda n, cycle=cycle: [next(cycle)
                                                                    for _ in range(n)])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba-cpu")
    parser.add_argument("--models", default=None,
                        help="stack sizes, comma-separated (default 1,10,50)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter blocks")
    args = parser.parse_args()
    mode = timing.mode(args.quick)
    sizes, repeats, min_block_s = SETTINGS[mode]
    if args.models is not None:
        sizes = [int(m) for m in args.models.split(",")]
    print(f"One update of experiment 3a's net (T = {cpu_suite.S7_STEPS}, 1 input, H = "
          f"{cpu_suite.S7_CELLS}, batch 1) for a stack of M models on {args.backend}, "
          f"tinynet {tinynet.__version__}; median of interleaved blocks\n")
    print(f"| M | layer | us per update | {CAP:,} updates | share of nn.Stack |")
    print("|---|---|---|---|---|")
    for models in sizes:
        timed = timing.interleaved(blocks(args.backend, stack_suite.problem(models)),
                                   repeats=repeats, min_block_s=min_block_s)
        whole = timed["nn.Stack"][0][0]
        for name, ((seconds,), _) in timed.items():
            print(f"| {models} | {name} | {seconds * 1e6:.1f} | {seconds * CAP:.1f} s | "
                  f"{seconds / whole:.2f} |")


if __name__ == "__main__":
    main()
