// dropout.cu: inverted dropout with a counter-based mask (SPEC sections 5 and 11). Element i of a
// layer keeps its value, times 1 / (1 - p), when the uniform of the draw's element first + i is
// at least p, else becomes 0. The mask is a function of (seed, stream, step, element) alone, so
// the backward pass applies the same kernel to the gradient instead of storing the mask.
#include "common.cuh"

extern "C" __global__ void dropout_f32(const float* __restrict__ x, float* __restrict__ y, float p, float scale,
                                       uint64_t seed, uint32_t stream, uint32_t step, uint64_t first,
                                       uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const Philox4 b = philox_bits(seed, stream, step, first + i);
        y[i] = uniform_closed_open(b.v[0]) >= p ? x[i] * scale : 0.0f;
    }
}
EMU_EXPORT(dropout_f32)
