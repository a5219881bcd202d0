"""Numba-CUDA kernels, one module per op.

dense.py      fused dense forward, backward dx, backward dw/db partials
lstm_cell.py  one LSTM step for any H: gates GEMM + cell math, pointwise backward
lstm.py       the whole sequence as one persistent launch per direction (H <= 64 float32)
partials.py   the deterministic sum of per-block partials
tiles.py      the shared-memory GEMM tile used by dense.py and lstm_cell.py
stack_dense.py   dense.py's kernels for a stack of models (a models grid axis)
stack_lstm.py    the whole sequence for a stack of models, one thread per (model, row),
                 with per-row lengths

Each kernel module exposes, per kernel, `<name>_source(dtype)` (the Python function for
one dtype and static configuration; tinynet.backends.numba_cuda compiles and caches it)
and `<name>_argtypes(dtype)` (its concrete argument types).

compile_targets() lists every kernel with concrete argument types, for
`python -m tinynet compile` (tinynet/_compile.py)."""

import numpy as np

from . import dense, lstm, lstm_cell, partials, stack_dense, stack_lstm

DTYPES = (np.float32, np.float64)


def _suffix(dtype):
    return "f32" if np.dtype(dtype) == np.float32 else "f64"


def compile_targets():
    """[(name, python function, argument types)] for every kernel at its default config:
    both dtypes; the persistent LSTM kernels at their largest hidden size, the stack LSTM
    kernels at the largest whose state stays in registers."""
    targets = []
    for dtype in DTYPES:
        kernels = [
            ("dense_forward", dense.dense_forward_source(dtype),
             dense.dense_forward_argtypes(dtype)),
            ("dense_backward_dx", dense.dense_backward_dx_source(dtype),
             dense.dense_backward_dx_argtypes(dtype)),
            ("dense_backward_dw", dense.dense_backward_dw_source(dtype),
             dense.dense_backward_dw_argtypes(dtype)),
            ("sum_partials", partials.sum_partials_source(dtype),
             partials.sum_partials_argtypes(dtype)),
            ("lstm_cell_forward", lstm_cell.lstm_cell_forward_source(dtype),
             lstm_cell.lstm_cell_forward_argtypes(dtype)),
            ("lstm_cell_backward_dz", lstm_cell.lstm_cell_backward_dz_source(dtype),
             lstm_cell.lstm_cell_backward_dz_argtypes(dtype)),
            (f"lstm_forward_h{lstm.max_hidden(dtype)}",
             lstm.lstm_forward_source(dtype, lstm.max_hidden(dtype)),
             lstm.lstm_forward_argtypes(dtype)),
            (f"lstm_backward_h{lstm.max_hidden(dtype)}",
             lstm.lstm_backward_source(dtype, lstm.max_hidden(dtype)),
             lstm.lstm_backward_argtypes(dtype)),
            ("stack_dense_forward", stack_dense.stack_dense_forward_source(dtype),
             stack_dense.stack_dense_forward_argtypes(dtype)),
            ("stack_dense_backward_dx", stack_dense.stack_dense_backward_dx_source(dtype),
             stack_dense.stack_dense_backward_dx_argtypes(dtype)),
            ("stack_dense_backward_dw", stack_dense.stack_dense_backward_dw_source(dtype),
             stack_dense.stack_dense_backward_dw_argtypes(dtype)),
            (f"stack_lstm_forward_h{stack_lstm.register_hidden(dtype)}",
             stack_lstm.stack_lstm_forward_source(dtype, stack_lstm.register_hidden(dtype)),
             stack_lstm.stack_lstm_forward_argtypes(dtype)),
            (f"stack_lstm_backward_h{stack_lstm.register_hidden(dtype)}",
             stack_lstm.stack_lstm_backward_source(dtype, stack_lstm.register_hidden(dtype)),
             stack_lstm.stack_lstm_backward_argtypes(dtype)),
        ]
        targets.extend((f"{name}_{_suffix(dtype)}", function, argtypes)
                       for name, function, argtypes in kernels)
    return targets
