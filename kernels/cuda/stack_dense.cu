// stack_dense.cu -- the dense layer of M independent models at once (a stack): the parts
// around the batched GEMMs, which run in cuBLAS (through CuPy, one batched call each).
//
// Reference: tinynet/backends/numpy_ref.py:stack_dense_forward, :stack_dense_backward.
// Shapes:    x (M, batch, in), w (M, in, out), b (M, out) or null, y and dy (M, batch, out).
//            All row-major and C-contiguous.
// Activations: codes of tinynet/_activations.py (activations.cuh); act' is taken from y.
//
//   stack_dense_bias_activation  y = act(z + b[m]) in place on the batched GEMM's output z.
//                                1-D grid-stride.
//   stack_dense_grad_prologue    dz = dy * act'(y) written once (if dz is not null), and
//                                db[m] = the sum of dz over model m's batch rows (if db is
//                                not null), each in a fixed order: deterministic, no atomics.
//                                block (PROLOGUE_COLS, PROLOGUE_ROWS), grid (ceil(out/32),
//                                min(M, 65535)); a block loops over models m = blockIdx.y,
//                                blockIdx.y + gridDim.y, ...
//
// Assumptions: sizes fit in int; dz may not alias dy or y.

#include "activations.cuh"

// The launch geometry below is read from this file by tinynet/backends/cupy_cuda.py
// (`constexpr int NAME = <integer>;`, one definition per name).
constexpr int PROLOGUE_COLS = 32;   // blockDim.x: one warp over 32 consecutive columns
constexpr int PROLOGUE_ROWS = 8;    // blockDim.y: row lanes of a model's batch

// y (M, batch, out) = act(y + b[m]) in place; b (M, out) or null.
template <typename T>
__device__ __forceinline__ void stack_dense_bias_activation(T* __restrict__ y,
                                                            const T* __restrict__ b, int models,
                                                            int batch, int cols, int activation)
{
    const size_t count = (size_t)models * batch * cols;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < count;
         e += (size_t)gridDim.x * blockDim.x) {
        const size_t model = e / ((size_t)batch * cols);
        const T z = b ? y[e] + b[model * cols + e % cols] : y[e];
        y[e] = activate(activation, z);
    }
}

// dz (M, batch, out) = dy * act'(y) if dz is not null; db (M, out): per-model column sums of
// dz, if db is not null.
template <typename T>
__device__ __forceinline__ void stack_dense_grad_prologue(const T* __restrict__ dy,
                                                          const T* __restrict__ y,
                                                          T* __restrict__ dz, T* __restrict__ db,
                                                          int models, int batch, int cols,
                                                          int activation)
{
    __shared__ T lane_sums[PROLOGUE_ROWS][PROLOGUE_COLS + 1];   // +1: no bank conflicts below
    const int col = blockIdx.x * PROLOGUE_COLS + threadIdx.x;
    for (int model = blockIdx.y; model < models; model += gridDim.y) {   // uniform per block
        const size_t first = (size_t)model * batch;   // the model's first row of (M*batch, out)
        T sum = T(0);
        if (col < cols) {
            for (int r = threadIdx.y; r < batch; r += PROLOGUE_ROWS) {
                const size_t at = (first + r) * cols + col;
                const T g = activation == ACT_LINEAR
                                ? dy[at]
                                : dy[at] * activation_grad(activation, y[at]);
                if (dz) dz[at] = g;
                sum += g;
            }
        }
        if (!db) continue;   // uniform over the grid: no thread reaches the barriers below
        lane_sums[threadIdx.y][threadIdx.x] = sum;
        // Barrier: every row lane's partial sum is in shared memory before lane 0 adds them.
        __syncthreads();
        if (threadIdx.y == 0 && col < cols) {
            T total = T(0);
            for (int lane = 0; lane < PROLOGUE_ROWS; ++lane) total += lane_sums[lane][threadIdx.x];
            db[(size_t)model * cols + col] = total;
        }
        // Barrier: lane 0 has read every partial sum before the next model overwrites them.
        __syncthreads();
    }
}

#define STACK_DENSE_ENTRY_POINTS(T, SUFFIX)                                                        \
    extern "C" __global__ void                                                                     \
    stack_dense_bias_activation_##SUFFIX(T* y, const T* b, int models, int batch, int cols,        \
                                         int activation)                                           \
    {                                                                                              \
        stack_dense_bias_activation<T>(y, b, models, batch, cols, activation);                     \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(PROLOGUE_COLS * PROLOGUE_ROWS)                    \
    stack_dense_grad_prologue_##SUFFIX(const T* dy, const T* y, T* dz, T* db, int models,          \
                                       int batch, int cols, int activation)                        \
    {                                                                                              \
        stack_dense_grad_prologue<T>(dy, y, dz, db, models, batch, cols, activation);              \
    }

STACK_DENSE_ENTRY_POINTS(float, f32)
STACK_DENSE_ENTRY_POINTS(double, f64)
