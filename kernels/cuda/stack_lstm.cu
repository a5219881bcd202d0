// stack_lstm.cu -- the whole-sequence LSTM of M independent models at once (a stack), with a
// length per sequence: one launch per direction for the recurrence, plus one launch that
// reduces the weight gradients of each model.
//
// Reference: tinynet/backends/numpy_ref.py:stack_lstm_forward, :stack_lstm_backward
//            (the pointwise cell math is lstm_math.cuh: _cell_step, _cell_step_backward).
//            The stacked LSTM cell (stack_lstm_cell_*) is this sequence with one step.
// Shapes:    xs (M, batch, steps, in), h0 and c0 (M, batch, H),
//            w_ih (M, in, 4H), w_hh (M, H, 4H), b (M, 4H), forget_bias (M,), lengths (M, batch);
//            hs and cs (M, batch, steps, H); gates and dz (M, batch, steps, 4H).
//            Gate blocks i, f, g, o. All row-major and C-contiguous.
//
// A "pair" is one sequence: (model m, batch row r), pair = m * batch + r, so that pair p's
// rows of every (M, batch, ...) array start at p * (their row size).
//
// Lengths: step t of pair p is padding when t >= lengths[p]. The forward neither reads xs
// there nor changes the state (hs = 0, hT and cT are the state after the last valid step);
// the backward ignores dhs there, writes dxs = 0, and the weight gradients skip those steps
// (xs may hold NaN in padding: it is never read, not even multiplied by zero). One
// comparison per step and thread; gates, cs and dz are left unwritten at padding steps.
//
// Launch geometry of the recurrences: block (H, G): threadIdx.x = unit u, threadIdx.y = slot
// of one of the G pairs the block owns (pair = blockIdx.x * G + slot); grid ceil(pairs / G).
// Pairs are independent (a block may hold pairs of several models): a block loops over all
// steps with no grid-wide synchronisation, its pairs exchanging h (forward) or dz
// (backward) through shared memory once per step. Each thread reads its model's weights
// from global memory (the same few KB for every pair of a model: cached). A pair's
// arithmetic, and so the result, does not depend on G.
//
// stack_lstm_backward_dw: one thread per element of dw_ih, dw_hh and db of every model
// (1-D grid-stride), each summing over its model's (row, valid step) in a fixed order:
// deterministic, no atomics.
//
// Assumptions: blockDim.x == H, blockDim.y * H <= STACK_MAX_THREADS; sizes fit in int, and
// M * batch * steps * max(in, 4H) in size_t.

#include "activations.cuh"
#include "lstm_math.cuh"

// The launch geometry below is read from this file by tinynet/backends/cupy_cuda.py
// (`constexpr int NAME = <integer>;`, one definition per name).
constexpr int STACK_MAX_THREADS = 512;   // threads per block of the recurrences

// sum += a * w, gate by gate.
template <typename T>
__device__ __forceinline__ void add_scaled(Gates<T>& sum, T a, const Gates<T>& w)
{
    sum.i += a * w.i;
    sum.f += a * w.f;
    sum.g += a * w.g;
    sum.o += a * w.o;
}

// sum over units v of dz[v] . (w_row[v], w_row[H+v], w_row[2H+v], w_row[3H+v]): one row of
// the product dz (4H) @ w.T for a weight row w_row (4H,).
template <typename T>
__device__ __forceinline__ T dot_gates(const Gates<T>* __restrict__ dz, const T* __restrict__ w_row,
                                       int hidden)
{
    T sum = T(0);
#pragma unroll 4
    for (int v = 0; v < hidden; ++v) {
        const Gates<T> w = load_gates(w_row, 0, hidden, v);
        sum += dz[v].i * w.i + dz[v].f * w.f + dz[v].g * w.g + dz[v].o * w.o;
    }
    return sum;
}

template <typename T>
__device__ __forceinline__ void stack_lstm_forward(
    const T* __restrict__ xs, const T* __restrict__ h0, const T* __restrict__ c0,
    const T* __restrict__ w_ih, const T* __restrict__ w_hh, const T* __restrict__ b,
    const T* __restrict__ forget_bias, const int* __restrict__ lengths, T* __restrict__ hs,
    T* __restrict__ cs, T* __restrict__ gates, T* __restrict__ h_last, T* __restrict__ c_last,
    int pairs, int batch, int steps, int n_in, int hidden, int activation,
    int recurrent_activation)
{
    // h of the block's pairs, double-buffered: h_rows[buffer][slot * H + k]
    __shared__ T h_rows[2][STACK_MAX_THREADS];
    const int u = threadIdx.x, slot = threadIdx.y;
    const int pair = blockIdx.x * blockDim.y + slot;
    const bool active = pair < pairs;   // inactive threads still take part in every barrier
    const int model = active ? pair / batch : 0;
    const int length = active ? lengths[pair] : 0;

    const T* w_in = w_ih + (size_t)model * n_in * 4 * hidden;     // (in, 4H) of the model
    const T* w_rec = w_hh + (size_t)model * hidden * 4 * hidden;  // (H, 4H) of the model
    const Gates<T> bias = active ? load_gates(b, model, hidden, u) : Gates<T>{};
    const T model_forget_bias = active ? forget_bias[model] : T(0);

    const size_t state = (size_t)pair * hidden + u;   // (pair, u) of a (M, batch, H) array
    T h = active ? h0[state] : T(0);
    T c = active ? c0[state] : T(0);
    h_rows[0][slot * hidden + u] = h;
    // Barrier: h buffer 0 is complete before step 0 reads it.
    __syncthreads();

    for (int t = 0; t < steps; ++t) {
        const size_t at = (size_t)pair * steps + t;   // (pair, t) as a row of (pairs*steps, .)
        if (t < length) {
            // z = x_t @ w_ih + h_prev @ w_hh + b for unit u of each gate
            Gates<T> z = bias;
            const T* x = xs + at * n_in;
            for (int i = 0; i < n_in; ++i) add_scaled(z, x[i], load_gates(w_in, i, hidden, u));
            const T* h_prev = h_rows[t & 1] + slot * hidden;
#pragma unroll 4
            for (int k = 0; k < hidden; ++k)
                add_scaled(z, h_prev[k], load_gates(w_rec, k, hidden, u));
            const Gates<T> gate = cell_forward(z, c, activation, recurrent_activation,
                                               model_forget_bias, c, h);
            store_gates(gates, at, hidden, u, gate);
            hs[at * hidden + u] = h;
            cs[at * hidden + u] = c;
        } else if (active) {
            hs[at * hidden + u] = T(0);   // padding: the state stays as it is
        }
        h_rows[(t + 1) & 1][slot * hidden + u] = h;
        // Barrier: (1) h of step t is complete for every pair before step t+1 reads it from
        // buffer (t+1)&1; (2) every thread has finished reading buffer t&1 in step t before
        // step t+1 overwrites it. One barrier per step thanks to the double buffer.
        __syncthreads();
    }
    if (active) {
        h_last[state] = h;
        c_last[state] = c;
    }
}

// Backward (BPTT in reverse). dhs (M, batch, steps, H), dh_last and dc_last (M, batch, H):
// the gradients of hs, h_last and c_last. Writes dz (the gradient of each valid step's gate
// pre-activations, read by stack_lstm_backward_dw), dxs = dz @ w_ih.T (zeros at padding),
// dh0 and dc0.
template <typename T>
__device__ __forceinline__ void stack_lstm_backward(
    const T* __restrict__ gates, const T* __restrict__ cs, const T* __restrict__ c0,
    const T* __restrict__ w_ih, const T* __restrict__ w_hh, const int* __restrict__ lengths,
    const T* __restrict__ dhs, const T* __restrict__ dh_last, const T* __restrict__ dc_last,
    T* __restrict__ dz, T* __restrict__ dxs, T* __restrict__ dh0, T* __restrict__ dc0,
    int pairs, int batch, int steps, int n_in, int hidden, int activation,
    int recurrent_activation)
{
    // dz of the block's pairs, double-buffered: dz_rows[buffer][slot * H + v]
    __shared__ Gates<T> dz_rows[2][STACK_MAX_THREADS];
    const int u = threadIdx.x, slot = threadIdx.y;
    const int pair = blockIdx.x * blockDim.y + slot;
    const bool active = pair < pairs;   // inactive threads still take part in every barrier
    const int model = active ? pair / batch : 0;
    const int length = active ? lengths[pair] : 0;

    const T* w_in = w_ih + (size_t)model * n_in * 4 * hidden;     // (in, 4H) of the model
    const T* w_rec = w_hh + (size_t)model * hidden * 4 * hidden;  // (H, 4H) of the model

    const size_t state = (size_t)pair * hidden + u;
    // dL/dh of the step being undone, from the later steps (and dh_last); here unit k = u
    T dh_next = active ? dh_last[state] : T(0);
    T dc = active ? dc_last[state] : T(0);

    for (int t = steps - 1; t >= 0; --t) {
        const size_t at = (size_t)pair * steps + t;
        const bool valid = t < length;
        Gates<T> dz_unit{};
        if (valid) {
            const T c_prev = t > 0 ? cs[(at - 1) * hidden + u] : c0[state];
            dz_unit = cell_backward(dh_next + dhs[at * hidden + u], dc, c_prev,
                                    load_gates(gates, at, hidden, u), cs[at * hidden + u],
                                    activation, recurrent_activation);
            store_gates(dz, at, hidden, u, dz_unit);
        }
        Gates<T>* dz_row = dz_rows[t & 1] + slot * hidden;
        dz_row[u] = dz_unit;
        // Barrier: (1) dz of step t is complete for every pair before its threads reduce over
        // it; (2) every thread has finished reading the other buffer in step t+1 before step
        // t-1 overwrites it. One barrier per step thanks to the double buffer.
        __syncthreads();
        if (valid) {
            dh_next = dot_gates(dz_row, w_rec + (size_t)u * 4 * hidden, hidden);
            for (int i = u; i < n_in; i += hidden)
                dxs[at * n_in + i] = dot_gates(dz_row, w_in + (size_t)i * 4 * hidden, hidden);
        } else if (active) {
            for (int i = u; i < n_in; i += hidden) dxs[at * n_in + i] = T(0);
        }
    }
    if (active) {
        dh0[state] = dh_next;
        dc0[state] = dc;
    }
}

// [dw_ih; dw_hh; db] of every model: element (m, f, j) of a virtual (M, in + H + 1, 4H) array
// is the sum over the model's rows r and valid steps t, in that order, of a * dz[m, r, t, j]
// with a = xs[m, r, t, f] (f < in), h_prev[m, r, t, f - in] (f < in + H; h0 at t = 0, else hs
// at t - 1), or 1 (f = in + H: db).
template <typename T>
__device__ __forceinline__ void stack_lstm_backward_dw(
    const T* __restrict__ xs, const T* __restrict__ h0, const T* __restrict__ hs,
    const T* __restrict__ dz, const int* __restrict__ lengths, T* __restrict__ dw_ih,
    T* __restrict__ dw_hh, T* __restrict__ db, int models, int batch, int steps, int n_in,
    int hidden)
{
    const int columns = 4 * hidden, features = n_in + hidden + 1;
    const size_t count = (size_t)models * features * columns;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < count;
         e += (size_t)gridDim.x * blockDim.x) {
        const int j = (int)(e % columns);
        const int f = (int)(e / columns % features);
        const int model = (int)(e / ((size_t)columns * features));
        T sum = T(0);
        for (int r = 0; r < batch; ++r) {
            const int pair = model * batch + r;
            const int length = lengths[pair];
            for (int t = 0; t < length; ++t) {
                const size_t at = (size_t)pair * steps + t;
                const T g = dz[at * columns + j];
                if (f < n_in)
                    sum += xs[at * n_in + f] * g;
                else if (f < n_in + hidden)
                    sum += (t > 0 ? hs[(at - 1) * hidden + (f - n_in)]
                                  : h0[(size_t)pair * hidden + (f - n_in)]) * g;
                else
                    sum += g;
            }
        }
        if (f < n_in)
            dw_ih[((size_t)model * n_in + f) * columns + j] = sum;
        else if (f < n_in + hidden)
            dw_hh[((size_t)model * hidden + (f - n_in)) * columns + j] = sum;
        else
            db[(size_t)model * columns + j] = sum;
    }
}

#define STACK_LSTM_ENTRY_POINTS(T, SUFFIX)                                                         \
    extern "C" __global__ void __launch_bounds__(STACK_MAX_THREADS)                                \
    stack_lstm_forward_##SUFFIX(const T* xs, const T* h0, const T* c0, const T* w_ih,              \
                                const T* w_hh, const T* b, const T* forget_bias,                   \
                                const int* lengths, T* hs, T* cs, T* gates, T* h_last,             \
                                T* c_last, int pairs, int batch, int steps, int n_in, int hidden,  \
                                int activation, int recurrent_activation)                          \
    {                                                                                              \
        stack_lstm_forward<T>(xs, h0, c0, w_ih, w_hh, b, forget_bias, lengths, hs, cs, gates,      \
                              h_last, c_last, pairs, batch, steps, n_in, hidden, activation,       \
                              recurrent_activation);                                               \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(STACK_MAX_THREADS)                                \
    stack_lstm_backward_##SUFFIX(const T* gates, const T* cs, const T* c0, const T* w_ih,          \
                                 const T* w_hh, const int* lengths, const T* dhs,                  \
                                 const T* dh_last, const T* dc_last, T* dz, T* dxs, T* dh0,        \
                                 T* dc0, int pairs, int batch, int steps, int n_in, int hidden,    \
                                 int activation, int recurrent_activation)                         \
    {                                                                                              \
        stack_lstm_backward<T>(gates, cs, c0, w_ih, w_hh, lengths, dhs, dh_last, dc_last, dz,      \
                               dxs, dh0, dc0, pairs, batch, steps, n_in, hidden, activation,       \
                               recurrent_activation);                                              \
    }                                                                                              \
    extern "C" __global__ void                                                                     \
    stack_lstm_backward_dw_##SUFFIX(const T* xs, const T* h0, const T* hs, const T* dz,            \
                                    const int* lengths, T* dw_ih, T* dw_hh, T* db, int models,     \
                                    int batch, int steps, int n_in, int hidden)                    \
    {                                                                                              \
        stack_lstm_backward_dw<T>(xs, h0, hs, dz, lengths, dw_ih, dw_hh, db, models, batch,        \
                                  steps, n_in, hidden);                                            \
    }

STACK_LSTM_ENTRY_POINTS(float, f32)
STACK_LSTM_ENTRY_POINTS(double, f64)
