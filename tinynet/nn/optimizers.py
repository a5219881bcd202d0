"""Optimizers: SGD (momentum), Adam, RMSprop. They update Parameter.value in place from
Parameter.grad, on whatever device the weights live, and skip frozen weights and weights no
gradient reached.

    SGD       v = momentum v - lr g;  w += v            (momentum 0: w -= lr g)
    Adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t = step number
              w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    RMSprop   v = rho v + (1 - rho) g^2;  w -= lr g / (sqrt(v) + eps)

Gradient clipping, before the update: clipnorm=c scales each weight's gradient to norm <= c
(Keras' meaning); global_clipnorm=c scales all gradients together so that their joint norm
is <= c (PyTorch's clip_grad_norm_).

In an nn.Stack every weight has a leading models axis: learning_rate may then be one per
model (a sequence of M values), and clipping norms are each model's own.

state() / set_state() give the step count and the per-weight slots (momentum, m, v) as host
arrays, for checkpoints; slots are keyed by the weight's position in the model.
"""

import numpy as np

import tinynet
from tinynet.nn._arrays import array_module


class Optimizer:
    slot_names = ()

    def __init__(self, learning_rate, clipnorm=None, global_clipnorm=None):
        rate = np.asarray(learning_rate, dtype=np.float64)
        if rate.ndim > 1 or rate.size == 0 or not np.all(rate > 0):
            raise ValueError(f"{type(self).__name__}: learning_rate must be > 0 (or, for an "
                             f"nn.Stack, one value > 0 per model), got {learning_rate}")
        for name, value in (("clipnorm", clipnorm), ("global_clipnorm", global_clipnorm)):
            if value is not None and not value > 0:
                raise ValueError(f"{type(self).__name__}: {name} must be > 0 or None, got {value}")
        self.learning_rate = float(rate) if rate.ndim == 0 else rate
        self.clipnorm = clipnorm
        self.global_clipnorm = global_clipnorm
        self.iterations = 0
        self._slots = {}                     # (slot name, weight index) -> array
        self.models = None                   # M when the weights are a stack's (nn.Stack)

    def step(self, params):
        """One update of every trainable weight that has a gradient."""
        grads = [p.grad if p.trainable else None for p in params]
        if self.clipnorm is not None:
            grads = [None if g is None else self._scaled(g, self.clipnorm, self._norm(g))
                     for g in grads]
        if self.global_clipnorm is not None:
            total = sum(self._norm(g) ** 2 for g in grads if g is not None) ** 0.5
            grads = [None if g is None else self._scaled(g, self.global_clipnorm, total)
                     for g in grads]
        self.iterations += 1
        rates = {}          # this step's learning rate for each kind of gradient (_rate)
        for index, (param, grad) in enumerate(zip(params, grads)):
            if grad is not None:
                self._update(index, param, grad, self._rate(grad, rates))

    def _norm(self, g):
        """The norm of a gradient: one per model in a stack (an array (M,))."""
        xp = array_module(g)
        if self.models is None:
            return float(xp.sqrt((g * g).sum()))
        return xp.sqrt((g * g).reshape(len(g), -1).sum(axis=1))

    def _scaled(self, g, limit, norm):
        """g scaled to norm <= limit (each model's part on its own, in a stack)."""
        if self.models is None:
            return g * (limit / norm) if norm > limit else g
        xp = array_module(g)
        factor = xp.where(norm > limit, limit / xp.maximum(norm, limit), 1.0)
        return g * self._per_model(factor.astype(g.dtype), g)

    def _per_model(self, values, like):
        """Values (M,) shaped to broadcast over a stacked weight like `like`."""
        return values.reshape((-1,) + (1,) * (like.ndim - 1))

    def _rate(self, like, made):
        """The learning rate to multiply a gradient like `like` by: a float, or one per model
        shaped to broadcast over it, made once a step for each kind of gradient (array type,
        dtype, rank) and kept in `made`, the step's dict."""
        rate = self.learning_rate
        if type(rate) is float:
            return rate
        key = (type(like), like.dtype, like.ndim)
        shaped = made.get(key)
        if shaped is None:
            shaped = made[key] = self._per_model(array_module(like).asarray(rate, like.dtype),
                                                 like)
        return shaped

    def _slot(self, name, index, like):
        key = (name, index)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = array_module(like).zeros_like(like)
        return slot

    def state(self):
        """{'iterations': ..., '<slot>/<index>': host array} for a checkpoint."""
        out = {"iterations": np.array(self.iterations, np.int64)}
        for (name, index), slot in sorted(self._slots.items()):
            out[f"{name}/{index}"] = np.asarray(tinynet.to_numpy(slot))
        return out

    def check_state(self, state, params, where):
        """Raise ValueError if `state` does not fit these weights; return (iterations, slots)."""
        if "iterations" not in state:
            raise ValueError(f"{where}: optimizer state has no 'iterations'")
        iterations = state["iterations"]
        if iterations.shape != () or iterations.dtype.kind not in "iu" or iterations < 0:
            raise ValueError(f"{where}: optimizer state 'iterations' must be a non-negative "
                             f"integer scalar, got {iterations.dtype} {iterations.shape}")
        slots = {}
        for key, array in state.items():
            if key == "iterations":
                continue
            name, _, index = key.partition("/")
            if name not in self.slot_names or not index.isdigit() or int(index) >= len(params):
                raise ValueError(f"{where}: optimizer state entry {key!r} does not belong to "
                                 f"{type(self).__name__} on this model (slots "
                                 f"{list(self.slot_names)} for {len(params)} weights)")
            value = params[int(index)].value
            if array.shape != value.shape or array.dtype != value.dtype:
                raise ValueError(f"{where}: optimizer state {key!r} is {array.dtype} "
                                 f"{array.shape}, but weight {params[int(index)].name} is "
                                 f"{value.dtype} {value.shape}")
            slots[(name, int(index))] = array
        return int(iterations), slots

    def set_state(self, iterations, slots, params):
        """Install checked state (see check_state) on the weights' device."""
        self.iterations = int(iterations)
        self._slots = {key: array_module(params[key[1]].value).asarray(array).copy()
                       for key, array in slots.items()}

    def move(self, convert):
        """Move the slots with convert(array) (Model.to)."""
        self._slots = {key: convert(slot) for key, slot in self._slots.items()}


class SGD(Optimizer):
    slot_names = ("momentum",)

    def __init__(self, learning_rate=0.01, momentum=0.0, clipnorm=None, global_clipnorm=None):
        super().__init__(learning_rate, clipnorm, global_clipnorm)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)

    def _update(self, index, param, grad, rate):
        if self.momentum == 0.0:
            param.value -= rate * grad
            return
        velocity = self._slot("momentum", index, param.value)
        velocity *= self.momentum
        velocity -= rate * grad
        param.value += velocity


class Adam(Optimizer):
    slot_names = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 clipnorm=None, global_clipnorm=None):
        super().__init__(learning_rate, clipnorm, global_clipnorm)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _update(self, index, param, grad, rate):
        xp = array_module(grad)
        m = self._slot("m", index, param.value)
        v = self._slot("v", index, param.value)
        m *= self.beta_1
        m += (1 - self.beta_1) * grad
        v *= self.beta_2
        v += (1 - self.beta_2) * (grad * grad)
        t = self.iterations
        m_hat = m * (1.0 / (1 - self.beta_1 ** t))
        v_hat = v * (1.0 / (1 - self.beta_2 ** t))
        param.value -= rate * m_hat / (xp.sqrt(v_hat) + self.epsilon)


class RMSprop(Optimizer):
    slot_names = ("v",)

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, clipnorm=None,
                 global_clipnorm=None):
        super().__init__(learning_rate, clipnorm, global_clipnorm)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def _update(self, index, param, grad, rate):
        xp = array_module(grad)
        v = self._slot("v", index, param.value)
        v *= self.rho
        v += (1 - self.rho) * (grad * grad)
        param.value -= rate * grad / (xp.sqrt(v) + self.epsilon)


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(optimizer):
    if isinstance(optimizer, Optimizer):
        return optimizer
    try:
        return _OPTIMIZERS[optimizer.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"{optimizer!r} is not an optimizer; use 'sgd', 'adam', 'rmsprop' or "
                         "an Optimizer object such as nn.SGD(0.1, momentum=0.9)") from None
