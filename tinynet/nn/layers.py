"""Layers: Dense, LSTM, Conv1D, Embedding, GlobalPool1D, Concatenate, Sum.

A layer owns its weights (Parameter objects) and knows three things:

    output_shape(shape)      checks an input shape and returns the output shape; None marks
                             an axis not known until data arrives (the batch, usually). The
                             same check runs when a model is built and on every forward.
    forward(x) -> y, cache   cache is what backward needs (the ops contexts, shapes)
    backward(cache, dy) -> dx   and *adds* the weight gradients into Parameter.grad, so a
                             layer used several times collects the gradient of every use.

Dense, LSTM and Conv1D compute through tinynet.ops (any backend); the rest is element-wise
glue run by the array module of the data (NumPy on the host, CuPy on a GPU).

In a stack (nn.Stack) a layer runs M models at once: `models` is M, every weight has a
leading models axis (M, ...), and so has every input and output; shapes in the checks and
messages are those of one model. A layer's forward takes `lengths` when `takes_lengths`
(the LSTM: each sequence's valid steps, (batch,) or (M, batch) in a stack).
Calling a layer on an array runs it; calling it on a symbolic tensor (nn.Input) builds a
graph for nn.Model. Every shape error is a ValueError that names the layer, the shape it
expected, the shape it got, and the likely fix.
"""

import numpy as np

import tinynet
from tinynet import ops
from tinynet._activations import canonical
from tinynet.nn import initializers
from tinynet.nn._arrays import array_module, float_dtype, shape_text
from tinynet.nn.graph import Tensor, symbolic_call


class Parameter:
    """A weight array, its accumulated gradient (None until a backward reaches it) and
    whether the optimizer may change it."""

    __slots__ = ("name", "value", "grad", "trainable")

    def __init__(self, name, value, trainable=True):
        self.name = name
        self.value = value
        self.grad = None
        self.trainable = trainable

    def accumulate(self, g):
        self.grad = g if self.grad is None else self.grad + g

    def __repr__(self):
        return (f"<Parameter {self.name} {shape_text(self.value.shape)} {self.value.dtype}"
                + ("" if self.trainable else " frozen") + ">")


class LogitsGradient:
    """d loss / d logits for a softmax output, from a loss fused with the softmax
    (losses.CategoricalCrossentropy.softmax_value_and_grad): Dense.backward takes it as is."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _activation(name, argument, kind):
    """The canonical name of an ops activation; softmax is refused with where it belongs."""
    if name == "softmax":
        raise ValueError(f"{kind}: {argument}='softmax': softmax is the output activation of "
                         "nn.Dense (the last layer of a classifier, over its last axis), not "
                         f"an activation of {kind}")
    return canonical(name, argument, kind)


def _sequence_fix(layer, shape, features):
    """The explanation for a sequence layer given the wrong number of axes."""
    what = f"(batch, steps, {features})" if isinstance(features, str) else \
        f"(batch, steps, features) with features = {features}"
    message = f"expected a 3-D input {what}, got a {len(shape)}-D input of shape {shape_text(shape)}"
    if len(shape) == 2:
        b, s = shape
        message += (". A sequence batch has three axes: batch (independent samples), steps "
                    "(positions in time), features (values per step; channels for Conv1D). "
                    f"For one feature per step use x[..., None], which makes it "
                    f"{shape_text((b, s, 1))}")
        if features not in (1, "channels", "features"):
            message += f" (but this layer expects {features} features per step)"
    elif len(shape) == 1:
        message += ". For a single sequence of one feature use x[None, :, None]"
    layer.fail(message)


class Layer:
    """Base class. Subclasses set `takes_list` (several inputs, e.g. Concatenate) and
    `n_outputs`, create weights with add_weight, and implement output_shape/forward/backward."""

    takes_list = False
    n_outputs = 1
    sequence_input = False      # True: input is (batch, steps, features)
    takes_lengths = False       # True: forward(x, lengths)
    models = None               # M in a stack: a leading models axis on weights and data

    def __init__(self, name=None, dtype="float32"):
        self.name = name
        self.dtype = float_dtype(dtype, type(self).__name__)
        self.backend = None         # None: the current default backend (set by Model.to)
        self.last_backend = None    # the backend the ops of the last forward ran on
        self._params = []

    # --- weights -----------------------------------------------------------------------

    def add_weight(self, name, shape, initializer, rng, trainable=True):
        value = np.asarray(initializers.get(initializer)(tuple(shape), rng), dtype=self.dtype)
        if value.shape != tuple(shape):
            self.fail(f"initializer for {name} returned shape {shape_text(value.shape)}, "
                      f"expected {shape_text(shape)}")
        param = Parameter(name, value, trainable)
        self._params.append(param)
        return param

    @property
    def params(self):
        return list(self._params)

    @property
    def trainable(self):
        return any(p.trainable for p in self._params)

    @trainable.setter
    def trainable(self, value):
        for p in self._params:
            p.trainable = bool(value)

    def get_weights(self):
        """{name: host array copy}."""
        return {p.name: np.array(tinynet.to_numpy(p.value)) for p in self._params}

    def set_weights(self, weights):
        """Set weights from {name: array} (host or device arrays, converted to the layer's
        dtype and device); every name and shape is checked before anything changes."""
        self.install_weights(self.checked_weights(weights))

    def checked_weights(self, weights):
        """{name: host array in the layer's dtype}, or ValueError naming what is wrong."""
        known = {p.name: p for p in self._params}
        unknown = sorted(set(weights) - set(known))
        if unknown:
            self.fail(f"set_weights got unknown names {unknown}; this layer has "
                      f"{sorted(known)}")
        checked = {}
        for name, array in weights.items():
            host = np.asarray(tinynet.to_numpy(array))
            expected = known[name].value.shape
            if host.shape != tuple(expected):
                self.fail(f"set_weights: {name} must be {shape_text(expected)}, got "
                          f"{shape_text(host.shape)}")
            if host.dtype.kind not in "fiu":
                self.fail(f"set_weights: {name} must be a real number array, got {host.dtype}")
            checked[name] = host.astype(self.dtype)
        return checked

    def install_weights(self, checked):
        for param in self._params:
            if param.name in checked:
                param.value = array_module(param.value).asarray(checked[param.name])

    # --- errors -----------------------------------------------------------------------

    def describe(self):
        """Constructor arguments that identify an unnamed layer in messages."""
        return ""

    @property
    def label(self):
        kind = type(self).__name__
        if self.name:
            return f"{kind} layer '{self.name}'"
        return f"{kind} layer ({self.describe()})" if self.describe() else f"{kind} layer"

    def fail(self, message):
        raise ValueError(f"{self.label}: {message}")

    def model_shape(self, x):
        """The shape of one model's part of x (x itself outside a stack)."""
        return x.shape if self.models is None else x.shape[1:]

    def model_axis(self, axis, ndim):
        """A non-negative axis of one model's ndim-D data, as an axis of the data itself."""
        return axis % ndim + (0 if self.models is None else 1)

    def check_dtype(self, x):
        if x.dtype != self.dtype:
            if x.dtype.kind in "iub":
                fix = f"convert it with x.astype(np.{self.dtype})"
            elif x.dtype.kind == "f":
                fix = (f"convert it with x.astype(np.{self.dtype}), or build the layer with "
                       f"dtype='{x.dtype}'")
            else:
                fix = "it must hold real numbers"
            self.fail(f"input is {x.dtype} but the layer's weights are {self.dtype}: {fix} "
                      "(Model.fit/predict convert inputs to the model's dtype for you)")

    def check_features(self, shape, expected, rebuild):
        """The last axis must be `expected`; rebuild(got) names the layer that would fit."""
        got = shape[-1]
        if got is not None and got != expected:
            unit = "step" if self.sequence_input else "sample"
            self.fail(f"expected {expected} features per {unit} (the last axis), got an input "
                      f"of shape {shape_text(shape)} with {got}. The number of inputs is "
                      f"fixed by the data, not chosen: build the layer as {rebuild(got)}, or "
                      "check which array you passed" + self._axis_hint(shape, expected))

    def _axis_hint(self, shape, expected):
        if self.sequence_input and len(shape) == 3 and shape[1] == expected:
            return (f" (steps and features look swapped: {shape_text(shape)} has "
                    f"{expected} on axis 1; use x.transpose(0, 2, 1))")
        if not self.sequence_input and len(shape) == 2 and shape[0] == expected:
            return " (the input looks transposed: samples go on axis 0, use x.T)"
        return ""

    # --- calling ----------------------------------------------------------------------

    def __call__(self, inputs, lengths=None):
        """On arrays: run the layer (no gradient record; lengths for an LSTM). On nn.Input
        tensors: add a node to the graph and return its symbolic output(s)."""
        items = list(inputs) if self.takes_list and isinstance(inputs, (list, tuple)) else [inputs]
        if self.takes_list and not isinstance(inputs, (list, tuple)):
            self.fail("takes a list of inputs, e.g. layer([a, b, c])")
        if any(isinstance(t, Tensor) for t in items):
            return symbolic_call(self, items)
        if lengths is not None and not self.takes_lengths:
            self.fail("takes no lengths (only an LSTM does)")
        y, _ = self.forward(inputs, lengths) if self.takes_lengths else self.forward(inputs)
        return y

    def output_shape(self, shape):
        raise NotImplementedError

    def forward(self, x):
        raise NotImplementedError

    def backward(self, cache, dy):
        raise NotImplementedError


# --- Dense ------------------------------------------------------------------------------

class Dense(Layer):
    """y = activation(x @ kernel + bias): x (batch, in) -> (batch, out); kernel (in, out),
    one column per neuron. An input with more axes (..., in) is applied on the last axis.

    activation: an ops activation, or 'softmax' for a classifier's output layer: the
    probabilities over the last axis, computed after the op from its linear output (the
    logits). fit fuses a softmax output with a categorical crossentropy loss (see
    nn.losses)."""

    def __init__(self, in_features, out_features, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name=None, dtype="float32", seed=None):
        super().__init__(name, dtype)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if activation == "softmax":
            if self.out_features == 1:
                raise ValueError(
                    f"Dense: softmax over 1 output is always 1. For two classes use "
                    f"Dense({self.in_features}, 1, 'sigmoid') with binary_crossentropy, or "
                    f"Dense({self.in_features}, 2, 'softmax') with a categorical one")
            self.activation = "softmax"
        else:
            self.activation = canonical(activation, "activation", type(self).__name__)
        rng = initializers.generator(seed)
        self.kernel = self.add_weight("kernel", (self.in_features, self.out_features),
                                      kernel_initializer, rng)
        self.bias = self.add_weight("bias", (self.out_features,), bias_initializer, rng) \
            if use_bias else None

    def describe(self):
        return f"in={self.in_features}, out={self.out_features}"

    def output_shape(self, shape):
        if len(shape) < 2:
            self.fail(f"expected an input (batch, in) with in = {self.in_features}, got a "
                      f"{len(shape)}-D input of shape {shape_text(shape)}: for one sample "
                      "use x[None, :]")
        self.check_features(shape, self.in_features,
                            lambda n: f"Dense({n}, {self.out_features})")
        return tuple(shape[:-1]) + (self.out_features,)

    def forward(self, x):
        self.output_shape(self.model_shape(x))
        self.check_dtype(x)
        lead = x.shape[:-1]
        rows = (-1,) if self.models is None else (self.models, -1)   # ops' (M,) batch axis
        x2 = x if x.ndim == len(rows) + 1 else x.reshape(rows + (self.in_features,))
        softmax = self.activation == "softmax"
        y, ctx = ops.dense(x2, self.kernel.value, None if self.bias is None else self.bias.value,
                           "linear" if softmax else self.activation, backend=self.backend)
        self.last_backend = ctx.backend.NAME
        if softmax:                                 # y: the logits (..., rows, out)
            xp = array_module(y)
            y = xp.exp(y - y.max(axis=-1, keepdims=True))
            y /= y.sum(axis=-1, keepdims=True)
        cache = ctx, lead, rows, (y if softmax else None)
        return (y if x.ndim == len(rows) + 1 else y.reshape(lead + (self.out_features,))), cache

    def backward(self, cache, dy):
        ctx, lead, rows, prob = cache
        if isinstance(dy, LogitsGradient):          # a loss fused with the softmax
            dz = dy.value
        else:
            dz = dy if len(lead) == len(rows) else dy.reshape(rows + (self.out_features,))
            if prob is not None:                    # through the softmax: p (dy - <dy, p>)
                dz = prob * (dz - (dz * prob).sum(axis=-1, keepdims=True))
        dx, dw, db = ops.dense_backward(ctx, dz)
        if self.kernel.trainable:
            self.kernel.accumulate(dw)
        if self.bias is not None and self.bias.trainable:
            self.bias.accumulate(db)
        return dx if len(lead) == len(rows) else dx.reshape(lead + (self.in_features,))


# --- LSTM -------------------------------------------------------------------------------

class LSTM(Layer):
    """Keras' LSTM on (batch, steps, in) with weights kernel (in, 4H), recurrent_kernel
    (H, 4H), bias (4H,), gate blocks i, f, g, o. activation / recurrent_activation None
    mean linear. forget_bias is a constant added to the forget gate at every step (the
    TensorFlow BasicLSTMCell meaning); unit_forget_bias=True writes +1 into the initial
    forget-gate bias (the Keras meaning). Initial state zeros (reset for every sequence).

    Output: the last h (batch, H), or every h (batch, steps, H) with return_sequences;
    with return_state the outputs are [output, h_T, c_T]. With lengths (batch,) (each
    sequence's valid steps; steps past it are padding) the last h is each sequence's own,
    and every h is zero at padding (tinynet.ops.lstm's lengths)."""

    sequence_input = True
    takes_lengths = True

    def __init__(self, in_features, units, activation="tanh", recurrent_activation="sigmoid",
                 forget_bias=0.0, unit_forget_bias=True, return_sequences=False,
                 return_state=False, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 name=None, dtype="float32", seed=None):
        super().__init__(name, dtype)
        self.in_features = int(in_features)
        self.units = int(units)
        self.activation = _activation(activation, "activation", "LSTM")
        self.recurrent_activation = _activation(recurrent_activation, "recurrent_activation",
                                                "LSTM")
        self.forget_bias = float(forget_bias)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.n_outputs = 3 if self.return_state else 1
        rng = initializers.generator(seed)
        hidden = self.units
        self.kernel = self.add_weight("kernel", (self.in_features, 4 * hidden),
                                      kernel_initializer, rng)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (hidden, 4 * hidden),
                                                recurrent_initializer, rng)
        self.bias = self.add_weight("bias", (4 * hidden,), bias_initializer, rng)
        if unit_forget_bias:
            self.bias.value[hidden:2 * hidden] += 1

    def describe(self):
        return f"in={self.in_features}, units={self.units}"

    def output_shape(self, shape):
        if len(shape) != 3:
            _sequence_fix(self, shape, self.in_features)
        self.check_features(shape, self.in_features, lambda n: f"LSTM({n}, {self.units})")
        batch, steps = shape[0], shape[1]
        out = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return [out, (batch, self.units), (batch, self.units)]
        return out

    def forward(self, x, lengths=None):
        self.output_shape(self.model_shape(x))
        self.check_dtype(x)
        hs, h_last, c_last, ctx = ops.lstm(
            x, None, None, self.kernel.value, self.recurrent_kernel.value, self.bias.value,
            self.activation, self.recurrent_activation, self.forget_bias, lengths,
            backend=self.backend)
        self.last_backend = ctx.backend.NAME
        out = hs if self.return_sequences else h_last
        if self.return_state:
            return (out, h_last, c_last), ctx
        return out, ctx

    def backward(self, ctx, dy):
        d_out, dh_state, dc_state = dy if self.return_state else (dy, None, None)
        if self.return_sequences:
            dhs, dh_last = d_out, dh_state
        else:
            dhs = None
            dh_last = d_out if dh_state is None else (
                dh_state if d_out is None else d_out + dh_state)
        dxs, _, _, dw_ih, dw_hh, db = ops.lstm_backward(ctx, dhs, dh_last, dc_state)
        for param, grad in ((self.kernel, dw_ih), (self.recurrent_kernel, dw_hh),
                            (self.bias, db)):
            if param.trainable:
                param.accumulate(grad)
        return dxs


# --- Conv1D -----------------------------------------------------------------------------

class Conv1D(Layer):
    """Keras' Conv1D (stride 1) on (batch, steps, in_channels) -> (batch, out_steps, filters),
    kernel (kernel_size, in_channels, filters). Computed as one GEMM on the fused dense op:
    the windows are unfolded to (batch * out_steps, kernel_size * in_channels).

    padding "valid": out_steps = steps - kernel_size + 1; "same": out_steps = steps (padded
    (k-1)//2 before, the rest after, like Keras); "causal": out_steps = steps, padded k-1
    before, so output t sees inputs <= t."""

    sequence_input = True

    def __init__(self, in_channels, filters, kernel_size, padding="valid", activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name=None, dtype="float32", seed=None):
        super().__init__(name, dtype)
        if padding not in ("valid", "same", "causal"):
            raise ValueError(f"Conv1D: padding={padding!r}; use 'valid', 'same' or 'causal'")
        self.in_channels = int(in_channels)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        if self.kernel_size < 1:
            raise ValueError(f"Conv1D: kernel_size must be >= 1, got {kernel_size}")
        self.padding = padding
        self.activation = _activation(activation, "activation", "Conv1D")
        rng = initializers.generator(seed)
        self.kernel = self.add_weight(
            "kernel", (self.kernel_size, self.in_channels, self.filters), kernel_initializer, rng)
        self.bias = self.add_weight("bias", (self.filters,), bias_initializer, rng) \
            if use_bias else None
        total = self.kernel_size - 1
        self._pad = {"valid": (0, 0), "same": (total // 2, total - total // 2),
                     "causal": (total, 0)}[padding]

    def describe(self):
        return f"in_channels={self.in_channels}, filters={self.filters}, " \
               f"kernel_size={self.kernel_size}"

    def output_shape(self, shape):
        if len(shape) != 3:
            _sequence_fix(self, shape, "channels" if self.in_channels == 1 else self.in_channels)
        self.check_features(shape, self.in_channels, lambda n: f"Conv1D({n}, {self.filters}, "
                                                               f"{self.kernel_size})")
        batch, steps = shape[0], shape[1]
        if steps is not None and self.padding == "valid" and steps < self.kernel_size:
            self.fail(f"input {shape_text(shape)} has {steps} steps, fewer than kernel_size="
                      f"{self.kernel_size}: padding='valid' needs at least kernel_size steps; "
                      "use padding='same' or 'causal', or a smaller kernel")
        out_steps = None if steps is None else steps + sum(self._pad) - self.kernel_size + 1
        return (batch, out_steps, self.filters)

    def forward(self, x):
        _, out_steps, _ = self.output_shape(self.model_shape(x))
        self.check_dtype(x)
        xp = array_module(x)
        lead = x.shape[:-2]                          # (batch,), or (M, batch) in a stack
        steps, channels = x.shape[-2:]
        x = x.reshape(-1, steps, channels)           # the samples of every model on axis 0
        before, after = self._pad
        if before or after:
            x = xp.pad(x, ((0, 0), (before, after), (0, 0)))
        # windows[b, t, j, c] = x_padded[b, t + j, c]
        window = xp.arange(out_steps)[:, None] + xp.arange(self.kernel_size)[None, :]
        width = self.kernel_size * channels
        models = () if self.models is None else (self.models,)
        columns = x[:, window, :].reshape(models + (-1, width))
        w2 = self.kernel.value.reshape(models + (width, self.filters))
        y, ctx = ops.dense(columns, w2, None if self.bias is None else self.bias.value,
                           self.activation, backend=self.backend)
        self.last_backend = ctx.backend.NAME
        return y.reshape(lead + (out_steps, self.filters)), (ctx, lead, steps, out_steps)

    def backward(self, cache, dy):
        ctx, lead, steps, out_steps = cache
        models = () if self.models is None else (self.models,)
        dcols, dw, db = ops.dense_backward(ctx, dy.reshape(models + (-1, self.filters)))
        if self.kernel.trainable:
            self.kernel.accumulate(dw.reshape(self.kernel.value.shape))
        if self.bias is not None and self.bias.trainable:
            self.bias.accumulate(db)
        xp = array_module(dcols)
        dcols = dcols.reshape(-1, out_steps, self.kernel_size, self.in_channels)
        before, after = self._pad
        dx_padded = xp.zeros((len(dcols), steps + before + after, self.in_channels),
                             dcols.dtype)
        for j in range(self.kernel_size):          # each tap adds to a shifted slice
            dx_padded[:, j:j + out_steps] += dcols[:, :, j]
        return dx_padded[:, before:before + steps].reshape(lead + (steps, self.in_channels))


# --- Embedding --------------------------------------------------------------------------

class Embedding(Layer):
    """Integer ids (any shape, e.g. (batch, steps)) -> vectors (..., dim); table (vocab, dim).
    A frozen table (trainable=False) gets no gradient at all."""

    def __init__(self, vocab, dim, trainable=True, embeddings_initializer=None,
                 name=None, dtype="float32", seed=None):
        super().__init__(name, dtype)
        self.vocab = int(vocab)
        self.dim = int(dim)
        rng = initializers.generator(seed)
        init = initializers.uniform(-0.05, 0.05) if embeddings_initializer is None \
            else embeddings_initializer
        self.embeddings = self.add_weight("embeddings", (self.vocab, self.dim), init, rng,
                                          trainable)

    @classmethod
    def from_pretrained(cls, matrix, trainable=False, name=None, dtype="float32"):
        """An Embedding holding `matrix` (vocab, dim) (e.g. GloVe vectors), stored in
        `dtype`; frozen unless trainable=True."""
        matrix = np.asarray(tinynet.to_numpy(matrix))
        if matrix.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: matrix must be 2-D (vocab, dim), "
                             f"got shape {shape_text(matrix.shape)}")
        layer = cls(matrix.shape[0], matrix.shape[1], trainable, initializers.zeros,
                    name, dtype)
        layer.embeddings.value[...] = matrix
        return layer

    def describe(self):
        return f"vocab={self.vocab}, dim={self.dim}"

    def output_shape(self, shape):
        return tuple(shape) + (self.dim,)

    def forward(self, ids):
        if ids.dtype.kind not in "iu":
            self.fail(f"takes integer ids, got {ids.dtype} of shape {shape_text(ids.shape)}: "
                      "use ids.astype(np.int64)")
        xp = array_module(self.embeddings.value)
        if ids.size:
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.vocab:
                self.fail(f"id {low if low < 0 else high} is outside the vocabulary "
                          f"[0, {self.vocab})")
        # in a stack, model m's id k is row m * vocab + k of the (M * vocab, dim) tables
        rows = ids if self.models is None else ids + (
            xp.arange(self.models) * self.vocab).reshape((-1,) + (1,) * (ids.ndim - 1))
        return xp.take(self.embeddings.value.reshape(-1, self.dim), rows, axis=0), rows

    def backward(self, rows, dy):
        if self.embeddings.trainable:
            xp = array_module(dy)
            grad = xp.zeros_like(self.embeddings.value).reshape(-1, self.dim)
            flat_rows = rows.reshape(-1)
            grads = dy.reshape(-1, self.dim)
            if xp is np:
                np.add.at(grad, flat_rows, grads)
            else:
                import cupyx
                cupyx.scatter_add(grad, flat_rows, grads)
            self.embeddings.accumulate(grad.reshape(self.embeddings.value.shape))
        return None                 # ids are not differentiable


# --- pooling, concatenation, sum --------------------------------------------------------

class GlobalPool1D(Layer):
    """mean, max or min over the steps axis: (batch, steps, features) -> (batch, features).
    max/min send the gradient to the first step that holds the extreme value."""

    sequence_input = True

    def __init__(self, mode="mean", name=None):
        super().__init__(name)
        if mode not in ("mean", "max", "min"):
            raise ValueError(f"GlobalPool1D: mode={mode!r}; use 'mean', 'max' or 'min'")
        self.mode = mode

    def describe(self):
        return repr(self.mode)

    def output_shape(self, shape):
        if len(shape) != 3:
            _sequence_fix(self, shape, "features")
        if shape[1] == 0:
            self.fail(f"input {shape_text(shape)} has no steps to pool over")
        return (shape[0], shape[2])

    # the steps axis is -2, with or without a leading models axis
    def forward(self, x):
        self.output_shape(self.model_shape(x))
        if self.mode == "mean":
            return x.mean(axis=-2), x.shape
        xp = array_module(x)
        where = x.argmax(axis=-2) if self.mode == "max" else x.argmin(axis=-2)  # (..., features)
        return (xp.take_along_axis(x, where[..., None, :], axis=-2)[..., 0, :],
                (x.shape, where))

    def backward(self, cache, dy):
        xp = array_module(dy)
        if self.mode == "mean":
            shape = cache
            dx = xp.empty(shape, dy.dtype)
            dx[...] = (dy / shape[-2])[..., None, :]
            return dx
        shape, where = cache
        dx = xp.zeros(shape, dy.dtype)
        xp.put_along_axis(dx, where[..., None, :], dy[..., None, :], axis=-2)
        return dx


class Concatenate(Layer):
    """Join several inputs along `axis` (default -1: features). All other axes must match.
    Axis 0, the batch, is refused: samples are joined outside a model (np.concatenate)."""

    takes_list = True

    def __init__(self, axis=-1, name=None):
        super().__init__(name)
        self.axis = int(axis)

    def describe(self):
        return f"axis={self.axis}"

    def output_shape(self, shapes):
        if len(shapes) < 2:
            self.fail(f"needs at least two inputs, got {len(shapes)}")
        ndim = len(shapes[0])
        listed = ", ".join(shape_text(s) for s in shapes)
        if any(len(s) != ndim for s in shapes):
            self.fail(f"inputs must have the same number of axes, got {listed}")
        axis = self.axis % ndim if -ndim <= self.axis < ndim else None
        if axis is None:
            self.fail(f"axis={self.axis} is out of range for {ndim}-D inputs {listed}")
        if axis == 0:
            self._refuse_batch_axis(shapes, listed)
        for k in range(ndim):
            sizes = {s[k] for s in shapes if s[k] is not None}
            if k != axis and len(sizes) > 1:
                self.fail(f"inputs {listed} differ on axis {k}; joined along axis "
                          f"{self.axis} every other axis must match"
                          + (" (axis 0 is the batch: every input needs the same samples)"
                             if k == 0 else ""))
        sizes = [s[axis] for s in shapes]
        joined = None if None in sizes else sum(sizes)
        return tuple(joined if k == axis else shapes[0][k] for k in range(ndim))

    def _refuse_batch_axis(self, shapes, listed):
        """Joining along axis 0 stacks the samples of the inputs: the outputs no longer line
        up with the targets (a batch of 64 from three branches becomes 192 rows)."""
        n, batch = len(shapes), shapes[0][0]
        example = batch if batch is not None else 64
        widths = [s[-1] for s in shapes]
        fixed = "" if None in widths or len(shapes[0]) < 2 else \
            f", which gives {shape_text(tuple(shapes[0][:-1]) + (sum(widths),))}"
        self.fail(f"joining {listed} along axis={self.axis}, the batch axis, stacks their "
                  f"samples: a batch of {example} would come out as {n * example} rows, no "
                  "longer one per target, and the loss would compare the wrong rows. Join "
                  f"their features instead with Concatenate(axis=-1){fixed}")

    def forward(self, xs):
        shapes = [self.model_shape(x) for x in xs]
        self.output_shape(shapes)
        xp = array_module(xs[0])
        axis = self.model_axis(self.axis, len(shapes[0]))
        return xp.concatenate(xs, axis=axis), (axis, [x.shape[axis] for x in xs])

    def backward(self, cache, dy):
        axis, sizes = cache
        xp = array_module(dy)
        return xp.split(dy, np.cumsum(sizes)[:-1].tolist(), axis=axis)


class Sum(Layer):
    """Sum over `axis` (default -1): e.g. Conv1D's 6 filter outputs (batch, steps, 6) summed
    to one series (batch, steps), or (batch, steps, 1) with keepdims=True."""

    def __init__(self, axis=-1, keepdims=False, name=None):
        super().__init__(name)
        self.axis = int(axis)
        self.keepdims = bool(keepdims)

    def describe(self):
        return f"axis={self.axis}"

    def output_shape(self, shape):
        ndim = len(shape)
        if not -ndim <= self.axis < ndim:
            self.fail(f"axis={self.axis} is out of range for an input of shape "
                      f"{shape_text(shape)}")
        axis = self.axis % ndim
        if self.keepdims:
            return tuple(1 if k == axis else n for k, n in enumerate(shape))
        return tuple(n for k, n in enumerate(shape) if k != axis)

    def forward(self, x):
        shape = self.model_shape(x)
        self.output_shape(shape)
        axis = self.model_axis(self.axis, len(shape))
        return x.sum(axis=axis, keepdims=self.keepdims), (x.shape, axis)

    def backward(self, cache, dy):
        shape, axis = cache
        xp = array_module(dy)
        dx = xp.empty(shape, dy.dtype)
        dx[...] = dy if self.keepdims else xp.expand_dims(dy, axis)
        return dx
