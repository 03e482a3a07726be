// common.cuh: what every kernel family shares: indexing, the counter-based random numbers
// (SPEC section 5) and block reductions. Compiled by nvcc and, through cuda_emu.h, by the host.
#pragma once

#ifdef __CUDACC__
#include <cstdint>
// Under nvcc the emulator's launcher export and dynamic shared memory take their CUDA forms.
// Dynamic shared memory is 128-byte aligned, as the emulator's: wmma's loads need 32 bytes.
#define EMU_EXPORT(name)
#define EMU_DYNAMIC_SHARED(T, name) extern __shared__ __align__(128) T name[]
#define EMU_REQUIRE_DYNAMIC_SHARED(bytes) ((void)0)
#endif

// Floating-point operations a thread issues, counted by the profiling emulator (`dml profile`,
// docs/DESIGN.md section 8) where the arithmetic cannot be observed: the main loops that do
// most of a kernel's FLOPs. Nothing under nvcc or in the plain emulator.
#if defined(CUDA_EMU) && defined(EMU_PROFILE)
#define DML_COUNT_FLOPS(n) emu::profile::count_simt_flops(n)
#else
#define DML_COUNT_FLOPS(n) ((void)0)
#endif

// ---- indexing -------------------------------------------------------------------------------

// The global index of this thread in a 1-D launch, as 64 bits so large tensors do not overflow.
__device__ __forceinline__ uint64_t global_index_1d() {
    return (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ uint64_t grid_stride_1d() { return (uint64_t)gridDim.x * blockDim.x; }

// ELU with alpha 1 (SPEC section 9) and its slope at the pre-activation y: 1 for y > 0, exp(y)
// otherwise. Shared by the element-wise ELU and the norm kernels that apply it fused.
__device__ __forceinline__ float elu_of(float y) { return y > 0.0f ? y : expm1f(y); }
__device__ __forceinline__ float elu_slope(float y) { return y > 0.0f ? 1.0f : expf(y); }

// ---- Philox4x32-10 (Salmon et al., SC'11), SPEC section 5 ------------------------------------
// Keyed by the 64-bit seed; the counter is (element lo, element hi, step, stream). The Rust
// implementation in src/rng/philox.rs produces the same bits.

struct Philox4 {
    uint32_t v[4];
};

__host__ __device__ __forceinline__ uint32_t philox_mulhi(uint32_t a, uint32_t b) {
    return (uint32_t)(((uint64_t)a * (uint64_t)b) >> 32);
}

__host__ __device__ __forceinline__ Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        uint32_t hi0 = philox_mulhi(M0, ctr.v[0]), lo0 = M0 * ctr.v[0];
        uint32_t hi1 = philox_mulhi(M1, ctr.v[2]), lo1 = M1 * ctr.v[2];
        Philox4 next;
        next.v[0] = hi1 ^ ctr.v[1] ^ k0;
        next.v[1] = lo1;
        next.v[2] = hi0 ^ ctr.v[3] ^ k1;
        next.v[3] = lo0;
        ctr = next;
        k0 += W0;
        k1 += W1;
    }
    return ctr;
}

__host__ __device__ __forceinline__ Philox4 philox_bits(uint64_t seed, uint32_t stream, uint32_t step,
                                                        uint64_t element) {
    Philox4 ctr;
    ctr.v[0] = (uint32_t)element;
    ctr.v[1] = (uint32_t)(element >> 32);
    ctr.v[2] = step;
    ctr.v[3] = stream;
    return philox4x32_10(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
}

// Uniform in (0, 1]: 24 random bits, never 0, so log() is finite.
__host__ __device__ __forceinline__ float uniform_open_closed(uint32_t bits) {
    return (float)((bits >> 8) + 1u) * (1.0f / 16777216.0f);
}
// Uniform in [0, 1).
__host__ __device__ __forceinline__ float uniform_closed_open(uint32_t bits) {
    return (float)(bits >> 8) * (1.0f / 16777216.0f);
}

// Box-Muller on the first two words: the standard normal for (seed, stream, step, element).
__host__ __device__ __forceinline__ float philox_normal(uint64_t seed, uint32_t stream, uint32_t step,
                                                        uint64_t element) {
    Philox4 b = philox_bits(seed, stream, step, element);
    float u0 = uniform_open_closed(b.v[0]);
    float u1 = uniform_closed_open(b.v[1]);
    return sqrtf(-2.0f * logf(u0)) * cosf(6.28318530717958647692f * u1);
}

// ---- reductions -----------------------------------------------------------------------------

__device__ __forceinline__ float warp_reduce_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Butterfly reductions: every lane ends with the same value (each step adds or compares the same
// two values on both lanes of a pair), so the whole warp uses one max and one sum.
__device__ __forceinline__ float warp_max_all(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}
__device__ __forceinline__ float warp_sum_all(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over the block; every thread must call it. The result is valid in thread 0.
// `scratch` holds at least 32 floats of shared memory. Fixed order, so deterministic.
__device__ __forceinline__ float block_reduce_sum(float v, float* scratch) {
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned int n_warps = (blockDim.x + 31u) >> 5;
    v = warp_reduce_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = threadIdx.x < n_warps ? scratch[threadIdx.x] : 0.0f;
    if (warp == 0) v = warp_reduce_sum(v);
    __syncthreads();  // scratch may be reused by the caller right after
    return v;
}

// The block-wide sum, returned to every thread (block_reduce_sum's result broadcast through
// shared memory). Every thread must call it.
__device__ __forceinline__ float block_sum_all(float v, float* scratch) {
    __shared__ float total;
    v = block_reduce_sum(v, scratch);
    if (threadIdx.x == 0) total = v;
    __syncthreads();
    v = total;
    __syncthreads();
    return v;
}
