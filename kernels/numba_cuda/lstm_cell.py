"""One LSTM step on the GPU, for any H: the gate GEMMs fused with the cell arithmetic, and
the pointwise part of the backward.

Reference: tinynet/backends/numpy_ref.py:lstm_cell_forward, lstm_cell_backward
(_cell_step, _cell_step_backward).

    z = x @ w_ih + h @ w_hh + b, blocks i, f, g, o (each (batch, H))
    i = ra(zi); f = ra(zf + forget_bias); g = a(zg); o = ra(zo)
    c1 = f * c + i * g;  h1 = o * a(c1)

Used, one launch per step, for lstm over a sequence with H > lstm.MAX_HIDDEN (the fallback
of the persistent kernels in lstm.py), driven by tinynet/backends/_per_step.py: each step's
arrays are contiguous (batch, ...) slices of its time-major buffers. All arrays C-contiguous.

lstm_cell_forward      grid tiles.grid(batch, H, 16) (1-D), blocks of 16 x 16 threads
    (tiles.py). A block computes the 64 gate columns of 16 hidden units (4 gates x 16) for
    64 batch rows: the GEMM [x | h] @ [w_ih ; w_hh] walks k over in, then over H. Tile
    column n is gate n % 4 of unit unit0 + n // 4, so thread (ty, tx), which owns tile
    columns 4 tx .. 4 tx + 3, ends up holding all four gates of unit unit0 + tx for its 4
    rows and finishes the cell in registers: z is never written; h1, c1 and the gates
    (saved for the backward) are written once.
lstm_cell_backward_dz  1-D grid over batch * H, THREADS per block. One thread per (row, unit):
    dz (the gradient of the gate pre-activations) and the gradient of c before the step. The
    GEMMs that consume dz (dx, dh, dw_ih, dw_hh, db) are dense.py's kernels with the linear
    activation.
"""

from numba import cuda

from ..numba_math import activate, activation_grad
from .tiles import (LOADS, PADDED, PER_THREAD, SIDE, TILE, TILE_K, VECTOR_ALIGNMENT, c_array,
                    device, grid, multiply_tiles, scalar, stage_transposed, tile_origin,
                    zero_accumulators)

UNITS = TILE // 4          # hidden units per block: 4 gates x 16 units = 64 gate columns
THREADS = 256              # threads per block of the pointwise backward


@device
def cell_forward(z_i, z_f, z_g, z_o, c, act, rec, forget_bias):
    """The cell arithmetic of one (row, unit): gates i, f, g, o, then c1 and h1."""
    i = activate(rec, z_i)
    f = activate(rec, z_f + forget_bias)
    g = activate(act, z_g)
    o = activate(rec, z_o)
    c1 = f * c + i * g
    h1 = o * activate(act, c1)
    return i, f, g, o, c1, h1


@device
def cell_backward(i, f, g, o, c1, c, dh1, dc1, act, rec):
    """Gradients of the gate pre-activations zi, zf, zg, zo and of c, for one (row, unit),
    from the saved gates, c1 = the cell state after the step, c = the one before."""
    act_c1 = activate(act, c1)
    d_o = dh1 * act_c1
    dc1 = dc1 + dh1 * o * activation_grad(act, act_c1)
    return (dc1 * g * activation_grad(rec, i), dc1 * c * activation_grad(rec, f),
            dc1 * i * activation_grad(act, g), d_o * activation_grad(rec, o), dc1 * f)


@device
def stage_gate_columns(tile, w, k0, unit0, hidden, thread):
    """tile[k, n] = w[k0 + k, (n % 4) * H + unit0 + n // 4]: the four gates of 16 units;
    zero outside w (depth, 4H)."""
    depth = w.shape[0]
    for load in range(LOADS):
        k = thread // TILE + load * (SIDE * SIDE // TILE)
        n = thread % TILE
        unit = unit0 + n // 4
        if k0 + k < depth and unit < hidden:
            tile[k, n] = w[k0 + k, (n % 4) * hidden + unit]
        else:
            tile[k, n] = 0


@device
def finish_cell(x_i, x_f, x_g, x_o, row, unit, c, b, act, rec, forget_bias, h1, c1, gates):
    """The epilogue of one (row, unit): add the bias to its four gate sums x_*, run the
    cell, write h1, c1 and the gates (nothing outside (batch, H))."""
    batch, hidden = h1.shape
    if row < batch and unit < hidden:
        gate_i, gate_f, gate_g, gate_o, c_new, h_new = cell_forward(
            x_i + b[unit], x_f + b[hidden + unit], x_g + b[2 * hidden + unit],
            x_o + b[3 * hidden + unit], c[row, unit], act, rec, forget_bias)
        h1[row, unit] = h_new
        c1[row, unit] = c_new
        gates[row, unit] = gate_i
        gates[row, hidden + unit] = gate_f
        gates[row, 2 * hidden + unit] = gate_g
        gates[row, 3 * hidden + unit] = gate_o


def lstm_cell_forward_source(dtype):
    def lstm_cell_forward(x, h, c, w_ih, w_hh, b, act, rec, forget_bias, h1, c1, gates):
        # x (batch, in), h and c (batch, H): the step's input and the state before it
        # w_ih (in, 4H), w_hh (H, 4H), b (4H,)
        # out: h1, c1 (batch, H), gates (batch, 4H) = i, f, g, o
        n_in = x.shape[1]
        hidden = w_hh.shape[0]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        thread = ty * SIDE + tx
        row0, unit0 = tile_origin(hidden, UNITS)
        # a_tile[k, m] = [x | h][row0 + m, k0 + k]; w_tile[k, n] = the gate columns of
        # stage_gate_columns
        a_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        w_tile = cuda.shared.array((TILE_K, PADDED), dtype, alignment=VECTOR_ALIGNMENT)
        acc = cuda.local.array((PER_THREAD, PER_THREAD), dtype)
        zero_accumulators(acc)
        for k0 in range(0, n_in, TILE_K):
            stage_transposed(a_tile, x, row0, k0, thread)
            stage_gate_columns(w_tile, w_ih, k0, unit0, hidden, thread)
            cuda.syncthreads()   # both tiles staged before anyone multiplies
            multiply_tiles(a_tile, w_tile, acc, ty, tx)
            cuda.syncthreads()   # everyone done reading before the next stage overwrites
        for k0 in range(0, hidden, TILE_K):
            stage_transposed(a_tile, h, row0, k0, thread)
            stage_gate_columns(w_tile, w_hh, k0, unit0, hidden, thread)
            cuda.syncthreads()   # both tiles staged before anyone multiplies
            multiply_tiles(a_tile, w_tile, acc, ty, tx)
            cuda.syncthreads()   # everyone done reading before the next stage overwrites
        # acc[i, gate] is (x @ w_ih + h @ w_hh)[row0 + 4 ty + i, gate * H + unit0 + tx].
        # One call per row with constant indices keeps acc in registers (a loop this
        # large is not unrolled for float64, and acc[i, ...] would then live on the stack).
        row = row0 + ty * PER_THREAD
        unit = unit0 + tx
        finish_cell(acc[0, 0], acc[0, 1], acc[0, 2], acc[0, 3], row, unit, c, b, act, rec,
                    forget_bias, h1, c1, gates)
        finish_cell(acc[1, 0], acc[1, 1], acc[1, 2], acc[1, 3], row + 1, unit, c, b, act, rec,
                    forget_bias, h1, c1, gates)
        finish_cell(acc[2, 0], acc[2, 1], acc[2, 2], acc[2, 3], row + 2, unit, c, b, act, rec,
                    forget_bias, h1, c1, gates)
        finish_cell(acc[3, 0], acc[3, 1], acc[3, 2], acc[3, 3], row + 3, unit, c, b, act, rec,
                    forget_bias, h1, c1, gates)
    return lstm_cell_forward


def lstm_cell_forward_argtypes(dtype):
    return (c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2),
            c_array(dtype, 2), c_array(dtype, 1), scalar(int), scalar(int), scalar(dtype),
            c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2))


def lstm_cell_forward_grid(batch, hidden):
    return grid(batch, hidden, UNITS)


def lstm_cell_backward_dz_source(dtype):
    def lstm_cell_backward_dz(gates, c1, c, act, rec, dh_carry, dhs, dc, dz):
        # gates (batch, 4H), c1 (batch, H): saved by the step's forward
        # c (batch, H): the cell state before the step
        # dh_carry (batch, H): gradient reaching h1 from later steps (or the caller)
        # dhs (batch, H): the gradient of the step's output h1, added to dh_carry
        # dc (batch, H): in, the gradient of c1; out, the gradient of c before the step
        # out: dz (batch, 4H)
        batch, hidden = dc.shape
        index = cuda.grid(1)
        if index < batch * hidden:
            row = index // hidden
            unit = index % hidden
            dh = dh_carry[row, unit] + dhs[row, unit]
            dz_i, dz_f, dz_g, dz_o, dc_before = cell_backward(
                gates[row, unit], gates[row, hidden + unit], gates[row, 2 * hidden + unit],
                gates[row, 3 * hidden + unit], c1[row, unit], c[row, unit], dh, dc[row, unit],
                act, rec)
            dc[row, unit] = dc_before
            dz[row, unit] = dz_i
            dz[row, hidden + unit] = dz_f
            dz[row, 2 * hidden + unit] = dz_g
            dz[row, 3 * hidden + unit] = dz_o
    return lstm_cell_backward_dz


def lstm_cell_backward_dz_argtypes(dtype):
    return (c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2), scalar(int), scalar(int),
            c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2))


def lstm_cell_backward_dz_grid(batch, hidden):
    return ((batch * hidden + THREADS - 1) // THREADS,)
