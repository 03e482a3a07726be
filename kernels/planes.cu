// planes.cu: one value per (sample, channel) plane of an NCHW tensor, broadcast over the plane or
// reduced from it, and one value per channel broadcast over the batch and the plane. DDPM++ adds its time embedding to every residual block this way
// (h + Dense(temb)[:, :, None, None], SPEC section 11); the gradient of that bias is the plane sum.
#include "common.cuh"

// y[p][i] = x[p][i] + bias[p % period] for planes p of hw elements: period B C gives one bias per
// plane (the level embedding), period C one per channel shared by the batch (a layer's bias).
extern "C" __global__ void add_plane_bias_f32(const float* __restrict__ x, const float* __restrict__ bias,
                                              float* __restrict__ y, uint64_t planes, uint64_t period,
                                              uint64_t hw) {
    const uint64_t n = planes * hw;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) y[i] = x[i] + bias[(i / hw) % period];
}
EMU_EXPORT(add_plane_bias_f32)

// sums[p] = sum of plane p of x: one block per plane (grid-stride over planes beyond the grid),
// a fixed-order block reduction, so the result is deterministic.
extern "C" __global__ void sum_planes_f32(const float* __restrict__ x, float* __restrict__ sums, uint64_t planes,
                                          uint64_t hw) {
    __shared__ float scratch[32];
    for (uint64_t p = blockIdx.x; p < planes; p += gridDim.x) {
        const float* plane = x + p * hw;
        float acc = 0.0f;
        for (uint64_t i = threadIdx.x; i < hw; i += blockDim.x) acc += plane[i];
        acc = block_reduce_sum(acc, scratch);
        if (threadIdx.x == 0) sums[p] = acc;
    }
}
EMU_EXPORT(sum_planes_f32)
