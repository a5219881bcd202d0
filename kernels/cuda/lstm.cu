// lstm.cu -- the whole-sequence LSTM of the CUDA C family: persistent forward and backward
// recurrences, one launch per direction.
//
// Reference: tinynet/backends/numpy_ref.py:lstm_forward, :lstm_backward
//            (the pointwise cell math is lstm_math.cuh: _cell_step, _cell_step_backward).
// Shapes:    xs (batch, steps, in), h0 and c0 (batch, H), w_hh (H, 4H);
//            hs and cs (batch, steps, H); gates (batch, steps, 4H); dz (batch, steps, 4H).
//            Gate blocks i, f, g, o. All row-major and C-contiguous.
//
// What runs around these kernels (tinynet/backends/cupy_cuda.py): the input projection
// x_proj = xs @ w_ih + b of every step is one GEMM before the forward recurrence, and the
// gradients that do not feed the recurrence (dxs = dz @ w_ih.T and [dw_ih; dw_hh; db], see
// lstm_cell.cu:lstm_cell_backward_dw, split-K with a deterministic reduction) are GEMMs over
// all steps after the backward one. These kernels run only the recurrence.
//
// Launch geometry (both kernels): block (H, G): threadIdx.x = unit u, threadIdx.y = slot of
// one of the G batch rows the block owns (row = blockIdx.x * G + slot); grid ceil(batch / G).
// Batch rows are independent, so a block loops over all steps with no grid-wide
// synchronisation. The launch chooses G (rows per block); each row's arithmetic, and so the
// result, does not depend on G.
//
// Dynamic shared memory: w_hh rearranged as Gates (4 values, one 16-byte load for float):
//   forward:  w_by_k[k * H + u]  = (w_hh[k][u], w_hh[k][H+u], w_hh[k][2H+u], w_hh[k][3H+u])
//             then h of the G rows, double-buffered: T h_rows[2][G][H]
//             bytes = sizeof(T) * (4 H^2 + 2 G H)
//   backward: w_by_u[u * H + k]  = the same Gates, transposed so that thread k walks u
//             then dz of the G rows, double-buffered: Gates dz_rows[2][G][H]
//             bytes = sizeof(T) * (4 H^2 + 8 G H)
// In the forward thread u reads w_by_k[k * H + u] for k = 0..H-1 (consecutive threads,
// consecutive 16-byte words) and h_rows[.][slot][k] (one word per row: a broadcast); in the
// backward thread k reads w_by_u[u * H + k] and dz_rows[.][slot][u] the same way: no bank
// conflicts on the hot loop. H = 64 float32 needs 64 KiB + 1 KiB per 2 rows in the forward,
// 64 KiB + 2 KiB per row in the backward.
//
// Assumptions: blockDim.x == H, blockDim.y * H <= 512 (__launch_bounds__), the shared memory
// above fits the device (the launch checks it and raises the per-kernel limit); sizes fit
// in int.

#include "activations.cuh"
#include "lstm_math.cuh"

// The launch geometry below is read from this file by tinynet/backends/cupy_cuda.py
// (`constexpr int NAME = <integer>;`, one definition per name).
constexpr int MAX_THREADS = 512;

// w_hh (H, 4H) into shared memory as Gates: weights[k * H + u] (BY_UNIT false, forward) or
// weights[u * H + k] (BY_UNIT true, backward) = (w_hh[k][u], w_hh[k][H+u], w_hh[k][2H+u],
// w_hh[k][3H+u]). All threads of the block take part; w_hh is read coalesced (Gates are 4
// consecutive T: i, f, g, o). The caller synchronises before reading weights.
template <bool BY_UNIT, typename T>
__device__ __forceinline__ void stage_recurrent_weights(Gates<T>* weights,
                                                        const T* __restrict__ w_hh, int hidden)
{
    const int threads = blockDim.y * hidden;
    T* weights_flat = reinterpret_cast<T*>(weights);
    for (int e = threadIdx.y * hidden + threadIdx.x; e < 4 * hidden * hidden; e += threads) {
        const int k = e / (4 * hidden), column = e % (4 * hidden);
        const int unit = column % hidden, gate = column / hidden;
        const int at = BY_UNIT ? unit * hidden + k : k * hidden + unit;
        weights_flat[at * 4 + gate] = w_hh[e];
    }
}

// sum += a * w, gate by gate.
template <typename T>
__device__ __forceinline__ void add_scaled_gates(Gates<T>& sum, T a, const Gates<T>& w)
{
    sum.i += a * w.i;
    sum.f += a * w.f;
    sum.g += a * w.g;
    sum.o += a * w.o;
}

// sum += d * w, gate by gate (element-wise).
template <typename T>
__device__ __forceinline__ void add_gate_products(Gates<T>& sum, const Gates<T>& d,
                                                  const Gates<T>& w)
{
    sum.i += d.i * w.i;
    sum.f += d.f * w.f;
    sum.g += d.g * w.g;
    sum.o += d.o * w.o;
}

// Forward. gates holds x_proj = xs @ w_ih + b on entry (batch, steps, 4H) and the gate
// outputs i, f, g, o on exit: each thread reads its unit's four pre-activations of a step,
// then overwrites them with the gate values (same thread, same elements).
template <typename T>
__device__ __forceinline__ void lstm_forward_persistent(
    T* __restrict__ gates, const T* __restrict__ h0, const T* __restrict__ c0,
    const T* __restrict__ w_hh, T* __restrict__ hs, T* __restrict__ cs,
    T* __restrict__ h_last, T* __restrict__ c_last,
    int batch, int steps, int hidden, int activation, int recurrent_activation, T forget_bias)
{
    extern __shared__ __align__(32) unsigned char shared_bytes[];
    const int rows_per_block = blockDim.y;
    Gates<T>* w_by_k = reinterpret_cast<Gates<T>*>(shared_bytes);
    T* h_rows = reinterpret_cast<T*>(w_by_k + hidden * hidden);

    const int u = threadIdx.x, slot = threadIdx.y;
    const int row = blockIdx.x * rows_per_block + slot;
    const bool active = row < batch;   // inactive threads still take part in every barrier

    stage_recurrent_weights<false>(w_by_k, w_hh, hidden);
    const size_t state = (size_t)row * hidden + u;   // (row, u) of a (batch, H) array
    T c = active ? c0[state] : T(0);
    T h = active ? h0[state] : T(0);
    h_rows[slot * hidden + u] = h;   // buffer 0

    const size_t first_step = (size_t)row * steps;   // (row, t = 0) as a row of (batch*steps, .)
    Gates<T> x_next{};
    if (active && steps > 0) x_next = load_gates(gates, first_step, hidden, u);
    // Barrier: w_by_k and h buffer 0 are complete before step 0 reads them.
    __syncthreads();

    for (int t = 0; t < steps; ++t) {
        Gates<T> z = x_next;
        if (active && t + 1 < steps) x_next = load_gates(gates, first_step + t + 1, hidden, u);
        // z += h_prev @ w_hh[:, unit u of each gate], two partial sums for latency
        const T* h_prev = h_rows + ((t & 1) * rows_per_block + slot) * hidden;
        Gates<T> z_odd{};
        int k = 0;
#pragma unroll 4
        for (; k + 1 < hidden; k += 2) {
            const T h_even = h_prev[k], h_odd = h_prev[k + 1];
            const Gates<T> w_even = w_by_k[k * hidden + u], w_odd = w_by_k[(k + 1) * hidden + u];
            add_scaled_gates(z, h_even, w_even);
            add_scaled_gates(z_odd, h_odd, w_odd);
        }
        if (k < hidden) add_scaled_gates(z, h_prev[k], w_by_k[k * hidden + u]);
        z.i += z_odd.i;
        z.f += z_odd.f;
        z.g += z_odd.g;
        z.o += z_odd.o;

        const Gates<T> gate =
            cell_forward(z, c, activation, recurrent_activation, forget_bias, c, h);
        if (active) {
            store_gates(gates, first_step + t, hidden, u, gate);
            hs[(first_step + t) * hidden + u] = h;
            cs[(first_step + t) * hidden + u] = c;
        }
        h_rows[(((t + 1) & 1) * rows_per_block + slot) * hidden + u] = h;
        // Barrier: (1) h of step t is complete for every row before step t+1 reads it from
        // buffer (t+1)&1; (2) every thread has finished reading buffer t&1 in step t before
        // step t+1 overwrites it. One barrier per step thanks to the double buffer.
        __syncthreads();
    }
    if (active) {
        h_last[state] = h;
        c_last[state] = c;
    }
}

// Backward (BPTT in reverse). dhs (batch, steps, H), dh_last, dc_last (batch, H): the
// gradients of hs, h_last and c_last. Writes dz (batch, steps, 4H), the gradient of each
// step's gate pre-activations, and dh0, dc0 (batch, H).
template <typename T>
__device__ __forceinline__ void lstm_backward_persistent(
    const T* __restrict__ gates, const T* __restrict__ cs, const T* __restrict__ c0,
    const T* __restrict__ w_hh, const T* __restrict__ dhs, const T* __restrict__ dh_last,
    const T* __restrict__ dc_last, T* __restrict__ dz, T* __restrict__ dh0, T* __restrict__ dc0,
    int batch, int steps, int hidden, int activation, int recurrent_activation)
{
    extern __shared__ __align__(32) unsigned char shared_bytes[];
    const int rows_per_block = blockDim.y;
    Gates<T>* w_by_u = reinterpret_cast<Gates<T>*>(shared_bytes);
    Gates<T>* dz_rows = w_by_u + hidden * hidden;

    const int u = threadIdx.x, slot = threadIdx.y;
    const int row = blockIdx.x * rows_per_block + slot;
    const bool active = row < batch;   // inactive threads still take part in every barrier

    stage_recurrent_weights<true>(w_by_u, w_hh, hidden);
    const size_t state = (size_t)row * hidden + u;
    // dL/dh of the step being undone, from the later steps (and dh_last)
    T dh_next = active ? dh_last[state] : T(0);
    T dc = active ? dc_last[state] : T(0);
    const size_t first_step = (size_t)row * steps;

    // What step t reads from global memory; fetched one step ahead.
    struct StepInputs {
        Gates<T> gate;
        T c1, c_prev, dh_out;
    };
    auto load_step = [&](int t) {
        const size_t at = (first_step + t) * hidden + u;
        StepInputs in;
        in.gate = load_gates(gates, first_step + t, hidden, u);
        in.c1 = cs[at];
        in.c_prev = t > 0 ? cs[at - hidden] : c0[state];
        in.dh_out = dhs[at];
        return in;
    };
    StepInputs next{};
    if (active && steps > 0) next = load_step(steps - 1);
    // Barrier: w_by_u is complete before any thread reads it.
    __syncthreads();

    for (int t = steps - 1; t >= 0; --t) {
        const StepInputs in = next;
        if (active && t > 0) next = load_step(t - 1);
        const Gates<T> dz_unit = cell_backward(dh_next + in.dh_out, dc, in.c_prev, in.gate, in.c1,
                                               activation, recurrent_activation);
        if (active) store_gates(dz, first_step + t, hidden, u, dz_unit);
        Gates<T>* dz_row = dz_rows + ((t & 1) * rows_per_block + slot) * hidden;
        dz_row[u] = dz_unit;
        // Barrier: (1) dz of step t is complete for every row before the row's threads reduce
        // over it; (2) every thread has finished reading the other buffer in step t+1 before
        // step t-1 overwrites it. One barrier per step thanks to the double buffer.
        __syncthreads();
        // dh_next[k] = sum over units v and gates of dz[v] * w_hh[k][gate * H + v]; here k = u.
        Gates<T> sum_even{}, sum_odd{};
        int v = 0;
#pragma unroll 4
        for (; v + 1 < hidden; v += 2) {
            const Gates<T> d_even = dz_row[v], d_odd = dz_row[v + 1];
            const Gates<T> w_even = w_by_u[v * hidden + u], w_odd = w_by_u[(v + 1) * hidden + u];
            add_gate_products(sum_even, d_even, w_even);
            add_gate_products(sum_odd, d_odd, w_odd);
        }
        if (v < hidden) add_gate_products(sum_even, dz_row[v], w_by_u[v * hidden + u]);
        dh_next = ((sum_even.i + sum_odd.i) + (sum_even.f + sum_odd.f)) +
                  ((sum_even.g + sum_odd.g) + (sum_even.o + sum_odd.o));
    }
    if (active) {
        dh0[state] = dh_next;
        dc0[state] = dc;
    }
}

#define LSTM_ENTRY_POINTS(T, SUFFIX)                                                               \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
    lstm_forward_persistent_##SUFFIX(T* gates, const T* h0, const T* c0, const T* w_hh, T* hs,     \
                                     T* cs, T* h_last, T* c_last, int batch, int steps,            \
                                     int hidden, int activation, int recurrent_activation,         \
                                     T forget_bias)                                                \
    {                                                                                              \
        lstm_forward_persistent<T>(gates, h0, c0, w_hh, hs, cs, h_last, c_last, batch, steps,      \
                                   hidden, activation, recurrent_activation, forget_bias);         \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(MAX_THREADS)                                      \
    lstm_backward_persistent_##SUFFIX(const T* gates, const T* cs, const T* c0, const T* w_hh,     \
                                      const T* dhs, const T* dh_last, const T* dc_last, T* dz,     \
                                      T* dh0, T* dc0, int batch, int steps, int hidden,            \
                                      int activation, int recurrent_activation)                    \
    {                                                                                              \
        lstm_backward_persistent<T>(gates, cs, c0, w_hh, dhs, dh_last, dc_last, dz, dh0, dc0,      \
                                    batch, steps, hidden, activation, recurrent_activation);       \
    }

LSTM_ENTRY_POINTS(float, f32)
LSTM_ENTRY_POINTS(double, f64)
