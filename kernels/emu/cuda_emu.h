// cuda_emu.h: compile CUDA C++ kernels for the host (docs/DESIGN.md section 2).
//
// build.rs compiles every kernels/*.cu with the host C++ compiler and `-include` of this header.
// A kernel then runs as ordinary C++: the threads of a block are fibers on one OS thread,
// `__syncthreads()` and the warp primitives switch fibers until every participant has arrived,
// `__shared__` storage is one copy per block, and blocks are spread over a few OS threads.
// The scheduler lives in emu_runtime.cpp; this header is the device-side vocabulary.
//
// build.rs compiles everything a second time with EMU_PROFILE defined, inside a namespace of its
// own and with GCC's ThreadSanitizer instrumentation of loads and stores (docs/DESIGN.md section
// 8): the profiling emulator that `dml profile` runs. The differences are marked EMU_PROFILE here.
#pragma once

#ifdef __CUDACC__
#error "cuda_emu.h is for host compilers only"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <atomic>
#include <tuple>
#include <type_traits>
#include <utility>

#define CUDA_EMU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
// One copy per block: blocks of one launch run one at a time on each OS thread, and every fiber
// of a block runs on the same OS thread, so a thread-local static is exactly "per block".
#define __shared__ static thread_local
#ifndef EMU_PROFILE
// C names of the runtime's exports (the profiling build has its own set beside these).
#define EMU_C(name) emu_##name
#define EMU_UNINSTRUMENTED
#define EMU_PROFILE_ATOMIC() ((void)0)
#else
#define EMU_C(name) emu_profiled_##name
// Emulator bookkeeping inside a kernel's translation unit that must not be counted as the
// kernel's memory traffic: kept out of line and out of the instrumentation.
#define EMU_UNINSTRUMENTED __attribute__((noinline, no_sanitize("thread")))
#define EMU_PROFILE_ATOMIC() emu::profile::count_atomic()
#endif

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

// Launch geometry as Rust passes it (must match src/device/emu.rs).
struct LaunchCfg {
    unsigned int grid[3];
    unsigned int block[3];
    unsigned int shared_bytes;
    int reverse_schedule;  // 1: threads resumed in reverse order between barriers
};

struct ThreadState {
    uint3 thread_idx;
    unsigned int linear;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
};

struct BlockState {
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned char* dynamic_shared;
    unsigned int dynamic_shared_bytes;
};

extern thread_local ThreadState* current_thread;
extern thread_local BlockState current_block;

void sync_block();
void sync_warp(unsigned int mask);
// Lane exchange area of the current thread's warp: 32 slots of 8 bytes.
uint64_t* warp_slots();

#ifdef EMU_PROFILE
// What the instrumented kernel code reports besides its loads and stores (emu_profiler.h).
namespace profile {
// A load or store the instrumentation cannot see as one (a wmma fragment element): `site`
// identifies the instruction, as the return address does for instrumented accesses.
void record(uintptr_t site, const void* addr, unsigned bytes, bool store);
void count_simt_flops(uint64_t n);
void count_tensor_flops(uint64_t n, bool bf16);
void count_atomic();
}  // namespace profile
#endif

using BlockBody = void (*)(void* closure);
// Runs `body(closure)` for every thread of every block; returns 0 or a nonzero error code with
// the message available from emu_last_error().
int run_grid(const LaunchCfg* cfg, BlockBody body, void* closure);

template <class T>
inline uint64_t to_slot(T v) {
    static_assert(sizeof(T) <= 8, "warp exchange of values larger than 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}
template <class T>
inline T from_slot(uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

inline unsigned int lane_id() { return current_thread->linear & 31u; }

// Every lane publishes its value, all lanes of `mask` meet, each reads its source lane, and they
// meet again so no slot is overwritten before it is read.
template <class T>
inline T shuffle_from(unsigned int mask, T v, unsigned int src_lane) {
    uint64_t* slots = warp_slots();
    slots[lane_id()] = to_slot(v);
    sync_warp(mask);
    T r = from_slot<T>(slots[src_lane & 31u]);
    sync_warp(mask);
    return r;
}

template <class Kernel, class Tuple, std::size_t... I>
inline void call_with(Kernel k, Tuple& args, std::index_sequence<I...>) {
    k(std::get<I>(args)...);
}

template <class... Args>
struct KernelClosure {
    void (*kernel)(Args...);
    void** params;
};

// Reading the closure and a parameter's slot is the launch's work, not the kernel's:
// uninstrumented when profiling (out of line there, so nothing inlines them into instrumented
// code; the tuple's constructor, which stays instrumented, copies from this thread's stack).
template <class T>
EMU_UNINSTRUMENTED inline T read_param(const void* slot) {
    T v;
    std::memcpy(&v, slot, sizeof(T));
    return v;
}

template <class... Args>
EMU_UNINSTRUMENTED void run_kernel_thread(void* closure) {
    auto* c = static_cast<KernelClosure<Args...>*>(closure);
    std::size_t i = 0;
    // Each thread gets its own copy of the arguments, as on a GPU.
    auto args = std::tuple<std::decay_t<Args>...>{read_param<std::decay_t<Args>>(c->params[i++])...};
    call_with(c->kernel, args, std::index_sequence_for<Args...>{});
}

// Same convention as cuLaunchKernel: params[i] points at the i-th argument.
template <class... Args>
int launch(void (*kernel)(Args...), const LaunchCfg* cfg, void** params) {
    KernelClosure<Args...> closure{kernel, params};
    return run_grid(cfg, &run_kernel_thread<Args...>, &closure);
}

}  // namespace emu

extern "C" const char* EMU_C(last_error)();

#define threadIdx (emu::current_thread->thread_idx)
#define blockIdx (emu::current_block.block_idx)
#define blockDim (emu::current_block.block_dim)
#define gridDim (emu::current_block.grid_dim)
#define warpSize 32

// Dynamic shared memory: `extern __shared__ T name[]` under nvcc (see common.cuh).
#define EMU_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(emu::current_block.dynamic_shared)
// A kernel that needs `bytes` of it stops the process here when launched with fewer (on a GPU the
// accesses past the end fault, or read another block's memory).
#define EMU_REQUIRE_DYNAMIC_SHARED(bytes) emu::require_dynamic_shared(bytes, __func__)
namespace emu {
EMU_UNINSTRUMENTED inline void require_dynamic_shared(size_t bytes, const char* function) {
    if (current_block.dynamic_shared_bytes >= bytes) return;
    std::fprintf(stderr, "emu: %s needs %zu bytes of dynamic shared memory, launched with %u\n", function, bytes,
                 current_block.dynamic_shared_bytes);
    std::abort();
}
}  // namespace emu

// Exports a host launcher `emu_launch_<name>(cfg, params)` for an `extern "C" __global__` kernel.
// (In the profiling build `name` is a macro for the kernel's renamed copy: build.rs renames every
// kernel there so the two builds link side by side; `##` keeps the launcher's name unrenamed.)
#define EMU_EXPORT(name)                                                                \
    extern "C" int EMU_C(launch_##name)(const emu::LaunchCfg* cfg, void** params) { \
        return emu::launch(name, cfg, params);                                          \
    }

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) { emu::sync_warp(mask); }
EMU_UNINSTRUMENTED inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
EMU_UNINSTRUMENTED inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T>
inline T __shfl_sync(unsigned int mask, T v, int src_lane, int width = 32) {
    unsigned int lane = emu::lane_id();
    unsigned int base = lane & ~(unsigned int)(width - 1);
    return emu::shuffle_from(mask, v, base + ((unsigned int)src_lane & (unsigned int)(width - 1)));
}
template <class T>
inline T __shfl_down_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
    unsigned int lane = emu::lane_id();
    unsigned int in_seg = lane & (unsigned int)(width - 1);
    unsigned int src = in_seg + delta < (unsigned int)width ? lane + delta : lane;
    return emu::shuffle_from(mask, v, src);
}
template <class T>
inline T __shfl_up_sync(unsigned int mask, T v, unsigned int delta, int width = 32) {
    unsigned int lane = emu::lane_id();
    unsigned int in_seg = lane & (unsigned int)(width - 1);
    unsigned int src = in_seg >= delta ? lane - delta : lane;
    return emu::shuffle_from(mask, v, src);
}
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T v, int lane_mask, int width = 32) {
    unsigned int lane = emu::lane_id();
    unsigned int src = lane ^ (unsigned int)lane_mask;
    if ((src & ~(unsigned int)(width - 1)) != (lane & ~(unsigned int)(width - 1))) src = lane;
    return emu::shuffle_from(mask, v, src);
}

inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
    uint64_t* slots = emu::warp_slots();
    unsigned int lane = emu::lane_id();
    slots[lane] = predicate ? 1u : 0u;
    emu::sync_warp(mask);
    unsigned int r = 0;
    for (unsigned int l = 0; l < 32; ++l)
        if ((mask >> l) & 1u) r |= (slots[l] ? 1u : 0u) << l;
    emu::sync_warp(mask);
    return r;
}
inline int __any_sync(unsigned int mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }
inline int __all_sync(unsigned int mask, int predicate) { return __ballot_sync(mask, predicate) == mask; }

// Atomics: blocks run on several OS threads, so these are real atomics. The profiler counts them
// as atomics (they are served by the L2 on a GPU), not as loads and stores.
EMU_UNINSTRUMENTED inline float atomicAdd(float* addr, float v) {
    EMU_PROFILE_ATOMIC();
    auto* a = reinterpret_cast<std::atomic<uint32_t>*>(addr);
    uint32_t old = a->load(std::memory_order_relaxed), desired;
    do {
        float f;
        std::memcpy(&f, &old, 4);
        f += v;
        std::memcpy(&desired, &f, 4);
    } while (!a->compare_exchange_weak(old, desired, std::memory_order_relaxed));
    float r;
    std::memcpy(&r, &old, 4);
    return r;
}
EMU_UNINSTRUMENTED inline int atomicAdd(int* addr, int v) {
    EMU_PROFILE_ATOMIC();
    return reinterpret_cast<std::atomic<int>*>(addr)->fetch_add(v);
}
EMU_UNINSTRUMENTED inline unsigned int atomicAdd(unsigned int* addr, unsigned int v) {
    EMU_PROFILE_ATOMIC();
    return reinterpret_cast<std::atomic<unsigned int>*>(addr)->fetch_add(v);
}
EMU_UNINSTRUMENTED inline unsigned long long atomicAdd(unsigned long long* addr, unsigned long long v) {
    EMU_PROFILE_ATOMIC();
    return reinterpret_cast<std::atomic<unsigned long long>*>(addr)->fetch_add(v);
}
EMU_UNINSTRUMENTED inline int atomicCAS(int* addr, int compare, int v) {
    EMU_PROFILE_ATOMIC();
    reinterpret_cast<std::atomic<int>*>(addr)->compare_exchange_strong(compare, v);
    return compare;
}
EMU_UNINSTRUMENTED inline unsigned int atomicCAS(unsigned int* addr, unsigned int compare, unsigned int v) {
    EMU_PROFILE_ATOMIC();
    reinterpret_cast<std::atomic<unsigned int>*>(addr)->compare_exchange_strong(compare, v);
    return compare;
}
EMU_UNINSTRUMENTED inline int atomicExch(int* addr, int v) {
    EMU_PROFILE_ATOMIC();
    return reinterpret_cast<std::atomic<int>*>(addr)->exchange(v);
}
EMU_UNINSTRUMENTED inline int atomicMax(int* addr, int v) {
    EMU_PROFILE_ATOMIC();
    auto* a = reinterpret_cast<std::atomic<int>*>(addr);
    int old = a->load();
    while (old < v && !a->compare_exchange_weak(old, v)) {
    }
    return old;
}

// Intrinsics with host equivalents.
// glibc declares __expf and friends itself, so these are macros rather than functions.
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// Round-to-nearest products and differences that nvcc never contracts into an FMA.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __saturatef(float x) { return std::min(1.0f, std::max(0.0f, x)); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * (unsigned long long)b) >> 32);
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
template <class T>
inline T __ldg(const T* p) {
    return *p;
}

using std::cos;
using std::exp;
using std::fabs;
using std::fmax;
using std::fmin;
using std::isnan;
using std::log;
using std::sin;
using std::sqrt;

// __nv_bfloat16 (<cuda_bf16.h>) and nvcuda::wmma (the tensor-core API of <mma.h>) for the shapes
// the kernels use, and cp.async through <cuda_pipeline.h>'s primitives.
#include "bf16_emu.h"
#include "wmma_emu.h"
#include "pipeline_emu.h"
