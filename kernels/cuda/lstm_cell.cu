// lstm_cell.cu -- one LSTM step of the CUDA C family, forward and backward.
//
// Reference: tinynet/backends/numpy_ref.py:lstm_cell_forward, :lstm_cell_backward
//            (the pointwise math is lstm_math.cuh: _cell_step, _cell_step_backward).
// Shapes:    x (batch, in), h and c (batch, H), w_ih (in, 4H), w_hh (H, 4H), b (4H,);
//            gate blocks i, f, g, o; gates (batch, 4H) holds the saved gate outputs.
//            All row-major and C-contiguous.
//
// Fused path (small widths), 256 threads per block (tile_gemm.cuh):
//   lstm_cell_forward_fused  z = [x | h] @ [w_ih; w_hh] + b and the gate arithmetic in one
//                            kernel: a block owns 64 batch rows x 16 units, and its 64 GEMM
//                            columns are those 16 units in each of the 4 gate blocks,
//                            interleaved (tile column 4 * unit + gate), so thread (tx, ty)
//                            ends up holding all four gates of unit tx of its rows and
//                            applies the cell in registers.
//                            grid (ceil(batch/64), ceil(H/16))
//   lstm_cell_backward_dxh   [dx | dh] = dz @ [w_ih; w_hh].T.
//                            grid (ceil(batch/64), ceil((in+H)/64))
//   lstm_cell_backward_dw    split-K partials of [dw_ih; dw_hh] = [x | h_prev].T @ dz and of
//                            db = sum_rows dz (column sums, first row tile of blocks).
//                            grid (ceil((in+H)/64), ceil(4H/64), splits). Also used by the
//                            whole-sequence backward: rows are then batch*steps, row
//                            r*steps + t, and h_prev is h0[r] at t = 0, hs[row - 1] after.
//                            Split s covers rows [s*split_rows, (s+1)*split_rows) and writes
//                            partials[s] = [dw_ih (in*4H) | dw_hh (H*4H) | db (4H)].
//   lstm_cell_reduce_splits  sum of the partials in split order (deterministic, no atomics).
//
// cuBLAS path (large widths): cuBLAS computes zx = x @ w_ih and zh = h @ w_hh (and the
// backward GEMMs); these pointwise kernels do the rest (1-D grid-stride, one thread per
// (row, unit)). The whole-sequence LSTM uses them step by step for large H.
//   lstm_cell_gates              gates, c1, h1 from zx + zh + b and c.
//   lstm_cell_backward_pointwise dz (batch, 4H) and dc_out = dL/dc from dh = dh_a + dh_b,
//                                dc_in, c, gates, c1. dh_b is the second gradient term, or
//                                null when there is only one (the single cell; a sequence's
//                                step has dhs[t] and the recurrent gradient); dc_out may
//                                alias dc_in (each thread reads then writes its own element).
//
// Assumptions: sizes fit in int; the GEMM kernels are launched with exactly 256 threads.

#include "activations.cuh"
#include "lstm_math.cuh"
#include "tile_gemm.cuh"

// The launch geometry below is read from this file by tinynet/backends/cupy_cuda.py
// (`constexpr int NAME = <integer>;`, one definition per name).
constexpr int CELL_ROWS_TILE = 64;                   // batch rows (or features) per block
constexpr int CELL_COLS_TILE = 64;                   // GEMM columns per block
constexpr int CELL_UNITS_TILE = 16;                  // units per block of the fused forward
static_assert(CELL_UNITS_TILE == gemm::TX && CELL_COLS_TILE / gemm::TX == 4,
              "fused forward: thread tx's four tile columns are the four gates of one unit");

// A(m, k) = [x | h][m][k]: x (rows, in), h (rows, H).
template <typename T>
struct InputsThenHidden {
    static constexpr bool K_CONTIGUOUS = true;
    const T* x;
    const T* h;
    int n_in;
    int hidden;
    __device__ __forceinline__ T operator()(int m, int k) const
    {
        return k < n_in ? x[(size_t)m * n_in + k] : h[(size_t)m * hidden + (k - n_in)];
    }
};

// B(k, v) = [w_ih; w_hh][k][column of v], v a virtual column: each 64-column tile is 16 units
// (u0 .. u0+15, u0 = 16 * (v / 64)) in each of the 4 gate blocks, interleaved:
// v % 64 = 4 * (unit - u0) + gate. Units >= H read as zeros.
template <typename T>
struct GateColumns {
    static constexpr bool K_CONTIGUOUS = false;
    const T* w_ih;
    const T* w_hh;
    int n_in;
    int hidden;
    __device__ __forceinline__ T operator()(int v, int k) const
    {
        const int unit = (v / CELL_COLS_TILE) * CELL_UNITS_TILE + (v % CELL_COLS_TILE) / 4;
        if (unit >= hidden) return T(0);
        const int column = (v % 4) * hidden + unit;
        const size_t gate_columns = 4 * (size_t)hidden;
        return k < n_in ? w_ih[k * gate_columns + column]
                        : w_hh[(k - n_in) * gate_columns + column];
    }
};

// B(k, n) = [w_ih; w_hh][n][k]: the transposed weights of dx = dz @ w_ih.T, dh = dz @ w_hh.T.
template <typename T>
struct StackedWeightRows {
    static constexpr bool K_CONTIGUOUS = true;
    const T* w_ih;
    const T* w_hh;
    int n_in;
    int hidden;
    __device__ __forceinline__ T operator()(int n, int k) const
    {
        const size_t gate_columns = 4 * (size_t)hidden;
        return n < n_in ? w_ih[n * gate_columns + k] : w_hh[(n - n_in) * gate_columns + k];
    }
};

// A(m, k) = [x | h_prev][k][m] over rows k = r * steps + t: h_prev of row k is h0[r] at t = 0
// and hs[k - 1] otherwise. One cell: steps = 1, h0 = h, hs null (never read).
template <typename T>
struct InputsThenPreviousHidden {
    static constexpr bool K_CONTIGUOUS = false;
    const T* x;
    const T* h0;
    const T* hs;
    int n_in;
    int hidden;
    int steps;
    __device__ __forceinline__ T operator()(int m, int k) const
    {
        if (m < n_in) return x[(size_t)k * n_in + m];
        const int unit = m - n_in;
        if (k % steps != 0) return hs[(size_t)(k - 1) * hidden + unit];
        return h0[(size_t)(k / steps) * hidden + unit];
    }
};

template <typename T>
__device__ __forceinline__ void lstm_cell_forward_fused(
    const T* __restrict__ x, const T* __restrict__ h, const T* __restrict__ c,
    const T* __restrict__ w_ih, const T* __restrict__ w_hh, const T* __restrict__ b,
    T* __restrict__ h1, T* __restrict__ c1, T* __restrict__ gates,
    int batch, int n_in, int hidden, int activation, int recurrent_activation, T forget_bias)
{
    __shared__ GemmTiles<T, CELL_ROWS_TILE, CELL_COLS_TILE> tiles;
    constexpr int TM = CELL_ROWS_TILE / gemm::TY, TN = CELL_COLS_TILE / gemm::TX;
    static_assert(TN == 4, "one thread column per gate");
    T acc[TM][TN] = {};
    T unused[TN];
    const int m0 = blockIdx.x * CELL_ROWS_TILE, v0 = blockIdx.y * CELL_COLS_TILE;
    gemm_tile<CELL_ROWS_TILE, CELL_COLS_TILE, false>(
        tiles, InputsThenHidden<T>{x, h, n_in, hidden}, GateColumns<T>{w_ih, w_hh, n_in, hidden},
        m0, batch, v0, v0 + CELL_COLS_TILE, 0, n_in + hidden, acc, unused);
    const int tx = threadIdx.x % gemm::TX, ty = threadIdx.x / gemm::TX;
    // Thread column j = 4 * tx + gate of the tile is unit u of that gate: acc[i][gate].
    const int u = blockIdx.y * CELL_UNITS_TILE + tx;
    if (u >= hidden) return;
    const Gates<T> bias{b[u], b[hidden + u], b[2 * hidden + u], b[3 * hidden + u]};
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty * TM + i;
        if (m >= batch) continue;
        const Gates<T> z{acc[i][0] + bias.i, acc[i][1] + bias.f, acc[i][2] + bias.g,
                         acc[i][3] + bias.o};
        const size_t at = (size_t)m * hidden + u;
        T c_next, h_next;
        const Gates<T> gate = cell_forward(z, c[at], activation, recurrent_activation, forget_bias,
                                           c_next, h_next);
        store_gates(gates, m, hidden, u, gate);
        c1[at] = c_next;
        h1[at] = h_next;
    }
}

template <typename T>
__device__ __forceinline__ void lstm_cell_backward_dxh(
    const T* __restrict__ dz, const T* __restrict__ w_ih, const T* __restrict__ w_hh,
    T* __restrict__ dx, T* __restrict__ dh, int batch, int n_in, int hidden)
{
    __shared__ GemmTiles<T, CELL_ROWS_TILE, CELL_COLS_TILE> tiles;
    constexpr int TM = CELL_ROWS_TILE / gemm::TY, TN = CELL_COLS_TILE / gemm::TX;
    T acc[TM][TN] = {};
    T unused[TN];
    const int m0 = blockIdx.x * CELL_ROWS_TILE, n0 = blockIdx.y * CELL_COLS_TILE;
    gemm_tile<CELL_ROWS_TILE, CELL_COLS_TILE, false>(
        tiles, Matrix<T, false>{dz, 4 * hidden}, StackedWeightRows<T>{w_ih, w_hh, n_in, hidden},
        m0, batch, n0, n_in + hidden, 0, 4 * hidden, acc, unused);
    // Column n of [dx | dh] is dx[., n] for n < in, dh[., n - in] for in <= n < in + H. Written
    // here rather than with store_tile, which has one output.
    const int tx = threadIdx.x % gemm::TX, ty = threadIdx.x / gemm::TX;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty * TM + i;
        if (m >= batch) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + tx * TN + j;
            if (n < n_in)
                dx[(size_t)m * n_in + n] = acc[i][j];
            else if (n < n_in + hidden)
                dh[(size_t)m * hidden + (n - n_in)] = acc[i][j];
        }
    }
}

// partials: (splits, (in + H + 1) * 4H); split s = blockIdx.z.
template <typename T>
__device__ __forceinline__ void lstm_cell_backward_dw(
    const T* __restrict__ x, const T* __restrict__ h0, const T* __restrict__ hs,
    const T* __restrict__ dz, T* __restrict__ partials,
    int rows, int steps, int n_in, int hidden, int split_rows)
{
    __shared__ GemmTiles<T, CELL_ROWS_TILE, CELL_COLS_TILE> tiles;
    // A(m, k) = [x | h_prev][k][m], B(k, n) = dz[k][n]: k runs over the rows; db is the
    // column sums of dz.
    const int features = n_in + hidden, gate_columns = 4 * hidden;
    gemm_split_k_partial(tiles, InputsThenPreviousHidden<T>{x, h0, hs, n_in, hidden, steps},
                         Matrix<T, true>{dz, gate_columns}, features, gate_columns, rows,
                         split_rows, true, partials);
}

// zx, zh (batch, 4H); c (batch, H); b (4H,).
template <typename T>
__device__ __forceinline__ void lstm_cell_gates(
    const T* __restrict__ zx, const T* __restrict__ zh, const T* __restrict__ b,
    const T* __restrict__ c, T* __restrict__ h1, T* __restrict__ c1, T* __restrict__ gates,
    int batch, int hidden, int activation, int recurrent_activation, T forget_bias)
{
    const size_t count = (size_t)batch * hidden;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < count;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t m = e / hidden;
        const int u = (int)(e % hidden);
        const Gates<T> from_x = load_gates(zx, m, hidden, u);
        const Gates<T> from_h = load_gates(zh, m, hidden, u);
        const Gates<T> z{from_x.i + from_h.i + b[u], from_x.f + from_h.f + b[hidden + u],
                         from_x.g + from_h.g + b[2 * hidden + u],
                         from_x.o + from_h.o + b[3 * hidden + u]};
        T c_next, h_next;
        const Gates<T> gate =
            cell_forward(z, c[e], activation, recurrent_activation, forget_bias, c_next, h_next);
        store_gates(gates, m, hidden, u, gate);
        c1[e] = c_next;
        h1[e] = h_next;
    }
}

// dh_b: the second gradient term, or null when there is only one. dc_in and dc_out may be
// the same array: not __restrict__.
template <typename T>
__device__ __forceinline__ void lstm_cell_backward_pointwise(
    const T* __restrict__ dh_a, const T* __restrict__ dh_b, const T* dc_in,
    const T* __restrict__ c, const T* __restrict__ gates, const T* __restrict__ c1,
    T* __restrict__ dz, T* dc_out, int batch, int hidden, int activation, int recurrent_activation)
{
    const size_t count = (size_t)batch * hidden;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < count;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t m = e / hidden;
        const int u = (int)(e % hidden);
        const T dh = dh_b ? dh_a[e] + dh_b[e] : dh_a[e];
        T dc = dc_in[e];
        const Gates<T> dz_unit = cell_backward(dh, dc, c[e], load_gates(gates, m, hidden, u),
                                               c1[e], activation, recurrent_activation);
        store_gates(dz, m, hidden, u, dz_unit);
        dc_out[e] = dc;
    }
}

#define LSTM_CELL_ENTRY_POINTS(T, SUFFIX, MIN_BLOCKS)                                              \
    extern "C" __global__ void __launch_bounds__(gemm::THREADS, MIN_BLOCKS)                        \
    lstm_cell_forward_fused_##SUFFIX(const T* x, const T* h, const T* c, const T* w_ih,            \
                                     const T* w_hh, const T* b, T* h1, T* c1, T* gates,            \
                                     int batch, int n_in, int hidden, int activation,              \
                                     int recurrent_activation, T forget_bias)                      \
    {                                                                                              \
        lstm_cell_forward_fused<T>(x, h, c, w_ih, w_hh, b, h1, c1, gates, batch, n_in, hidden,     \
                                   activation, recurrent_activation, forget_bias);                 \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(gemm::THREADS, MIN_BLOCKS)                        \
    lstm_cell_backward_dxh_##SUFFIX(const T* dz, const T* w_ih, const T* w_hh, T* dx, T* dh,       \
                                    int batch, int n_in, int hidden)                               \
    {                                                                                              \
        lstm_cell_backward_dxh<T>(dz, w_ih, w_hh, dx, dh, batch, n_in, hidden);                    \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(gemm::THREADS, MIN_BLOCKS)                        \
    lstm_cell_backward_dw_##SUFFIX(const T* x, const T* h0, const T* hs, const T* dz,              \
                                   T* partials, int rows, int steps, int n_in, int hidden,         \
                                   int split_rows)                                                 \
    {                                                                                              \
        lstm_cell_backward_dw<T>(x, h0, hs, dz, partials, rows, steps, n_in, hidden, split_rows);  \
    }                                                                                              \
    extern "C" __global__ void                                                                     \
    lstm_cell_reduce_splits_##SUFFIX(const T* partials, T* out, int splits, int count)             \
    {                                                                                              \
        reduce_splits<T>(partials, out, splits, count);                                            \
    }                                                                                              \
    extern "C" __global__ void                                                                     \
    lstm_cell_gates_##SUFFIX(const T* zx, const T* zh, const T* b, const T* c, T* h1, T* c1,       \
                             T* gates, int batch, int hidden, int activation,                      \
                             int recurrent_activation, T forget_bias)                              \
    {                                                                                              \
        lstm_cell_gates<T>(zx, zh, b, c, h1, c1, gates, batch, hidden, activation,                 \
                           recurrent_activation, forget_bias);                                     \
    }                                                                                              \
    extern "C" __global__ void                                                                     \
    lstm_cell_backward_pointwise_##SUFFIX(const T* dh_a, const T* dh_b, const T* dc_in,            \
                                          const T* c, const T* gates, const T* c1, T* dz,          \
                                          T* dc_out, int batch, int hidden, int activation,        \
                                          int recurrent_activation)                                \
    {                                                                                              \
        lstm_cell_backward_pointwise<T>(dh_a, dh_b, dc_in, c, gates, c1, dz, dc_out, batch,        \
                                        hidden, activation, recurrent_activation);                 \
    }

// GEMM kernels: float asks for two resident blocks of 256 per SM (<= 128 registers a thread),
// double for one, so that its 64-bit accumulators get registers instead of spilling.
LSTM_CELL_ENTRY_POINTS(float, f32, 2)
LSTM_CELL_ENTRY_POINTS(double, f64, 1)
