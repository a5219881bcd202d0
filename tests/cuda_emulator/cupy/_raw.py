"""cupy.RawModule and cupy.RawKernel, emulated: the CUDA C source is compiled by g++ with
../cuda_shim.h into a shared library (cached by source hash in the temp dir) and each launch
runs there (one fiber per CUDA thread, see the shim).

Real CuPy passes raw kernel arguments unchecked: a Python int where the kernel takes `int`
becomes 8 bytes, a float64 array passed as `const float*` is read as floats. Here every
launch is checked against the kernel's C signature instead (exact scalar types, arrays of
the pointer's type, C-contiguous, in device memory), as are the launch geometry and shared
memory against an H200's limits, and after the launch the guards around its arrays.
"""

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from cupy import _memory

OPT_IN_SHARED_BYTES = 232448    # an H200's dynamic shared memory per block, opted in
_DEFAULT_SHARED_BYTES = 48 * 1024
_MAX_THREADS = 1024
_MAX_BLOCK = (1024, 1024, 64)
_MAX_GRID = (2**31 - 1, 65535, 65535)

_SHIM = Path(__file__).resolve().parents[1] / "cuda_shim.h"
_CACHE = Path(tempfile.gettempdir()) / "tinynet-cuda-emulator"
# -O1 compiles fast and runs fast enough; CUDA code reads shared memory through other types
# (reinterpret_cast), which strict aliasing would allow g++ to miscompile.
_COMPILE = ("g++", "-O1", "-fno-strict-aliasing", "-shared", "-fPIC")
_DEFAULT_STD = "c++17"   # NVRTC's

_ENTRY_POINT = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')
# [extern] __shared__ [__align__(n)] type name[dims];  on one line
_SHARED = re.compile(r"(extern\s+)?__shared__\s+((?:__align__\(\d+\)\s+)?)"
                     r"([^;\n]*?)\s+(\w+)\s*((?:\[[^]\n]*\]\s*)*);")

_SCALARS = {"int": (np.int32, ctypes.c_int32), "float": (np.float32, ctypes.c_float),
            "double": (np.float64, ctypes.c_double)}

_defined = set()    # names of the kernels of every module compiled in this process
_launched = set()   # names of the kernels launched in this process


def kernels_defined():
    return set(_defined)


def kernels_launched():
    return set(_launched)


def _gxx_options(nvrtc_options):
    """The C++ standard and macros carry over; other NVRTC options mean nothing to g++."""
    std, defines = _DEFAULT_STD, []
    for option in nvrtc_options:
        if option.startswith(("--std=", "-std=")):
            std = option.split("=", 1)[1]
        elif option.startswith("-D"):
            defines.append(option)
        else:
            raise NotImplementedError(f"NVRTC option {option!r}: the CUDA emulator does not "
                                      "know what it means for g++ (cuda_emulator/cupy/_raw.py)")
    return [f"-std={std}", *defines]


def _shared_declaration(match):
    """The host version of a __shared__ declaration (see ../cuda_shim.h)."""
    extern, align, type_, name, dims = match.groups()
    if extern:   # the dynamic shared memory
        return f"{type_}* const {name} = reinterpret_cast<{type_}*>(cuda_emulator::dynamic_shared);"
    return (f"{align}static {type_} {name}{dims}; "
            f"cuda_emulator::poison_once_per_block(&{name}, sizeof {name});")


def _preprocess(code, options):
    """The source after macro expansion, with CUDA's keywords left in place (the entry
    points are declared inside macros)."""
    done = subprocess.run(["g++", *options, "-E", "-P", "-x", "c++", "-"], input=code,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"g++ could not preprocess the kernel source:\n{done.stderr[-4000:]}")
    return done.stdout


def _build(code, options):
    """The shared library of a module's source, compiled once per source text and options."""
    entry_points = _ENTRY_POINT.findall(_preprocess(code, options))
    source = "\n".join([
        _SHIM.read_text(),
        _SHARED.sub(_shared_declaration, code),
        *(f"CUDA_EMULATOR_ENTRY({name})" for name in entry_points),
    ])
    command = [*_COMPILE, *options]
    key = hashlib.sha256(" ".join(command).encode() + source.encode()).hexdigest()[:24]
    library = _CACHE / f"{key}.so"
    if not library.exists():
        _CACHE.mkdir(exist_ok=True)
        source_path = _CACHE / f"{key}.cpp"   # kept: barrier errors name its line numbers
        source_path.write_text(source)
        partial = _CACHE / f"{key}.{os.getpid()}.so"
        done = subprocess.run([*command, "-o", str(partial), str(source_path)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"g++ could not compile {source_path}:\n{done.stderr[-4000:]}")
        partial.replace(library)   # atomic: a concurrent test process sees all or nothing
    return library, entry_points


class RawModule:
    def __init__(self, code, options=()):
        # tests/test_cupy_cuda.py compiles the same text through NVRTC with the same options.
        path, entry_points = _build(code, _gxx_options(options))
        self._library = ctypes.CDLL(str(path))
        self._source = path.with_suffix(".cpp")
        _defined.update(entry_points)

    def get_function(self, name):
        try:
            launch = getattr(self._library, f"cuda_emulator_launch_{name}")
            signature = getattr(self._library, f"cuda_emulator_signature_{name}")
        except AttributeError:
            raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: no kernel {name!r} in the module "
                               f"({self._source})") from None
        signature.restype = ctypes.c_char_p
        launch.restype = ctypes.c_char_p
        launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.c_size_t,
                           ctypes.POINTER(ctypes.c_void_p)]
        text = signature().decode()
        return RawKernel(name, launch, text.split(",") if text else [], self._source)


class RawKernel:
    max_threads_per_block = _MAX_THREADS   # __launch_bounds__ are not known here

    def __init__(self, name, launch, parameters, source):
        self.name = name
        self._launch = launch
        self._parameters = parameters    # C types: "const float*", "int", ...
        self._source = source
        self._max_dynamic_shared = _DEFAULT_SHARED_BYTES

    @property
    def max_dynamic_shared_size_bytes(self):
        return self._max_dynamic_shared

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value):
        if not 0 <= value <= OPT_IN_SHARED_BYTES:
            self._fail(f"max_dynamic_shared_size_bytes = {value}: the device allows at most "
                       f"{OPT_IN_SHARED_BYTES}")
        self._max_dynamic_shared = value

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = _dims(grid), _dims(block)
        self._check_geometry(grid, block, shared_mem)
        if len(args) != len(self._parameters):
            self._fail(f"{len(args)} arguments for the parameters ({', '.join(self._parameters)})")
        values = [self._argument(i, parameter, arg)
                  for i, (parameter, arg) in enumerate(zip(self._parameters, args))]
        pointers = (ctypes.c_void_p * max(1, len(values)))(
            *(ctypes.addressof(value) for value in values))
        error = self._launch((ctypes.c_uint * 6)(*grid, *block), shared_mem, pointers)
        if error:
            self._fail(f"{error.decode()} (source: {self._source})")
        given = {id(arg.allocation): arg.allocation for arg in args
                 if isinstance(arg, _memory.ndarray) and arg.size}
        overwritten = [guard for allocation in given.values()
                       for guard in allocation.overwritten_guards()]
        if overwritten:
            self._fail("wrote out of bounds, into the guard " + "; ".join(overwritten))
        _launched.add(self.name)

    def _check_geometry(self, grid, block, shared_mem):
        threads = block[0] * block[1] * block[2]
        if not (all(0 < n <= most for n, most in zip(grid, _MAX_GRID))
                and all(0 < n <= most for n, most in zip(block, _MAX_BLOCK))
                and threads <= self.max_threads_per_block):
            self._fail(f"invalid launch: grid {grid}, block {block}")
        if not 0 <= shared_mem <= self._max_dynamic_shared:
            self._fail(f"{shared_mem} bytes of dynamic shared memory, above the kernel's "
                       f"max_dynamic_shared_size_bytes ({self._max_dynamic_shared})")

    def _argument(self, index, parameter, arg):
        where = f"argument {index} ({parameter})"
        if parameter.endswith("*"):
            if arg is None:
                return ctypes.c_void_p(None)
            element = parameter.removeprefix("const ").removesuffix("*")
            if not isinstance(arg, _memory.ndarray):
                self._fail(f"{where}: a {type(arg).__name__}, not a device array")
            if arg.dtype != _SCALARS[element][0]:
                self._fail(f"{where}: a {arg.dtype} array")
            if not arg.flags.c_contiguous:
                self._fail(f"{where}: not C-contiguous (shape {arg.shape}, strides {arg.strides})")
            if arg.size == 0:
                return ctypes.c_void_p(None)   # as CuPy's for an empty allocation (Memory(0))
            if _memory.allocation_of(arg) is None:
                self._fail(f"{where}: its memory is not a device allocation")
            return ctypes.c_void_p(arg.ctypes.data)
        scalar_type, c_type = _SCALARS[parameter]
        if type(arg) is not scalar_type:
            self._fail(f"{where}: got {type(arg).__name__} {arg!r}, pass "
                       f"numpy.{scalar_type.__name__}")
        return c_type(arg)

    def _fail(self, message):
        raise AssertionError(f"kernel {self.name}: {message}")


def _dims(dims):
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return dims + (1,) * (3 - len(dims))
