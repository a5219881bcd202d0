"""nn.Stack: M models of one architecture trained at once, in lockstep.

    stack = nn.Stack([build(seed) for seed in range(10)])   # their weights are copied in
    stack.compile(optimizer=nn.SGD([0.1] * 5 + [0.5] * 5), loss="mse")   # one rate per model
    losses = stack.train_on_batch(x, y)        # -> (M,), each model's loss before its update
    history = stack.fit(x, y, epochs=10)       # history.history["loss"]: one (M,) per epoch
    y = stack.predict(x)                       # (M, batch, ...)
    part = stack.select(losses > 0.1)          # the models still training, optimizer state kept
    model = stack.model(3)                     # model 3 alone, as an nn.Model

Data: every input, target and lengths array is either per model, with a leading models
axis (M, samples, ...), or shared by all models, (samples, ...) (each batch moved to the
device once and passed to the ops as a broadcast view, which the CPU backends read in place). An array whose first axis is M and whose rest fits
the model is read per model. A direct call (stack(x)) takes models-first arrays as they are.

One architecture: the same layer types, shapes, activations, dtype and wiring; per model
differ only the weights, each LSTM layer's forget_bias, and the learning rate. The stack
runs the layers of the first model with every weight stacked on a leading models axis
(Layer.models), so each op runs all M models in one call (tinynet.ops, "Stacks of models").
Model m of a stack trained on its data is model m trained alone on the same data, to the
tolerance of the backend tests.
"""

import copy

import numpy as np

import tinynet
from tinynet.nn import losses, training
from tinynet.nn._arrays import array_module
from tinynet.nn.graph import Program
from tinynet.nn.layers import LSTM, LogitsGradient, Parameter
from tinynet.nn.model import Model

# per-model hyperparameters and bookkeeping: not part of "one architecture"
_FREE = {"name", "backend", "last_backend", "forget_bias", "_params", "models"}

# predict and evaluate on the host run at most this many (model, sample) pairs in one
# forward, whatever batch_size asks for: every forward also writes what a backward would
# read (an LSTM: about 7H values per pair and step), and the cap keeps those arrays small
# enough to be served again from the process's memory for each chunk, not as fresh pages
# from the system (`python bench/stack_predict.py` times chunk sizes and counts page faults).
# On a GPU the batch size is left as asked.
HOST_FORWARD_PAIRS = 512


class _PerModel(np.ndarray):
    """Host data with the samples axis first and the models axis second (a view)."""


class _Shared(np.ndarray):
    """Host data shared by every model, samples axis first."""


def _config(layer):
    """What must be equal across the models for one layer: its settings and the shapes,
    dtypes and trainable flags of its weights."""
    found = {}
    for key, value in vars(layer).items():
        if key in _FREE:
            continue
        if isinstance(value, Parameter):
            value = (tuple(value.value.shape), str(value.value.dtype), value.trainable)
        found[key] = value
    return found


def _check_architecture(models):
    """ValueError naming the first model, layer and attribute that differ from model 0."""
    first = models[0]
    first_layers = first.layers
    for m, model in enumerate(models[1:], start=1):
        if not isinstance(model, Model):
            raise ValueError(f"nn.Stack takes built nn.Model / nn.Sequential objects; item "
                             f"{m} is {type(model).__name__}")
        if model is first or any(model is other for other in models[:m]):
            raise ValueError(f"nn.Stack: model {m} is the same object as an earlier one: "
                             "build one model per member of the stack")
        layers = model.layers
        if len(layers) != len(first_layers) or model._input_dtypes != first._input_dtypes:
            raise ValueError(f"nn.Stack: model {m} has {len(layers)} layers and inputs "
                             f"{model._input_dtypes}, model 0 {len(first_layers)} and "
                             f"{first._input_dtypes}: a stack holds one architecture")
        index = {id(layer): k for k, layer in enumerate(layers)}
        first_index = {id(layer): k for k, layer in enumerate(first_layers)}
        wiring = [(index[id(layer)], ins, outs) for layer, ins, outs in model._program.steps]
        first_wiring = [(first_index[id(layer)], ins, outs)
                        for layer, ins, outs in first._program.steps]
        if wiring != first_wiring or model._program.output_slots != \
                first._program.output_slots:
            raise ValueError(f"nn.Stack: model {m} wires its layers differently from model 0 "
                             "(which layer feeds which, shared layers): a stack holds one "
                             "architecture")
        for ours, theirs in zip(first_layers, layers):
            if type(ours) is not type(theirs):
                raise ValueError(f"nn.Stack: model {m} has a {type(theirs).__name__} where "
                                 f"model 0 has {ours.label}")
            a, b = _config(ours), _config(theirs)
            for key in list(a) + [k for k in b if k not in a]:      # constructor order
                if a.get(key) != b.get(key):
                    raise ValueError(
                        f"nn.Stack: model {m} differs from model 0 at {ours.label}: "
                        f"{key.lstrip('_')} is {b.get(key)!r} there, {a.get(key)!r} in model "
                        "0; only the weights, forget_bias and the learning rate may differ")


def _stacked_program(program, make_twin):
    """The program with every layer replaced by make_twin(layer) (a shared layer once)."""
    twins = {}
    steps = []
    for layer, ins, outs in program.steps:
        if id(layer) not in twins:
            twins[id(layer)] = make_twin(layer)
        steps.append((twins[id(layer)], ins, outs))
    return Program(program.n_inputs, steps, program.output_slots, program.n_slots)


def _twin(layer, models, values, forget_bias):
    """A copy of `layer` that runs `models` models: its weights `values` (one stacked array
    per weight, in the layer's order), its LSTM forget_bias one per model."""
    twin = copy.copy(layer)
    twin.models = models
    twin._params = []
    names = {id(p): key for key, p in vars(layer).items() if isinstance(p, Parameter)}
    for param, value in zip(layer._params, values):
        new = Parameter(param.name, value, param.trainable)
        setattr(twin, names[id(param)], new)
        twin._params.append(new)
    if isinstance(layer, LSTM):
        twin.forget_bias = np.asarray(forget_bias, np.float64)
    return twin


class Stack(Model):
    """M built models of one architecture, trained at once; see the module docstring."""

    def __init__(self, models):
        models = list(models)
        if not models:
            raise ValueError("nn.Stack needs at least one model")
        if not isinstance(models[0], Model):
            raise ValueError(f"nn.Stack takes built nn.Model / nn.Sequential objects; item 0 "
                             f"is {type(models[0]).__name__}")
        _check_architecture(models)
        template = copy.deepcopy(models[0])
        template.optimizer = template.loss = None
        per_model_layers = [model.layers for model in models]

        def make_twin(layer):
            k = next(k for k, found in enumerate(template.layers) if found is layer)
            sources = [layers[k] for layers in per_model_layers]
            values = [np.stack([np.asarray(tinynet.to_numpy(source._params[j].value))
                                for source in sources]) for j in range(len(layer._params))]
            return _twin(layer, len(models), values,
                         [getattr(source, "forget_bias", 0.0) for source in sources])

        self._setup(template, _stacked_program(template._program, make_twin), len(models))

    def _setup(self, template, program, models):
        self._template = template
        self.models = models
        self._input_dtypes = list(template._input_dtypes)
        self._build(program, template.name)

    def __len__(self):
        return self.models

    def __repr__(self):
        return f"<nn.Stack of {self.models} models, {len(self.layers)} layers>"

    # --- models in and out ----------------------------------------------------------------

    def model(self, m):
        """Model m on its own, as an nn.Model with its current weights and forget_bias."""
        m = int(m)
        if not -self.models <= m < self.models:
            raise IndexError(f"model {m} of a stack of {self.models}")
        alone = copy.deepcopy(self._template)
        alone._placed = None                # host weights below: placed again on first use
        for ours, twin in zip(alone.layers, self.layers):
            for param, stacked in zip(ours._params, twin._params):
                param.value = np.array(tinynet.to_numpy(stacked.value[m]))
            if isinstance(ours, LSTM):
                ours.forget_bias = float(twin.forget_bias[m])
        return alone

    def select(self, indices):
        """A new Stack of the models at `indices` (integers or a boolean mask (M,)), with
        their weights, forget_bias, learning rates and optimizer state."""
        chosen = np.asarray(indices)
        if chosen.dtype == bool:
            if chosen.shape != (self.models,):
                raise ValueError(f"select: a mask must be ({self.models},), one per model, got "
                                 f"{chosen.shape}")
            chosen = np.flatnonzero(chosen)
        if chosen.dtype.kind not in "iu" or chosen.ndim != 1:
            raise ValueError(f"select takes model indices or a boolean mask, got {indices!r}")
        if chosen.size and (chosen.min() < -self.models or chosen.max() >= self.models):
            raise IndexError(f"select: indices must be in [0, {self.models}), got "
                             f"{chosen.tolist()}")
        if chosen.size == 0:
            raise ValueError("select: no models chosen; a stack holds at least one")
        chosen = chosen % self.models
        device_index = None

        def take(a):
            nonlocal device_index
            if type(a) is np.ndarray:
                return a[chosen]
            if device_index is None:
                device_index = tinynet.asarray(chosen, backend=self._where)
            return a[device_index]

        def make_twin(layer):
            return _twin(layer, len(chosen), [take(p.value) for p in layer._params],
                         layer.forget_bias[chosen] if isinstance(layer, LSTM) else None)

        part = Stack.__new__(Stack)
        part._setup(self._template, _stacked_program(self._program, make_twin), len(chosen))
        part.backend, part._placed, part._where = self.backend, self._placed, self._where
        if self.optimizer is not None:
            optimizer = copy.copy(self.optimizer)
            if np.ndim(optimizer.learning_rate):
                optimizer.learning_rate = optimizer.learning_rate[chosen]
            optimizer.models = len(chosen)
            optimizer._slots = {key: take(slot) for key, slot in self.optimizer._slots.items()}
            part.optimizer, part.loss = optimizer, self.loss
            part._fused_softmax = self._fused_softmax
            part._metrics = dict(self._metrics)
            part.rng = copy.deepcopy(self.rng)
        return part

    # --- training -----------------------------------------------------------------------

    def _fitted_optimizer(self, optimizer):
        """Model.compile's optimizer check: learning_rate may be one per model (M,)."""
        rate = np.asarray(optimizer.learning_rate)
        if rate.ndim and rate.shape != (self.models,):
            raise ValueError(f"compile: learning_rate has {rate.size} values for a stack of "
                             f"{self.models} models: give one number, or one per model")
        optimizer.models = self.models
        return optimizer

    def train_on_batch(self, x, y, lengths=None):
        """One update of every model from one batch; returns each model's loss (M,) from
        before the update."""
        return super().train_on_batch(x, y, lengths)

    def evaluate(self, x, y, batch_size=256, lengths=None):
        """Each model's loss over the whole set, (M,); with metrics, {'loss': (M,), ...}.
        batch_size: samples per model in one forward (on the host, at most
        HOST_FORWARD_PAIRS // M)."""
        logs = super().evaluate(x, y, self._forward_rows(batch_size), lengths)
        return logs if self._metrics else logs["loss"]

    def predict(self, x, batch_size=256, lengths=None):
        """Outputs (M, samples, ...) as host arrays. batch_size: samples per model in one
        forward (on the host, at most HOST_FORWARD_PAIRS // M)."""
        return super().predict(x, self._forward_rows(batch_size), lengths)

    def _forward_rows(self, batch_size):
        """The samples per model of one predict or evaluate forward (HOST_FORWARD_PAIRS)."""
        self._place()
        if self._where is not None:
            return batch_size
        cap = max(1, HOST_FORWARD_PAIRS // self.models)
        return cap if batch_size is None else min(max(int(batch_size), 1), cap)

    # --- the training loop's interface (tinynet.nn.training) --------------------------------

    sample_axis = 1

    def _host_data(self, x, y=None, lengths=None, check_shapes=True):
        items = self._split_inputs(x)
        if len(items) != len(self._input_dtypes):
            raise ValueError(f"this stack's models have {len(self._input_dtypes)} inputs, got "
                             f"{len(items)} arrays: pass a list with one array per nn.Input")
        arrays = [np.asarray(tinynet.to_numpy(a)) for a in items]
        per_model, out_shape = self._reading(arrays)
        shapes = [a.shape[1:] if own else a.shape for a, own in zip(arrays, per_model)]
        converted = Model._host_inputs(self, [a for a in arrays], check_shapes=False)
        samples = shapes[0][0]
        xs = [self._samples_first(a, own) for a, own in zip(converted, per_model)]
        target = None
        if y is not None:
            y = np.asarray(tinynet.to_numpy(y))
            own = y.ndim >= 2 and y.shape[:2] == (self.models, samples) and \
                y.ndim >= len(out_shape) + (0 if self._sparse() else 1)
            if not own and (y.ndim == 0 or y.shape[0] != samples):
                raise ValueError(f"the target must be per model (M, samples, ...) = "
                                 f"({self.models}, {samples}, ...) or shared by all models "
                                 f"({samples}, ...), got {y.shape}")
            target = self._samples_first(self._host_target(y), own)
        if lengths is not None:
            host = np.asarray(tinynet.to_numpy(lengths))
            own = host.shape == (self.models, samples)
            if not own and host.shape != (samples,):
                raise ValueError(f"lengths must be per model (M, samples) = ({self.models}, "
                                 f"{samples}) or shared ({samples},), got {host.shape}")
            if host.dtype.kind not in "iu":
                raise ValueError(f"lengths must be integers, got {host.dtype}")
            lengths = self._samples_first(host, own)
        return xs, target, lengths

    def _reading(self, arrays):
        """([per model?] for each input, the output shape of one model): the inputs whose
        first axis is M read per model if the rest fits the model, else all shared."""
        per_model = [a.ndim >= 2 and a.shape[0] == self.models for a in arrays]
        try:
            return per_model, self._program.check_shapes(
                [a.shape[1:] if own else a.shape for a, own in zip(arrays, per_model)])[0]
        except ValueError as error:
            if not any(per_model):
                raise
            try:
                return [False] * len(arrays), self._program.check_shapes(
                    [a.shape for a in arrays])[0]
            except ValueError:
                raise error from None

    def _sparse(self):
        return isinstance(self.loss, losses.SparseCategoricalCrossentropy) or (
            isinstance(self.loss, losses.SoftmaxCrossentropy))

    @staticmethod
    def _samples_first(a, per_model):
        return a.swapaxes(0, 1).view(_PerModel) if per_model else a.view(_Shared)

    def loop_batch(self, a):
        if isinstance(a, _Shared):
            # moved to the device once, then viewed as the models' copies
            a = self._to_device(a.view(np.ndarray))
            return array_module(a).broadcast_to(a, (self.models,) + a.shape)
        return self._to_device(a.view(np.ndarray).swapaxes(0, 1))

    def loop_loss(self, pred, y):
        fused = self._fused_softmax
        values, grad = self.loss.stack_value_and_grad(pred, y, fused_softmax=fused)
        return values, (LogitsGradient(grad) if fused else grad)

    def loop_metrics(self, pred, y):
        return [f.stack(pred, y) for f in self._metrics.values()]

    def loop_check_finite(self, value, position):
        bad = np.flatnonzero(~np.isfinite(value))
        if bad.size:
            listed = ", ".join(str(m) for m in bad[:10]) + (", ..." if bad.size > 10 else "")
            raise training.non_finite(
                self, value[bad[0]], *position,
                which=f" in {bad.size} of the stack's {self.models} models ({listed}; "
                      "stack.select(...) drops models)")

    @staticmethod
    def loop_text(value):
        value = np.asarray(value)
        if value.size == 0:
            return "-"
        return f"mean {value.mean():.4g} (min {value.min():.4g}, max {value.max():.4g})"

    def loop_allows_early_stopping(self):
        raise ValueError("Stack.fit takes no early_stopping: its models stop at different "
                         "times; train in rounds and drop the finished ones with "
                         "stack.select(...)")

