// profile_selftest.cu: kernels with known costs, the known answers of the profiling emulator
// (tests/profile.rs, docs/DESIGN.md section 8). Compiled by nvcc like every family, so a GPU
// profiler can be pointed at them too.
#include "common.cuh"

// Each thread copies one float: every warp reads and writes 128 contiguous bytes (4 sectors).
extern "C" __global__ void profile_copy_f32(const float* __restrict__ x, float* __restrict__ y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i];
}
EMU_EXPORT(profile_copy_f32)

// Thread i reads x[i * stride]: with a stride of 8 floats or more every lane's 4 bytes come from
// a sector of their own, so a warp moves 32 sectors for 128 useful bytes (1/8).
extern "C" __global__ void profile_strided_read_f32(const float* __restrict__ x, float* __restrict__ y, int n,
                                                    int stride) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[(size_t)i * stride];
}
EMU_EXPORT(profile_strided_read_f32)

// One 32x32 tile through shared memory, block (32, 32): rows are written, columns read. With a
// row pitch of 32 floats a column is 32 words in one bank (32-way conflict); a pitch of 33
// (`padded`) puts them in 32 different banks.
extern "C" __global__ void profile_transpose_f32(const float* __restrict__ x, float* __restrict__ y, int padded) {
    __shared__ float tile[32 * 33];
    const int pitch = padded ? 33 : 32;
    const int tx = threadIdx.x, ty = threadIdx.y;
    tile[ty * pitch + tx] = x[ty * 32 + tx];
    __syncthreads();
    y[ty * 32 + tx] = tile[tx * pitch + ty];
}
EMU_EXPORT(profile_transpose_f32)

// Lanes below 16 write `a`, the others `b`: each store is executed by half of every warp.
extern "C" __global__ void profile_divergent_f32(float* __restrict__ a, float* __restrict__ b) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if ((threadIdx.x & 31) < 16)
        a[i] = 1.0f;
    else
        b[i] = 2.0f;
}
EMU_EXPORT(profile_divergent_f32)
