"""fit, evaluate and predict; early stopping; checkpoints that resume bit-identically.

A checkpoint (fit(..., checkpoint=path)) is one .npz file written atomically (see io.py):
the weights (under the same names as model.save, so model.load reads it too), the optimizer
state under 'optimizer/', and under 'fit/' the position (epoch, step within the epoch), the
epoch's shuffling permutation, the shuffling generator's state, the running sums of the
epoch, the history and the early-stopping state. fit(..., resume=True) continues from it
exactly where the interrupted run was: on a CPU backend the weights come out bit-identical
to an uninterrupted run. The file is checked like any untrusted file before anything is
restored, and so is the fit itself: resuming with other data sizes, another batch size or
another optimizer is refused.

The loop serves nn.Model and nn.Stack alike through this interface (both provide it):

    loop_ready(what)                 compiled, one output, weights placed; else ValueError
    loop_data(x, y, lengths)         host arrays (a list of inputs, target, lengths or
                                     None), checked, samples on axis 0
    loop_batch(a)                    a host batch of samples as the model runs it (on its
                                     device; a stack's with the models axis first)
    loop_forward(xs, lengths)        (outputs, tape);  loop_backward(tape, grad)
    loop_loss(pred, y)               (value, gradient): a float, or one per model
    loop_metrics(pred, y)            [metric values], in the order of metric_names
    loop_check_finite(value, at)     raise NonFiniteLoss where the loss is inf or NaN
    loop_text(value)                 a value as the progress lines show it
    loop_assign(weights)             set checked host weights; loop_allows_early_stopping()
    sample_axis, metric_names, rng, optimizer, parameters(), named_parameters(),
    get_weights(), zero_grad()
"""

import json
import math
import os
import sys
import time

import numpy as np

from tinynet.nn import io
from tinynet.nn._arrays import array_module


class History:
    """history.history: {'loss': [per epoch], 'val_loss': [...], '<metric>': [...]}."""

    def __init__(self, history=None):
        self.history = history or {}

    def append(self, logs):
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"<History {len(self.history.get('loss', []))} epochs: {sorted(self.history)}>"


class EarlyStopping:
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs.
    mode 'auto' maximises monitors containing 'acc' and minimises the rest.
    restore_best_weights puts back the weights of the best epoch when fit ends."""

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode={mode!r}; use 'auto', 'min' or 'max'")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self.restore_best_weights = bool(restore_best_weights)
        self.reset()

    def reset(self):
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self.best_weights = None            # {name: host array} when restore_best_weights

    def update(self, epoch, logs, model):
        """Record one epoch; True when training should stop."""
        value = logs[self.monitor]
        better = self.best is None or (value > self.best + self.min_delta if self.maximize
                                       else value < self.best - self.min_delta)
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = model.get_weights()
            return False
        self.wait += 1
        return self.wait > self.patience

    def state(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def set_state(self, state, best_weights):
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = best_weights or None


# --- one step ---------------------------------------------------------------------------

class NonFiniteLoss(FloatingPointError):
    """fit stopped at a loss that is inf or NaN (fit(..., stop_on_nonfinite=False) trains on)."""


def non_finite(model, value, epoch, epochs, step, steps, which=""):
    rate = model.optimizer.learning_rate
    rate_text = f"{rate:g}" if np.ndim(rate) == 0 else "the current rates"
    smaller = f"{rate / 10:g}" if np.ndim(rate) == 0 else "a tenth of them"
    return NonFiniteLoss(
        f"fit: the loss is {value}{which} at epoch {epoch + 1} of {epochs}, batch {step + 1} "
        f"of {steps}: training diverged, and this batch's update was not applied. The usual "
        f"fixes: a smaller learning rate ({type(model.optimizer).__name__}({smaller}) "
        f"instead of {rate_text}), smaller initial weights (kernel_initializer=), inputs and "
        "targets scaled to about 1, or gradient clipping (clipnorm=). To train on "
        "regardless, pass stop_on_nonfinite=False")


def train_step(model, xs, y, lengths=None, position=None):
    """Forward, loss, backward, update on device batches; (loss, [metric values]).
    position: (epoch, epochs, step, steps) to raise NonFiniteLoss there, before any update,
    when the loss is inf or NaN; None: no check."""
    model.zero_grad()
    outs, tape = model.loop_forward(xs, lengths)
    pred = outs[0]
    value, grad = model.loop_loss(pred, y)
    if position is not None:
        model.loop_check_finite(value, position)
    metrics = model.loop_metrics(pred, y)
    model.loop_backward(tape, grad)
    model.optimizer.step(model.parameters())
    return value, metrics


def predict_device(model, xs, batch_size, lengths=None):
    """The model's outputs for host inputs xs, batch by batch, left on the device."""
    n = len(xs[0])
    batch_size = n if batch_size is None else max(int(batch_size), 1)
    chunks = []
    for lo in range(0, max(n, 1), batch_size):
        rows = slice(lo, lo + batch_size)
        # [0]: the outputs alone. The tape (what a backward would read, several times the
        # outputs' size) is freed here, before the next chunk's forward allocates its own.
        chunks.append(model.loop_forward(
            [model.loop_batch(a[rows]) for a in xs],
            None if lengths is None else model.loop_batch(lengths[rows]))[0])
    if len(chunks) == 1:
        return chunks[0]
    return [array_module(parts[0]).concatenate(parts, axis=model.sample_axis)
            for parts in zip(*chunks)]


def evaluate(model, xs, y, batch_size=256, lengths=None):
    """{'loss': ..., '<metric>': ...} over the whole set (not a mean of batch values)."""
    check_samples(xs, y, lengths)
    pred = predict_device(model, xs, batch_size, lengths)[0]
    target = model.loop_batch(y)
    logs = {"loss": model.loop_loss(pred, target)[0]}
    logs.update(zip(model.metric_names, model.loop_metrics(pred, target)))
    return logs


def check_samples(xs, y, lengths=None):
    counts = [len(a) for a in xs]
    if any(c != len(y) for c in counts):
        raise ValueError(f"x and y must have the same number of samples on axis 0, got "
                         f"{counts if len(counts) > 1 else counts[0]} and {len(y)}")
    if lengths is not None and len(lengths) != len(y):
        raise ValueError(f"lengths must have one entry per sample: {len(y)}, got "
                         f"{len(lengths)}")
    return len(y)


# --- fit --------------------------------------------------------------------------------

def fit(model, x, y, epochs=1, batch_size=32, shuffle=True, validation_split=0.0,
        validation_data=None, verbose=1, early_stopping=None, checkpoint=None,
        checkpoint_every=None, resume=False, stop_on_nonfinite=True, lengths=None):
    """Train `model` (compiled; an nn.Model or an nn.Stack) on x, y.

    epochs: passes over the training samples. batch_size: samples per update (1 = online
    learning; None = the whole set). shuffle: a new order every epoch, from the model's
    generator (compile(seed=...)). validation_split: this fraction of the samples, taken
    from the end before any shuffling, is held out and evaluated after every epoch as
    'val_loss' (or pass validation_data=(x_val, y_val) or (x_val, y_val, lengths_val)).
    verbose: 0 silent, 1 one line per epoch (and a progress count during long epochs on a
    terminal), 2 one line per epoch. early_stopping: an EarlyStopping. checkpoint: a path
    written atomically every checkpoint_every steps (updates), or at the end of every epoch
    when that is None, and at the end; resume=True continues from that file when it exists.
    stop_on_nonfinite: raise NonFiniteLoss at the first batch whose loss is inf or NaN,
    naming the epoch and the batch, before that batch's update (False: train on, the
    history fills with NaN). lengths: each sequence's valid steps, for the LSTMs.
    Returns a History.
    """
    model.loop_ready("fit")
    xs, y, lengths = model.loop_data(x, y, lengths)
    n = check_samples(xs, y, lengths)
    val_lengths = None
    if validation_data is not None:
        val_x, val_y, val_lengths = model.loop_data(*validation_data)
        train_x, train_y, train_lengths = xs, y, lengths
    elif validation_split:
        if not 0.0 < validation_split < 1.0:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
        split = int(n * (1.0 - validation_split))
        train_x, train_y = [a[:split] for a in xs], y[:split]
        val_x, val_y = [a[split:] for a in xs], y[split:]
        if lengths is not None:
            train_lengths, val_lengths = lengths[:split], lengths[split:]
        else:
            train_lengths = None
    else:
        train_x, train_y, train_lengths, val_x, val_y = xs, y, lengths, None, None
    n_train = len(train_y)
    if n_train == 0:
        raise ValueError("fit: no training samples" +
                         (" left after validation_split" if validation_split else ""))
    batch_size = n_train if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (1 = online learning), got {batch_size}")
    if checkpoint_every is not None and int(checkpoint_every) < 1:
        raise ValueError(f"checkpoint_every must be >= 1 steps, got {checkpoint_every}")
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every needs checkpoint=: the file to write every "
                         f"{checkpoint_every} steps, e.g. checkpoint='run.npz'")
    steps = math.ceil(n_train / batch_size)
    names = ["loss"] + list(model.metric_names)
    if early_stopping is not None:
        model.loop_allows_early_stopping()
        available = names + ([f"val_{k}" for k in names] if val_y is not None else [])
        if early_stopping.monitor not in available:
            raise ValueError(f"EarlyStopping monitors {early_stopping.monitor!r}, but fit "
                             f"reports {available}" + (
                                 "; pass validation_split= or validation_data= for val_ values"
                                 if val_y is None else ""))
        early_stopping.reset()
    config = {"train_samples": n_train, "batch_size": batch_size, "shuffle": bool(shuffle),
              "validation_samples": 0 if val_y is None else len(val_y)}

    state = {"epoch": 0, "step": 0, "global_step": 0, "sums": [0.0] * len(names),
             "seen": 0, "history": {}, "stopped": False}
    order = None
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        state, order = load_checkpoint(model, checkpoint, config, early_stopping)
        if verbose:
            print(f"resuming from {checkpoint}: epoch {state['epoch'] + 1}, step "
                  f"{state['step']} of {steps}")
    history = History(state["history"])
    bar = verbose == 1 and sys.stdout.isatty()

    for epoch in range(state["epoch"], epochs):
        if state["stopped"]:
            break
        started = last_shown = time.perf_counter()
        if state["step"] == 0:
            order = model.rng.permutation(n_train) if shuffle else None
            state["sums"], state["seen"] = [0.0] * len(names), 0
        for step in range(state["step"], steps):
            lo, hi = step * batch_size, min((step + 1) * batch_size, n_train)
            rows = slice(lo, hi) if order is None else order[lo:hi]
            value, metrics = train_step(
                model, [model.loop_batch(a[rows]) for a in train_x],
                model.loop_batch(train_y[rows]),
                None if train_lengths is None else model.loop_batch(train_lengths[rows]),
                (epoch, epochs, step, steps) if stop_on_nonfinite else None)
            for k, v in enumerate([value] + metrics):
                state["sums"][k] = state["sums"][k] + v * (hi - lo)
            state["seen"] += hi - lo
            state["step"] = step + 1
            state["global_step"] += 1
            if checkpoint_every and state["global_step"] % int(checkpoint_every) == 0:
                save_checkpoint(model, checkpoint, state, history, order, early_stopping, config)
            if bar and time.perf_counter() - last_shown > 0.5:
                last_shown = time.perf_counter()
                print(f"\repoch {epoch + 1}/{epochs}  step {step + 1}/{steps}  loss "
                      f"{model.loop_text(state['sums'][0] / state['seen'])}", end="",
                      flush=True)
        logs = {k: s / state["seen"] for k, s in zip(names, state["sums"])}
        if val_y is not None:
            logs.update({f"val_{k}": v for k, v in
                         evaluate(model, val_x, val_y, max(batch_size, 256),
                                  val_lengths).items()})
        history.append(logs)
        stop = early_stopping.update(epoch, logs, model) if early_stopping else False
        state.update(epoch=epoch + 1, step=0, stopped=stop)
        if verbose:
            print(("\r" if bar else "") + f"epoch {epoch + 1}/{epochs}  " + "  ".join(
                f"{k} {model.loop_text(v)}" for k, v in logs.items())
                + f"  ({time.perf_counter() - started:.2f} s)"
                + ("  early stop" if stop else ""))
        if checkpoint is not None and not checkpoint_every:
            save_checkpoint(model, checkpoint, state, history, order, early_stopping, config)
        if stop:
            break
    if checkpoint is not None:       # the state to continue from, before any restore
        save_checkpoint(model, checkpoint, state, history, order, early_stopping, config)
    if early_stopping is not None and early_stopping.best_weights is not None:
        model.loop_assign(early_stopping.best_weights)
    return history


# --- checkpoints ------------------------------------------------------------------------

def save_checkpoint(model, path, state, history, order, early_stopping, config):
    arrays = {io.FORMAT_KEY: np.array(io.CHECKPOINT_FORMAT)}
    arrays.update(model.get_weights())
    arrays["optimizer/kind"] = np.array(type(model.optimizer).__name__)
    for key, value in model.optimizer.state().items():
        arrays[f"optimizer/{key}"] = value
    record = dict(_plain(state), history=_plain(history.history), config=config,
                  rng=model.rng.bit_generator.state,
                  early_stopping=None if early_stopping is None else early_stopping.state())
    arrays["fit/state"] = np.array(json.dumps(record))
    arrays["fit/order"] = np.zeros(0, np.int64) if order is None else np.asarray(order, np.int64)
    if early_stopping is not None and early_stopping.best_weights is not None:
        for name, value in early_stopping.best_weights.items():
            arrays[f"fit/best/{name}"] = value
    io.write_atomic(path, arrays)


def _plain(value):
    """JSON-ready: a stack's per-model arrays (and NumPy numbers) as lists and floats."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else value


def _arrays(values):
    """A stack's per-model values back as arrays (the inverse of _plain for sums, history)."""
    return [np.asarray(v) if isinstance(v, list) else v for v in values]


_STATE_KEYS = ("epoch", "step", "global_step", "sums", "seen", "history", "stopped",
               "config", "rng", "early_stopping")


def load_checkpoint(model, path, config, early_stopping):
    """Check everything in the file against this model and this fit, then restore it;
    returns (state, epoch order). On any problem: ValueError, nothing restored."""
    what = "fit(resume=True)"
    arrays = io.read_npz(path, what, "checkpoint")
    io.file_format(arrays, path, what, (io.CHECKPOINT_FORMAT,))
    weights = io.check_weights(model.named_parameters(), {k: v for k, v in arrays.items()
                                              if not k.startswith("fit/best/")}, path, what)
    kind = arrays.get("optimizer/kind")
    if kind is None or str(kind) != type(model.optimizer).__name__:
        raise ValueError(f"{what}: {path!r} holds the state of a {kind} optimizer; this "
                         f"model is compiled with {type(model.optimizer).__name__}")
    optimizer_state = {k[len("optimizer/"):]: v for k, v in arrays.items()
                       if k.startswith("optimizer/") and k != "optimizer/kind"}
    iterations, slots = model.optimizer.check_state(optimizer_state, model.parameters(),
                                                    f"{what}: {path!r}")
    try:
        state = json.loads(str(arrays["fit/state"]))
        missing = [k for k in _STATE_KEYS if k not in state]
        stopping = state["early_stopping"] if not missing else None
        if stopping is not None:
            missing += [f"early_stopping/{k}" for k in ("best", "best_epoch", "wait")
                        if k not in stopping]
        if missing:
            raise ValueError(f"missing entries {missing}")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{what}: {path!r} has no valid fit state ({error})") from error
    if state["config"] != config:
        raise ValueError(f"{what}: {path!r} was written by a fit with {state['config']}; this "
                         f"fit has {config}. Resume with the same data and settings, or "
                         "start over without resume=True")
    order = arrays.get("fit/order")
    if config["shuffle"] and (order is None or order.dtype.kind not in "iu"
                              or not np.array_equal(np.sort(order), np.arange(config["train_samples"]))):
        raise ValueError(f"{what}: {path!r} has no valid shuffling order for "
                         f"{config['train_samples']} samples")
    best = {k[len("fit/best/"):]: v for k, v in arrays.items() if k.startswith("fit/best/")}
    if best:
        best = io.check_weights(model.named_parameters(), best, path, f"{what} (best weights)")
    state["sums"] = _arrays(state["sums"])
    state["history"] = {k: _arrays(v) for k, v in state["history"].items()}
    # everything checked: restore
    model.loop_assign(weights)
    model.optimizer.set_state(iterations, slots, model.parameters())
    model.rng = rng
    if early_stopping is not None and state["early_stopping"] is not None:
        early_stopping.set_state(state["early_stopping"], best)
    return state, (order if config["shuffle"] else None)
