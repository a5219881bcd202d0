// dense.cu -- the fused dense layer of the CUDA C family: y = act(x @ w + b) and its backward.
//
// Reference: tinynet/backends/numpy_ref.py:dense_forward, :dense_backward.
// Shapes:    x (batch, in), w (in, out), b (out,) or null, y (batch, out), dy (batch, out),
//            dx (batch, in), dw (in, out), db (out,). All row-major and C-contiguous.
// Activations: codes of tinynet/_activations.py (activations.cuh); act' is taken from y.
//
// Two paths, chosen per call by tinynet/backends/cupy_cuda.py (table FUSED_MAX_WIDTH):
//
// Fused (small widths): our own tiled GEMMs (tile_gemm.cuh), 256 threads per block.
//   dense_forward_fused   y = act(x @ w + b), bias and activation applied before the single
//                         write of y.            grid (ceil(batch/128), ceil(out/64))
//   dense_backward_dx     dx = dz @ w.T with dz = dy * act'(y) formed on load (prologue):
//                         dz is never stored.   grid (ceil(batch/128), ceil(in/64))
//   dense_backward_dw     split-K partial of dw = x.T @ dz, and of db = sum_rows dz as the
//                         column sums of the same dz slabs (the blocks of the first row tile
//                         of dw produce them).  grid (ceil(in/64), ceil(out/64), splits),
//                         with at least one row tile when there is a bias
//                         Split s covers batch rows [s * split_rows, (s+1) * split_rows) and
//                         writes partials[s] = [dw (in*out) | db (out)]; with one split the
//                         partials are the result itself.
//   dense_reduce_splits   out = sum over splits of the partials, in split order (deterministic:
//                         no atomics).          1-D grid-stride
//
// cuBLAS (large widths): the GEMMs run in cuBLAS (through CuPy) and these kernels fuse the rest.
//   dense_bias_activation y = act(z + b) in place on the GEMM's output z.  1-D grid-stride
//   dense_grad_prologue   dz = dy * act'(y) written once (if dz is not null) and the column
//                         sums of dz per chunk of rows (if column_sums is not null), reduced in
//                         a fixed order.        block (32, 8), grid (ceil(out/32), chunks)
//
// Assumptions: sizes fit in int; pointers are device pointers of the kernel's type; dz may
// not alias dy or y; the GEMM kernels are launched with exactly 256 threads.

#include "activations.cuh"
#include "tile_gemm.cuh"

// dz = dy * act'(y) of a (rows, ld) output gradient, formed while a GEMM loads it.
// K_MAJOR: the GEMM's k runs over the rows (dw = x.T @ dz); otherwise over the columns
// (dx = dz @ w.T). y is not read for the linear activation.
template <typename T, bool K_MAJOR>
struct OutputGrad {
    static constexpr bool K_CONTIGUOUS = !K_MAJOR;
    const T* dy;
    const T* y;
    int ld;
    int activation;
    __device__ __forceinline__ T operator()(int outer, int k) const
    {
        const size_t at = K_MAJOR ? (size_t)k * ld + outer : (size_t)outer * ld + k;
        return activation == ACT_LINEAR ? dy[at] : dy[at] * activation_grad(activation, y[at]);
    }
};

// The forward's epilogue: y = act(z + b) for column n of the GEMM's sums z; b null: no bias.
template <typename T>
struct BiasActivation {
    const T* b;
    int activation;
    __device__ __forceinline__ T operator()(int n, T sum) const
    {
        const T z = b ? sum + b[n] : sum;
        return activate(activation, z);
    }
};

// The launch geometry below is read from this file by tinynet/backends/cupy_cuda.py
// (`constexpr int NAME = <integer>;`, one definition per name).
constexpr int ROWS_TILE = 128;   // batch rows per block of the forward and dx kernels
constexpr int COLS_TILE = 64;    // output columns per block of every GEMM here
constexpr int DW_ROWS_TILE = 64; // rows of dw (inputs) per block of the dw kernel

template <typename T>
__device__ __forceinline__ void dense_forward_fused(const T* __restrict__ x,
                                                    const T* __restrict__ w,
                                                    const T* __restrict__ b, T* __restrict__ y,
                                                    int batch, int n_in, int n_out, int activation)
{
    __shared__ GemmTiles<T, ROWS_TILE, COLS_TILE> tiles;
    // A = x (batch, in): rows are m.  B = w (in, out): rows are k.
    gemm_write_tile(tiles, Matrix<T, false>{x, n_in}, Matrix<T, true>{w, n_out}, batch, n_out,
                    n_in, y, n_out, BiasActivation<T>{b, activation});
}

template <typename T>
__device__ __forceinline__ void dense_backward_dx(const T* __restrict__ dy, const T* __restrict__ y,
                                                  const T* __restrict__ w, T* __restrict__ dx,
                                                  int batch, int n_in, int n_out, int activation)
{
    __shared__ GemmTiles<T, ROWS_TILE, COLS_TILE> tiles;
    // A = dz (batch, out): rows are m, k runs over out.  B(k, n) = w[n][k]: rows of w are n.
    gemm_write_tile(tiles, OutputGrad<T, false>{dy, y, n_out, activation},
                    Matrix<T, false>{w, n_out}, batch, n_in, n_out, dx, n_in);
}

// partials: (splits, in * out + (has_bias ? out : 0)); split s = blockIdx.z.
template <typename T>
__device__ __forceinline__ void dense_backward_dw(const T* __restrict__ x, const T* __restrict__ dy,
                                                  const T* __restrict__ y, T* __restrict__ partials,
                                                  int batch, int n_in, int n_out, int activation,
                                                  int has_bias, int split_rows)
{
    __shared__ GemmTiles<T, DW_ROWS_TILE, COLS_TILE> tiles;
    // A(m, k) = x[k][m]: rows of x are k.  B(k, n) = dz[k][n]: rows of dz are k.
    // K = batch rows; db (with a bias) is the column sums of dz.
    gemm_split_k_partial(tiles, Matrix<T, true>{x, n_in},
                         OutputGrad<T, true>{dy, y, n_out, activation}, n_in, n_out, batch,
                         split_rows, has_bias != 0, partials);
}

// y (rows, cols) = act(y + b) in place; b (cols,) or null.
template <typename T>
__device__ __forceinline__ void dense_bias_activation(T* __restrict__ y, const T* __restrict__ b,
                                                      int rows, int cols, int activation)
{
    const size_t count = (size_t)rows * cols;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < count;
         e += (size_t)gridDim.x * blockDim.x) {
        const T z = b ? y[e] + b[e % cols] : y[e];
        y[e] = activate(activation, z);
    }
}

constexpr int PROLOGUE_COLS = 32;   // blockDim.x: one warp over 32 consecutive columns
constexpr int PROLOGUE_ROWS = 8;    // blockDim.y: row lanes of a chunk

// dz (rows, cols) = dy * act'(y) if dz is not null; column_sums (chunks, cols): the sum of dz
// over the rows [chunk * chunk_rows, (chunk + 1) * chunk_rows), if not null.
template <typename T>
__device__ __forceinline__ void dense_grad_prologue(const T* __restrict__ dy,
                                                    const T* __restrict__ y, T* __restrict__ dz,
                                                    T* __restrict__ column_sums, int rows, int cols,
                                                    int chunk_rows, int activation)
{
    __shared__ T lane_sums[PROLOGUE_ROWS][PROLOGUE_COLS + 1];   // +1: no bank conflicts below
    const int col = blockIdx.x * PROLOGUE_COLS + threadIdx.x;
    const int row_begin = blockIdx.y * chunk_rows;
    const int row_end = min(rows, row_begin + chunk_rows);
    T sum = T(0);
    if (col < cols) {
        for (int r = row_begin + threadIdx.y; r < row_end; r += PROLOGUE_ROWS) {
            const size_t at = (size_t)r * cols + col;
            const T g = activation == ACT_LINEAR ? dy[at]
                                                 : dy[at] * activation_grad(activation, y[at]);
            if (dz) dz[at] = g;
            sum += g;
        }
    }
    if (!column_sums) return;   // uniform over the grid: no thread reaches the barrier below
    lane_sums[threadIdx.y][threadIdx.x] = sum;
    // Barrier: every row lane's partial sum is in shared memory before lane 0 adds them.
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        T total = T(0);
        for (int lane = 0; lane < PROLOGUE_ROWS; ++lane) total += lane_sums[lane][threadIdx.x];
        column_sums[(size_t)blockIdx.y * cols + col] = total;
    }
}

#define DENSE_ENTRY_POINTS(T, SUFFIX, MIN_BLOCKS)                                                  \
    extern "C" __global__ void __launch_bounds__(gemm::THREADS, MIN_BLOCKS)                        \
    dense_forward_fused_##SUFFIX(const T* x, const T* w, const T* b, T* y, int batch, int n_in,    \
                                 int n_out, int activation)                                        \
    {                                                                                              \
        dense_forward_fused<T>(x, w, b, y, batch, n_in, n_out, activation);                        \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(gemm::THREADS, MIN_BLOCKS)                        \
    dense_backward_dx_##SUFFIX(const T* dy, const T* y, const T* w, T* dx, int batch, int n_in,    \
                               int n_out, int activation)                                          \
    {                                                                                              \
        dense_backward_dx<T>(dy, y, w, dx, batch, n_in, n_out, activation);                        \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(gemm::THREADS, MIN_BLOCKS)                        \
    dense_backward_dw_##SUFFIX(const T* x, const T* dy, const T* y, T* partials, int batch,        \
                               int n_in, int n_out, int activation, int has_bias, int split_rows)  \
    {                                                                                              \
        dense_backward_dw<T>(x, dy, y, partials, batch, n_in, n_out, activation, has_bias,         \
                             split_rows);                                                          \
    }                                                                                              \
    extern "C" __global__ void                                                                     \
    dense_reduce_splits_##SUFFIX(const T* partials, T* out, int splits, int count)                 \
    {                                                                                              \
        reduce_splits<T>(partials, out, splits, count);                                            \
    }                                                                                              \
    extern "C" __global__ void                                                                     \
    dense_bias_activation_##SUFFIX(T* y, const T* b, int rows, int cols, int activation)           \
    {                                                                                              \
        dense_bias_activation<T>(y, b, rows, cols, activation);                                    \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(PROLOGUE_COLS * PROLOGUE_ROWS)                    \
    dense_grad_prologue_##SUFFIX(const T* dy, const T* y, T* dz, T* column_sums, int rows,         \
                                 int cols, int chunk_rows, int activation)                         \
    {                                                                                              \
        dense_grad_prologue<T>(dy, y, dz, column_sums, rows, cols, chunk_rows, activation);        \
    }

// GEMM kernels: float asks for two resident blocks of 256 per SM (<= 128 registers a thread),
// double for one, so that its 64-bit accumulators get registers instead of spilling.
DENSE_ENTRY_POINTS(float, f32, 2)
DENSE_ENTRY_POINTS(double, f64, 1)
