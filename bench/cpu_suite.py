"""The CPU suite: the seed workloads end to end through tinynet.ops, beside what a person
would otherwise write (handwritten NumPy, PyTorch CPU), on every usable CPU backend.

    S1 perceptron    8 patterns x 3 inputs -> 1 tanh output, no bias, 20,000 full-batch
                     delta-rule steps (the seed's loop, learning rate 1), vs that loop in NumPy
    S4 MLP step      64-500-500-1, sigmoid everywhere, batch 256, MSE, one SGD step, vs the
                     same step in NumPy and in PyTorch (nn.Sequential + optim.SGD), and vs the
                     bare BLAS GEMMs of the step: the 9 products the ops compute (3 forward,
                     3 dw, 3 dx -- dense_backward always returns dx; PyTorch skips the first)
    S7 online LSTM   Experiment 3a's shape: one sequence per update (batch 1), T=100, 1 input,
                     3 cells, forget_bias 1.0, sigmoid output unit on the last h, SGD at the
                     paper's learning rate 1.0 (tinynet: the rate scales the output gradient,
                     so the weight gradients come out as the steps, as S1's loops do it
                     with rate 1), vs PyTorch nn.LSTM + nn.Linear + optim.SGD
                     from the same weights (the forget bias folded into bias_ih; its second
                     bias, bias_hh, stays zero, untrained); time per sequence. PyTorch runs on one
                     thread here: batch-1 tensors are far below its parallel grain, so a
                     second thread adds nothing but, on a busy machine, erratic waits
                     (measured: 2.5 ms/sequence on 1 thread, 6 to 63 ms on 2)
    overhead         per-call overhead of each op at its smallest size (bench/overhead.py)

Everything is float32 (PyTorch's default). Each implementation starts from the same weights
and sees the same random, non-zero inputs; S7's updates go round a pool of 64 sequences.
"""

import importlib.util
import itertools

import numpy as np

from tinynet import ops
from tinynet.bench import overhead, report, timing, work

# mode -> (S1 steps, S1 repeats, S4 repeats, S4 block seconds, S7 repeats, S7 block seconds)
SETTINGS = {"full": (20_000, 5, 7, 0.2, 7, 0.3), "quick": (20_000, 3, 3, 0.05, 3, 0.1),
            "smoke": (50, 1, 1, 0.0, 1, 0.0)}


def torch_or_none():
    if importlib.util.find_spec("torch") is None:
        return None
    import torch
    return torch


def _group(blocks, repeats, min_block_s, where, errors, log):
    """Time the implementations of one workload, interleaved; failures go to `errors`."""
    log(f"cpu {where}")
    return timing.interleaved(blocks, repeats=repeats, min_block_s=min_block_s,
                              on_error=report.error_recorder(errors, log, f"cpu {where}"))


def _in_turn(argument_sets):
    """prepare(n) for timing.cpu_block: the next n argument tuples, round and round."""
    turn = itertools.cycle(argument_sets)
    return lambda n: [next(turn) for _ in range(n)]


# --- S1: the perceptron ------------------------------------------------------------------

PATTERNS = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1],
                     [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]], np.float32)   # (8, 3)
PARITY = np.array([[1, 0, 0, 1, 0, 1, 1, 0]], np.float32).T                     # (8, 1)


def s1_numpy_hand(w, steps):
    for _ in range(steps):
        out = np.tanh(PATTERNS @ w)
        error = PARITY - out
        w += PATTERNS.T @ (error * (1 - out * out))
    return w


def s1_tinynet(backend):
    def train(w, steps):
        for _ in range(steps):
            y, ctx = ops.dense(PATTERNS, w, None, "tanh", backend=backend)
            _, dw, _ = ops.dense_backward(ctx, y - PARITY)
            w -= dw
        return w
    return train


def s1_rows(backends, mode, peaks, errors, log):
    steps, repeats = SETTINGS[mode][:2]
    starts = [np.random.default_rng(100 + k).uniform(-1, 1, (3, 1)).astype(np.float32)
              for k in range(repeats)]
    flops, moved = work.add(work.dense_forward(8, 3, 1, False),
                            work.dense_backward(8, 3, 1, False), (3, 3 * 3 * 4))   # + update
    impls = {"numpy-hand": s1_numpy_hand}
    impls.update({f"tinynet:{name}": s1_tinynet(name) for name in backends})
    blocks = {impl: timing.cpu_block(lambda w, train=train: train(w.copy(), steps),
                                     _in_turn([(w,) for w in starts]))
              for impl, train in impls.items()}
    timed = _group(blocks, repeats, 0.0, "S1 perceptron", errors, log)
    return [report.make_row("cpu", "S1 perceptron", f"8x3->1 tanh, {steps} steps", "training",
                            impl, seconds, flops=steps * flops, bytes_moved=steps * moved,
                            peaks=peaks, repeats=rounds)
            for impl, ((seconds,), rounds) in timed.items()]


# --- S4: the MLP training step ---------------------------------------------------------

S4_LAYERS = (64, 500, 500, 1)
S4_BATCH = 256
S4_RATE = 0.1


def _s4_problem():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((S4_BATCH, S4_LAYERS[0])).astype(np.float32)
    target = rng.uniform(0, 1, (S4_BATCH, 1)).astype(np.float32)
    params = []
    for n_in, n_out in zip(S4_LAYERS[:-1], S4_LAYERS[1:]):
        params.append((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32))
        params.append((rng.standard_normal(n_out) * 0.1).astype(np.float32))
    return x, target, params


def s4_tinynet(backend, x, target, params):
    w1, b1, w2, b2, w3, b3 = params = [p.copy() for p in params]
    scale = np.float32(1.0 / S4_BATCH)

    def step():
        a1, c1 = ops.dense(x, w1, b1, "sigmoid", backend=backend)
        a2, c2 = ops.dense(a1, w2, b2, "sigmoid", backend=backend)
        y, c3 = ops.dense(a2, w3, b3, "sigmoid", backend=backend)
        d2, dw3, db3 = ops.dense_backward(c3, (y - target) * scale)
        d1, dw2, db2 = ops.dense_backward(c2, d2)
        _, dw1, db1 = ops.dense_backward(c1, d1)
        for p, g in zip(params, (dw1, db1, dw2, db2, dw3, db3)):
            p -= S4_RATE * g
    step.params = params                    # the weights it trains, for tests/test_bench.py
    return step


def s4_numpy_hand(x, target, params):
    w1, b1, w2, b2, w3, b3 = params = [p.copy() for p in params]

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    def step():
        a1 = sigmoid(x @ w1 + b1)
        a2 = sigmoid(a1 @ w2 + b2)
        y = sigmoid(a2 @ w3 + b3)
        d3 = (y - target) / S4_BATCH * y * (1 - y)
        d2 = (d3 @ w3.T) * a2 * (1 - a2)
        d1 = (d2 @ w2.T) * a1 * (1 - a1)
        grads = (x.T @ d1, d1.sum(0), a1.T @ d2, d2.sum(0), a2.T @ d3, d3.sum(0))
        for p, g in zip(params, grads):
            p -= S4_RATE * g
    step.params = params
    return step


def s4_blas_gemm(x, target, params):
    """The 9 matrix products of the step, alone, into preallocated outputs."""
    rng = np.random.default_rng(5)
    w1, _, w2, _, w3, _ = params
    a1, a2 = (rng.uniform(0, 1, (S4_BATCH, n)).astype(np.float32) for n in S4_LAYERS[1:3])
    d1, d2 = (rng.standard_normal((S4_BATCH, n)).astype(np.float32) for n in S4_LAYERS[1:3])
    d3 = rng.standard_normal((S4_BATCH, 1)).astype(np.float32)
    products = [(x, w1), (a1, w2), (a2, w3),                  # forward
                (d3, w3.T), (a2.T, d3),                       # layer 3: dx, dw
                (d2, w2.T), (a1.T, d2),                       # layer 2
                (d1, w1.T), (x.T, d1)]                        # layer 1
    outputs = [np.empty((a.shape[0], b.shape[1]), np.float32) for a, b in products]

    def step():
        for (a, b), out in zip(products, outputs):
            np.matmul(a, b, out=out)
    return step


def s4_torch(torch, x, target, params):
    layers = []
    for w, b in zip(params[0::2], params[1::2]):
        linear = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear, torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=S4_RATE)
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = 0.5 * ((model(xt) - tt) ** 2).sum() / S4_BATCH
        loss.backward()
        optimizer.step()
    step.params = [t.detach().numpy() for layer in layers[0::2]       # (in, out) views
                   for t in (layer.weight.T, layer.bias)]
    return step


def s4_rows(backends, torch, mode, peaks, errors, log):
    repeats, min_block_s = SETTINGS[mode][2:4]
    x, target, params = _s4_problem()
    layers = list(zip(S4_LAYERS[:-1], S4_LAYERS[1:]))
    counted = [work.dense_forward(S4_BATCH, i, o) for i, o in layers]
    counted += [work.dense_backward(S4_BATCH, i, o) for i, o in layers]
    n_params = sum(p.size for p in params)
    flops, moved = work.add(*counted, (2 * n_params, 3 * n_params * 4))     # SGD update
    impls = {"numpy-hand": s4_numpy_hand(x, target, params),
             "blas-gemm": s4_blas_gemm(x, target, params)}
    if torch is not None:
        impls["torch-cpu"] = s4_torch(torch, x, target, params)
    impls.update({f"tinynet:{name}": s4_tinynet(name, x, target, params) for name in backends})
    blocks = {impl: timing.cpu_block(step) for impl, step in impls.items()}
    timed = _group(blocks, repeats, min_block_s, "S4 MLP step", errors, log)
    return [report.make_row("cpu", "S4 MLP step", "64-500-500-1 sigmoid b256", "step", impl,
                            seconds, flops=flops, bytes_moved=moved, peaks=peaks,
                            repeats=rounds)
            for impl, ((seconds,), rounds) in timed.items()]


# --- S7: Experiment 3a, online --------------------------------------------------------

S7_STEPS, S7_MARKERS, S7_CELLS = 100, 3, 3
S7_RATE = 1.0
S7_FORGET_BIAS = 1.0
S7_POOL = 64          # sequences drawn once, reused in turn


def _s7_problem():
    """Sequences (S7_POOL, 1, T, 1), targets (S7_POOL, 1, 1), and the initial weights:
    uniform in [-0.1, 0.1], input-gate biases -1, -3, -5, output-gate biases -2, -4, -6."""
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 2, S7_POOL)
    xs = rng.normal(0.0, np.sqrt(0.2), (S7_POOL, 1, S7_STEPS, 1))
    xs[:, 0, :S7_MARKERS, 0] = np.where(classes == 1, 1.0, -1.0)[:, None]
    targets = classes.astype(np.float32).reshape(S7_POOL, 1, 1)
    hidden = S7_CELLS
    w_ih = rng.uniform(-0.1, 0.1, (1, 4 * hidden))
    w_hh = rng.uniform(-0.1, 0.1, (hidden, 4 * hidden))
    b = rng.uniform(-0.1, 0.1, 4 * hidden)
    b[:hidden] = [-1, -3, -5]                      # input gate (block i)
    b[3 * hidden:] = [-2, -4, -6]                  # output gate (block o)
    w_out = rng.uniform(-0.1, 0.1, (hidden, 1))
    b_out = rng.uniform(-0.1, 0.1, 1)
    params = [a.astype(np.float32) for a in (w_ih, w_hh, b, w_out, b_out)]
    return xs.astype(np.float32), targets, params


def s7_tinynet(backend, params, rate=S7_RATE):
    w_ih, w_hh, b, w_out, b_out = params = [p.copy() for p in params]

    def train_one(xs, target):
        _, hT, _, lstm_ctx = ops.lstm(xs, None, None, w_ih, w_hh, b,
                                      forget_bias=S7_FORGET_BIAS, backend=backend)
        y, out_ctx = ops.dense(hT, w_out, b_out, "sigmoid", backend=backend)
        # the learning rate scales the output gradient once: every gradient below is linear
        # in it, so they come out as the SGD steps themselves (one NumPy call per weight)
        dhT, dw_out, db_out = ops.dense_backward(out_ctx, rate * (y - target))
        _, _, _, dw_ih, dw_hh, db = ops.lstm_backward(lstm_ctx, None, dhT)
        for p, step in zip(params, (dw_ih, dw_hh, db, dw_out, db_out)):
            p -= step
    train_one.params = params
    return train_one


def s7_torch(torch, params, rate=S7_RATE):
    w_ih, w_hh, b, w_out, b_out = params
    lstm = torch.nn.LSTM(1, S7_CELLS, batch_first=True)
    out = torch.nn.Linear(S7_CELLS, 1)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(w_ih.T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(w_hh.T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(b))
        lstm.bias_ih_l0[S7_CELLS:2 * S7_CELLS] += S7_FORGET_BIAS       # block f
        lstm.bias_hh_l0.zero_()
        out.weight.copy_(torch.from_numpy(w_out.T.copy()))
        out.bias.copy_(torch.from_numpy(b_out))
    # one trained bias, as ours: with both trained, SGD would move their sum twice as fast
    lstm.bias_hh_l0.requires_grad_(False)
    optimizer = torch.optim.SGD(list(lstm.parameters()) + list(out.parameters()), lr=rate)

    def train_one(xs, target):
        optimizer.zero_grad(set_to_none=True)
        _, (hT, _) = lstm(xs)
        loss = 0.5 * ((torch.sigmoid(out(hT[0])) - target) ** 2).sum()
        loss.backward()
        optimizer.step()

    def weights():
        """Ours, from PyTorch's: w_ih, w_hh (in, 4H), b (the two biases less the forget
        bias), w_out, b_out."""
        with torch.no_grad():
            bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
            bias[S7_CELLS:2 * S7_CELLS] -= S7_FORGET_BIAS
            return [t.detach().numpy().copy() for t in (lstm.weight_ih_l0.T,
                    lstm.weight_hh_l0.T, bias, out.weight.T, out.bias)]
    train_one.weights = weights
    return train_one


def _one_thread(torch, block):
    """The block with PyTorch on one thread, its thread count restored after (untimed)."""
    def run(n):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return block(n)
        finally:
            torch.set_num_threads(threads)
    return run


def s7_rows(backends, torch, mode, peaks, errors, log):
    repeats, min_block_s = SETTINGS[mode][4:6]
    xs, targets, params = _s7_problem()
    pool = [(xs[k], targets[k]) for k in range(S7_POOL)]
    blocks = {f"tinynet:{name}": timing.cpu_block(s7_tinynet(name, params), _in_turn(pool))
              for name in backends}
    if torch is not None:
        torch_pool = [(torch.from_numpy(x), torch.from_numpy(t)) for x, t in pool]
        blocks["torch-cpu"] = _one_thread(torch, timing.cpu_block(s7_torch(torch, params),
                                                                  _in_turn(torch_pool)))
    hidden = S7_CELLS
    n_params = sum(p.size for p in params)
    flops, moved = work.add(work.lstm_forward(1, S7_STEPS, 1, hidden),
                            work.lstm_backward(1, S7_STEPS, 1, hidden),
                            work.dense_forward(1, hidden, 1), work.dense_backward(1, hidden, 1),
                            (2 * n_params, 3 * n_params * 4))
    timed = _group(blocks, repeats, min_block_s, "S7 online LSTM", errors, log)
    return [report.make_row("cpu", "S7 online LSTM",
                            f"b1 T{S7_STEPS} in1 H{hidden}, sigmoid out, SGD", "sequence", impl,
                            seconds, flops=flops, bytes_moved=moved, peaks=peaks,
                            repeats=rounds, per_second=1 / seconds,
                            **({"torch_threads": 1} if impl == "torch-cpu" else {}))
            for impl, ((seconds,), rounds) in timed.items()]


def rows(mode, peaks, errors, log):
    """Every row of the CPU suite."""
    torch = torch_or_none()
    backends = [name for name in overhead.cpu_backends() if name != "auto"]
    found = s1_rows(backends, mode, peaks, errors, log)
    found += s4_rows(backends, torch, mode, peaks, errors, log)
    found += s7_rows(backends, torch, mode, peaks, errors, log)
    found += overhead.rows(mode, peaks, errors, log)
    return found


def versions():
    torch = torch_or_none()
    found = {"numpy": np.__version__}
    if importlib.util.find_spec("numba") is not None:
        import numba
        found["numba"] = numba.__version__
    if torch is not None:
        found["torch"] = torch.__version__
        found["torch_threads"] = torch.get_num_threads()
    return found
