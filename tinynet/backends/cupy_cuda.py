"""The `cupy` backend: CUDA C kernels (kernels/cuda/*.cu) loaded through CuPy, cuBLAS (through
CuPy) for the large GEMMs.

Arrays are CuPy arrays on the current device. NumPy inputs are copied to the device; inputs
with __cuda_array_interface__ or a CUDA __dlpack__ (CuPy, PyTorch CUDA tensors, Numba device
arrays) are used in place, without a copy.

Kernels: one .cu file per op (dense.cu, lstm_cell.cu, lstm.cu; stack_dense.cu and
stack_lstm.cu for stacks of models), each with extern "C" entry points <name>_f32 and
<name>_f64. Their launch geometry (tile sizes, threads per block) is defined once, in the
.cu files, and read from there (_constant). A file is compiled by NVRTC through
cupy.RawModule once per (device, file, options) and its kernels are cached per (device, file,
entry point, dtype).

CuPy checks nothing about a raw kernel's arguments, so every launch here passes C-contiguous
device arrays of the kernel's type (cupy.ascontiguousarray: no copy when already contiguous),
None for a null pointer, and scalars as the exact C types the kernel declares (numpy.int32
for int, the array dtype's scalar type for T).

Paths, per op and size (FUSED_MAX_WIDTH below):
  dense      fused tiled GEMM + bias + activation (dense.cu)     | cuBLAS + our epilogue/prologue
  lstm_cell  fused [x|h] @ [w_ih; w_hh] + gates (lstm_cell.cu)   | cuBLAS + our gate kernel
  lstm       persistent recurrence, one launch per direction     | per step: cuBLAS h @ w_hh +
             (lstm.cu), w_hh in shared memory                    | our gate kernel (lstm_cell.cu),
                                                                 | the loop shared with numba-cuda
                                                                 | (tinynet/backends/_per_step.py)
Stacks (M models per call, stack_*):
  dense      one batched cuBLAS GEMM per product + our epilogue/prologue (stack_dense.cu)
  lstm_cell  none of its own: tinynet.ops runs it as the stacked LSTM of one step
  lstm       one thread per (model, batch row, unit), every sequence of every model in one
             launch per direction (stack_lstm.cu), a length per sequence; the weight
             gradients reduced per model by one more launch
Our reductions (db, the split-K dw, the stacks' per-model dw) sum in a fixed order, never
with float atomics, and cuBLAS is deterministic on one GPU model: results are bit-identical run
to run.
"""

import functools
import re
from pathlib import Path

import cupy
import numpy as np

import tinynet.kernels
from tinynet._activations import CODES
from tinynet.backends import _per_step
from tinynet.kernels.split_k import split_rows

NAME = "cupy"
IS_GPU = True
# None: every array goes through asarray
NATIVE_ARRAY = None

# Which path each op takes, by width. PROVISIONAL GUESS, NOT YET MEASURED: written without
# a GPU. Fused (our kernels) when the op's width is <= the entry, cuBLAS (+ our fused
# epilogue/prologue/gate kernels) above it:
#   dense      width = max(in, out)
#   lstm_cell  width = max(in, H)
#   lstm       width = H; the persistent kernels also need w_hh in shared memory (4 H^2
#              values + a few rows: H <= 119 in float32, 84 in float64 with 227 KiB, H100/H200)
# How it will be measured: a bench/ script times both paths of each op (forward + backward)
# side by side in one run, CUDA events after a synchronise, median of repeats after warm-up,
# fresh inputs, float32 and float64, over widths {8, 16, 32, 64, 96, 128, 192, 256, 512} and
# batch {1, 64, 1024, 2^14, 2^17, 2^20} (LSTM: T = 100, batch {1, 64, 256}), by setting this
# table to force each path; each entry becomes the largest width at which the fused path is
# not slower at any batch, and the numbers that justify it are written here.
FUSED_MAX_WIDTH = {"dense": 128, "lstm_cell": 128, "lstm": 64}

_SOURCES = Path(tinynet.kernels.__file__).parent / "cuda"
_OPTIONS = ("--std=c++17",)   # as `python -m tinynet compile` (tinynet/_compile.py) checks them
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_INCLUDE = re.compile(r'^#include "([^"]+)"[ \t]*$', re.MULTILINE)


@functools.cache
def _source(name):
    """kernels/cuda/<name> with its local #include "x.cuh" inlined (each header once, as
    #pragma once would), so that CuPy's on-disk cache, keyed by the source text, also sees a
    change in a header. NVRTC then needs no include path."""
    seen = set()

    def expand(file_name):
        if file_name in seen:
            return ""
        seen.add(file_name)
        text = (_SOURCES / file_name).read_text().replace("#pragma once\n", "")
        return _INCLUDE.sub(lambda match: expand(match.group(1)), text)

    return expand(name)


def _constant(source, name):
    """The value of `constexpr int <name> = <integer>;` in kernels/cuda/<source> (headers
    included): the launch geometry is defined once, in the kernels, and read from there."""
    found = re.findall(rf"^\s*constexpr int {name} = (\d+);", _source(source), re.MULTILINE)
    if len(found) != 1:
        raise RuntimeError(f"kernels/cuda/{source} defines `constexpr int {name} = <integer>;` "
                           f"{len(found)} times; the cupy backend reads it from there and needs "
                           "exactly one")
    return int(found[0])


# Launch geometry, read from the .cu files that rely on it.
_GEMM_BLOCK = (_constant("dense.cu", "THREADS"), 1, 1)              # tile_gemm.cuh gemm::
_K_SLAB = _constant("dense.cu", "BK")                                # tile_gemm.cuh gemm::
_DENSE_ROWS_TILE = _constant("dense.cu", "ROWS_TILE")
_DENSE_COLS_TILE = _constant("dense.cu", "COLS_TILE")
_DENSE_DW_ROWS_TILE = _constant("dense.cu", "DW_ROWS_TILE")
_PROLOGUE_BLOCK = (_constant("dense.cu", "PROLOGUE_COLS"), _constant("dense.cu", "PROLOGUE_ROWS"),
                   1)
_CELL_ROWS_TILE = _constant("lstm_cell.cu", "CELL_ROWS_TILE")
_CELL_COLS_TILE = _constant("lstm_cell.cu", "CELL_COLS_TILE")
_CELL_UNITS_TILE = _constant("lstm_cell.cu", "CELL_UNITS_TILE")
_PERSISTENT_MAX_THREADS = _constant("lstm.cu", "MAX_THREADS")
_STACK_PROLOGUE_BLOCK = (_constant("stack_dense.cu", "PROLOGUE_COLS"),
                         _constant("stack_dense.cu", "PROLOGUE_ROWS"), 1)
_STACK_MAX_THREADS = _constant("stack_lstm.cu", "STACK_MAX_THREADS")
_MAX_GRID_Y = 65535                 # CUDA's limit on gridDim.y


_ELEMENTWISE_BLOCK = (256, 1, 1)
_ELEMENTWISE_MAX_BLOCKS = 4096      # grid-stride loops cover the rest


def unavailable_reason():
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        return (f"CuPy {cupy.__version__} is installed but CUDA found no usable device "
                f"({error}); the cupy backend needs an NVIDIA GPU and a driver for CuPy's CUDA "
                "version (cupy-cuda13x: CUDA 13 driver, cupy-cuda12x: CUDA 12 driver)")
    if count == 0:
        return "CuPy is installed but there is no CUDA device: the cupy backend needs an NVIDIA GPU"
    return None


def _on_current_device(a):
    current = cupy.cuda.runtime.getDevice()
    if a.device.id != current:
        raise ValueError(f"the cupy backend got an array on cuda:{a.device.id} while the current "
                         f"device is cuda:{current}: run the op inside "
                         f"`with cupy.cuda.Device({a.device.id}):` (tinynet never moves data "
                         "between devices silently)")
    return a


def asarray(a):
    """CuPy arrays as they are; CUDA arrays of other libraries without a copy; host arrays
    copied to the current device."""
    if isinstance(a, cupy.ndarray):
        return _on_current_device(a)
    if isinstance(a, np.ndarray):
        return cupy.asarray(a)
    if hasattr(a, "__cuda_array_interface__"):
        return _on_current_device(cupy.asarray(a))
    if hasattr(a, "__dlpack__"):
        device_type = a.__dlpack_device__()[0]
        if device_type in (2, 13):                    # kDLCUDA, kDLCUDAManaged
            return _on_current_device(cupy.from_dlpack(a))
        if device_type == 1:                          # kDLCPU
            return cupy.asarray(np.from_dlpack(a))
        raise ValueError(f"the cupy backend takes CUDA or host arrays; got a "
                         f"{type(a).__module__}.{type(a).__name__} on DLPack device type "
                         f"{device_type}: move it to the host or to a CUDA device first")
    return cupy.asarray(np.asarray(a))


def to_numpy(a):
    return cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else np.asarray(a)


# --- kernels ---------------------------------------------------------------------------

_modules = {}   # (device id, source file, options) -> cupy.RawModule
_kernels = {}   # (device id, source file, entry point, dtype) -> cupy.RawKernel
_limits = {}    # device id -> (multiprocessors, opt-in shared bytes per block)


def _kernel(source, entry, dtype):
    device = cupy.cuda.runtime.getDevice()
    key = (device, source, entry, dtype)
    kernel = _kernels.get(key)
    if kernel is None:
        module_key = (device, source, _OPTIONS)
        module = _modules.get(module_key)
        if module is None:
            module = _modules[module_key] = cupy.RawModule(code=_source(source), options=_OPTIONS)
        kernel = _kernels[key] = module.get_function(f"{entry}_{_SUFFIX[dtype]}")
    return kernel


def _launch(source, entry, dtype, grid, block, args, shared_mem=0):
    """Launch unless the grid is empty (a zero-size problem: nothing to compute)."""
    if grid[0] and grid[1] and grid[2]:
        _kernel(source, entry, dtype)(grid, block, args, shared_mem=shared_mem)


def _launch_elementwise(source, entry, dtype, count, args):
    blocks = min(_cdiv(count, _ELEMENTWISE_BLOCK[0]), _ELEMENTWISE_MAX_BLOCKS)
    _launch(source, entry, dtype, (blocks, 1, 1), _ELEMENTWISE_BLOCK, args)


def _device_limits():
    device = cupy.cuda.runtime.getDevice()
    found = _limits.get(device)
    if found is None:
        runtime = cupy.cuda.runtime
        found = _limits[device] = (
            runtime.deviceGetAttribute(runtime.cudaDevAttrMultiProcessorCount, device),
            runtime.deviceGetAttribute(runtime.cudaDevAttrMaxSharedMemoryPerBlockOptin, device))
    return found


def _cdiv(a, b):
    return -(-a // b)


def _i32(n):
    return np.int32(n)


def _c(a):
    return None if a is None else cupy.ascontiguousarray(a)


def _reduce_splits(source, entry, partials, out, splits):
    """out (count,) = partials (splits, count) summed over splits in order."""
    _launch_elementwise(source, entry, out.dtype, out.size,
                        (partials, out, _i32(splits), _i32(out.size)))


# --- dense ---------------------------------------------------------------------------

def _dense_fused(n_in, n_out):
    return max(n_in, n_out) <= FUSED_MAX_WIDTH["dense"]


def _grad_prologue(dy, y, code, want_dz, want_sums):
    """dz = dy * act'(y) (if want_dz) and its column sums (if want_sums), one pass over dy."""
    rows, cols = dy.shape
    dz = cupy.empty_like(dy) if want_dz else None
    sums = cupy.empty(cols, dy.dtype) if want_sums else None
    col_blocks = _cdiv(cols, _PROLOGUE_BLOCK[0])
    chunk_rows, chunks = split_rows(rows, col_blocks)
    partials = sums if chunks == 1 or not want_sums else cupy.empty((chunks, cols), dy.dtype)
    _launch("dense.cu", "dense_grad_prologue", dy.dtype, (col_blocks, chunks, 1), _PROLOGUE_BLOCK,
            (dy, y, dz, partials, _i32(rows), _i32(cols), _i32(chunk_rows), _i32(code)))
    if want_sums and chunks > 1:
        _reduce_splits("dense.cu", "dense_reduce_splits", partials, sums, chunks)
    return dz, sums


def _column_sums(a):
    return _grad_prologue(a, None, CODES["linear"], False, True)[1]


def _dense_forward(x, w, b, code):
    dtype = x.dtype
    batch, n_in = x.shape
    n_out = w.shape[1]
    if _dense_fused(n_in, n_out):
        y = cupy.empty((batch, n_out), dtype)
        _launch("dense.cu", "dense_forward_fused", dtype,
                (_cdiv(batch, _DENSE_ROWS_TILE), _cdiv(n_out, _DENSE_COLS_TILE), 1), _GEMM_BLOCK,
                (x, w, b, y, _i32(batch), _i32(n_in), _i32(n_out), _i32(code)))
        return y
    y = x @ w                                                   # cuBLAS
    if b is not None or code != CODES["linear"]:
        _launch_elementwise("dense.cu", "dense_bias_activation", dtype, y.size,
                            (y, b, _i32(batch), _i32(n_out), _i32(code)))
    return y


def _dense_dx_linear(dz, w):
    """dz @ w.T for dz (rows, out), w (in, out)."""
    rows, n_out = dz.shape
    n_in = w.shape[0]
    if not _dense_fused(n_in, n_out):
        return dz @ w.T                                         # cuBLAS
    dx = cupy.empty((rows, n_in), dz.dtype)
    _launch("dense.cu", "dense_backward_dx", dz.dtype,
            (_cdiv(rows, _DENSE_ROWS_TILE), _cdiv(n_in, _DENSE_COLS_TILE), 1), _GEMM_BLOCK,
            (dz, None, w, dx, _i32(rows), _i32(n_in), _i32(n_out), _i32(CODES["linear"])))
    return dx


def dense_forward(x, w, b, activation):
    # x (batch, in), w (in, out), b (out,) or None -> y (batch, out)
    x, w, b = _c(x), _c(w), _c(b)
    code = CODES[activation]
    y = _dense_forward(x, w, b, code)
    return y, (x, w, b is not None, code, y)


def dense_backward(saved, dy):
    x, w, has_bias, code, y = saved
    dtype = x.dtype
    dy = _c(dy)
    batch, n_in = x.shape
    n_out = w.shape[1]
    if not _dense_fused(n_in, n_out):
        # dz written once by our prologue (with db in the same pass); the GEMMs in cuBLAS
        linear = code == CODES["linear"]
        dz, db = dy, None                                       # linear: dz is dy itself
        if not linear or has_bias:
            dz_written, db = _grad_prologue(dy, y, code, not linear, has_bias)
            dz = dy if linear else dz_written
        return dz @ w.T, x.T @ dz, db
    # dx: dz = dy * act'(y) formed on load, never stored
    dx = cupy.empty((batch, n_in), dtype)
    _launch("dense.cu", "dense_backward_dx", dtype,
            (_cdiv(batch, _DENSE_ROWS_TILE), _cdiv(n_in, _DENSE_COLS_TILE), 1), _GEMM_BLOCK,
            (dy, y, w, dx, _i32(batch), _i32(n_in), _i32(n_out), _i32(code)))
    # dw and db: split-K over the batch, partials reduced in split order
    size = n_in * n_out + (n_out if has_bias else 0)
    out = cupy.empty(size, dtype)
    row_tiles = _cdiv(n_in, _DENSE_DW_ROWS_TILE)
    if has_bias:
        row_tiles = max(1, row_tiles)        # the first row tile sums db, even when in = 0
    col_tiles = _cdiv(n_out, _DENSE_COLS_TILE)
    rows_per_split, splits = split_rows(batch, row_tiles * col_tiles, _K_SLAB)
    partials = out if splits == 1 else cupy.empty((splits, size), dtype)
    _launch("dense.cu", "dense_backward_dw", dtype, (row_tiles, col_tiles, splits), _GEMM_BLOCK,
            (x, dy, y, partials, _i32(batch), _i32(n_in), _i32(n_out), _i32(code),
             _i32(has_bias), _i32(rows_per_split)))
    if splits > 1:
        _reduce_splits("dense.cu", "dense_reduce_splits", partials, out, splits)
    dw = out[:n_in * n_out].reshape(n_in, n_out)
    return dx, dw, out[n_in * n_out:] if has_bias else None


# --- LSTM cell -----------------------------------------------------------------------

def _cell_fused(n_in, hidden):
    return max(n_in, hidden) <= FUSED_MAX_WIDTH["lstm_cell"]


def _lstm_dw(x, h0, hs, dz, steps):
    """[dw_ih; dw_hh; db] = [x | h_prev].T @ dz and sum(dz) over rows r * steps + t of
    x (rows, in), dz (rows, 4H), h_prev = h0[r] at t = 0, hs[row - 1] after
    (lstm_cell.cu:lstm_cell_backward_dw). One cell: steps = 1, h0 = h, hs = None (not read)."""
    rows, n_in = x.shape
    gate_columns = dz.shape[1]
    hidden = gate_columns // 4
    features = n_in + hidden
    dtype = x.dtype
    out = cupy.empty((features + 1) * gate_columns, dtype)
    tiles = (_cdiv(features, _CELL_ROWS_TILE), _cdiv(gate_columns, _CELL_COLS_TILE))
    rows_per_split, splits = split_rows(rows, tiles[0] * tiles[1], _K_SLAB)
    partials = out if splits == 1 else cupy.empty((splits, out.size), dtype)
    _launch("lstm_cell.cu", "lstm_cell_backward_dw", dtype, (*tiles, splits), _GEMM_BLOCK,
            (x, h0, hs, dz, partials, _i32(rows), _i32(max(steps, 1)), _i32(n_in), _i32(hidden),
             _i32(rows_per_split)))
    if splits > 1:
        _reduce_splits("lstm_cell.cu", "lstm_cell_reduce_splits", partials, out, splits)
    out = out.reshape(features + 1, gate_columns)
    return out[:n_in], out[n_in:features], out[features]


def lstm_cell_forward(x, h, c, w_ih, w_hh, b, activation, recurrent_activation, forget_bias):
    # x (batch, in), h and c (batch, H), w_ih (in, 4H), w_hh (H, 4H), b (4H,)
    x, h, c, w_ih, w_hh, b = (_c(a) for a in (x, h, c, w_ih, w_hh, b))
    dtype = x.dtype
    batch, n_in = x.shape
    hidden = h.shape[1]
    act, rec = CODES[activation], CODES[recurrent_activation]
    forget_bias = dtype.type(forget_bias)
    h1 = cupy.empty((batch, hidden), dtype)
    c1 = cupy.empty((batch, hidden), dtype)
    gates = cupy.empty((batch, 4 * hidden), dtype)      # saved i, f, g, o
    if _cell_fused(n_in, hidden):
        _launch("lstm_cell.cu", "lstm_cell_forward_fused", dtype,
                (_cdiv(batch, _CELL_ROWS_TILE), _cdiv(hidden, _CELL_UNITS_TILE), 1), _GEMM_BLOCK,
                (x, h, c, w_ih, w_hh, b, h1, c1, gates, _i32(batch), _i32(n_in), _i32(hidden),
                 _i32(act), _i32(rec), forget_bias))
    else:
        zx, zh = x @ w_ih, h @ w_hh                             # cuBLAS
        _launch_elementwise("lstm_cell.cu", "lstm_cell_gates", dtype, batch * hidden,
                            (zx, zh, b, c, h1, c1, gates, _i32(batch), _i32(hidden), _i32(act),
                             _i32(rec), forget_bias))
    return h1, c1, (x, h, c, w_ih, w_hh, gates, c1, act, rec)


def lstm_cell_backward(saved, dh1, dc1):
    x, h, c, w_ih, w_hh, gates, c1, act, rec = saved
    dtype = x.dtype
    batch, n_in = x.shape
    hidden = h.shape[1]
    dz = cupy.empty((batch, 4 * hidden), dtype)
    dc = cupy.empty((batch, hidden), dtype)
    # one gradient of h1: the kernel's second term dh_b is null
    _launch_elementwise("lstm_cell.cu", "lstm_cell_backward_pointwise", dtype, batch * hidden,
                        (_c(dh1), None, _c(dc1), c, gates, c1, dz, dc, _i32(batch), _i32(hidden),
                         _i32(act), _i32(rec)))
    if not _cell_fused(n_in, hidden):
        return dz @ w_ih.T, dz @ w_hh.T, dc, x.T @ dz, h.T @ dz, _column_sums(dz)   # cuBLAS
    dx = cupy.empty((batch, n_in), dtype)
    dh = cupy.empty((batch, hidden), dtype)
    _launch("lstm_cell.cu", "lstm_cell_backward_dxh", dtype,
            (_cdiv(batch, _CELL_ROWS_TILE), _cdiv(n_in + hidden, _CELL_COLS_TILE), 1), _GEMM_BLOCK,
            (dz, w_ih, w_hh, dx, dh, _i32(batch), _i32(n_in), _i32(hidden)))
    dw_ih, dw_hh, db = _lstm_dw(x, h, None, dz, 1)
    return dx, dh, dc, dw_ih, dw_hh, db


# --- LSTM over a whole sequence ------------------------------------------------------

def _persistent_shared_bytes(hidden, rows_per_block, itemsize, backward):
    """Dynamic shared memory of lstm.cu: w_hh (4 H^2) and the double-buffered row state
    (2 G H values forward, 2 G H Gates = 8 G H values backward)."""
    return itemsize * (4 * hidden * hidden + (8 if backward else 2) * rows_per_block * hidden)


def _persistent(hidden, dtype):
    """Whether the whole sequence runs in lstm.cu's persistent kernels: a small H (the
    table) whose w_hh, with one row of backward state, fits in a block's shared memory."""
    if not 0 < hidden <= min(FUSED_MAX_WIDTH["lstm"], _PERSISTENT_MAX_THREADS):
        return False
    _, shared_limit = _device_limits()
    return _persistent_shared_bytes(hidden, 1, dtype.itemsize, True) <= shared_limit


def _launch_persistent(source, entry, dtype, batch, hidden, args, backward):
    """Block (H, G): G batch rows per block, as many as spread the batch over the SMs, within
    the thread and shared-memory limits; the result does not depend on G."""
    kernel = _kernel(source, entry, dtype)
    multiprocessors, shared_limit = _device_limits()
    fixed = _persistent_shared_bytes(hidden, 0, dtype.itemsize, backward)
    per_row = _persistent_shared_bytes(hidden, 1, dtype.itemsize, backward) - fixed
    max_threads = min(_PERSISTENT_MAX_THREADS, kernel.max_threads_per_block)
    rows_per_block = max(1, min(_cdiv(batch, multiprocessors), max_threads // hidden,
                                (shared_limit - fixed) // per_row))
    shared = fixed + per_row * rows_per_block
    if kernel.max_dynamic_shared_size_bytes < shared:
        kernel.max_dynamic_shared_size_bytes = shared_limit
    _launch(source, entry, dtype, (_cdiv(batch, rows_per_block), 1, 1),
            (hidden, rows_per_block, 1), args, shared_mem=shared)


def lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation, forget_bias):
    # xs (batch, steps, in), h0 and c0 (batch, H) -> hs (batch, steps, H), hT, cT (batch, H)
    xs, h0, c0, w_ih, w_hh, b = (_c(a) for a in (xs, h0, c0, w_ih, w_hh, b))
    hidden = w_hh.shape[0]
    act, rec = CODES[activation], CODES[recurrent_activation]
    forget_bias = xs.dtype.type(forget_bias)
    if _persistent(hidden, xs.dtype):
        return _lstm_forward_persistent(xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias)
    return _per_step.forward(_STEPS, xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias)


def lstm_backward(saved, dhs, dhT, dcT):
    dhs, dhT, dcT = _c(dhs), _c(dhT), _c(dcT)
    if saved[0] == "persistent":
        return _lstm_backward_persistent(saved[1:], dhs, dhT, dcT)
    return _per_step.backward(_STEPS, saved, dhs, dhT, dcT)


def _lstm_forward_persistent(xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias):
    dtype = xs.dtype
    batch, steps, n_in = xs.shape
    hidden = w_hh.shape[0]
    # x_proj = xs @ w_ih + b for every step in one GEMM; the kernel overwrites it with the gates
    gates = _dense_forward(xs.reshape(batch * steps, n_in), w_ih, b, CODES["linear"])
    hs = cupy.empty((batch, steps, hidden), dtype)
    cs = cupy.empty((batch, steps, hidden), dtype)
    h_last = cupy.empty((batch, hidden), dtype)
    c_last = cupy.empty((batch, hidden), dtype)
    _launch_persistent("lstm.cu", "lstm_forward_persistent", dtype, batch, hidden,
                       (gates, h0, c0, w_hh, hs, cs, h_last, c_last, _i32(batch), _i32(steps),
                        _i32(hidden), _i32(act), _i32(rec), forget_bias), backward=False)
    saved = ("persistent", xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec)
    return hs, h_last, c_last, saved


def _lstm_backward_persistent(saved, dhs, dhT, dcT):
    xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec = saved
    dtype = xs.dtype
    batch, steps, n_in = xs.shape
    hidden = w_hh.shape[0]
    dz = cupy.empty((batch, steps, 4 * hidden), dtype)
    dh0 = cupy.empty((batch, hidden), dtype)
    dc0 = cupy.empty((batch, hidden), dtype)
    _launch_persistent("lstm.cu", "lstm_backward_persistent", dtype, batch, hidden,
                       (gates, cs, c0, w_hh, dhs, dhT, dcT, dz, dh0, dc0, _i32(batch),
                        _i32(steps), _i32(hidden), _i32(act), _i32(rec)), backward=True)
    # Everything that does not feed the recurrence: GEMMs over all steps at once.
    rows = batch * steps
    dz_rows = dz.reshape(rows, 4 * hidden)
    dxs = _dense_dx_linear(dz_rows, w_ih).reshape(batch, steps, n_in)
    dw_ih, dw_hh, db = _lstm_dw(xs.reshape(rows, n_in), h0, hs.reshape(rows, hidden), dz_rows,
                                steps)
    return dxs, dh0, dc0, dw_ih, dw_hh, db


# The per-step path (tinynet/backends/_per_step.py) over cuBLAS and lstm_cell.cu's kernels:
# x @ w_ih for every step in one GEMM before the loop, h @ w_hh in the loop.

def _step_forward(x_proj, h, c, w_ih, w_hh, b, act, rec, forget_bias, h1, c1, gates):
    batch, hidden = h1.shape
    _launch_elementwise("lstm_cell.cu", "lstm_cell_gates", h1.dtype, batch * hidden,
                        (x_proj, h @ w_hh, b, c, h1, c1, gates, _i32(batch), _i32(hidden),
                         _i32(act), _i32(rec), forget_bias))


def _step_backward(gates, c1, c, dh, dhs, dc, dz, act, rec):
    batch, hidden = dc.shape
    _launch_elementwise("lstm_cell.cu", "lstm_cell_backward_pointwise", dc.dtype,
                        batch * hidden, (dh, dhs, dc, c, gates, c1, dz, dc, _i32(batch),
                                         _i32(hidden), _i32(act), _i32(rec)))


def _project(xs, w_ih):
    steps, batch, n_in = xs.shape
    return (xs.reshape(steps * batch, n_in) @ w_ih).reshape(steps, batch, w_ih.shape[1])


_STEPS = _per_step.Steps(
    xp=cupy, inputs=_project, forward=_step_forward, backward=_step_backward,
    times_weights_t=lambda a, w: a @ w.T,
    weight_gradients=lambda a, dz, with_sums: (a.T @ dz,
                                               _column_sums(dz) if with_sums else None))


# --- stacks: M independent models per call ------------------------------------------

def zeros(shape, dtype):
    return cupy.zeros(shape, dtype)


stack_zeros = zeros


def _batched_matmul(a, b):
    """a (M, n, k) @ b (M, k, p) in one batched cuBLAS call (zeros when k = 0)."""
    if a.size == 0 or b.size == 0:
        return cupy.zeros((a.shape[0], a.shape[1], b.shape[2]), a.dtype)
    return cupy.matmul(a, b)


def stack_dense_forward(x, w, b, activation):
    # x (M, batch, in), w (M, in, out), b (M, out) or None -> y (M, batch, out)
    x, w, b = _c(x), _c(w), _c(b)
    code = CODES[activation]
    models, batch, _ = x.shape
    n_out = w.shape[2]
    y = _batched_matmul(x, w)
    if b is not None or code != CODES["linear"]:
        _launch_elementwise("stack_dense.cu", "stack_dense_bias_activation", x.dtype, y.size,
                            (y, b, _i32(models), _i32(batch), _i32(n_out), _i32(code)))
    return y, (x, w, b is not None, code, y)


def stack_dense_backward(saved, dy):
    x, w, has_bias, code, y = saved
    dy = _c(dy)
    models, batch, _ = x.shape
    n_out = w.shape[2]
    dz, db = dy, None                                           # linear: dz is dy itself
    if code != CODES["linear"] or has_bias:
        # dz written once, with db (fixed-order sums per model) in the same pass
        dz = dy if code == CODES["linear"] else cupy.empty_like(dy)
        db = cupy.empty((models, n_out), dy.dtype) if has_bias else None
        blocks = (_cdiv(n_out, _STACK_PROLOGUE_BLOCK[0]), min(models, _MAX_GRID_Y), 1)
        _launch("stack_dense.cu", "stack_dense_grad_prologue", dy.dtype, blocks,
                _STACK_PROLOGUE_BLOCK,
                (dy, y, None if dz is dy else dz, db, _i32(models), _i32(batch), _i32(n_out),
                 _i32(code)))
    dx = _batched_matmul(dz, w.transpose(0, 2, 1))
    dw = _batched_matmul(x.transpose(0, 2, 1), dz)
    return dx, dw, db


def _stack_lstm_block(pairs, hidden):
    """Block (H, G) of stack_lstm.cu: G sequences per block, as many as spread the pairs over
    the multiprocessors, within the thread limit; the result does not depend on G."""
    multiprocessors, _ = _device_limits()
    return hidden, max(1, min(_cdiv(pairs, multiprocessors), _STACK_MAX_THREADS // hidden)), 1


def stack_lstm_forward(xs, h0, c0, w_ih, w_hh, b, activation, recurrent_activation,
                       forget_bias, lengths):
    # xs (M, batch, steps, in), h0 and c0 (M, batch, H), forget_bias (M,), lengths (M, batch)
    # int32 -> hs (M, batch, steps, H), hT, cT (M, batch, H)
    xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths = (
        _c(a) for a in (xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths))
    dtype = xs.dtype
    models, batch, steps, n_in = xs.shape
    hidden = w_hh.shape[1]
    if hidden > _STACK_MAX_THREADS:
        raise ValueError(f"the cupy backend runs a stacked LSTM with one thread per unit, at most "
                         f"H = {_STACK_MAX_THREADS}; got w_hh of shape {w_hh.shape} (H = {hidden})"
                         ": run the models one at a time (2-D weights), or use the numba-cuda "
                         "backend")
    if lengths.dtype != np.int32:
        raise ValueError(f"the cupy backend takes lengths as int32, got {lengths.dtype}: "
                         "pass them through tinynet.ops.lstm, which converts them")
    act, rec = CODES[activation], CODES[recurrent_activation]
    pairs = models * batch
    hs = cupy.empty((models, batch, steps, hidden), dtype)
    cs = cupy.empty((models, batch, steps, hidden), dtype)
    gates = cupy.empty((models, batch, steps, 4 * hidden), dtype)
    h_last = cupy.empty((models, batch, hidden), dtype)
    c_last = cupy.empty((models, batch, hidden), dtype)
    if hidden:
        block = _stack_lstm_block(pairs, hidden)
        _launch("stack_lstm.cu", "stack_lstm_forward", dtype, (_cdiv(pairs, block[1]), 1, 1),
                block, (xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths, hs, cs, gates, h_last,
                        c_last, _i32(pairs), _i32(batch), _i32(steps), _i32(n_in),
                        _i32(hidden), _i32(act), _i32(rec)))
    saved = (xs, h0, c0, w_ih, w_hh, lengths, hs, cs, gates, act, rec)
    return hs, h_last, c_last, saved


def stack_lstm_backward(saved, dhs, dhT, dcT):
    xs, h0, c0, w_ih, w_hh, lengths, hs, cs, gates, act, rec = saved
    dhs, dhT, dcT = _c(dhs), _c(dhT), _c(dcT)
    dtype = xs.dtype
    models, batch, steps, n_in = xs.shape
    hidden = w_hh.shape[1]
    pairs = models * batch
    dz = cupy.empty((models, batch, steps, 4 * hidden), dtype)
    # without units nothing reaches xs: its gradient is zero
    dxs = (cupy.empty if hidden else cupy.zeros)((models, batch, steps, n_in), dtype)
    dh0 = cupy.empty((models, batch, hidden), dtype)
    dc0 = cupy.empty((models, batch, hidden), dtype)
    if hidden:
        block = _stack_lstm_block(pairs, hidden)
        _launch("stack_lstm.cu", "stack_lstm_backward", dtype, (_cdiv(pairs, block[1]), 1, 1),
                block, (gates, cs, c0, w_ih, w_hh, lengths, dhs, dhT, dcT, dz, dxs, dh0, dc0,
                        _i32(pairs), _i32(batch), _i32(steps), _i32(n_in), _i32(hidden),
                        _i32(act), _i32(rec)))
    # the weight gradients of each model, summed over its rows and valid steps in order
    dw_ih = cupy.empty((models, n_in, 4 * hidden), dtype)
    dw_hh = cupy.empty((models, hidden, 4 * hidden), dtype)
    db = cupy.empty((models, 4 * hidden), dtype)
    _launch_elementwise("stack_lstm.cu", "stack_lstm_backward_dw", dtype,
                        dw_ih.size + dw_hh.size + db.size,
                        (xs, h0, hs, dz, lengths, dw_ih, dw_hh, db, _i32(models), _i32(batch),
                         _i32(steps), _i32(n_in), _i32(hidden)))
    return dxs, dh0, dc0, dw_ih, dw_hh, db
