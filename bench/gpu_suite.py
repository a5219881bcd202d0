"""The GPU suite: both GPU kernel families (numba-cuda, cupy) beside PyTorch CUDA, float32,
its workloads in this order:

    S7 stack         bench/stack_suite.py's workload (Experiment 3a's training, one sequence
                     per model per update, T=100, 1 input, 3 cells, sigmoid output unit, SGD)
                     for M = 10,000 models at once, per model-sequence: the stacked ops, vs
                     the same update one model at a time through the single-model ops
                     ("<impl> one at a time"), vs PyTorch's stacked weights with a per-step
                     torch.baddbmm loop, autograd and SGD ("torch-cuda bmm")
    per-step host    ops.lstm and ops.lstm_backward at batch 1, T=100, in = H = 128: above both
                     families' persistent-kernel H, so one or two launches per step, each
                     with almost no GPU work. Time per step that the calls take to return
                     (host: validation, dispatch, allocation, argument passing, launch), the
                     CUDA events' and the wall clock's kept beside it
    dense fwd+bwd    ops.dense(x, w, b, "tanh") + ops.dense_backward, in = out = width 64 and
                     128, batch 2^14 .. 2^20; vs PyTorch eager F.linear + tanh, gradients of
                     x, weight and bias by torch.autograd.grad
    lstm fwd+bwd     ops.lstm(xs, h0, c0, ...) + ops.lstm_backward(ctx, dhs), T=100,
                     in = H in {3, 32, 64, 128}, batch {1, 64, 256}, tanh/sigmoid; vs
                     nn.LSTM (cuDNN) with the same weights, gradients of everything
    launch overhead  each op at its smallest size (the sizes of bench/overhead.py), device
                     arrays in: wall-clock microseconds per call, many calls back to back then
                     one synchronize; PyTorch's forward counterparts beside the forward ops

Inputs are CuPy arrays (both families take them; PyTorch shares them through DLPack), drawn
at random for each size, rotated among several sets so that repeated calls do not run from
L2. Timed with CUDA events after a device synchronize (bench/timing.py), the median of
repeated blocks after warm-up. PyTorch runs in full float32: TF32 is switched off for its
matmuls and cuDNN, as CuPy's GEMMs run without it. CuPy and PyTorch are imported here only,
when the suite runs.
"""

import importlib.util
import math
import os
import time

from tinynet import _dispatch, available_backends, ops
from tinynet.bench import cpu_suite, overhead, peaks, report, stack_suite, timing, work

DENSE_WIDTHS = (64, 128)
DENSE_LOG2_BATCHES = {"full": range(14, 21), "quick": (14, 17, 20), "smoke": (6,)}
LSTM_HIDDEN = (3, 32, 64, 128)
LSTM_BATCHES = (1, 64, 256)
LSTM_STEPS = {"full": 100, "quick": 100, "smoke": 3}
SETTINGS = {"full": (10, 0.02), "quick": (5, 0.005), "smoke": (1, 0.0)}   # repeats, block s
# (smoke: no warm-up either; its numbers mean nothing, it only runs the code)
MAX_SETS = 8          # input sets rotated through; enough of them to be 4x the L2 in all
STACK_MODELS = {"full": 10_000, "quick": 10_000, "smoke": 2}
ONE_AT_A_TIME_POOL = 8      # models the one-at-a-time peer trains in turn
PER_STEP = {"full": (1, 100, 128, 128), "quick": (1, 100, 128, 128),   # batch, steps, in, H
            "smoke": (1, 3, 2, 5)}


def unavailable_reason():
    """None if the GPU suite can run here, else why not (and what to do)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return ("NUMBA_ENABLE_CUDASIM=1 is set, so numba-cuda would run in its CPU simulator: "
                "unset it to benchmark the GPU")
    if importlib.util.find_spec("cupy") is None:
        return ("CuPy is not installed; the GPU suite keeps its arrays in CuPy "
                "(pip install 'tinynet[gpu]' for a CUDA 13 driver, 'tinynet[gpu-cu12]' for 12)")
    import cupy
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:      # CuPy raises its own CUDARuntimeError; the text says why
        return f"no usable CUDA device ({type(error).__name__}: {error})"
    if count == 0:
        return "no CUDA device found"
    return None


def _context(log):
    """(cupy, torch or None, clock, GPU backend names). PyTorch only where it sees CUDA."""
    import cupy
    torch = None
    if importlib.util.find_spec("torch") is not None:
        import torch
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        else:
            log("gpu: PyTorch is installed but sees no CUDA device: no PyTorch rows")
            torch = None
    else:
        log("gpu: PyTorch is not installed: no PyTorch rows")
    backends = [n for n in available_backends() if _dispatch.module(n).IS_GPU]
    for name, usable, reason in _dispatch.status():
        if name in ("numba-cuda", "cupy") and not usable:
            log(f"gpu: backend {name} is not usable: {reason}")
    return cupy, torch, timing.CudaClock(cupy), backends


def _describe(cupy, torch, doc):
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode()
    doc["device"]["gpu"] = (f"{name}, sm_{props['major']}{props['minor']}, "
                            f"{props['multiProcessorCount']} SMs, "
                            f"{props['totalGlobalMem'] / 2**30:.0f} GiB, "
                            f"L2 {props['l2CacheSize'] / 2**20:.0f} MiB")
    doc["device"]["gpu_name"] = name
    found = {"cupy": cupy.__version__,
             "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
             "cuda_driver": cupy.cuda.runtime.driverGetVersion()}
    if importlib.util.find_spec("numba_cuda") is not None:
        import numba_cuda
        found["numba_cuda"] = numba_cuda.__version__
    if torch is not None:
        found["torch"] = torch.__version__
        found["cudnn"] = torch.backends.cudnn.version()
        found["torch_tf32"] = False
    doc["versions"].update(found)
    return props["l2CacheSize"]


class _Runner:
    """Times the implementations of one workload and size, interleaved, into rows; a failed
    implementation is recorded in the errors and left out."""

    CLOCKS = {"event": ("event_s", "wall_s"), "wall": ("event_s", "wall_s"),
              "host": ("host_s", "event_s", "wall_s")}

    def __init__(self, clock, mode, gpu_peaks, errors, log):
        self.clock, self.mode, self.peaks = clock, mode, gpu_peaks
        self.errors, self.log = errors, log
        self.repeats, self.min_block_s = SETTINGS[mode]

    def rows(self, workload, size, per, cases, counted, clock="event", units=None, **extra):
        """cases {impl: (call, prepare)}; units {impl: how many `per` one call covers} (1
        where absent). The row's time is the `clock` one ("event": CUDA events, "wall": the
        wall clock, "host": the time the calls took to return), every clock kept in the row
        as event_s, wall_s (and host_s), all per `per`."""
        self.log(f"gpu {workload} {size}: {', '.join(cases)}")
        make = self._host_block if clock == "host" else self.clock.block
        blocks = {impl: make(call, prepare) for impl, (call, prepare) in cases.items()}
        timed = timing.interleaved(
            blocks, repeats=self.repeats, min_block_s=self.min_block_s,
            warmup=0 if self.mode == "smoke" else 2,
            on_error=report.error_recorder(self.errors, self.log, f"gpu {workload} {size}"))
        found = []
        for impl, (seconds, rounds) in timed.items():
            share = (units or {}).get(impl, 1)
            kept = {name: value / share for name, value in zip(self.CLOCKS[clock], seconds)}
            found.append(report.make_row("gpu", workload, size, per, impl, kept[f"{clock}_s"],
                                         flops=counted[0], bytes_moved=counted[1],
                                         peaks=self.peaks, repeats=rounds, **kept, **extra))
        return found

    def _host_block(self, call, prepare):
        """The clock's block with a third clock: block(n) -> (host, event, wall) seconds of
        the n calls, host being the time until the last call returned (its work queued on
        the GPU, not waited for)."""
        cuda = self.clock.cupy.cuda

        def block(n):
            argument_sets = prepare(n)
            start, end = cuda.Event(), cuda.Event()
            self.clock.synchronize()
            wall_start = time.perf_counter()
            start.record()
            for arguments in argument_sets:
                call(*arguments)
            host = time.perf_counter() - wall_start
            end.record()
            end.synchronize()
            self.clock.synchronize()
            wall = time.perf_counter() - wall_start
            return host, cuda.get_elapsed_time(start, end) / 1e3, wall
        return block


def _rotation(per_set_bytes, l2_bytes):
    return max(1, min(MAX_SETS, math.ceil(4 * l2_bytes / max(per_set_bytes, 1))))


def _in_turn(sets):
    return lambda n: [sets[k % len(sets)] for k in range(n)]


def _free(cupy, torch):
    cupy.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        torch.cuda.empty_cache()


def _normal(cupy, shape, scale=1.0):
    """Fresh N(0, scale^2) float32 device array: random and non-zero, never a constant."""
    return (cupy.random.standard_normal(shape, dtype=cupy.float32) * scale).astype(cupy.float32)


# --- dense ---------------------------------------------------------------------------------

def _dense_size(cupy, torch, backends, runner, l2_bytes, width, log2, largest):
    batch = 2**log2
    w = _normal(cupy, (width, width), 1 / math.sqrt(width))
    b = _normal(cupy, width, 0.1)
    sets = [(_normal(cupy, (batch, width)), _normal(cupy, (batch, width)))         # x, dy
            for _ in range(_rotation(4 * batch * width * 4, l2_bytes))]       # + y, dx
    cases = {}
    for name in backends:
        def call(x, dy, name=name):
            _, ctx = ops.dense(x, w, b, "tanh", backend=name)
            ops.dense_backward(ctx, dy)
        cases[f"tinynet:{name}"] = (call, _in_turn(sets))
    if torch is not None:
        weight = torch.from_dlpack(w).t().contiguous().requires_grad_()      # (out, in)
        bias = torch.from_dlpack(b).clone().requires_grad_()
        torch_sets = [(torch.from_dlpack(x).requires_grad_(), torch.from_dlpack(dy))
                      for x, dy in sets]

        def torch_call(x, dy):
            y = torch.tanh(torch.nn.functional.linear(x, weight, bias))
            torch.autograd.grad(y, (x, weight, bias), dy)
        cases["torch-cuda"] = (torch_call, _in_turn(torch_sets))
    counted = work.add(work.dense_forward(batch, width, width),
                       work.dense_backward(batch, width, width))
    return runner.rows("dense fwd+bwd", f"w{width} b2^{log2}", "fwd+bwd", cases, counted,
                       width=width, batch=batch, largest_batch=largest)


def dense_rows(cupy, torch, backends, runner, l2_bytes, found):
    log2_batches = list(DENSE_LOG2_BATCHES[runner.mode])
    for width in DENSE_WIDTHS:
        for log2 in log2_batches:
            found += _dense_size(cupy, torch, backends, runner, l2_bytes, width, log2,
                                 largest=log2 == log2_batches[-1])
            _free(cupy, torch)


# --- lstm ----------------------------------------------------------------------------------

def _torch_lstm(torch, w_ih, w_hh, b):
    """nn.LSTM with our weights: PyTorch keeps them (4H, in) and has two biases."""
    n_in, hidden = w_ih.shape[0], w_hh.shape[0]
    lstm = torch.nn.LSTM(n_in, hidden, batch_first=True).cuda()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_dlpack(w_ih).t())
        lstm.weight_hh_l0.copy_(torch.from_dlpack(w_hh).t())
        lstm.bias_ih_l0.copy_(torch.from_dlpack(b))
        lstm.bias_hh_l0.zero_()
    return lstm


def _lstm_size(cupy, torch, backends, runner, l2_bytes, steps, hidden, batch):
    n_in = hidden
    h0, c0 = _normal(cupy, (batch, hidden), 0.5), _normal(cupy, (batch, hidden), 0.5)
    w_ih = _normal(cupy, (n_in, 4 * hidden), 1 / math.sqrt(n_in))
    w_hh = _normal(cupy, (hidden, 4 * hidden), 1 / math.sqrt(hidden))
    b = _normal(cupy, 4 * hidden, 0.5)
    per_set = 4 * batch * steps * (2 * n_in + 2 * hidden)                # xs, dhs, hs, dxs
    sets = [(_normal(cupy, (batch, steps, n_in)), _normal(cupy, (batch, steps, hidden)))
            for _ in range(_rotation(per_set, l2_bytes))]
    cases = {}
    for name in backends:
        def call(xs, dhs, name=name):
            *_, ctx = ops.lstm(xs, h0, c0, w_ih, w_hh, b, backend=name)
            ops.lstm_backward(ctx, dhs)
        cases[f"tinynet:{name}"] = (call, _in_turn(sets))
    if torch is not None:
        lstm = _torch_lstm(torch, w_ih, w_hh, b)
        th0 = torch.from_dlpack(h0).unsqueeze(0).clone().requires_grad_()   # (1, batch, H)
        tc0 = torch.from_dlpack(c0).unsqueeze(0).clone().requires_grad_()
        torch_sets = [(torch.from_dlpack(xs).requires_grad_(), torch.from_dlpack(dhs))
                      for xs, dhs in sets]
        wrt = (th0, tc0) + tuple(lstm.parameters())

        def torch_call(xs, dhs):
            hs, _ = lstm(xs, (th0, tc0))
            torch.autograd.grad(hs, (xs,) + wrt, dhs)
        cases["torch-cuda"] = (torch_call, _in_turn(torch_sets))
    counted = work.add(work.lstm_forward(batch, steps, n_in, hidden),
                       work.lstm_backward(batch, steps, n_in, hidden))
    return runner.rows("lstm fwd+bwd", f"T{steps} H{hidden} b{batch}", "fwd+bwd", cases,
                       counted, hidden=hidden, batch=batch, steps=steps)


def lstm_rows(cupy, torch, backends, runner, l2_bytes, found):
    for hidden in LSTM_HIDDEN:
        for batch in LSTM_BATCHES:
            found += _lstm_size(cupy, torch, backends, runner, l2_bytes,
                                LSTM_STEPS[runner.mode], hidden, batch)
            _free(cupy, torch)


# --- launch overhead -----------------------------------------------------------------------

def overhead_rows(cupy, torch, backends, runner, found):
    """Each op at its smallest size, device arrays in; wall-clock time per call. Backward
    ops get a fresh context per call, made untimed before each block."""
    batch, n_in, n_out = overhead.DENSE
    x, w, dy = (_normal(cupy, shape) for shape in ((batch, n_in), (n_in, n_out), (batch, n_out)))
    cb, ci, hidden = overhead.CELL
    cell = (_normal(cupy, (cb, ci)), _normal(cupy, (cb, hidden)), _normal(cupy, (cb, hidden)),
            _normal(cupy, (ci, 4 * hidden), 0.5), _normal(cupy, (hidden, 4 * hidden), 0.5),
            _normal(cupy, 4 * hidden, 0.5))                    # x, h, c, w_ih, w_hh, b
    dh1, dc1 = _normal(cupy, (cb, hidden)), _normal(cupy, (cb, hidden))
    sb, steps, si, _ = overhead.SEQUENCE
    sequence = (_normal(cupy, (sb, steps, si)),) + cell[1:]   # xs, h0, c0, w_ih, w_hh, b
    dhs = _normal(cupy, (sb, steps, hidden))

    def fresh(make):
        return lambda n: [(make(),) for _ in range(n)]

    def no_arguments(n):
        return [()] * n

    cases = {op: {} for op in overhead.op_sizes()}
    for name in backends:
        impl = f"tinynet:{name}"
        cases["dense"][impl] = (lambda n=name: ops.dense(x, w, None, "tanh", backend=n),
                                no_arguments)
        cases["dense_backward"][impl] = (
            lambda ctx: ops.dense_backward(ctx, dy),
            fresh(lambda n=name: ops.dense(x, w, None, "tanh", backend=n)[1]))
        cases["lstm_cell"][impl] = (lambda n=name: ops.lstm_cell(*cell, backend=n), no_arguments)
        cases["lstm_cell_backward"][impl] = (
            lambda ctx: ops.lstm_cell_backward(ctx, dh1, dc1),
            fresh(lambda n=name: ops.lstm_cell(*cell, backend=n)[2]))
        cases["lstm"][impl] = (lambda n=name: ops.lstm(*sequence, backend=n), no_arguments)
        cases["lstm_backward"][impl] = (
            lambda ctx: ops.lstm_backward(ctx, dhs),
            fresh(lambda n=name: ops.lstm(*sequence, backend=n)[3]))
    if torch is not None:                 # forward counterparts, recording the autograd graph
        tx, tw = torch.from_dlpack(x), torch.from_dlpack(w).clone().requires_grad_()
        torch_cell = torch.nn.LSTMCell(ci, hidden).cuda()
        torch_lstm = torch.nn.LSTM(si, hidden, batch_first=True).cuda()
        t_x, t_h, t_c = (torch.from_dlpack(a) for a in cell[:3])
        t_xs = torch.from_dlpack(sequence[0])
        t_state = (t_h.unsqueeze(0), t_c.unsqueeze(0))
        cases["dense"]["torch-cuda"] = (lambda: torch.tanh(tx @ tw), no_arguments)
        cases["lstm_cell"]["torch-cuda"] = (lambda: torch_cell(t_x, (t_h, t_c)), no_arguments)
        cases["lstm"]["torch-cuda"] = (lambda: torch_lstm(t_xs, t_state), no_arguments)
    for op, (size, counted) in overhead.op_sizes().items():
        found += runner.rows("launch overhead", size, "call", cases[op], counted, clock="wall",
                             op=op)


# --- stacks: many small models trained at once (S7's shape) --------------------------------

def torch_copy(torch):
    """A weight (a CuPy array) as a tensor of its own on its device, shared through DLPack
    and then copied."""
    return lambda p: torch.from_dlpack(p).clone()


def stack_rows(cupy, torch, backends, runner, found):
    """S7 stack (bench/stack_suite.py) at STACK_MODELS models, on the GPU: per model-sequence,
    the stacked update through ops; the same update one model at a time through the
    single-model ops (cpu_suite.s7_tinynet, a pool of ONE_AT_A_TIME_POOL models trained in
    turn, one per call); PyTorch's baddbmm loop."""
    models = STACK_MODELS[runner.mode]
    xs, targets, params = stack_suite.problem(models)      # (pool, M, 1, T, 1), (pool, M, 1, 1)
    steps, hidden = xs.shape[3], params[1].shape[1]
    xs, targets = cupy.asarray(xs), cupy.asarray(targets)
    params = [cupy.asarray(p) for p in params]
    pool = [(xs[k], targets[k]) for k in range(xs.shape[0])]
    cases = {f"tinynet:{name}": (stack_suite.tinynet_stack(name, params), _in_turn(pool))
             for name in backends}
    for name in backends:
        singles = [(cpu_suite.s7_tinynet(name, [p[m] for p in params]), x[m], target[m])
                   for m, (x, target) in zip(range(min(ONE_AT_A_TIME_POOL, models)), pool)]
        cases[f"tinynet:{name} one at a time"] = (lambda train, x, target: train(x, target),
                                                  _in_turn(singles))
    if torch is not None:
        torch_pool = [(torch.from_dlpack(x), torch.from_dlpack(target)) for x, target in pool]
        cases["torch-cuda bmm"] = (stack_suite.torch_stack(torch, params, torch_copy(torch)),
                                   _in_turn(torch_pool))
    n_params = sum(p[0].size for p in params)
    counted = work.add(work.lstm_forward(1, steps, 1, hidden),
                       work.lstm_backward(1, steps, 1, hidden),
                       work.dense_forward(1, hidden, 1), work.dense_backward(1, hidden, 1),
                       (2 * n_params, 3 * n_params * 4))                   # + the SGD update
    units = {impl: 1 if impl.endswith(" one at a time") else models for impl in cases}
    rows = runner.rows("S7 stack", f"M{models} b1 T{steps} in1 H{hidden}", "model-sequence",
                       cases, counted, units=units, models=models)
    for row in rows:
        row["per_second"] = 1 / row["time_s"]
    found += rows


# --- host time of the per-step LSTM path ----------------------------------------------------

def per_step_rows(cupy, backends, runner, found):
    """ops.lstm and ops.lstm_backward at PER_STEP's size, host time per step (see the module
    docstring). Backward calls get a fresh context each, made untimed before each block."""
    batch, steps, n_in, hidden = PER_STEP[runner.mode]
    sequence = (_normal(cupy, (batch, steps, n_in)), _normal(cupy, (batch, hidden), 0.5),
                _normal(cupy, (batch, hidden), 0.5),
                _normal(cupy, (n_in, 4 * hidden), 1 / math.sqrt(n_in)),
                _normal(cupy, (hidden, 4 * hidden), 1 / math.sqrt(hidden)),
                _normal(cupy, 4 * hidden, 0.5))                  # xs, h0, c0, w_ih, w_hh, b
    dhs = _normal(cupy, (batch, steps, hidden))
    forward, backward = {}, {}
    for name in backends:
        forward[f"tinynet:{name}"] = (lambda n=name: ops.lstm(*sequence, backend=n),
                                      lambda k: [()] * k)
        backward[f"tinynet:{name}"] = (
            lambda ctx: ops.lstm_backward(ctx, dhs),
            lambda k, n=name: [(ops.lstm(*sequence, backend=n)[3],) for _ in range(k)])
    units = dict.fromkeys(forward, steps)
    size = f"b{batch} T{steps} in{n_in} H{hidden}"
    flops, moved = work.lstm_forward(batch, steps, n_in, hidden)
    found += runner.rows("per-step host", f"lstm {size}", "step", forward,
                         (flops / steps, moved / steps), clock="host", units=units, op="lstm",
                         steps=steps, hidden=hidden, batch=batch)
    flops, moved = work.lstm_backward(batch, steps, n_in, hidden)
    found += runner.rows("per-step host", f"lstm_backward {size}", "step", backward,
                         (flops / steps, moved / steps), clock="host", units=units,
                         op="lstm_backward", steps=steps, hidden=hidden, batch=batch)


def run(doc, mode, log):
    """Measure the GPU suite into doc (device, versions, peaks, bench rows, errors). Rows
    join doc["bench"] as each size is done, so an interrupted run keeps what it measured."""
    cupy, torch, clock, backends = _context(log)
    l2_bytes = _describe(cupy, torch, doc)
    log("gpu: peaks (GEMM, copy)")
    gpu_peaks = peaks.gpu_peaks(cupy, clock, mode)
    doc["peaks"]["gpu"] = gpu_peaks
    runner = _Runner(clock, mode, gpu_peaks, doc["errors"], log)
    stack_rows(cupy, torch, backends, runner, doc["bench"])
    _free(cupy, torch)
    per_step_rows(cupy, backends, runner, doc["bench"])
    _free(cupy, torch)
    dense_rows(cupy, torch, backends, runner, l2_bytes, doc["bench"])
    lstm_rows(cupy, torch, backends, runner, l2_bytes, doc["bench"])
    overhead_rows(cupy, torch, backends, runner, doc["bench"])
