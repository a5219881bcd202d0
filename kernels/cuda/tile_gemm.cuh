// The register-tiled GEMM shared by the fused kernels of dense.cu and lstm_cell.cu: the main
// loop (gemm_tile), the write-out of a thread's outputs (store_tile), a block's whole tile of
// C written out (gemm_write_tile), one split of the split-K weight-gradient pass
// (gemm_split_k_partial) and the reduction of the splits (reduce_splits).
//
// One thread block of 256 threads computes one BM x BN tile of C = A @ B (plus, optionally,
// the column sums of B over the same k range, which is how db is reduced in the dw pass).
//
//   A is (M, K), read as fetch_a(m, k);  B is (K, N), read as fetch_b(n, k).
//
// The operands are read through "fetch" functors, called only for in-range indices. That is
// where prologues are fused (dz = dy * act'(y) is formed on load, never stored) and where
// virtual concatenations ([x | h], [w_ih; w_hh]) are resolved, so nothing is materialised.
// A functor says how its operand lies in memory with K_CONTIGUOUS: true when consecutive k
// are adjacent in memory (a row-major (M, K) matrix), false when consecutive m (or n) are.
//
// Threads: tx = threadIdx.x % 16 (columns), ty = threadIdx.x / 16 (rows). Thread (tx, ty)
// owns the TM x TN outputs at tile rows ty * TM + i (i < TM = BM / 16) and tile columns
// tx * TN + j (j < TN = BN / 16). Contiguous micro-tiles let the inner loop read them out of
// shared memory with 16-byte loads: per k, a warp (tx 0..15, two values of ty) reads 256
// consecutive bytes of the B tile (two wavefronts, no bank conflict; the two ty halves
// read the same words) and two 16-byte pieces of the A tile per load (broadcasts), i.e.
// TM / 4 + TN / 4 shared loads for TM * TN FMAs in float.
//
// Both tiles are stored k-major (a[k][m], b[k][n]). Global loads are coalesced: a slab is
// fetched with consecutive threads on the operand's contiguous axis. A K_CONTIGUOUS operand
// is therefore stored transposed; rows are padded by PAD = 4 values, which keeps every row
// 16-byte aligned for the vector loads and limits those transposed stores (16 consecutive k
// of two neighbouring rows per warp) to 2-way bank conflicts, once per slab.
//
// Pipelining: the next k-slab is fetched from global memory into registers while the
// current one is multiplied out of shared memory.
//
// Assumptions: blockDim.x == 256 (launch with 256 threads, 1-D); BM and BN multiples of 64
// (so TM and TN are multiples of 4 and every row stays 16-byte aligned).

#pragma once

// The launch geometry below is read from this file by tinynet/backends/cupy_cuda.py
// (`constexpr int NAME = <integer>;`, one definition per name).
namespace gemm {
constexpr int THREADS = 256;
constexpr int TX = 16;      // threads along a tile's columns
constexpr int TY = 16;      // threads along a tile's rows
constexpr int BK = 16;      // k-slab depth
constexpr int PAD = 4;      // row padding of the shared tiles (see header)
}

template <typename T, int BM, int BN>
struct alignas(16) GemmTiles {
    T a[gemm::BK][BM + gemm::PAD];   // A slab, k-major: a[k][m - m0]
    T b[gemm::BK][BN + gemm::PAD];   // B slab, k-major: b[k][n - n0]
};

// 16 bytes of T, read as one vector access.
template <typename T>
struct alignas(16) Pack16 {
    T v[16 / sizeof(T)];
};

// dst[0 .. N) = src[0 .. N) in N * sizeof(T) / 16 vector loads; src is 16-byte aligned.
template <int N, typename T>
__device__ __forceinline__ void load_aligned(T (&dst)[N], const T* src)
{
    constexpr int PER_PACK = 16 / sizeof(T);
    static_assert(N % PER_PACK == 0, "whole 16-byte packs only");
#pragma unroll
    for (int p = 0; p < N / PER_PACK; ++p) {
        const Pack16<T> pack = reinterpret_cast<const Pack16<T>*>(src)[p];
#pragma unroll
        for (int q = 0; q < PER_PACK; ++q) dst[p * PER_PACK + q] = pack.v[q];
    }
}

// A plain row-major matrix p (rows, ld) seen as an operand. K_MAJOR: the rows are k (fetch
// (outer, k) reads p[k][outer]); otherwise the rows are the outer index (p[outer][k]).
template <typename T, bool K_MAJOR>
struct Matrix {
    static constexpr bool K_CONTIGUOUS = !K_MAJOR;
    const T* p;
    int ld;
    __device__ __forceinline__ T operator()(int outer, int k) const
    {
        return K_MAJOR ? p[(size_t)k * ld + outer] : p[(size_t)outer * ld + k];
    }
};

// The ROWS x BK slab of one operand that this thread fetches: ROWS * BK / THREADS values.
template <int ROWS, typename T, typename Fetch>
struct Slab {
    static constexpr int PER_THREAD = ROWS * gemm::BK / gemm::THREADS;
    static_assert((ROWS * gemm::BK) % gemm::THREADS == 0, "a slab splits evenly over the threads");
    T value[PER_THREAD];

    // Element s of this thread: slab position (k, r). Consecutive threads take consecutive
    // addresses of the operand in memory (coalesced).
    static __device__ __forceinline__ int k_of(int e)
    {
        return Fetch::K_CONTIGUOUS ? e % gemm::BK : e / ROWS;
    }
    static __device__ __forceinline__ int r_of(int e)
    {
        return Fetch::K_CONTIGUOUS ? e / gemm::BK : e % ROWS;
    }

    __device__ __forceinline__ void fetch(const Fetch& f, int outer0, int outer_end, int k0,
                                          int k_end)
    {
#pragma unroll
        for (int s = 0; s < PER_THREAD; ++s) {
            const int e = threadIdx.x + s * gemm::THREADS;
            const int outer = outer0 + r_of(e), k = k0 + k_of(e);
            value[s] = (outer < outer_end && k < k_end) ? f(outer, k) : T(0);
        }
    }

    __device__ __forceinline__ void store(T (&tile)[gemm::BK][ROWS + gemm::PAD]) const
    {
#pragma unroll
        for (int s = 0; s < PER_THREAD; ++s) {
            const int e = threadIdx.x + s * gemm::THREADS;
            tile[k_of(e)][r_of(e)] = value[s];
        }
    }
};

// acc[i][j] += sum over k in [k_begin, k_end) of A(m0 + ty * TM + i, k) * B(k, n0 + tx * TN + j);
// with COLUMN_SUMS also column_sums[j] += sum over the same k of B(k, n0 + tx * TN + j).
// Rows >= m_end and columns >= n_end read as zeros. Every thread of the block must call it
// (it synchronises the block).
template <int BM, int BN, bool COLUMN_SUMS, typename T, typename FetchA, typename FetchB>
__device__ __forceinline__ void gemm_tile(GemmTiles<T, BM, BN>& tiles,
                                          const FetchA& fetch_a, const FetchB& fetch_b,
                                          int m0, int m_end, int n0, int n_end,
                                          int k_begin, int k_end,
                                          T (&acc)[BM / gemm::TY][BN / gemm::TX],
                                          T (&column_sums)[BN / gemm::TX])
{
    constexpr int TM = BM / gemm::TY;
    constexpr int TN = BN / gemm::TX;
    const int tx = threadIdx.x % gemm::TX;
    const int ty = threadIdx.x / gemm::TX;

    Slab<BM, T, FetchA> slab_a;
    Slab<BN, T, FetchB> slab_b;
    if (k_begin < k_end) {
        slab_a.fetch(fetch_a, m0, m_end, k_begin, k_end);
        slab_b.fetch(fetch_b, n0, n_end, k_begin, k_end);
    }
    for (int k0 = k_begin; k0 < k_end; k0 += gemm::BK) {
        slab_a.store(tiles.a);
        slab_b.store(tiles.b);
        // Barrier: the whole slab is in shared memory before any thread multiplies it.
        __syncthreads();
        if (k0 + gemm::BK < k_end) {   // next slab's global loads overlap the math below
            slab_a.fetch(fetch_a, m0, m_end, k0 + gemm::BK, k_end);
            slab_b.fetch(fetch_b, n0, n_end, k0 + gemm::BK, k_end);
        }
#pragma unroll
        for (int k = 0; k < gemm::BK; ++k) {
            T a[TM], b[TN];
            load_aligned(a, &tiles.a[k][ty * TM]);
            load_aligned(b, &tiles.b[k][tx * TN]);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
            if (COLUMN_SUMS) {
#pragma unroll
                for (int j = 0; j < TN; ++j) column_sums[j] += b[j];
            }
        }
        // Barrier: every thread is done reading this slab before the next one overwrites it.
        __syncthreads();
    }
}

// The sums of gemm_tile as they are: the epilogue of a plain product.
struct NoEpilogue {
    template <typename T>
    __device__ __forceinline__ T operator()(int, T sum) const { return sum; }
};

// out[m * ld + n] = epilogue(n, acc[i][j]) for every output (m, n) of this thread inside the
// matrix: m = m0 + ty * TM + i < m_end, n = n0 + tx * TN + j < n_end (the layout of
// gemm_tile). out is a parameter, not held by a functor or lambda: that way it stays
// __restrict__ and the compiler can still give the GEMM's operand loads the read-only path.
template <int TM, int TN, typename T, typename Epilogue = NoEpilogue>
__device__ __forceinline__ void store_tile(const T (&acc)[TM][TN], int m0, int m_end, int n0,
                                           int n_end, T* __restrict__ out, int ld,
                                           const Epilogue& epilogue = Epilogue())
{
    const int tx = threadIdx.x % gemm::TX;
    const int ty = threadIdx.x / gemm::TX;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = m0 + ty * TM + i;
        if (m >= m_end) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + tx * TN + j;
            if (n < n_end) out[(size_t)m * ld + n] = epilogue(n, acc[i][j]);
        }
    }
}

// A whole GEMM pass over K for one block: the BM x BN tile (blockIdx.x, blockIdx.y) of
// C = A @ B (M, N), written as out[m * ld + n] = epilogue(n, C[m][n]). Grid
// (ceil(M / BM), ceil(N / BN)). Every thread of the block must call it (gemm_tile
// synchronises the block).
template <int BM, int BN, typename T, typename FetchA, typename FetchB,
          typename Epilogue = NoEpilogue>
__device__ __forceinline__ void gemm_write_tile(GemmTiles<T, BM, BN>& tiles,
                                                const FetchA& fetch_a, const FetchB& fetch_b,
                                                int m_total, int n_total, int k_total,
                                                T* __restrict__ out, int ld,
                                                const Epilogue& epilogue = Epilogue())
{
    constexpr int TM = BM / gemm::TY;
    constexpr int TN = BN / gemm::TX;
    T acc[TM][TN] = {};
    T unused[TN];
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    gemm_tile<BM, BN, false>(tiles, fetch_a, fetch_b, m0, m_total, n0, n_total, 0, k_total, acc,
                             unused);
    store_tile(acc, m0, m_total, n0, n_total, out, ld, epilogue);
}

// One block's share of a split-K product C = A @ B (M, N), with K split into ranges of
// split_k: the BM x BN tile (blockIdx.x, blockIdx.y) of split s = blockIdx.z, over k in
// [s * split_k, min(K, (s + 1) * split_k)). With column_sums, also the column sums of B over
// the same k (computed by the blocks of the first row tile only: the branch is uniform over
// the block). This is the weight-gradient pass: dw = inputs.T @ dz and db = sum_rows dz.
//   partials (splits, M * N + (column_sums ? N : 0)): partials[s] = [C (M, N) | sums (N,)],
//   summed over s afterwards by reduce_splits. Grid (ceil(M / BM), ceil(N / BN), splits).
// Every thread of the block must call it (gemm_tile synchronises the block).
template <int BM, int BN, typename T, typename FetchA, typename FetchB>
__device__ __forceinline__ void gemm_split_k_partial(GemmTiles<T, BM, BN>& tiles,
                                                     const FetchA& fetch_a, const FetchB& fetch_b,
                                                     int m_total, int n_total, int k_total,
                                                     int split_k, bool column_sums,
                                                     T* __restrict__ partials)
{
    constexpr int TM = BM / gemm::TY;
    constexpr int TN = BN / gemm::TX;
    T acc[TM][TN] = {};
    T sums[TN] = {};
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int k_begin = blockIdx.z * split_k;
    const int k_end = min(k_total, k_begin + split_k);
    const bool block_sums = column_sums && blockIdx.x == 0;
    if (block_sums)
        gemm_tile<BM, BN, true>(tiles, fetch_a, fetch_b, m0, m_total, n0, n_total, k_begin,
                                k_end, acc, sums);
    else
        gemm_tile<BM, BN, false>(tiles, fetch_a, fetch_b, m0, m_total, n0, n_total, k_begin,
                                 k_end, acc, sums);
    const size_t split_size = (size_t)m_total * n_total + (column_sums ? n_total : 0);
    T* product = partials + blockIdx.z * split_size;
    store_tile(acc, m0, m_total, n0, n_total, product, n_total);
    // every ty holds the same sums; one row of threads (ty == 0) writes them
    if (block_sums && threadIdx.x / gemm::TX == 0) {
        T* product_sums = product + (size_t)m_total * n_total;
        const int tx = threadIdx.x % gemm::TX;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = n0 + tx * TN + j;
            if (n < n_total) product_sums[n] = sums[j];
        }
    }
}

// out[e] = partials[0][e] + partials[1][e] + ... in this order: the deterministic second half
// of every split-K reduction (no atomics). partials is (splits, count), out is (count,).
template <typename T>
__device__ __forceinline__ void reduce_splits(const T* __restrict__ partials, T* __restrict__ out,
                                              int splits, int count)
{
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < (size_t)count;
         e += (size_t)gridDim.x * blockDim.x) {
        T sum = T(0);
        for (int s = 0; s < splits; ++s) sum += partials[(size_t)s * count + e];
        out[e] = sum;
    }
}
