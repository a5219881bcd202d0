"""Weights in and out: atomic .npz files, untrusted-file checks, PyTorch state dicts.

Writing: the arrays go to a temporary file in the target's directory, which is flushed and
fsync'ed, then renamed over the target with os.replace (atomic on POSIX and Windows), and
the directory is fsync'ed. A crash at any point leaves either the old file or the new one,
never a mix; at worst a stray temporary file '.<name>.*.tmp' remains beside it.

Reading: np.load with allow_pickle=False (a weights file can never run code); every array
is read and checked (names, shapes, dtypes) before the model is touched, so a wrong,
truncated or corrupt file raises ValueError naming what is wrong and leaves the model as it
was.
"""

import contextlib
import os
import re
import tempfile
import warnings

import numpy as np

import tinynet
from tinynet.nn._arrays import shape_text

FORMAT_KEY = "__tinynet__"
WEIGHTS_FORMAT = "tinynet-weights-1"
CHECKPOINT_FORMAT = "tinynet-checkpoint-1"
# Sections of a checkpoint that are not weights (see training.py).
CHECKPOINT_SECTIONS = ("optimizer/", "fit/")


def write_atomic(path, arrays):
    """Write {key: array} as an .npz file at exactly `path` (no suffix added), atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); not possible on Windows, where it is skipped."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_npz(path, what, kind="weights"):
    """Every array of an .npz file, read fully now (so a truncated or corrupt member fails
    here, not later). Missing file: FileNotFoundError; anything else wrong: ValueError.
    kind names the file in messages ('weights', 'checkpoint')."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: no such file {path!r}")
    with open(path, "rb") as f:
        start = f.read(4)
    if start not in ZIP_STARTS:
        # np.load would take such a file for a pickle and advise unpickling it
        raise ValueError(f"{what}: {path!r} is not a tinynet {kind} file: those are .npz zip "
                         f"archives, which start with the bytes {ZIP_STARTS[0]!r}; this one "
                         + ("is empty" if not start else f"starts with {start!r}")
                         + _looks_like(start) + ". It may be corrupt, or another kind of file")
    key = None
    try:
        data = np.load(path, allow_pickle=False)
        with data:
            arrays = {}
            for key in data.files:
                arrays[key] = data[key]
            return arrays
    except Exception as error:    # any failure to parse untrusted bytes is the same answer
        if key is not None and "allow_pickle" in str(error):
            raise ValueError(f"{what}: {path!r} is not a tinynet {kind} file: its array "
                             f"{key!r} holds Python objects, which only unpickling could "
                             "read, and tinynet never unpickles") from None
        raise ValueError(f"{what}: {path!r} is not a readable tinynet {kind} file: "
                         f"{type(error).__name__}: {error}. It may be truncated or corrupt "
                         "(tinynet writes atomically, so an interrupted save leaves the "
                         "previous file intact)") from error


# The first bytes of a zip archive: a file entry, or the end record of an empty archive.
ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")


def _looks_like(start):
    if start.startswith(b"\x93NUM"):
        return " (a single .npy array, not an .npz archive)"
    if start.startswith(b"\x80"):
        return " (a Python pickle, which tinynet never loads)"
    return ""


def file_format(arrays, path, what, accepted):
    """The format tag of a file, which must be one of `accepted`."""
    tag = arrays.get(FORMAT_KEY)
    if tag is None or tag.dtype.kind != "U" or tag.shape != ():
        keys = sorted(arrays)[:8]
        raise ValueError(f"{what}: {path!r} is not a tinynet file (no {FORMAT_KEY!r} entry; "
                         f"it holds {keys}{' ...' if len(arrays) > 8 else ''}). To load "
                         "weights from elsewhere use model.set_weights({name: array})")
    if str(tag) not in accepted:
        raise ValueError(f"{what}: {path!r} is a {str(tag)!r} file; expected "
                         + " or ".join(repr(a) for a in accepted))
    return str(tag)


def check_weights(named_params, arrays, path, what):
    """The weight arrays of a file, checked against the model: every weight present with
    its shape and dtype, nothing unknown. Raise one ValueError listing every problem."""
    problems = []
    found = {}
    for name, param in named_params.items():
        array = arrays.get(name)
        if array is None:
            problems.append(f"missing weight {name!r}")
            continue
        expected_shape, expected_dtype = tuple(param.value.shape), param.value.dtype
        if tuple(array.shape) != expected_shape:
            problems.append(f"{name!r} has shape {shape_text(array.shape)} in the file, the "
                            f"model's is {shape_text(expected_shape)}")
        elif array.dtype != expected_dtype:
            problems.append(f"{name!r} is {array.dtype} in the file, the model's is "
                            f"{expected_dtype} (weights are not cast silently: build the "
                            f"model with dtype='{array.dtype}')")
        else:
            found[name] = array
    unknown = sorted(k for k in arrays if k != FORMAT_KEY and k not in named_params
                     and not k.startswith(CHECKPOINT_SECTIONS))
    if unknown:
        problems.append(f"weights the model does not have: {unknown}")
    if problems:
        raise ValueError(f"{what}: {path!r} does not fit this model ({len(named_params)} "
                         "weights: " + ", ".join(named_params) + "): " + "; ".join(problems)
                         + ". Nothing was loaded.")
    return found


# --- PyTorch ----------------------------------------------------------------------------

def _host(value):
    return np.asarray(tinynet.to_numpy(value))


def torch_state(layers, state_dict, mapping):
    """{'<layer>/<weight>': host array} for our layers from a PyTorch state dict, everything
    checked before anything is returned. mapping: {our layer name: PyTorch module prefix}.
    None: every layer with weights to the module of its own name when the state dict has
    one for each; otherwise the layers with weights, in model order, to the modules of the
    state dict, in its order (PyTorch lists modules in the order they were built: for
    nn.Sequential, the order they run), one to one, each of a kind and shapes that fit."""
    layers = {layer.name: layer for layer in layers}
    modules = torch_modules(state_dict)
    if mapping is None:
        weighted = [layer for layer in layers.values() if layer._params]
        if all(layer.name in modules for layer in weighted):
            mapping = {layer.name: layer.name for layer in weighted}
        else:
            return _torch_in_order(weighted, state_dict, modules)
    unknown = sorted(set(mapping) - set(layers))
    if unknown:
        raise ValueError(f"load_torch_state_dict: no layers named {unknown} in this model "
                         f"(it has {sorted(layers)})")
    return {f"{ours}/{weight}": array
            for ours, prefix in mapping.items()
            for weight, array in torch_weights(layers[ours], state_dict, prefix).items()}


def torch_modules(state_dict):
    """{module prefix: [parameter names]} in the state dict's order ('0.weight' -> '0')."""
    modules = {}
    for key in state_dict:
        prefix, _, name = key.rpartition(".")
        modules.setdefault(prefix, []).append(name)
    return modules


def _torch_kind(names):
    if any(n.startswith("weight_ih_l") for n in names):
        return "nn.LSTM"
    if set(names) == {"weight", "bias"}:
        return "nn.Linear"
    if names == ["weight"]:
        return "nn.Linear without bias or nn.Embedding"
    return f"a module holding {names}"


def _kind_fits(layer, names):
    from tinynet.nn.layers import LSTM, Dense, Embedding
    kind = _torch_kind(names)
    if isinstance(layer, Dense):
        return kind.startswith("nn.Linear")
    if isinstance(layer, LSTM):
        return kind == "nn.LSTM"
    if isinstance(layer, Embedding):
        return kind.endswith("nn.Embedding")
    return False


def _torch_in_order(weighted, state_dict, modules):
    """The in-order pairing of torch_state, or one ValueError that lists our layers and the
    state dict's keys with their shapes, and the mapping= that the shapes suggest."""
    prefixes = list(modules)
    pairs = list(zip(weighted, prefixes))
    problem = None
    if len(weighted) != len(prefixes):
        problem = (f"this model has {len(weighted)} layers with weights, the state dict "
                   f"{len(prefixes)} modules")
    else:
        for layer, prefix in pairs:
            if not _kind_fits(layer, modules[prefix]):
                problem = (f"{layer.label} is matched with {prefix!r}, an "
                           f"{_torch_kind(modules[prefix])}")
                break
    if problem is None:
        try:
            return {f"{layer.name}/{weight}": array for layer, prefix in pairs
                    for weight, array in torch_weights(layer, state_dict, prefix).items()}
        except ValueError as error:
            problem = str(error)
    # what the shapes allow: the modules each layer could take
    fits = {}
    for layer in weighted:
        fits[layer.name] = []
        for prefix in prefixes:
            try:
                if _kind_fits(layer, modules[prefix]):
                    torch_weights(layer, state_dict, prefix, warn=False)
                    fits[layer.name].append(prefix)
            except ValueError:
                pass
    unique = all(len(f) == 1 for f in fits.values()) and \
        len({f[0] for f in fits.values()}) == len(fits)
    suggested = "{" + ", ".join(f"{name!r}: {found[0] if len(found) == 1 else '?'!r}"
                                for name, found in fits.items()) + "}"
    keys = "; ".join(f"{prefix!r}: " + ", ".join(
        f"'{prefix + '.' if prefix else ''}{name}' "
        f"{shape_text(_host(state_dict[(prefix + '.' if prefix else '') + name]).shape)}"
        for name in names) for prefix, names in modules.items())
    ours = ", ".join(f"{layer.label} (" + ", ".join(f"{p.name} {shape_text(p.value.shape)}"
                                                    for p in layer._params) + ")"
                     for layer in weighted)
    advice = (f"the shapes fit only mapping={suggested}" if unique else
              f"say which module each layer takes: mapping={suggested} (fill in each '?')")
    raise ValueError(f"load_torch_state_dict: the layer names are not the state dict's module "
                     f"names, and in order the two do not pair up: {problem}. This model: "
                     f"{ours}. The state dict: {keys}. Pass {advice}")


def torch_weights(layer, state_dict, prefix, warn=True):
    """{param name: array} for one of our layers from PyTorch's keys under `prefix`:
    nn.Linear -> Dense (weight transposed), nn.LSTM (one layer, unidirectional) -> LSTM
    (weights transposed, gate order i, f, g, o as ours, bias_ih + bias_hh summed),
    nn.Embedding -> Embedding. warn: about LSTM options PyTorch does not have."""
    from tinynet.nn.layers import LSTM, Dense, Embedding
    where = f"{layer.label} from PyTorch '{prefix}'"
    under = [k for k in state_dict if not prefix or k.startswith(prefix + ".")]

    def get(key, required=True):
        full = f"{prefix}.{key}" if prefix else key
        if full not in state_dict:
            if required:
                raise ValueError(f"{where}: the state dict has no {full!r} (keys under that "
                                 f"prefix: {sorted(under)})")
            return None
        return _host(state_dict[full])

    if isinstance(layer, Dense):
        out = {"kernel": get("weight").T}
        bias = get("bias", required=False)
        if (bias is None) != (layer.bias is None):
            raise ValueError(f"{where}: PyTorch layer has {'no ' if bias is None else ''}bias, "
                             f"this Dense has {'none' if layer.bias is None else 'one'}: build "
                             f"it with use_bias={bias is not None}")
        if bias is not None:
            out["bias"] = bias
    elif isinstance(layer, LSTM):
        extra = sorted(k for k in under if "_reverse" in k or "weight_hr" in k
                       or re.search(r"_l[1-9][0-9]*$", k))
        if extra:
            raise ValueError(f"{where}: only a one-layer, one-direction nn.LSTM without "
                             f"proj_size maps to one LSTM layer; found {extra}")
        bias_ih, bias_hh = get("bias_ih_l0", False), get("bias_hh_l0", False)
        hidden4 = layer.bias.value.shape[0]
        out = {"kernel": get("weight_ih_l0").T, "recurrent_kernel": get("weight_hh_l0").T,
               "bias": (np.zeros(hidden4) if bias_ih is None else bias_ih)
               + (0 if bias_hh is None else bias_hh)}
        if warn and (layer.forget_bias != 0.0 or layer.activation != "tanh"
                     or layer.recurrent_activation != "sigmoid"):
            warnings.warn(f"{where}: this layer has forget_bias={layer.forget_bias}, "
                          f"activation={layer.activation!r}, recurrent_activation="
                          f"{layer.recurrent_activation!r}; PyTorch's LSTM is forget_bias=0, "
                          "tanh, sigmoid, so the outputs will differ", stacklevel=3)
    elif isinstance(layer, Embedding):
        out = {"embeddings": get("weight")}
    else:
        raise ValueError(f"{where}: no PyTorch mapping for {type(layer).__name__} "
                         "(supported: Dense <- nn.Linear, LSTM <- nn.LSTM, "
                         "Embedding <- nn.Embedding)")
    for name, array in out.items():
        expected = getattr(layer, name).value.shape
        if array.shape != tuple(expected):
            raise ValueError(f"{where}: {name} would be {shape_text(array.shape)} (after the "
                             f"transpose), this layer's is {shape_text(expected)}: the sizes "
                             "of the two layers differ")
    return out
