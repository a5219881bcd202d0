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

value_and_grad(pred, target) returns (loss as a Python float, d loss / d pred). Prediction
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
    message = f"{name} loss: prediction shape {shape_text(p)} and target shape {shape_text(t)} differ"
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


class Loss:
    name = "loss"

    def __call__(self, pred, target):
        """The value alone (how metrics call a loss)."""
        return self.value_and_grad(pred, target)[0]

    def stack_value_and_grad(self, pred, target, fused_softmax=False):
        """For a stack (a leading models axis on both): each model's own loss, a host array
        (M,), and the gradient of each model's loss with respect to its own predictions.
        fused_softmax: the probabilities of a softmax output (softmax_value_and_grad)."""
        one = self.softmax_value_and_grad if fused_softmax else self.value_and_grad
        xp = array_module(pred)
        values = np.empty(len(pred))
        grad = xp.empty(pred.shape, pred.dtype)
        for m in range(len(pred)):
            values[m], grad[m] = one(pred[m], target[m])
        return values, grad

    def __repr__(self):
        return f"<{self.name} loss>"


def _mean_square(name, pred, target):
    """(mean of (pred - target)^2, pred - target)."""
    check_shapes(name, pred, target)
    diff = pred - target
    flat = diff.reshape(-1)
    # vdot: one call for the sum of squares (0.4 us, against 1.5 for (diff * diff).sum())
    return float(array_module(diff).vdot(flat, flat)) / max(diff.size, 1), diff


class MSE(Loss):
    name = "mse"

    def __call__(self, pred, target):
        return _mean_square(self.name, pred, target)[0]

    def value_and_grad(self, pred, target):
        value, diff = _mean_square(self.name, pred, target)
        return value, diff * (2.0 / max(diff.size, 1))

    def stack_value_and_grad(self, pred, target, fused_softmax=False):
        check_shapes(self.name, pred, target)
        diff = pred - target
        per_model = max(diff[0].size if len(diff) else 0, 1)
        squares = (diff * diff).reshape(len(diff), -1).sum(axis=1)
        values = np.asarray(tinynet.to_numpy(squares), np.float64) / per_model
        return values, diff * (2.0 / per_model)


class RMSE(Loss):
    name = "rmse"

    def __call__(self, pred, target):
        return float(np.sqrt(_mean_square(self.name, pred, target)[0]))

    def value_and_grad(self, pred, target):
        mean_square, diff = _mean_square(self.name, pred, target)
        value = float(np.sqrt(mean_square))
        if value == 0.0:
            return 0.0, diff * 0
        return value, diff * (1.0 / (max(diff.size, 1) * value))


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def value_and_grad(self, pred, target):
        check_shapes(self.name, pred, target)
        xp = array_module(pred)
        n = max(pred.size, 1)
        if self.from_logits:
            z = pred
            # log(1 + e^-|z|) + max(z, 0) - z y: never exponentiates a positive number
            value = (xp.maximum(z, 0) - z * target + xp.log1p(xp.exp(-xp.abs(z)))).sum()
            prob = 0.5 * (1 + xp.tanh(0.5 * z))                       # sigmoid(z), stable
            return float(value) / n, (prob - target) * (1.0 / n)
        eps = float(np.finfo(pred.dtype).eps)
        p = xp.clip(pred, eps, 1 - eps)
        value = -(target * xp.log(p) + (1 - target) * xp.log(1 - p)).sum()
        spread = xp.maximum(pred * (1 - pred), eps)
        return float(value) / n, (pred - target) / spread * (1.0 / n)


class CategoricalCrossentropy(Loss):
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

    def _rows(self, pred, target):
        """(batch, class ids (batch,) or None, one-hot/probability target or None)."""
        check_shapes(self.name, pred, target)
        if pred.ndim != 2:
            raise ValueError(f"{self.name} loss: predictions must be (batch, classes), got "
                             f"{shape_text(pred.shape)}")
        return pred.shape[0], None, target

    def value_and_grad(self, pred, target):
        batch, ids, dense = self._rows(pred, target)
        scale = 1.0 / max(batch, 1)
        xp = array_module(pred)
        if self.from_logits:
            shifted = pred - pred.max(axis=1, keepdims=True)
            exp = xp.exp(shifted)
            total = exp.sum(axis=1, keepdims=True)
            log_prob = shifted - xp.log(total)
            return (self._value(log_prob, ids, dense) * scale,
                    self._logit_grad(exp / total, ids, dense) * scale)
        log_prob = self._log_probabilities(pred)
        floor = xp.maximum(pred, np.finfo(pred.dtype).tiny)
        if ids is None:
            grad = -dense / floor
        else:
            grad = xp.zeros_like(pred)
            rows = xp.arange(batch)
            grad[rows, ids] = -1 / floor[rows, ids]
        return self._value(log_prob, ids, dense) * scale, grad * scale

    def softmax_value_and_grad(self, prob, target):
        """(loss, d loss / d logits) for probabilities that a softmax computed from logits:
        the loss fused with the softmax (Dense.backward takes this gradient as is)."""
        batch, ids, dense = self._rows(prob, target)
        scale = 1.0 / max(batch, 1)
        return (self._value(self._log_probabilities(prob), ids, dense) * scale,
                self._logit_grad(prob, ids, dense) * scale)

    def _log_probabilities(self, prob):
        if prob.size and (float(prob.min()) < 0 or float(prob.max()) > 1):
            raise ValueError(
                f"{self.name} loss: takes probabilities, but the predictions run from "
                f"{float(prob.min()):.4g} to {float(prob.max()):.4g}: give the last Dense "
                "activation='softmax', or, to train on logits, compile with loss="
                f"nn.{type(self).__name__}(from_logits=True)")
        xp = array_module(prob)
        return xp.log(xp.maximum(prob, np.finfo(prob.dtype).tiny))

    @staticmethod
    def _value(log_prob, ids, dense):
        if ids is None:
            return -float((dense * log_prob).sum())
        return -float(log_prob[array_module(log_prob).arange(len(ids)), ids].sum())

    @staticmethod
    def _logit_grad(prob, ids, dense):
        if ids is None:
            return prob * dense.sum(axis=1, keepdims=True) - dense
        grad = prob.copy()
        grad[array_module(prob).arange(len(ids)), ids] -= 1
        return grad


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """CategoricalCrossentropy with integer class ids as the target: (batch,) or Keras'
    (batch, 1), each in [0, classes)."""

    name = "sparse_categorical_crossentropy"

    def _rows(self, pred, ids):
        if pred.ndim != 2:
            raise ValueError(f"{self.name} loss: predictions must be (batch, classes), got "
                             f"{shape_text(pred.shape)}")
        batch, classes = pred.shape
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{self.name} loss: the target holds class ids, integers, got "
                             f"{ids.dtype}: use y.astype(np.int64); for one-hot rows use "
                             "categorical_crossentropy")
        if tuple(ids.shape) == (batch, 1):
            ids = ids.reshape(batch)
        if tuple(ids.shape) != (batch,):
            raise ValueError(f"{self.name} loss: class ids must be (batch,) = ({batch},) for "
                             f"predictions {shape_text(pred.shape)}, got "
                             f"{shape_text(ids.shape)}" + (
                                 ": one-hot rows take categorical_crossentropy"
                                 if tuple(ids.shape) == (batch, classes) else ""))
        if batch and (int(ids.min()) < 0 or int(ids.max()) >= classes):
            raise ValueError(f"{self.name} loss: class ids must be in [0, {classes}), got "
                             f"values from {int(ids.min())} to {int(ids.max())}")
        return batch, ids, None


class SoftmaxCrossentropy(Loss):
    """Logits (batch, classes) against class ids (batch,) or probabilities (batch, classes):
    the from_logits=True crossentropy, sparse or not by the target's dtype."""

    name = "softmax_crossentropy"
    from_logits = True

    def value_and_grad(self, logits, target):
        kind = SparseCategoricalCrossentropy if target.dtype.kind in "iu" \
            else CategoricalCrossentropy
        loss = kind(from_logits=True)
        loss.name = self.name
        return loss.value_and_grad(logits, target)


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

def _accuracy(loss):
    """argmax against the class for the class losses, a threshold for binary ones."""
    if isinstance(loss, (CategoricalCrossentropy, SoftmaxCrossentropy)):
        def accuracy(pred, target):
            guess = pred.argmax(axis=-1)
            truth = target.reshape(guess.shape) if target.dtype.kind in "iu" \
                else target.argmax(axis=-1)
            return float((guess == truth).mean())
        return accuracy
    threshold = 0.0 if getattr(loss, "from_logits", False) else 0.5

    def accuracy(pred, target):
        return float(((pred > threshold) == (target > 0.5)).mean())
    return accuracy


def _mae(pred, target):
    return float(abs(pred - target).mean())


def metric(name, loss):
    """A function (pred, target) -> float: 'accuracy' (thresholded for binary losses,
    argmax over the classes for the categorical ones), 'mae', 'mse', 'rmse'."""
    if name in ("accuracy", "acc"):
        return _accuracy(loss)
    if name == "mae":
        return _mae
    if name in ("mse", "rmse"):
        return get(name)
    raise ValueError(f"{name!r} is not a metric; use 'accuracy', 'mae', 'mse' or 'rmse'")
