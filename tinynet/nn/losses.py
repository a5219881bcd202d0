"""Losses (and the metrics fit reports), each a mean over the batch: over every element,
or over the rows for the categorical losses.

    mse                    mean((p - y)^2)
    rmse                   sqrt(mse)
    binary_crossentropy    -mean(y log p + (1 - y) log(1 - p)); from_logits=True takes the
                           pre-sigmoid z and is exact for any z; from probabilities (a
                           sigmoid output layer) p is clipped to [eps, 1 - eps] in the value,
                           and the gradient is (p - y) / max(p (1 - p), eps), so the sigmoid's
                           backward turns it into (p - y) with no 0 * inf
    categorical_crossentropy         -mean over rows of sum(y log p): probabilities
                           (batch, classes), e.g. from a Dense(..., 'softmax') output, which
                           fit fuses with the loss; logits with from_logits=True. Target:
                           one-hot or probability rows (batch, classes)
    sparse_categorical_crossentropy  the same against class ids (batch,) or (batch, 1)
    softmax_crossentropy   logits (batch, classes) against class ids (batch,) or
                           probabilities (batch, classes)

value_and_grad(pred, target) returns (loss as a Python float, d loss / d pred);
stack_value_and_grad does the same for M models at once (a leading models axis on both),
returning each model's loss, a host array (M,). Each built-in loss and metric is written
once, over that models axis: one model is a stack of one (MSE keeps a one-model path of its
own, a single vdot, for the per-sample loops). Prediction
and target must have the same shape, class ids aside (nothing is broadcast: a (64, 1)
prediction against a (64,) target would silently become (64, 64)); a mismatch is a
ValueError naming both shapes and the likely cause.
"""

import numpy as np

import tinynet
from tinynet.nn._arrays import array_module, shape_text


def check_shapes(name, pred, target):
    """Prediction and target must have the same shape; say why they probably do not."""
    p, t = tuple(pred.shape), tuple(target.shape)
    if p == t:
        if target.dtype != pred.dtype:
            raise ValueError(f"{name} loss: the target is {target.dtype} but the prediction is "
                             f"{pred.dtype}: convert it with y.astype(np.{pred.dtype}) "
                             "(Model.fit/evaluate do this for you)")
        return
    message = (f"{name} loss: prediction shape {shape_text(p)} and target shape "
               f"{shape_text(t)} differ")
    if len(p) == len(t) + 1 and p[-1] == 1 and p[:-1] == t:
        fix = "the target has no last axis: use y.reshape(-1, 1) (or y[:, None]) so it is " \
              f"{shape_text(p)} like the prediction"
    elif len(t) == len(p) + 1 and t[-1] == 1 and t[:-1] == p:
        fix = f"the target has an extra last axis: use y[..., 0] so it is {shape_text(p)}"
    elif len(p) == len(t) and p and p[1:] == t[1:] and min(p[0], t[0]) > 0 \
            and max(p[0], t[0]) % min(p[0], t[0]) == 0:
        big, small = max(p[0], t[0]), min(p[0], t[0])
        which = "prediction" if p[0] > t[0] else "target"
        fix = (f"the {which} has {big} = {big // small} x {small} rows on the batch axis "
               "(axis 0): a concatenation or reshape probably used the wrong axis. Joining "
               f"{big // small} branches along axis 0 stacks their samples; join their "
               "features instead with Concatenate(axis=-1) (or np.concatenate(..., axis=-1))")
    elif len(p) == len(t) and p and p[0] == t[0]:
        fix = (f"the batch sizes agree ({p[0]}) but the rest differs: make the model's last "
               f"layer produce {shape_text(t[1:])} per sample, or reshape the target")
    else:
        fix = "check that the target belongs to this model's output"
    raise ValueError(f"{message}: {fix}")


def _check_stack(name, pred, target):
    """check_shapes for a stack (a leading models axis on both), in one model's terms."""
    if len(pred) and len(target):
        check_shapes(name, pred[0], target[0])
    if tuple(pred.shape) != tuple(target.shape):
        check_shapes(name, pred, target)


def _per_model_sums(a):
    """a (M, ...) -> (M,): the sum of each model's elements."""
    return a.sum(axis=tuple(range(1, a.ndim)))


def _on_host(values):
    """(M,) values as a host float64 array (one transfer from a GPU)."""
    return np.asarray(tinynet.to_numpy(values), np.float64)


class Loss:
    """A loss: value_and_grad(pred, target) for one model, stack_value_and_grad for M models
    at once (a leading models axis on both)."""

    name = "loss"

    def __call__(self, pred, target):
        """The value alone (how metrics call a loss)."""
        return self.value_and_grad(pred, target)[0]

    def stack_value_and_grad(self, pred, target, fused_softmax=False):
        """For a stack (a leading models axis on both): each model's own loss, a host array
        (M,), and the gradient of each model's loss with respect to its own predictions.
        fused_softmax: the probabilities of a softmax output (softmax_value_and_grad).
        This default runs the models one at a time (a Loss of your own); the built-in
        losses compute all of them at once."""
        one = self.softmax_value_and_grad if fused_softmax else self.value_and_grad
        xp = array_module(pred)
        values = np.empty(len(pred))
        grad = xp.empty(pred.shape, pred.dtype)
        for m in range(len(pred)):
            values[m], grad[m] = one(pred[m], target[m])
        return values, grad

    def __repr__(self):
        return f"<{self.name} loss>"


class _StackedLoss(Loss):
    """A built-in loss written once, over a leading models axis: _stacked(pred, target,
    fused_softmax) -> (values (M,) on the host, grad) for checked arrays; one model is a
    stack of one. _checked(pred, target) checks a stack's arguments and returns the target
    the math takes."""

    def value_and_grad(self, pred, target):
        values, grad = self.stack_value_and_grad(pred[None], target[None])
        return float(values[0]), grad[0]

    def stack_value_and_grad(self, pred, target, fused_softmax=False):
        return self._stacked(pred, self._checked(pred, target), fused_softmax)

    def _checked(self, pred, target):
        _check_stack(self.name, pred, target)
        return target


def _mean_square(name, pred, target):
    """(mean of (pred - target)^2, pred - target)."""
    check_shapes(name, pred, target)
    diff = pred - target
    flat = diff.reshape(-1)
    # vdot: the sum of squares in one call, with no (diff * diff) temporary
    return float(array_module(diff).vdot(flat, flat)) / max(diff.size, 1), diff


def _stack_mean_square(name, pred, target):
    """((M,) host means of (pred - target)^2 per model, pred - target, elements per model)."""
    _check_stack(name, pred, target)
    diff = pred - target
    per_model = max(diff[0].size if len(diff) else 0, 1)
    return _on_host(_per_model_sums(diff * diff)) / per_model, diff, per_model


class MSE(Loss):
    name = "mse"

    # one model has its own path (a single vdot): MSE is the loss of the per-sample loops
    def __call__(self, pred, target):
        return _mean_square(self.name, pred, target)[0]

    def value_and_grad(self, pred, target):
        value, diff = _mean_square(self.name, pred, target)
        return value, diff * (2.0 / max(diff.size, 1))

    def stack_value_and_grad(self, pred, target, fused_softmax=False):
        values, diff, per_model = _stack_mean_square(self.name, pred, target)
        return values, diff * (2.0 / per_model)


class RMSE(_StackedLoss):
    name = "rmse"

    def stack_value_and_grad(self, pred, target, fused_softmax=False):
        mean_squares, diff, per_model = _stack_mean_square(self.name, pred, target)
        values = np.sqrt(mean_squares)
        # d sqrt(mean) = diff / (n sqrt(mean)); a model with a zero loss has a zero gradient,
        # one with a NaN loss a NaN gradient
        scale = np.divide(1.0, per_model * values, out=np.zeros_like(values),
                          where=values != 0)
        scale = array_module(diff).asarray(scale.astype(diff.dtype))
        return values, diff * scale.reshape((-1,) + (1,) * (diff.ndim - 1))


class BinaryCrossentropy(_StackedLoss):
    name = "binary_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def _stacked(self, pred, target, fused_softmax):
        xp = array_module(pred)
        n = max(pred[0].size if len(pred) else 0, 1)
        if self.from_logits:
            z = pred
            # log(1 + e^-|z|) + max(z, 0) - z y: never exponentiates a positive number
            value = _per_model_sums(xp.maximum(z, 0) - z * target
                                    + xp.log1p(xp.exp(-xp.abs(z))))
            prob = 0.5 * (1 + xp.tanh(0.5 * z))                       # sigmoid(z), stable
            return _on_host(value) / n, (prob - target) * (1.0 / n)
        eps = float(np.finfo(pred.dtype).eps)
        p = xp.clip(pred, eps, 1 - eps)
        value = -_per_model_sums(target * xp.log(p) + (1 - target) * xp.log(1 - p))
        spread = xp.maximum(pred * (1 - pred), eps)
        return _on_host(value) / n, (pred - target) / spread * (1.0 / n)


class CategoricalCrossentropy(_StackedLoss):
    """-mean over rows of sum_k y_k log p_k, for predictions (batch, classes) against one-hot
    or probability rows y (batch, classes).

    Predictions are probabilities: a Dense(..., 'softmax') output layer, whose softmax fit
    fuses with this loss (the gradient reaching the logits is p * sum(y) - y, computed from
    p and y alone, never y / p through the softmax, which is 0 * inf once a p underflows);
    in the value, p is kept >= the dtype's smallest normal number. Anything outside [0, 1]
    is refused: logits need from_logits=True, which is exact for any logits."""

    name = "categorical_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def _checked(self, pred, target):
        _check_stack(self.name, pred, target)
        if pred.ndim != 3:
            raise ValueError(f"{self.name} loss: predictions must be (batch, classes), got "
                             f"{shape_text(pred.shape[1:])}")
        return target

    def softmax_value_and_grad(self, prob, target):
        """(loss, d loss / d logits) for probabilities that a softmax computed from logits:
        the loss fused with the softmax (Dense.backward takes this gradient as is)."""
        values, grad = self.stack_value_and_grad(prob[None], target[None], fused_softmax=True)
        return float(values[0]), grad[0]

    def _stacked(self, pred, target, fused_softmax):
        # pred (M, batch, classes); target: rows like pred, or class ids (M, batch)
        xp = array_module(pred)
        scale = 1.0 / max(pred.shape[1], 1)
        ids = target.dtype.kind in "iu"
        if ids:
            hit = target[..., None] == xp.arange(pred.shape[2])     # (M, batch, classes)
            one_hot = hit.astype(pred.dtype)
        else:
            one_hot = target
        if self.from_logits:
            shifted = pred - pred.max(axis=2, keepdims=True)
            exp = xp.exp(shifted)
            total = exp.sum(axis=2, keepdims=True)
            log_prob = shifted - xp.log(total)
            prob = exp / total
        else:
            log_prob = self._log_probabilities(pred)
            prob = pred
        # with class ids only each row's own class counts (another class's log p may be -inf)
        values = _on_host(-_per_model_sums(xp.where(hit, log_prob, 0) if ids
                                           else one_hot * log_prob)) * scale
        if self.from_logits or fused_softmax:          # the gradient reaching the logits
            grad = prob - one_hot if ids else prob * one_hot.sum(axis=2, keepdims=True) - one_hot
        else:
            grad = -one_hot / xp.maximum(pred, np.finfo(pred.dtype).tiny)
        return values, grad * scale

    def _log_probabilities(self, prob):
        if prob.size and (float(prob.min()) < 0 or float(prob.max()) > 1):
            raise ValueError(
                f"{self.name} loss: takes probabilities, but the predictions run from "
                f"{float(prob.min()):.4g} to {float(prob.max()):.4g}: give the last Dense "
                "activation='softmax', or, to train on logits, compile with loss="
                f"nn.{type(self).__name__}(from_logits=True)")
        xp = array_module(prob)
        return xp.log(xp.maximum(prob, np.finfo(prob.dtype).tiny))


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """CategoricalCrossentropy with integer class ids as the target: (batch,) or Keras'
    (batch, 1), each in [0, classes)."""

    name = "sparse_categorical_crossentropy"

    def _checked(self, pred, ids):
        # pred (M, batch, classes), ids (M, batch) or (M, batch, 1) -> ids (M, batch)
        if pred.ndim != 3:
            raise ValueError(f"{self.name} loss: predictions must be (batch, classes), got "
                             f"{shape_text(pred.shape[1:])}")
        models, batch, classes = pred.shape
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{self.name} loss: the target holds class ids, integers, got "
                             f"{ids.dtype}: use y.astype(np.int64); for one-hot rows use "
                             "categorical_crossentropy")
        if tuple(ids.shape) == (models, batch, 1):
            ids = ids.reshape(models, batch)
        if tuple(ids.shape) != (models, batch):
            raise ValueError(f"{self.name} loss: class ids must be (batch,) = ({batch},) for "
                             f"predictions {shape_text(pred.shape[1:])}, got "
                             f"{shape_text(ids.shape[1:])}" + (
                                 ": one-hot rows take categorical_crossentropy"
                                 if tuple(ids.shape[1:]) == (batch, classes) else ""))
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= classes):
            raise ValueError(f"{self.name} loss: class ids must be in [0, {classes}), got "
                             f"values from {int(ids.min())} to {int(ids.max())}")
        return ids


class SoftmaxCrossentropy(_StackedLoss):
    """Logits (batch, classes) against class ids (batch,) or probabilities (batch, classes):
    the from_logits=True crossentropy, sparse or not by the target's dtype."""

    name = "softmax_crossentropy"
    from_logits = True

    def stack_value_and_grad(self, logits, target, fused_softmax=False):
        kind = SparseCategoricalCrossentropy if target.dtype.kind in "iu" \
            else CategoricalCrossentropy
        loss = kind(from_logits=True)
        loss.name = self.name
        return loss.stack_value_and_grad(logits, target)


def class_ids(y, loss):
    """A sparse loss's target as integers: whole-number floats are accepted (as Keras does)."""
    if y.dtype.kind in "iu":
        return y
    if y.dtype.kind in "fb" and np.all(np.mod(y, 1) == 0):
        return y.astype(np.int64)
    raise ValueError(f"{loss.name} loss: the target holds class ids, got {y.dtype} values "
                     "that are not whole numbers" + (
                         ": one-hot or probability rows take categorical_crossentropy"
                         if y.ndim == 2 and y.shape[1] > 1 else ""))


_LOSSES = {"mse": MSE, "mean_squared_error": MSE, "rmse": RMSE,
           "binary_crossentropy": BinaryCrossentropy,
           "softmax_crossentropy": SoftmaxCrossentropy,
           "categorical_crossentropy": CategoricalCrossentropy,
           "sparse_categorical_crossentropy": SparseCategoricalCrossentropy}


def get(loss):
    if isinstance(loss, Loss):
        return loss
    try:
        return _LOSSES[loss]()
    except (KeyError, TypeError):
        raise ValueError(f"{loss!r} is not a loss; use one of "
                         + ", ".join(repr(n) for n in _LOSSES) + " or a Loss object") from None


# --- metrics ----------------------------------------------------------------------------

class Metric:
    """A metric, written once over a leading models axis: metric(pred, target) -> a float
    for one model; metric.stack(pred, target) -> a host array (M,) for a stack."""

    def __init__(self, name, per_model):
        self.name = name
        self._per_model = per_model          # (pred, target) with a models axis -> (M,)

    def __call__(self, pred, target):
        return float(self.stack(pred[None], target[None])[0])

    def stack(self, pred, target):
        return _on_host(self._per_model(pred, target))

    def __repr__(self):
        return f"<{self.name} metric>"


def _per_model_means(a):
    """a (M, ...) -> (M,): the mean of each model's elements."""
    return a.mean(axis=tuple(range(1, a.ndim)))


def _accuracy(loss):
    """argmax against the class for the class losses, a threshold for binary ones."""
    if isinstance(loss, (CategoricalCrossentropy, SoftmaxCrossentropy)):
        def accuracy(pred, target):
            guess = pred.argmax(axis=-1)                         # (M, batch)
            truth = target.reshape(guess.shape) if target.dtype.kind in "iu" \
                else target.argmax(axis=-1)
            return _per_model_means(guess == truth)
        return accuracy
    threshold = 0.0 if getattr(loss, "from_logits", False) else 0.5

    def accuracy(pred, target):
        return _per_model_means((pred > threshold) == (target > 0.5))
    return accuracy


def metric(name, loss):
    """A Metric: 'accuracy' (thresholded for binary losses, argmax over the classes for the
    categorical ones), 'mae', 'mse', 'rmse'."""
    if name in ("accuracy", "acc"):
        return Metric("accuracy", _accuracy(loss))
    if name == "mae":
        return Metric(name, lambda pred, target: _per_model_means(abs(pred - target)))
    if name in ("mse", "rmse"):
        as_loss = get(name)
        return Metric(name, lambda pred, target: as_loss.stack_value_and_grad(pred, target)[0])
    raise ValueError(f"{name!r} is not a metric; use 'accuracy', 'mae', 'mse' or 'rmse'")
