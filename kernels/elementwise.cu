// elementwise.cu: the tensor basics every later family needs: fill, copy, add, mul,
// scale, exp, log, ELU and SiLU with their backwards, ReLU, channel concatenation and slicing, sum
// reduction, and Philox normals.
// One thread per element with a grid-stride loop; the geometry is chosen in src/device/launch.rs.
#include "common.cuh"

extern "C" __global__ void fill_f32(float* out, float value, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = value;
}
EMU_EXPORT(fill_f32)

extern "C" __global__ void copy_f32(const float* __restrict__ x, float* __restrict__ out, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = x[i];
}
EMU_EXPORT(copy_f32)

// out = alpha * a + beta * b (add, sub and axpy in one kernel)
extern "C" __global__ void add_f32(const float* __restrict__ a, const float* __restrict__ b,
                                   float* __restrict__ out, float alpha, float beta, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = alpha * a[i] + beta * b[i];
}
EMU_EXPORT(add_f32)

extern "C" __global__ void mul_f32(const float* __restrict__ a, const float* __restrict__ b,
                                   float* __restrict__ out, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = a[i] * b[i];
}
EMU_EXPORT(mul_f32)

// out = alpha * x + beta
extern "C" __global__ void scale_f32(const float* __restrict__ x, float* __restrict__ out, float alpha,
                                     float beta, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = alpha * x[i] + beta;
}
EMU_EXPORT(scale_f32)

extern "C" __global__ void exp_f32(const float* __restrict__ x, float* __restrict__ out, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = expf(x[i]);
}
EMU_EXPORT(exp_f32)

extern "C" __global__ void log_f32(const float* __restrict__ x, float* __restrict__ out, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = logf(x[i]);
}
EMU_EXPORT(log_f32)

// ELU with alpha = 1: x for x > 0, exp(x) - 1 otherwise.
extern "C" __global__ void elu_f32(const float* __restrict__ x, float* __restrict__ out, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        out[i] = elu_of(x[i]);
    }
}
EMU_EXPORT(elu_f32)

// ReLU, NaN passing through as in PyTorch (a NaN compares false, so it is kept).
extern "C" __global__ void relu_f32(const float* __restrict__ x, float* __restrict__ out, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = x[i] < 0.0f ? 0.0f : x[i];
}
EMU_EXPORT(relu_f32)

// dx = dy * elu'(x), elu'(x) = 1 for x > 0, exp(x) otherwise.
extern "C" __global__ void elu_backward_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                            float* __restrict__ dx, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        dx[i] = dy[i] * elu_slope(x[i]);
    }
}
EMU_EXPORT(elu_backward_f32)

// sigmoid(x) and 1 - sigmoid(x), both from e = exp(-|x|) <= 1: exp never overflows, and each
// of the pair keeps its full relative precision where it is tiny (1 - sigmoid(x) is not formed
// by a subtraction that would cancel). NaN gives NaN for both. The same operations as
// `sigmoid_pair` in src/ops/elementwise.rs.
__device__ __forceinline__ void sigmoid_pair(float x, float* s, float* s_comp) {
    const float e = expf(-fabsf(x));
    const float big = 1.0f / (1.0f + e), small = e / (1.0f + e);
    *s = x >= 0.0f ? big : small;
    *s_comp = x >= 0.0f ? small : big;
}

// SiLU (swish): x sigmoid(x).
extern "C" __global__ void silu_f32(const float* __restrict__ x, float* __restrict__ out, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        float s, s_comp;
        sigmoid_pair(x[i], &s, &s_comp);
        out[i] = x[i] * s;
    }
}
EMU_EXPORT(silu_f32)

// dx = dy * silu'(x), silu'(x) = s + x s (1 - s) = s (1 + x (1 - s)) with s = sigmoid(x).
extern "C" __global__ void silu_backward_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                             float* __restrict__ dx, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        float s, s_comp;
        sigmoid_pair(x[i], &s, &s_comp);
        dx[i] = dy[i] * (s * (1.0f + x[i] * s_comp));
    }
}
EMU_EXPORT(silu_backward_f32)

// Channel concatenation, one part per launch: src [batch, c_src, hw] into the channels
// [c_offset, c_offset + c_src) of dst [batch, c_dst, hw].
extern "C" __global__ void copy_channels_f32(const float* __restrict__ src, float* __restrict__ dst, uint64_t batch,
                                             int c_src, int c_dst, int c_offset, uint64_t hw) {
    const uint64_t block = (uint64_t)c_src * hw, n = batch * block;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const uint64_t b = i / block;
        dst[(b * c_dst + c_offset) * hw + i % block] = src[i];
    }
}
EMU_EXPORT(copy_channels_f32)

// Its inverse, the gradient of a concatenation: channels [c_offset, c_offset + c_dst) of src
// [batch, c_src, hw] into dst [batch, c_dst, hw].
extern "C" __global__ void slice_channels_f32(const float* __restrict__ src, float* __restrict__ dst, uint64_t batch,
                                              int c_src, int c_dst, int c_offset, uint64_t hw) {
    const uint64_t block = (uint64_t)c_dst * hw, n = batch * block;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const uint64_t b = i / block;
        dst[i] = src[(b * c_src + c_offset) * hw + i % block];
    }
}
EMU_EXPORT(slice_channels_f32)

// First pass of a deterministic sum: block b writes the sum of its grid-stride share to
// partial[b]. A second launch with one block sums the partials. blockDim.x is a multiple of 32.
extern "C" __global__ void sum_partial_f32(const float* __restrict__ x, float* __restrict__ partial,
                                           uint64_t n) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) acc += x[i];
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
EMU_EXPORT(sum_partial_f32)

// out[i] = standard normal for (seed, stream, step, i), SPEC section 5.
extern "C" __global__ void normal_f32(float* out, uint64_t seed, uint32_t stream, uint32_t step, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) out[i] = philox_normal(seed, stream, step, i);
}
EMU_EXPORT(normal_f32)

// The raw Philox words for element i (4 per element), for the known-answer and cross-device tests.
extern "C" __global__ void philox_bits_u32(uint32_t* out, uint64_t seed, uint32_t stream, uint32_t step,
                                           uint64_t n_elements) {
    for (uint64_t i = global_index_1d(); i < n_elements; i += grid_stride_1d()) {
        Philox4 b = philox_bits(seed, stream, step, i);
        for (int w = 0; w < 4; ++w) out[4 * i + w] = b.v[w];
    }
}
EMU_EXPORT(philox_bits_u32)
