"""The whole LSTM sequence in one launch per direction: persistent kernels for H <= 64
(float32; 32 in float64).

Reference: tinynet/backends/numpy_ref.py:lstm_forward, lstm_backward (and _cell_step,
_cell_step_backward, whose arithmetic lstm_cell.cell_forward / cell_backward repeat).

Shapes: xs (batch, steps, in); h0, c0, hT, cT (batch, H); w_ih (in, 4H); w_hh (H, 4H);
b (4H,); hs, cs (batch, steps, H); gates (batch, steps, 4H), the activated i, f, g, o
saved for the backward. All C-contiguous.

Why one launch works: batch rows are independent, so a block that owns ROWS (4) batch
rows and all 4H gate columns can run every step of the recurrence by itself, with block
barriers only (no grid-wide synchronisation). Launch: grid (ceil(batch / 4),), 4H threads
per block. H is a compile-time constant (one compiled kernel per dtype and H, cached by
the backend), so the loops over H unroll and the weights a thread needs live in registers:

    forward   thread n keeps column n of w_hh (H values);
    backward  thread n = g H + k keeps w_hh[k, g H : (g + 1) H] (H values).

Limit: 4H threads per block and H weights per thread in registers: H <= MAX_HIDDEN, 64 in
float32 (256 threads; `python -m tinynet compile` shows about 130 registers forward and 180
backward, no spills) and 32 in float64 (two registers per value: 130 and 170 registers;
we measured 252 registers at H = 56 and more than 48 KiB of static shared memory above,
so 32 keeps a margin). For larger H the backend runs the sequence as one launch per step
of lstm_cell.py's tiled kernels, and the backward's GEMMs with dense.py's kernels.

Each thread has two roles, both indexed by its thread number n:
    column role   gate column n (0 .. 4H-1): the products with w_hh;
    cell role     (row n // H of the block, unit n % H): the cell arithmetic of that
                  (row, unit), whose c (forward) / dc (backward) stays in a register.
ROWS * H = 4H, so every thread has exactly one cell.

lstm_forward: the input projection b + xs @ w_ih of every step of the block's rows is
    computed first, staging xs in shared memory (it does not depend on h; it is parked
    in `gates`, which each step then overwrites with the activated gates); then per
    step: z = x_proj + h @ w_hh (column role, h read from shared memory), barrier, cell
    math (cell role), barrier.
    The next step's x_proj is loaded before the products, off the recurrence's path.
lstm_backward: BPTT in reverse: per step the cell role forms dz (the gradient of the gate
    pre-activations, kept in dz_all) and the dc of the step before; the column role
    multiplies dz by its w_hh slice into four partial sums of dh, added in a fixed order.
    After the sweep the block computes, from dz_all of its own rows, staging STAGE
    (row, step) pairs at a time in shared memory:
      dw_partial[block] = [xs | h_prev | 1].T @ dz  ((in + H + 1, 4H): dw_ih, dw_hh, db),
      dxs = dz @ w_ih.T.
    partials.sum_partials then adds the blocks' partials in a fixed order (deterministic,
    no atomics).
"""

import numpy as np
from numba import cuda

from .lstm_cell import cell_backward, cell_forward
from .tiles import VECTOR_ALIGNMENT, c_array, device, scalar

ROWS = 4                # batch rows owned by one block
# The largest H of the persistent kernels, per dtype: H weights per thread in registers
# (float64 takes two registers per value; see the limit above).
MAX_HIDDEN = {np.dtype(np.float32): 64, np.dtype(np.float64): 32}
FEATURE_CHUNK = 16      # inputs / weight-gradient rows held in registers per sweep
STAGE = 16              # (row, step) pairs staged in shared memory at a time (outside
                        # the recurrence)


def max_hidden(dtype):
    return MAX_HIDDEN[np.dtype(dtype)]


def block_size(hidden):
    return 4 * hidden


def grid(batch):
    return ((batch + ROWS - 1) // ROWS,)


@device
def gate_input(xs, hs, h0, row, t, feature, one, zero):
    """A[row, t, feature] for A = [xs | h_prev | 1], the inputs of the gate GEMMs of step t:
    xs[row, t], then h_{t-1} (h0 for t = 0), then the bias' 1; zero past the end."""
    steps, n_in = xs.shape[1], xs.shape[2]
    hidden = hs.shape[2]
    if t >= steps or feature > n_in + hidden:
        return zero
    if feature < n_in:
        return xs[row, t, feature]
    if feature == n_in + hidden:
        return one
    if t > 0:
        return hs[row, t - 1, feature - n_in]
    return h0[row, feature - n_in]


def lstm_forward_source(dtype, hidden):
    gate_columns = 4 * hidden
    zero = dtype(0)

    def lstm_forward(xs, h0, c0, w_ih, w_hh, b, act, rec, forget_bias, hs, cs, gates, hT, cT):
        batch, steps, n_in = xs.shape
        column = cuda.threadIdx.x                # column role: gate column 0 .. 4H-1
        cell_row = column // hidden              # cell role: (row, unit) of the block
        unit = column % hidden
        row0 = cuda.blockIdx.x * ROWS
        row = row0 + cell_row
        # [k, r]: h of row r, unit k; [n, r]: z of row r, gate column n. Rows of ROWS values,
        # 16-byte aligned: the products read one row with one vector load (float32).
        h_shared = cuda.shared.array((hidden, ROWS), dtype, alignment=VECTOR_ALIGNMENT)
        z_shared = cuda.shared.array((gate_columns, ROWS), dtype, alignment=VECTOR_ALIGNMENT)

        # Input projection of every step, x_proj[r, t, n] = b[n] + xs[r, t] @ w_ih[:, n],
        # parked in gates. The block's (row, step) pairs are taken STAGE at a time, in the
        # order s = r * steps + t: the block stages their inputs in shared memory (one
        # chunk of FEATURE_CHUNK inputs at a time), and each thread, holding its slice of
        # w_ih[:, column] in registers, adds their products to its column.
        pairs = min(ROWS, batch - row0) * steps
        w_chunk = cuda.local.array(FEATURE_CHUNK, dtype)
        x_stage = cuda.shared.array((STAGE, FEATURE_CHUNK), dtype,
                                    alignment=VECTOR_ALIGNMENT)          # [q, j]
        for j0 in range(0, max(n_in, 1), FEATURE_CHUNK):     # at least once: the bias
            for j in range(FEATURE_CHUNK):
                w_chunk[j] = w_ih[j0 + j, column] if j0 + j < n_in else zero
            for s0 in range(0, pairs, STAGE):
                for index in range(column, STAGE * FEATURE_CHUNK, gate_columns):
                    q = index // FEATURE_CHUNK
                    j = index % FEATURE_CHUNK
                    x_stage[q, j] = zero
                    if s0 + q < pairs and j0 + j < n_in:
                        r = (s0 + q) // steps
                        x_stage[q, j] = xs[row0 + r, s0 + q - r * steps, j0 + j]
                cuda.syncthreads()   # inputs staged
                r = s0 // steps
                t = s0 - r * steps
                for q in range(STAGE):
                    if s0 + q < pairs:
                        z = b[column] if j0 == 0 else gates[row0 + r, t, column]
                        for j in range(FEATURE_CHUNK):
                            z += x_stage[q, j] * w_chunk[j]
                        gates[row0 + r, t, column] = z
                    t += 1
                    if t == steps:
                        t = 0
                        r += 1
                cuda.syncthreads()   # everyone done reading before the next stage

        # The recurrence: w_hh[:, column] in registers, h in shared memory, c in a register.
        w_column = cuda.local.array(hidden, dtype)
        for k in range(hidden):
            w_column[k] = w_hh[k, column]
        h = zero
        c = zero
        if row < batch:
            h = h0[row, unit]
            c = c0[row, unit]
        h_shared[unit, cell_row] = h
        x_proj = cuda.local.array(ROWS, dtype)   # this column's input projection, next step
        acc = cuda.local.array(ROWS, dtype)
        for r in range(ROWS):
            x_proj[r] = gates[row0 + r, 0, column] if row0 + r < batch and steps > 0 else zero
        cuda.syncthreads()   # h_shared holds h0

        for t in range(steps):
            for r in range(ROWS):
                acc[r] = x_proj[r]
            for r in range(ROWS):
                x_proj[r] = (gates[row0 + r, t + 1, column]
                             if row0 + r < batch and t + 1 < steps else zero)
            for k in range(hidden):
                w = w_column[k]
                for r in range(ROWS):
                    acc[r] += h_shared[k, r] * w
            for r in range(ROWS):
                z_shared[column, r] = acc[r]
            cuda.syncthreads()   # z complete; every thread is done reading h_shared

            gate_i, gate_f, gate_g, gate_o, c, h = cell_forward(
                z_shared[unit, cell_row], z_shared[hidden + unit, cell_row],
                z_shared[2 * hidden + unit, cell_row], z_shared[3 * hidden + unit, cell_row],
                c, act, rec, forget_bias)
            h_shared[unit, cell_row] = h
            if row < batch:
                hs[row, t, unit] = h
                cs[row, t, unit] = c
                gates[row, t, unit] = gate_i
                gates[row, t, hidden + unit] = gate_f
                gates[row, t, 2 * hidden + unit] = gate_g
                gates[row, t, 3 * hidden + unit] = gate_o
            cuda.syncthreads()   # h_shared holds h_t for the next products; z reads done

        if row < batch:
            hT[row, unit] = h
            cT[row, unit] = c
    return lstm_forward


def lstm_forward_argtypes(dtype):
    return (c_array(dtype, 3), c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2),
            c_array(dtype, 2), c_array(dtype, 1), scalar(int), scalar(int), scalar(dtype),
            c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 2),
            c_array(dtype, 2))


def lstm_backward_source(dtype, hidden):
    gate_columns = 4 * hidden
    stage_width = gate_columns + 1     # +1: the STAGE rows read together fall in other banks
    zero = dtype(0)
    one = dtype(1)

    def lstm_backward(xs, h0, c0, w_ih, w_hh, hs, cs, gates, act, rec, dhs, dhT, dcT,
                      dz_all, dxs, dh0, dc0, dw_partial):
        # saved by the forward: xs, h0, c0, w_ih, w_hh, hs, cs, gates
        # dhs (batch, steps, H); dhT, dcT (batch, H)
        # out: dz_all (batch, steps, 4H) scratch; dxs (batch, steps, in); dh0, dc0 (batch, H);
        #      dw_partial (blocks, in + H + 1, 4H)
        batch, steps, n_in = xs.shape
        column = cuda.threadIdx.x                # column role: gate column 0 .. 4H-1
        cell_row = column // hidden              # cell role: (row, unit) of the block
        unit = column % hidden
        gate = column // hidden                  # column role in the dh products:
        k_unit = column % hidden                 # gate block g, unit k of h_{t-1}
        block = cuda.blockIdx.x
        row0 = block * ROWS
        row = row0 + cell_row
        # [n, r]: dz of row r, gate column n (a row per vector load, as in the forward)
        dz_shared = cuda.shared.array((gate_columns, ROWS), dtype, alignment=VECTOR_ALIGNMENT)
        dh_shared = cuda.shared.array((4, hidden, ROWS), dtype)      # [g, k, r]: part g of dh
        w_row = cuda.local.array(hidden, dtype)                      # w_hh[k, gH : gH + H]
        for m in range(hidden):
            w_row[m] = w_hh[k_unit, gate * hidden + m]

        dc = zero
        dh_last = zero
        if row < batch:
            dh_last = dhT[row, unit]
            dc = dcT[row, unit]
        dh_shared[0, unit, cell_row] = dh_last
        for part in range(1, 4):
            dh_shared[part, unit, cell_row] = zero
        acc = cuda.local.array(ROWS, dtype)
        cuda.syncthreads()   # dh_shared holds dhT

        for t in range(steps - 1, -1, -1):
            dh = (dh_shared[0, unit, cell_row] + dh_shared[1, unit, cell_row]
                  + dh_shared[2, unit, cell_row] + dh_shared[3, unit, cell_row])
            dz_i = zero
            dz_f = zero
            dz_g = zero
            dz_o = zero
            if row < batch:
                dh += dhs[row, t, unit]
                c_before = cs[row, t - 1, unit] if t > 0 else c0[row, unit]
                dz_i, dz_f, dz_g, dz_o, dc = cell_backward(
                    gates[row, t, unit], gates[row, t, hidden + unit],
                    gates[row, t, 2 * hidden + unit], gates[row, t, 3 * hidden + unit],
                    cs[row, t, unit], c_before, dh, dc, act, rec)
                dz_all[row, t, unit] = dz_i
                dz_all[row, t, hidden + unit] = dz_f
                dz_all[row, t, 2 * hidden + unit] = dz_g
                dz_all[row, t, 3 * hidden + unit] = dz_o
            dz_shared[unit, cell_row] = dz_i
            dz_shared[hidden + unit, cell_row] = dz_f
            dz_shared[2 * hidden + unit, cell_row] = dz_g
            dz_shared[3 * hidden + unit, cell_row] = dz_o
            cuda.syncthreads()   # dz complete; every thread is done reading dh_shared

            for r in range(ROWS):
                acc[r] = zero
            for m in range(hidden):
                w = w_row[m]
                for r in range(ROWS):
                    acc[r] += dz_shared[gate * hidden + m, r] * w
            for r in range(ROWS):
                dh_shared[gate, k_unit, r] = acc[r]
            cuda.syncthreads()   # dh parts complete; dz_shared reads done

        if row < batch:
            dh0[row, unit] = (dh_shared[0, unit, cell_row] + dh_shared[1, unit, cell_row]
                              + dh_shared[2, unit, cell_row] + dh_shared[3, unit, cell_row])
            dc0[row, unit] = dc

        # This block's rows of dz_all are complete and visible (the last barrier above).
        # The block's (row, step) pairs are taken STAGE at a time, in the order
        # s = r * steps + t, as in the forward's input projection.
        pairs = min(ROWS, batch - row0) * steps

        # Weight gradients: dw_partial[block, f, column] = sum over the pairs (r, t) of
        # A[r, t, f] * dz[r, t, column], A = [xs | h_prev | 1] (features < in: dw_ih, the
        # next H: dw_hh, the last: db). Per chunk of FEATURE_CHUNK features, the block
        # stages A of STAGE pairs in shared memory (each value computed once, by one
        # thread); each thread multiplies it with its own column of dz.
        n_features = n_in + hidden + 1
        feature_stage = cuda.shared.array((STAGE, FEATURE_CHUNK), dtype,
                                          alignment=VECTOR_ALIGNMENT)   # [q, f]
        acc_w = cuda.local.array(FEATURE_CHUNK, dtype)
        for f0 in range(0, n_features, FEATURE_CHUNK):
            for f in range(FEATURE_CHUNK):
                acc_w[f] = zero
            for s0 in range(0, pairs, STAGE):
                for index in range(column, STAGE * FEATURE_CHUNK, gate_columns):
                    q = index // FEATURE_CHUNK
                    f = index % FEATURE_CHUNK
                    feature_stage[q, f] = zero
                    if s0 + q < pairs:
                        r = (s0 + q) // steps
                        feature_stage[q, f] = gate_input(xs, hs, h0, row0 + r,
                                                         s0 + q - r * steps, f0 + f, one, zero)
                cuda.syncthreads()   # features staged
                r = s0 // steps
                t = s0 - r * steps
                for q in range(STAGE):
                    if s0 + q < pairs:
                        dz = dz_all[row0 + r, t, column]
                        for f in range(FEATURE_CHUNK):
                            acc_w[f] += feature_stage[q, f] * dz
                    t += 1
                    if t == steps:
                        t = 0
                        r += 1
                cuda.syncthreads()   # everyone done reading before the next stage
            for f in range(FEATURE_CHUNK):
                if f0 + f < n_features:
                    dw_partial[block, f0 + f, column] = acc_w[f]

        # dxs[r, t, j] = dz[r, t] @ w_ih[j]: the block stages dz of STAGE pairs, then
        # thread (q = index % STAGE, j = index // STAGE) takes pair s0 + q, input j.
        dz_stage = cuda.shared.array((STAGE, stage_width), dtype)   # [q, n]
        for s0 in range(0, pairs, STAGE):
            r = s0 // steps
            t = s0 - r * steps
            for q in range(STAGE):
                if s0 + q < pairs:
                    dz_stage[q, column] = dz_all[row0 + r, t, column]
                t += 1
                if t == steps:
                    t = 0
                    r += 1
            cuda.syncthreads()   # dz staged
            for index in range(column, STAGE * n_in, gate_columns):
                q = index % STAGE
                j = index // STAGE
                if s0 + q < pairs:
                    total = zero
                    for n in range(gate_columns):
                        total += dz_stage[q, n] * w_ih[j, n]
                    r = (s0 + q) // steps
                    dxs[row0 + r, s0 + q - r * steps, j] = total
            cuda.syncthreads()   # everyone done reading before the next stage
    return lstm_backward


def lstm_backward_argtypes(dtype):
    return (c_array(dtype, 3), c_array(dtype, 2), c_array(dtype, 2), c_array(dtype, 2),
            c_array(dtype, 2), c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 3),
            scalar(int), scalar(int), c_array(dtype, 3), c_array(dtype, 2), c_array(dtype, 2),
            c_array(dtype, 3), c_array(dtype, 3), c_array(dtype, 2), c_array(dtype, 2),
            c_array(dtype, 3))
