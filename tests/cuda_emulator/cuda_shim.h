// CUDA C on the CPU, for tests: what g++ needs to compile a kernels/cuda/*.cu file as host
// code, and a launcher that runs a kernel's grid block by block.
//
// The fake CuPy (cupy/_raw.py) prepends this header to the kernel source, rewrites the
// __shared__ declarations (the preprocessor cannot):
//   extern __shared__ T name[];  ->  a pointer into dynamic_shared
//   __shared__ T name...;        ->  static T name...; poison_once_per_block(&name, sizeof name);
// and appends CUDA_EMULATOR_ENTRY(name) for every extern "C" kernel, which exports
//   const char* cuda_emulator_signature_<name>()    parameter types: "const float*,int,..."
//   const char* cuda_emulator_launch_<name>(dims, shared_bytes, args)
//                                                   runs the grid; null, or what went wrong
//
// A block's CUDA threads are fibers (ucontext) on one OS thread. Each runs until its next
// __syncthreads or its end; when all have got there, the barrier is checked (every thread of
// the block at the same __syncthreads) and they run again, in the opposite order, so that a
// missing barrier lets some thread read a value before another writes it (poison, below) or
// after another overwrites it, whichever way the data flows. Blocks run one after another.
//
// __shared__ memory is filled with 0xFF bytes (NaN in float and double) for each block: the
// dynamic memory before the block starts, a static variable when the first thread of the
// block reaches its declaration. A read of a value no thread wrote shows up as NaN in the
// results. Dynamic shared memory past the bytes the launch asked for must still hold 0xFF
// at the end of the block.

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

using std::max;
using std::min;

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
dim3 threadIdx;   // of the fiber running now
dim3 blockIdx;
dim3 blockDim;
dim3 gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __syncthreads() cuda_emulator::sync_threads(__LINE__)

namespace cuda_emulator {

constexpr std::size_t DYNAMIC_SHARED_BYTES = 256 * 1024;   // above any GPU's per-block limit
constexpr std::size_t STACK_BYTES = 256 * 1024;            // per fiber
constexpr unsigned char POISON = 0xFF;
constexpr int STARTING = 0;   // a fiber's site before it first runs (__LINE__ is >= 1)
constexpr int EXITED = -1;

alignas(256) unsigned char dynamic_shared[DYNAMIC_SHARED_BYTES];

// The launch being run (one at a time: launch() holds a lock).
ucontext_t scheduler;
std::vector<ucontext_t> fibers;
std::vector<void*> stacks;
std::vector<int> sites;              // per fiber: STARTING, line of its __syncthreads, EXITED
unsigned current;                    // the fiber running now
std::function<void()> kernel_call;   // the kernel with the launch's arguments
std::string error;                   // the first problem found by this launch
// Static __shared__ variables: one instance each (static), used by one block at a time.
unsigned long block_serial = 0;                               // blocks begun, ever
std::unordered_map<const void*, unsigned long> poisoned_in;   // variable -> its block_serial

void note(const std::string& problem)
{
    if (error.empty())
        error = "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) +
                ", " + std::to_string(blockIdx.z) + "): " + problem;
}

// Where a static __shared__ variable is declared: the first thread of a block to get there
// poisons it for the block.
inline void poison_once_per_block(void* variable, std::size_t bytes)
{
    unsigned long& poisoned = poisoned_in[variable];
    if (poisoned != block_serial) {
        std::memset(variable, POISON, bytes);
        poisoned = block_serial;
    }
}

inline void sync_threads(int line)
{
    sites[current] = line;
    swapcontext(&fibers[current], &scheduler);
}

void fiber_main()
{
    kernel_call();
    sites[current] = EXITED;   // returning resumes the scheduler (uc_link)
}

// Stacks with an inaccessible page below each, so that an overflow faults instead of
// corrupting the next stack.
bool ensure_stacks(unsigned threads)
{
    const std::size_t page = sysconf(_SC_PAGESIZE);
    while (stacks.size() < threads) {
        void* region = mmap(nullptr, page + STACK_BYTES, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED || mprotect(region, page, PROT_NONE) != 0) return false;
        stacks.push_back(static_cast<char*>(region) + page);
    }
    return true;
}

void run_block(unsigned threads)
{
    for (unsigned t = 0; t < threads; ++t) {
        getcontext(&fibers[t]);
        fibers[t].uc_stack.ss_sp = stacks[t];
        fibers[t].uc_stack.ss_size = STACK_BYTES;
        fibers[t].uc_link = &scheduler;
        makecontext(&fibers[t], fiber_main, 0);
        sites[t] = STARTING;
    }
    for (bool forward = true;; forward = !forward) {
        for (unsigned i = 0; i < threads; ++i) {
            current = forward ? i : threads - 1 - i;
            if (sites[current] == EXITED) continue;
            threadIdx = {current % blockDim.x, current / blockDim.x % blockDim.y,
                         current / (blockDim.x * blockDim.y)};
            swapcontext(&scheduler, &fibers[current]);
        }
        const auto waiting = std::count_if(sites.begin(), sites.end(),
                                           [](int site) { return site != EXITED; });
        if (waiting == 0) break;
        const int site = *std::find_if(sites.begin(), sites.end(),
                                       [](int site) { return site != EXITED; });
        if (!std::all_of(sites.begin(), sites.end(), [site](int s) { return s == site; }))
            note("the __syncthreads at line " + std::to_string(site) + " was reached by " +
                 std::to_string(waiting) + " of " + std::to_string(threads) +
                 " threads; the others returned or wait at another __syncthreads");
    }
}

template <typename T>
std::string type_name()
{
    if constexpr (std::is_pointer_v<T>) {
        using Pointee = std::remove_pointer_t<T>;
        return (std::is_const_v<Pointee> ? "const " : "") +
               type_name<std::remove_const_t<Pointee>>() + "*";
    } else if constexpr (std::is_same_v<T, int>) {
        return "int";
    } else if constexpr (std::is_same_v<T, float>) {
        return "float";
    } else {
        static_assert(std::is_same_v<T, double>, "kernel parameters: int, float, double, pointers");
        return "double";
    }
}

template <typename... P>
const char* signature(void (*)(P...))
{
    static const std::string joined = [] {
        std::string names;
        ((names += (names.empty() ? "" : ",") + type_name<P>()), ...);
        return names;
    }();
    return joined.c_str();
}

// args[i] points to the value of parameter i (the pointer itself, for pointer parameters).
template <typename... P, std::size_t... I>
void call(void (*kernel)(P...), void* const* args, std::index_sequence<I...>)
{
    kernel(*static_cast<P*>(args[I])...);
}

// dims: grid x, y, z, then block x, y, z.
template <typename... P>
const char* launch(void (*kernel)(P...), const unsigned* dims, std::size_t shared_bytes,
                   void* const* args)
{
    static std::mutex one_launch_at_a_time;
    std::lock_guard<std::mutex> lock(one_launch_at_a_time);
    gridDim = {dims[0], dims[1], dims[2]};
    blockDim = {dims[3], dims[4], dims[5]};
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    if (!ensure_stacks(threads)) return "could not map the fiber stacks";
    fibers.resize(threads);
    sites.resize(threads);
    kernel_call = [=] { call(kernel, args, std::index_sequence_for<P...>{}); };
    error.clear();
    for (unsigned z = 0; z < gridDim.z; ++z)
        for (unsigned y = 0; y < gridDim.y; ++y)
            for (unsigned x = 0; x < gridDim.x; ++x) {
                blockIdx = {x, y, z};
                ++block_serial;
                std::memset(dynamic_shared, POISON, DYNAMIC_SHARED_BYTES);
                run_block(threads);
                if (std::any_of(dynamic_shared + shared_bytes,
                                dynamic_shared + DYNAMIC_SHARED_BYTES,
                                [](unsigned char byte) { return byte != POISON; }))
                    note("wrote dynamic shared memory past the " + std::to_string(shared_bytes) +
                         " bytes the launch gave it");
                if (!error.empty()) return error.c_str();
            }
    return nullptr;
}

}  // namespace cuda_emulator

#define CUDA_EMULATOR_ENTRY(kernel)                                                            \
    extern "C" const char* cuda_emulator_signature_##kernel()                                  \
    {                                                                                          \
        return cuda_emulator::signature(kernel);                                               \
    }                                                                                          \
    extern "C" const char* cuda_emulator_launch_##kernel(const unsigned* dims,                 \
                                                         std::size_t shared_bytes,             \
                                                         void* const* args)                    \
    {                                                                                          \
        return cuda_emulator::launch(kernel, dims, shared_bytes, args);                        \
    }
