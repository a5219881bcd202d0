"""The stack suite: many models of one shape trained at once, on the CPU.

    S7 stack   Experiment 3a's shape (S7 of the CPU suite: one sequence per update, T=100,
               1 input, 3 cells, forget_bias 1.0, a sigmoid output unit on the last h, SGD
               at rate 1.0) for M models, each with its own weights and its own sequence per
               update; time per model-sequence, against
                 one model at a time   the same update through the single-model ops, per model
                 torch-cpu bmm         what a PyTorch user writes for many LSTMs: stacked
                                       weights, a per-step torch.baddbmm loop, autograd, SGD
                 jax-cpu vmap          jax.vmap over a lax.scan LSTM, jax.grad, the whole
                                       update under jax.jit (when JAX is installed)

Everything is float32. Every implementation starts from the same weights and sees the same
sequences (a pool of S7_STACK_POOL updates, reused in turn), and uses every core it wants
(numba-cpu's prange, PyTorch's and JAX's own threads): M models fill them, unlike S7's one.
"""

import importlib.util
import itertools

import numpy as np

from tinynet.bench import cpu_suite, report, timing, work

# mode -> (models, repeats, block seconds)
SETTINGS = {"full": (256, 5, 0.5), "quick": (256, 3, 0.2), "smoke": (4, 1, 0.0)}
S7_STACK_POOL = 8
RATE = cpu_suite.S7_RATE
FORGET_BIAS = cpu_suite.S7_FORGET_BIAS


def jax_or_none():
    if importlib.util.find_spec("jax") is None:
        return None
    import jax
    return jax


def problem(models, pool=S7_STACK_POOL):
    """Sequences (pool, M, 1, T, 1), targets (pool, M, 1, 1) and stacked initial weights
    (each model its own draw of S7's initialisation)."""
    rng = np.random.default_rng(11)
    steps, markers, hidden = cpu_suite.S7_STEPS, cpu_suite.S7_MARKERS, cpu_suite.S7_CELLS
    classes = rng.integers(0, 2, (pool, models))
    xs = rng.normal(0.0, np.sqrt(0.2), (pool, models, 1, steps, 1))
    xs[:, :, 0, :markers, 0] = np.where(classes == 1, 1.0, -1.0)[..., None]
    targets = classes.astype(np.float32).reshape(pool, models, 1, 1)
    w_ih = rng.uniform(-0.1, 0.1, (models, 1, 4 * hidden))
    w_hh = rng.uniform(-0.1, 0.1, (models, hidden, 4 * hidden))
    b = rng.uniform(-0.1, 0.1, (models, 4 * hidden))
    b[:, :hidden] = [-1, -3, -5]                       # input gate (block i)
    b[:, 3 * hidden:] = [-2, -4, -6]                   # output gate (block o)
    w_out = rng.uniform(-0.1, 0.1, (models, hidden, 1))
    b_out = rng.uniform(-0.1, 0.1, (models, 1))
    params = [a.astype(np.float32) for a in (w_ih, w_hh, b, w_out, b_out)]
    return xs.astype(np.float32), targets, params


def tinynet_stack(backend, params):
    """One update of all M models: xs (M, 1, T, 1), target (M, 1, 1). It is S7's update
    (cpu_suite.s7_tinynet) itself: given stacked weights, each op runs all M models."""
    return cpu_suite.s7_tinynet(backend, params)


def one_at_a_time(backend, params):
    """The same update, model after model, through the single-model ops (cpu_suite's S7)."""
    models = [cpu_suite.s7_tinynet(backend, [p[m] for p in params]) for m in
              range(params[0].shape[0])]

    def train(xs, target):
        for m, train_one in enumerate(models):
            train_one(xs[m], target[m])
    def current():
        return [np.stack(p) for p in zip(*(model.params for model in models))]
    train.current = current
    return train


def torch_stack(torch, params, to_tensor=None):
    """Stacked weights, a per-step baddbmm loop, autograd, SGD: the PyTorch way to train many
    small LSTMs at once (torch.func.vmap cannot map nn.LSTM). to_tensor(p) makes a weight a
    tensor of its own (default: a copy of a NumPy array; the GPU suite's: of a CuPy one)."""
    hidden = cpu_suite.S7_CELLS
    to_tensor = to_tensor or (lambda p: torch.from_numpy(p.copy()))
    tensors = [to_tensor(p).requires_grad_() for p in params]
    w_ih, w_hh, b, w_out, b_out = tensors
    optimizer = torch.optim.SGD(tensors, lr=RATE)

    def train(xs, target):                 # xs (M, 1, T, 1), target (M, 1, 1)
        optimizer.zero_grad(set_to_none=True)
        models, batch, steps, _ = xs.shape
        h = xs.new_zeros(models, batch, hidden)
        c = xs.new_zeros(models, batch, hidden)
        bias = b[:, None, :]
        for t in range(steps):
            z = torch.baddbmm(torch.baddbmm(bias, xs[:, :, t], w_ih), h, w_hh)
            zi, zf, zg, zo = z.split(hidden, dim=2)
            c = torch.sigmoid(zf + FORGET_BIAS) * c + torch.sigmoid(zi) * torch.tanh(zg)
            h = torch.sigmoid(zo) * torch.tanh(c)
        y = torch.sigmoid(torch.baddbmm(b_out[:, None, :], h, w_out))
        loss = 0.5 * ((y - target) ** 2).sum()      # each model's loss reaches its weights only
        loss.backward()
        optimizer.step()
    train.params = [t.detach() for t in tensors]
    return train


def jax_stack(jax, params):
    """jax.vmap of jax.grad of a lax.scan LSTM; the update jitted whole."""
    jnp = jax.numpy
    hidden = cpu_suite.S7_CELLS

    def loss_one(weights, xs, target):             # one model: xs (1, T, 1), target (1, 1)
        w_ih, w_hh, b, w_out, b_out = weights

        def step(state, x_t):
            h, c = state
            z = x_t @ w_ih + h @ w_hh + b
            zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(zf + FORGET_BIAS) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
            h = jax.nn.sigmoid(zo) * jnp.tanh(c)
            return (h, c), None

        start = (jnp.zeros((1, hidden), xs.dtype), jnp.zeros((1, hidden), xs.dtype))
        (h, _), _ = jax.lax.scan(step, start, jnp.swapaxes(xs, 0, 1))
        y = jax.nn.sigmoid(h @ w_out + b_out)
        return 0.5 * jnp.sum((y - target) ** 2)

    gradients = jax.vmap(jax.grad(loss_one))

    @jax.jit
    def update(weights, xs, target):
        return [w - RATE * g for w, g in zip(weights, gradients(weights, xs, target))]

    state = {"weights": [jnp.asarray(p) for p in params]}

    def train(xs, target):
        state["weights"] = update(state["weights"], xs, target)
        jax.block_until_ready(state["weights"])

    def current():
        return [np.asarray(w) for w in state["weights"]]
    train.current = current
    return train


def implementations(backends, torch, jax, params):
    """{impl: train}: every implementation's update of all M models."""
    impls = {f"tinynet:{name}": tinynet_stack(name, params) for name in backends}
    if "numba-cpu" in backends:
        impls["tinynet:numba-cpu one at a time"] = one_at_a_time("numba-cpu", params)
    if torch is not None:
        impls["torch-cpu bmm"] = torch_stack(torch, params)
    if jax is not None:
        impls["jax-cpu vmap"] = jax_stack(jax, params)
    return impls


def rows(backends, mode, peaks, errors, log):
    models, repeats, min_block_s = SETTINGS[mode]
    torch, jax = cpu_suite.torch_or_none(), jax_or_none()
    xs, targets, params = problem(models)
    numpy_pool = list(zip(xs, targets))
    blocks = {}
    for impl, train in implementations(backends, torch, jax, params).items():
        pool = numpy_pool
        if impl.startswith("torch"):
            pool = [(torch.from_numpy(x), torch.from_numpy(t)) for x, t in numpy_pool]
        elif impl.startswith("jax"):
            pool = [(jax.numpy.asarray(x), jax.numpy.asarray(t)) for x, t in numpy_pool]
        cycle = itertools.cycle(pool)
        blocks[impl] = timing.cpu_block(train, lambda n, cycle=cycle: [next(cycle)
                                                                 for _ in range(n)])
    log(f"stack S7 x {models} models")
    timed = timing.interleaved(blocks, repeats=repeats, min_block_s=min_block_s,
                               on_error=report.error_recorder(errors, log, "stack S7"))
    # one call trains every model once: the time per model-sequence is a call's / M
    timed = {impl: ([seconds / models for seconds in medians], rounds)
             for impl, (medians, rounds) in timed.items()}
    hidden, steps = cpu_suite.S7_CELLS, cpu_suite.S7_STEPS
    n_params = sum(p[0].size for p in params)
    flops, moved = work.add(work.lstm_forward(1, steps, 1, hidden),
                            work.lstm_backward(1, steps, 1, hidden),
                            work.dense_forward(1, hidden, 1), work.dense_backward(1, hidden, 1),
                            (2 * n_params, 3 * n_params * 4))
    return [report.make_row("stack", "S7 stack", f"M{models} b1 T{steps} in1 H{hidden}",
                            "model-sequence", impl, seconds, flops=flops, bytes_moved=moved,
                            peaks=peaks, repeats=rounds, per_second=1 / seconds)
            for impl, ((seconds,), rounds) in timed.items()]


def versions():
    jax = jax_or_none()
    return {} if jax is None else {"jax": jax.__version__}
