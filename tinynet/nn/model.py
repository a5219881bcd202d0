"""Models: Sequential (a chain of layers) and Model (the functional graph: any DAG).

    model = nn.Sequential([nn.Dense(3, 4, "tanh"), nn.Dense(4, 1, "tanh")])
    model.compile(optimizer=nn.SGD(0.5), loss="mse")
    history = model.fit(x, y, epochs=100, batch_size=8, verbose=0)

    words = nn.Input((150,), dtype="int64")
    vectors = nn.Embedding.from_pretrained(glove)(words)             # (batch, 150, 50)
    shared = nn.Dense(50, 16, "relu")
    pooled = [shared(nn.GlobalPool1D(m)(vectors)) for m in ("mean", "max", "min")]
    out = nn.Dense(48, 1, "sigmoid")(nn.Concatenate(axis=-1)(pooled))
    model = nn.Model(words, out)

Device: a model runs where its weights are. model.to("numba-cuda") moves the weights (and
the optimizer state) once; without .to() the model follows the current default backend
(tinynet.set_backend / use_backend / TINYNET_BACKEND) and moves there when it next runs.
fit/evaluate/predict convert x and y to the model's dtype on the host (like Keras; integer
token ids stay integers) and move each batch to the device once.
"""

import math
import re

import numpy as np

import tinynet
from tinynet.nn import initializers, io, losses, optimizers, training
from tinynet.nn._arrays import array_module, shape_text
from tinynet.nn.graph import Program, Tensor
from tinynet.nn.layers import Embedding, LogitsGradient


def _snake(name):
    """Dense -> dense, GlobalPool1D -> global_pool1d, LSTM -> lstm (Keras' default names)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class Model:
    """A graph from nn.Input tensors to the output tensor(s) of layer calls."""

    def __init__(self, inputs, outputs, name=None):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for t in inputs + outputs:
            if not isinstance(t, Tensor):
                raise ValueError(f"Model(inputs, outputs) takes symbolic tensors (nn.Input and "
                                 f"layer outputs), got {type(t).__name__}")
        program = Program.from_graph(inputs, outputs)
        # an Input without a dtype takes integer ids when only Embeddings read it (as in
        # Sequential); otherwise the model's float dtype
        readers = [[layer for layer, ins, _ in program.steps if k in ins]
                   for k in range(len(inputs))]
        self._input_dtypes = [
            np.dtype(np.int64) if t.dtype is None and found
            and all(isinstance(layer, Embedding) for layer in found) else t.dtype
            for t, found in zip(inputs, readers)]
        self._build(program, name)

    # --- structure ----------------------------------------------------------------------

    def _build(self, program, name):
        self.name = name
        self._program = program
        taken = {layer.name for layer in program.layers() if layer.name}
        explicit = [layer.name for layer in program.layers() if layer.name]
        if len(explicit) != len(taken):
            dupes = sorted({n for n in explicit if explicit.count(n) > 1})
            raise ValueError(f"two different layers are both named {dupes}: layer names "
                             "must be unique in a model (they name the weights in files)")
        for layer in program.layers():
            if not layer.name:
                base = _snake(type(layer).__name__)
                candidate, k = base, 1
                while candidate in taken:
                    candidate, k = f"{base}_{k}", k + 1
                layer.name = candidate
                taken.add(candidate)
        self._params = [p for layer in program.layers() for p in layer._params]
        self._named = {f"{layer.name}/{p.name}": p
                       for layer in program.layers() for p in layer._params}
        dtypes = {p.value.dtype for p in self._params}
        if len(dtypes) > 1:
            listed = ", ".join(f"{layer.label}: {layer.dtype}" for layer in program.layers()
                               if layer._params)
            raise ValueError(f"the layers of one model must share a dtype, got {listed}: "
                             "build them all with the same dtype=")
        self.dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
        self.optimizer = None
        self.loss = None
        self._metrics = {}
        self.rng = None                 # fit's shuffling generator (set by compile)
        self.backend = None             # explicit backend name from .to(), else None
        self._placed = None             # backend name the weights were last placed for
        self._where = None              # the GPU backend holding the weights, or None

    @property
    def layers(self):
        return self._program.layers()

    def parameters(self):
        """Every weight once (a shared layer's weights once), in layer order."""
        return list(self._params)

    def named_parameters(self):
        """{'<layer name>/<weight name>': Parameter}, e.g. 'dense/kernel'."""
        return dict(self._named)

    def get_weights(self):
        """{'<layer>/<weight>': host array copy}."""
        return {name: np.array(tinynet.to_numpy(p.value)) for name, p in self._named.items()}

    def set_weights(self, weights):
        """Set weights from {'<layer>/<weight>': array}; everything is checked first."""
        by_layer = {}
        for key, array in weights.items():
            if key not in self._named:
                raise ValueError(f"set_weights: {key!r} is not a weight of this model; it has "
                                 + ", ".join(self._named))
            layer_name, _, weight = key.rpartition("/")
            by_layer.setdefault(layer_name, {})[weight] = array
        layers = {layer.name: layer for layer in self.layers}
        checked = {name: layers[name].checked_weights(items) for name, items in by_layer.items()}
        for name, items in checked.items():
            layers[name].install_weights(items)

    def summary(self):
        """A table of the layers, their weight shapes and the number of weights."""
        rows, total = [], 0
        for layer in self.layers:
            shapes = ", ".join(f"{p.name} {shape_text(p.value.shape)}"
                               + ("" if p.trainable else " (frozen)") for p in layer._params)
            count = sum(int(p.value.size) for p in layer._params)
            total += count
            rows.append((f"{layer.name} ({type(layer).__name__})", shapes, f"{count:,}"))
        rows.append(("total", "", f"{total:,}"))
        head = ("layer", "weights", "count")
        widths = [max(len(r[k]) for r in rows + [head]) for k in range(3)]
        return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}"
                         for a, b, c in [head] + rows)

    # --- device ---------------------------------------------------------------------------

    def to(self, backend):
        """Run on `backend` ('numpy', 'numba-cpu', 'numba-cuda', 'cupy', 'auto'), moving the
        weights there now; None: follow the current default. Returns the model."""
        if backend is not None:
            tinynet.asarray(np.zeros(0), backend=backend)    # an unknown name fails here
        self.backend = backend
        self._placed = None
        self._place()
        return self

    def _place(self):
        """Put the weights where the effective backend computes (once per change). 'auto'
        runs a model on the host: its data decides, and fit's data is NumPy."""
        name = self.backend or tinynet.get_backend()
        if name == self._placed:
            return
        where = "numpy" if name == "auto" else name

        def convert(a):
            """Weights are updated in place: they must be arrays of our own, writable (the
            CUDA simulator's backend hands out read-only views)."""
            moved = tinynet.asarray(a, backend=where)
            return moved if getattr(moved.flags, "writeable", True) else moved.copy()
        values = [convert(p.value) for p in self._params]      # all or nothing
        for p, value in zip(self._params, values):
            p.value = value
            p.grad = None
        if self.optimizer is not None:
            self.optimizer.move(convert)
        for layer in self.layers:
            layer.backend = self.backend
        on_host = type(tinynet.asarray(np.zeros(0), backend=where)) is np.ndarray
        self._where = None if on_host else where
        self._placed = name

    def backend_used(self):
        """The backends the last forward pass ran its ops on (what 'auto' resolved to)."""
        return sorted({layer.last_backend for layer in self.layers if layer.last_backend})

    def _to_device(self, a):
        """A host array moved to the device of the weights (unchanged when on the host)."""
        return a if self._where is None else tinynet.asarray(a, backend=self._where)

    # --- data ---------------------------------------------------------------------------

    def _split_inputs(self, x):
        """One array per model input: a single-input model takes x itself (a nested list
        is one array), a multi-input model a list or tuple of arrays."""
        if len(self._input_dtypes) == 1:
            single = isinstance(x, (list, tuple)) and len(x) == 1 and hasattr(x[0], "shape")
            return [x[0]] if single else [x]
        return list(x) if isinstance(x, (list, tuple)) else [x]

    def _host_inputs(self, x, check_shapes=True):
        """x as a list of host arrays, one per model input, in the dtype each input takes.
        check_shapes: run every layer's shape check on these shapes first (for data that is
        cut into batches later; a single batch gets the same checks from the forward)."""
        items = self._split_inputs(x)
        if len(items) != len(self._input_dtypes):
            raise ValueError(f"this model has {len(self._input_dtypes)} inputs, got "
                             f"{len(items)} arrays: pass a list with one array per nn.Input")
        out = []
        for k, (a, dtype) in enumerate(zip(items, self._input_dtypes)):
            a = np.asarray(tinynet.to_numpy(a))
            if dtype is not None and dtype.kind in "iu":
                if a.dtype.kind not in "iu":
                    raise ValueError(f"input {k} takes integer ids ({dtype}), got {a.dtype}: "
                                     "use x.astype(np.int64)")
            elif a.dtype.kind not in "fiub":
                raise ValueError(f"input {k} must hold real numbers, got {a.dtype}")
            else:
                a = a.astype(self.dtype, copy=False)
            out.append(a)
        if check_shapes:
            self._program.check_shapes([a.shape for a in out])
        return out

    def _host_data(self, x, y=None, lengths=None, check_shapes=True):
        """(inputs, target or None, lengths or None) as checked host arrays."""
        xs = self._host_inputs(x, check_shapes)
        return xs, None if y is None else self._host_target(y), self._host_lengths(lengths)

    def _host_lengths(self, lengths):
        """lengths as a host integer array (samples,); the LSTM op checks its values."""
        if lengths is None:
            return None
        host = np.asarray(tinynet.to_numpy(lengths))
        if host.dtype.kind not in "iu" or host.ndim != 1:
            raise ValueError(f"lengths must be integers, one per sample (samples,), got "
                             f"{host.dtype} of shape {shape_text(host.shape)}")
        return host

    def _host_target(self, y):
        y = np.asarray(tinynet.to_numpy(y))
        if isinstance(self.loss, losses.SparseCategoricalCrossentropy):
            return losses.class_ids(y, self.loss)
        if y.dtype.kind in "iu" and isinstance(self.loss, losses.SoftmaxCrossentropy):
            return y
        if y.dtype.kind not in "fiub":
            raise ValueError(f"the target must hold real numbers, got {y.dtype}")
        return y.astype(self.dtype, copy=False)

    # --- running --------------------------------------------------------------------------

    def __call__(self, x, lengths=None):
        """Outputs for the arrays x (no batching, no conversion; device arrays stay there).
        lengths: each sequence's valid steps (batch,), for every LSTM layer."""
        self._place()
        outs, _ = self._program.forward(self._split_inputs(x), lengths)
        return outs[0] if len(outs) == 1 else outs

    def forward(self, x, lengths=None):
        """(outputs list, tape) for a custom training loop: see backward."""
        self._place()
        return self._program.forward([self._to_device(a) for a in self._split_inputs(x)],
                                     None if lengths is None else self._to_device(
                                         np.asarray(lengths)))

    def backward(self, tape, output_grads, input_grads=False):
        """Add d loss / d weight into every trainable Parameter.grad from the gradients of
        the outputs (a list, one per output; None = zero). Call zero_grad() before the
        forward of a new step. With input_grads, returns d loss / d inputs."""
        grads = output_grads if isinstance(output_grads, (list, tuple)) else [output_grads]
        return self._program.backward(tape, grads, input_grads)

    def zero_grad(self):
        for p in self._params:
            p.grad = None

    # --- training -----------------------------------------------------------------------

    def compile(self, optimizer="sgd", loss="mse", metrics=(), seed=None):
        """Choose the optimizer, loss and reported metrics. seed fixes fit's shuffling
        (default: drawn from nn.set_seed's generator)."""
        self.optimizer = self._fitted_optimizer(optimizers.get(optimizer))
        self.loss = losses.get(loss)
        # a softmax output layer whose probabilities a categorical crossentropy reads: the
        # loss is fused with the softmax (decided once: the program is fixed by now)
        self._fused_softmax = isinstance(self.loss, losses.CategoricalCrossentropy) and \
            not self.loss.from_logits and \
            getattr(self._program.sole_output_layer(), "activation", None) == "softmax"
        self._metrics = {name: losses.metric(name, self.loss) for name in metrics}
        self.rng = np.random.default_rng(
            initializers.generator().integers(2 ** 63) if seed is None else seed)
        return self

    def _fitted_optimizer(self, optimizer):
        """The optimizer, checked for this model (nn.Stack: set up for its models)."""
        if np.ndim(optimizer.learning_rate):
            raise ValueError(f"compile: a learning rate per model "
                             f"({optimizer.learning_rate.tolist()}) is for an nn.Stack; a "
                             "Model takes one number")
        return optimizer

    def _require_compiled(self, what):
        if self.optimizer is None or self.loss is None:
            raise ValueError(f"{what}: call model.compile(optimizer=..., loss=...) first")

    def train_on_batch(self, x, y, lengths=None):
        """One update from one batch; returns the loss before the update."""
        self._require_compiled("train_on_batch")
        self._place()
        xs, y, lengths = self._host_data(x, y, lengths, check_shapes=False)
        return training.train_step(self, [self.loop_batch(a) for a in xs], self.loop_batch(y),
                                   None if lengths is None else self.loop_batch(lengths))[0]

    def fit(self, x, y, epochs=1, batch_size=32, shuffle=True, validation_split=0.0,
            validation_data=None, verbose=1, early_stopping=None, checkpoint=None,
            checkpoint_every=None, resume=False, stop_on_nonfinite=True, lengths=None):
        """Train; returns a History (history.history['loss'], ['val_loss'], metrics).
        Stops with nn.NonFiniteLoss at the first inf or NaN loss unless
        stop_on_nonfinite=False. lengths: each sequence's valid steps (samples,), for the
        LSTM layers. See tinynet.nn.training.fit for every argument."""
        return training.fit(self, x, y, epochs, batch_size, shuffle, validation_split,
                            validation_data, verbose, early_stopping, checkpoint,
                            checkpoint_every, resume, stop_on_nonfinite, lengths)

    def evaluate(self, x, y, batch_size=256, lengths=None):
        """{'loss': ..., metric: ...} over the whole set."""
        self._require_compiled("evaluate")
        self._place()
        xs, y, lengths = self._host_data(x, y, lengths)
        return training.evaluate(self, xs, y, batch_size, lengths)

    def predict(self, x, batch_size=256, lengths=None):
        """Outputs as host NumPy arrays, computed batch by batch."""
        self._place()
        xs, _, lengths = self._host_data(x, None, lengths)
        outs = training.predict_device(self, xs, batch_size, lengths)
        outs = [np.asarray(tinynet.to_numpy(o)) for o in outs]
        return outs[0] if len(outs) == 1 else outs

    # --- the training loop's interface (tinynet.nn.training's docstring) -----------------

    sample_axis = 0

    @property
    def metric_names(self):
        return list(self._metrics)

    def loop_ready(self, what):
        self._require_compiled(what)
        if len(self._program.output_slots) != 1:
            raise ValueError(f"{what} trains a model with one output; this one has "
                             f"{len(self._program.output_slots)}")
        self._place()

    def loop_data(self, x, y=None, lengths=None):
        return self._host_data(x, y, lengths)

    def loop_batch(self, a):
        return self._to_device(a)

    def loop_forward(self, xs, lengths):
        return self._program.forward(xs, lengths)

    def loop_backward(self, tape, grad):
        self._program.backward(tape, [grad])

    def loop_loss(self, pred, y):
        if self._fused_softmax:
            value, grad = self.loss.softmax_value_and_grad(pred, y)
            return value, LogitsGradient(grad)
        return self.loss.value_and_grad(pred, y)

    def loop_metrics(self, pred, y):
        return [f(pred, y) for f in self._metrics.values()]

    def loop_check_finite(self, value, position):
        if not math.isfinite(value):
            raise training.non_finite(self, value, *position)

    @staticmethod
    def loop_text(value):
        return f"{value:.4g}"

    def loop_assign(self, weights):
        self._assign(weights)

    def loop_allows_early_stopping(self):
        pass

    # --- files ----------------------------------------------------------------------------

    def save(self, path):
        """Write the weights to `path` as .npz, atomically (see tinynet.nn.io)."""
        arrays = {io.FORMAT_KEY: np.array(io.WEIGHTS_FORMAT)}
        arrays.update(self.get_weights())
        io.write_atomic(path, arrays)

    def load(self, path):
        """Read weights saved by save() (or the weights of a fit checkpoint). The file is
        untrusted: nothing is unpickled, and a file with wrong names, shapes or dtypes, or a
        truncated or corrupt one, raises ValueError and leaves the model unchanged."""
        what = f"{type(self).__name__}.load"
        arrays = io.read_npz(path, what)
        io.file_format(arrays, path, what, (io.WEIGHTS_FORMAT, io.CHECKPOINT_FORMAT))
        self._assign(io.check_weights(self._named, arrays, path, what))

    def _assign(self, host_arrays):
        """Replace weights by already checked host arrays, on the weights' device."""
        for name, array in host_arrays.items():
            param = self._named[name]
            param.value = array_module(param.value).asarray(array).copy()

    def load_torch_state_dict(self, state_dict, mapping=None):
        """Import weights from a PyTorch state dict (tensors or arrays). mapping:
        {our layer name: PyTorch module prefix}, e.g. {'lstm': 'rnn', 'dense': 'fc'}.
        None: each layer with weights takes the module of its own name when the state dict
        has one for every such layer; otherwise the layers, in order, take the state dict's
        modules, in order (a torch.nn.Sequential's '0', '2', ...), when they pair up one to
        one with fitting kinds and shapes; if not, the error lists both and the mapping=
        the shapes suggest. nn.Linear -> Dense, nn.LSTM -> LSTM, nn.Embedding -> Embedding;
        all checked before any is set."""
        new = io.torch_state(self.layers, state_dict, mapping)
        layers = {layer.name: layer for layer in self.layers}
        self._assign({key: array.astype(layers[key.rpartition("/")[0]].dtype)
                      for key, array in new.items()})


class Sequential(Model):
    """Layers applied one after the other. The input is a float array, or integer ids when
    the first layer is an Embedding."""

    def __init__(self, layers=(), name=None):
        self._layer_list = []
        self._input_dtypes = [None]
        self._build(Program.chain([]), name)
        for layer in layers:
            self.add(layer)

    def add(self, layer):
        """Append a layer (this rebuilds the model: compile after the last add)."""
        if layer.takes_list or layer.n_outputs != 1:
            layer.fail("Sequential takes layers with one input and one output; use the "
                       "functional nn.Model for several inputs or outputs")
        chain = self._layer_list + [layer]
        self._check_chain(chain)
        self._layer_list = chain
        self._input_dtypes = [np.dtype(np.int64) if isinstance(chain[0], Embedding) else None]
        self._build(Program.chain(chain), self.name)

    @staticmethod
    def _check_chain(chain):
        """Catch mismatched neighbours now: run the shape checks from the first layer's
        input width (batch and steps unknown). An Embedding first: nothing known yet."""
        first = chain[0]
        width = getattr(first, "in_features", None) or getattr(first, "in_channels", None)
        if width is None:
            return
        shape = (None, None, width) if first.sequence_input else (None, width)
        for layer in chain:
            shape = layer.output_shape(shape)
