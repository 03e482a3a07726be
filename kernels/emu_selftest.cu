// emu_selftest.cu: kernels that exercise the emulator itself (tests/emulator.rs). Compiled by
// nvcc like every other family, so they run on a GPU too: the correct ones must agree there,
// and the deliberately broken ones document what the emulator reports.
#include "async_copy.cuh"
#include "common.cuh"

// Block reduction with barriers: out[b] = sum of the block's slice of x.
extern "C" __global__ void selftest_block_sum_f32(const float* x, float* out, int n) {
    __shared__ float scratch[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    v = block_reduce_sum(v, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}
EMU_EXPORT(selftest_block_sum_f32)

// Tiled transpose through dynamic shared memory: x is rows x cols, out is cols x rows.
// Block (32, 8); the tile is 32 x 33 floats (padded against bank conflicts).
extern "C" __global__ void selftest_transpose_f32(const float* x, float* out, int rows, int cols) {
    EMU_DYNAMIC_SHARED(float, tile);
    const int T = 32;
    int c0 = blockIdx.x * T, r0 = blockIdx.y * T;
    for (int dy = threadIdx.y; dy < T; dy += blockDim.y) {
        int r = r0 + dy, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[dy * (T + 1) + threadIdx.x] = x[r * cols + c];
    }
    __syncthreads();
    for (int dy = threadIdx.y; dy < T; dy += blockDim.y) {
        int c = c0 + dy, r = r0 + threadIdx.x;
        if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x * (T + 1) + dy];
    }
}
EMU_EXPORT(selftest_transpose_f32)

// Warp-shuffle reduction: out[w] = sum over warp w's 32 lanes, each lane also gets its
// butterfly (xor) total in all[i].
extern "C" __global__ void selftest_warp_sum_f32(const float* x, float* out, float* all, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    float down = warp_reduce_sum(v);
    float butterfly = v;
    for (int m = 16; m > 0; m >>= 1) butterfly += __shfl_xor_sync(0xffffffffu, butterfly, m);
    int warp = i / 32;
    if ((threadIdx.x & 31) == 0 && i < n) out[warp] = down;
    if (i < n) all[i] = butterfly;
}
EMU_EXPORT(selftest_warp_sum_f32)

// Deliberately wrong: threads past `active` leave before the barrier (a deadlock on a GPU).
extern "C" __global__ void selftest_divergent_barrier_f32(float* out, int active) {
    if ((int)threadIdx.x >= active) return;
    out[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = 2.0f;
}
EMU_EXPORT(selftest_divergent_barrier_f32)

// Deliberately wrong when `with_barrier` is 0: each thread reads its neighbour's shared slot
// without waiting for the neighbour to write it.
extern "C" __global__ void selftest_neighbour_f32(const float* x, float* out, int with_barrier) {
    __shared__ float s[256];
    int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    if (with_barrier) __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[(t + 1) % blockDim.x];
}
EMU_EXPORT(selftest_neighbour_f32)

// cp.async (async_copy.cuh) into dynamic shared memory (5 blockDim floats): thread t copies
// x[4t, 4t + 4) as one 16-byte copy and x[4 blockDim + t] as one 4-byte copy, each zero-filled
// instead where t % 3 == 2, commits them as one batch, waits for it, meets the block at a barrier
// and writes its neighbour's: out[4t + i] = s[4(t + 1) + i], out[4 blockDim + t] = s[4 blockDim + t
// + 1] (indices modulo the block). Deliberately wrong when `wait` is 0: the barrier comes before
// the copies are known to have landed.
extern "C" __global__ void selftest_async_copy_f32(const float* x, float* out, int wait) {
    EMU_DYNAMIC_SHARED(float, s);
    const int t = threadIdx.x, n = blockDim.x, next = (t + 1) % n;
    const bool read = t % 3 != 2;
    async_copy<16>(&s[4 * t], &x[4 * t], read);
    async_copy<4>(&s[4 * n + t], &x[4 * n + t], read);
    __pipeline_commit();
    if (wait) __pipeline_wait_prior(0);
    __syncthreads();
    for (int i = 0; i < 4; ++i) out[4 * t + i] = s[4 * next + i];
    out[4 * n + t] = s[4 * n + next];
}
EMU_EXPORT(selftest_async_copy_f32)

// Deliberately wrong: odd lanes exit, even lanes shuffle with a full mask.
extern "C" __global__ void selftest_divergent_shuffle_f32(float* out) {
    if (threadIdx.x & 1) return;
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (float)threadIdx.x, 2);
}
EMU_EXPORT(selftest_divergent_shuffle_f32)

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <mma.h>
#endif

// The operands of selftest_wmma_tf32_f32, staged in shared memory: wmma needs 32-byte aligned
// addresses, and the emulator's global buffers are only malloc-aligned.
struct alignas(32) SelftestWmmaTiles {
    float a[16 * 8];
    float b[8 * 16];
    float c[16 * 16];
    float d[16 * 16];
};

// One warp: d (16x16, column-major) = a (16x8, row-major) b (8x16, column-major) + c (16x16,
// row-major), the operands rounded to tf32 element by element in their fragments (the pattern
// the CUDA guide prescribes). Lanes at or past `active` skip the matrix operations: deliberately
// wrong unless `active` is 32.
extern "C" __global__ void selftest_wmma_tf32_f32(const float* a, const float* b, const float* c, float* d,
                                                  int active) {
    using namespace nvcuda;
    __shared__ SelftestWmmaTiles s;
    for (int i = threadIdx.x; i < 128; i += blockDim.x) {
        s.a[i] = a[i];
        s.b[i] = b[i];
    }
    for (int i = threadIdx.x; i < 256; i += blockDim.x) s.c[i] = c[i];
    __syncthreads();
    if ((int)threadIdx.x >= active) return;
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc;
    wmma::load_matrix_sync(fa, s.a, 8);
    wmma::load_matrix_sync(fb, s.b, 8);
    for (int t = 0; t < fa.num_elements; ++t) fa.x[t] = wmma::__float_to_tf32(fa.x[t]);
    for (int t = 0; t < fb.num_elements; ++t) fb.x[t] = wmma::__float_to_tf32(fb.x[t]);
    wmma::load_matrix_sync(fc, s.c, 16, wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(s.d, fc, 16, wmma::mem_col_major);
    __syncwarp();
    for (int i = threadIdx.x; i < 256; i += 32) d[i] = s.d[i];
}
EMU_EXPORT(selftest_wmma_tf32_f32)

// The operands of selftest_wmma_bf16_f32: a and b as __nv_bfloat16, 32-byte aligned.
struct alignas(32) SelftestWmmaBf16Tiles {
    __nv_bfloat16 a[16 * 16];
    __nv_bfloat16 b[16 * 16];
    float c[16 * 16];
    float d[16 * 16];
};

// selftest_wmma_tf32_f32 in bf16 (m16n16k16): d (16x16, column-major) = a (16x16, row-major) b
// (16x16, column-major) + c (16x16, row-major), a and b rounded to bf16 by __float2bfloat16 (round
// to nearest even) as they are staged, as the convolution kernels stage theirs. Lanes at or past
// `active` skip the matrix operations.
extern "C" __global__ void selftest_wmma_bf16_f32(const float* a, const float* b, const float* c, float* d,
                                                  int active) {
    using namespace nvcuda;
    __shared__ SelftestWmmaBf16Tiles s;
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
        s.a[i] = __float2bfloat16(a[i]);
        s.b[i] = __float2bfloat16(b[i]);
        s.c[i] = c[i];
    }
    __syncwarp();
    if ((int)threadIdx.x >= active) return;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::load_matrix_sync(fa, s.a, 16);
    wmma::load_matrix_sync(fb, s.b, 16);
    wmma::load_matrix_sync(fc, s.c, 16, wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(s.d, fc, 16, wmma::mem_col_major);
    __syncwarp();
    for (int i = threadIdx.x; i < 256; i += 32) d[i] = s.d[i];
}
EMU_EXPORT(selftest_wmma_bf16_f32)
