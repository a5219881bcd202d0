"""Backend registry and selection.

A backend is a module exposing the same function names (see tinynet/backends/numpy_ref.py
for the reference set): NAME, IS_GPU, NATIVE_ARRAY (the array type that tinynet.ops hands
over without calling asarray, or None), unavailable_reason(), asarray(a), to_numpy(a),
dense_forward/backward, lstm_forward/backward, zeros(shape, dtype) (what tinynet.ops fills a
None state or gradient with), and, for stacks, the stack_ versions of those (stack_zeros for
an input of a stack op, which the stack functions may read with any strides);
lstm_cell_forward/backward (and stack_ ones) are optional: without them tinynet.ops runs a
cell as an LSTM sequence of one step.
A backend joins by adding one line to _MODULES. Modules are imported on first use, so
`import tinynet` needs NumPy alone; a module whose libraries are missing raises ImportError,
which becomes the reason it is unusable.
"""

import contextlib
import contextvars
import importlib
import os
import threading

import numpy as np

_MODULES = {
    "numpy": "tinynet.backends.numpy_ref",
    "numba-cpu": "tinynet.backends.numba_cpu",
    "numba-cuda": "tinynet.backends.numba_cuda",
    "cupy": "tinynet.backends.cupy_cuda",
}

# What to install when a backend's module cannot be imported.
_INSTALL_HINTS = {
    "numba-cpu": "pip install numba",
    "numba-cuda": "pip install 'tinynet[gpu]' (CUDA 13 driver) or 'tinynet[gpu-cu12]'",
    "cupy": "pip install 'tinynet[gpu]' (CUDA 13 driver) or 'tinynet[gpu-cu12]'",
}

KNOWN = tuple(_MODULES) + ("auto",)

LOADED = {}            # name -> module, for usable backends
_unusable = {}          # name -> reason
_lock = threading.Lock()

_global_default = os.environ.get("TINYNET_BACKEND") or "auto"     # set but empty: the default
_context_default = contextvars.ContextVar("tinynet_backend", default=None)


def _check_name(name):
    if name not in KNOWN:
        raise ValueError(f"{name!r} is not a tinynet backend; known backends: "
                         + ", ".join(repr(k) for k in KNOWN))


def _try_load(name):
    """Import backend `name` once; remember either the module or why it is unusable."""
    with _lock:
        if name in LOADED or name in _unusable:
            return
        try:
            module = importlib.import_module(_MODULES[name])
        except ImportError as error:
            hint = _INSTALL_HINTS.get(name, "")
            _unusable[name] = f"{error}" + (f" (install with: {hint})" if hint else "")
            return
        reason = module.unavailable_reason()
        if reason is None:
            LOADED[name] = module
        else:
            _unusable[name] = reason


def module(name):
    """The module of a usable backend; RuntimeError saying why if it is not usable here."""
    found = LOADED.get(name)
    if found is not None:
        return found
    _check_name(name)
    if name == "auto":
        raise ValueError("'auto' is resolved per call, not a module")
    _try_load(name)
    if name in _unusable:
        raise RuntimeError(f"tinynet backend {name!r} is not usable here: {_unusable[name]}")
    return LOADED[name]


def status():
    """[(name, usable, reason or None)] for every backend, loading each to find out."""
    rows = []
    for name in _MODULES:
        _try_load(name)
        rows.append((name, name in LOADED, _unusable.get(name)))
    return rows


def available_backends():
    return [name for name, usable, _ in status() if usable]


def get_backend():
    """The current default backend name (context, then set_backend, then TINYNET_BACKEND)."""
    name = _context_default.get()
    return _global_default if name is None else name


def set_backend(name):
    """Make `name` the default for this process (threads inside use_backend keep theirs)."""
    global _global_default
    _check_name(name)
    if name != "auto":
        module(name)
    _global_default = name


@contextlib.contextmanager
def use_backend(name):
    """Within the block, in this thread (or asyncio task) only, the default is `name`."""
    _check_name(name)
    if name != "auto":
        module(name)
    token = _context_default.set(name)
    try:
        yield name
    finally:
        _context_default.reset(token)


def asarray(a, backend=None):
    """`a` where `backend` computes (None: the current default), dtype kept: a NumPy array
    for the CPU backends, the backend's device array for a GPU backend (host data copied
    to the device; under Numba's CUDA simulator, a read-only NumPy view). 'auto' keeps NumPy
    and CUDA arrays as they are and makes anything else a NumPy array. The result may share
    memory with `a`: copy it before writing into it. Unknown or unusable backends raise as
    set_backend does."""
    name = backend if backend is not None else get_backend()
    if name == "auto":
        return a if hasattr(a, "__cuda_array_interface__") else np.asarray(a)
    found = module(name)
    if found.IS_GPU:
        return found.asarray(a)
    from tinynet import to_numpy            # device arrays and tensors of any library
    return np.asarray(to_numpy(a))


def _auto(op, first_array, w_hh=None, w=None):
    """'auto': keep the data where it is. Device arrays go to a GPU backend, host arrays to
    the fastest usable CPU backend. Nothing moves between devices behind the user's back."""
    if type(first_array) is np.ndarray or not hasattr(first_array, "__cuda_array_interface__"):
        # numba-cpu where its measured crossover table says it wins (numba_cpu.prefer)
        if "numba-cpu" not in LOADED and "numba-cpu" not in _unusable:
            _try_load("numba-cpu")
        fast = LOADED.get("numba-cpu")
        if fast is not None and fast.prefer(op, first_array, w_hh, w):
            return fast
        return module("numpy")
    for name in ("cupy", "numba-cuda"):
        _try_load(name)
        if name in LOADED:
            return LOADED[name]
    raise RuntimeError("backend='auto' got a GPU array but no GPU backend is usable: "
                       + "; ".join(f"{n}: {_unusable.get(n)}" for n in ("cupy", "numba-cuda")))


def resolve(backend, op, first_array, w_hh=None, w=None):
    """The backend module for one call of `op`: `backend` if given, else the default. 'auto'
    decides by the first array and, for the LSTM ops, w_hh (dense: its weights w)."""
    name = backend if backend is not None else get_backend()
    found = LOADED.get(name)
    if found is not None:
        return found
    if name == "auto":
        return _auto(op, first_array, w_hh, w)
    if name not in KNOWN:
        source = "TINYNET_BACKEND" if backend is None and name == _global_default else "backend"
        raise ValueError(f"{source}={name!r} is not a tinynet backend; known backends: "
                         + ", ".join(repr(k) for k in KNOWN))
    return module(name)
