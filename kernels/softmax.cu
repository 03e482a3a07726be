// softmax.cu: fused softmax cross-entropy, forward and backward in one launch, for the
// evaluation classifier (SPEC section 10). One thread per row: rows are images, columns classes
// (10 for the datasets here), so a row fits in registers and loops are short.
// Below it, the plain softmax over the last axis and its backward pass, for attention.
#include "common.cuh"

// loss_rows[b] = -log softmax(logits[b])[label_b]; dlogits[b] = (softmax(logits[b]) - onehot) / B.
// Labels are carried as floats holding small integers.
extern "C" __global__ void softmax_xent_f32(const float* __restrict__ logits, const float* __restrict__ labels,
                                            float* __restrict__ loss_rows, float* __restrict__ dlogits, int rows,
                                            int classes) {
    int b = (int)global_index_1d();
    if (b >= rows) return;
    const float* z = logits + (size_t)b * classes;
    float m = z[0];
    for (int j = 1; j < classes; ++j) m = fmaxf(m, z[j]);
    float denom = 0.0f;
    for (int j = 0; j < classes; ++j) denom += expf(z[j] - m);
    int label = (int)labels[b];
    if (label < 0 || label >= classes) {  // never index out of bounds: poison the row instead
        loss_rows[b] = __int_as_float(0x7fc00000);
        for (int j = 0; j < classes; ++j) dlogits[(size_t)b * classes + j] = __int_as_float(0x7fc00000);
        return;
    }
    loss_rows[b] = logf(denom) + m - z[label];
    float inv_rows = 1.0f / (float)rows;
    for (int j = 0; j < classes; ++j) {
        float p = expf(z[j] - m) / denom;
        dlogits[(size_t)b * classes + j] = (p - (j == label ? 1.0f : 0.0f)) * inv_rows;
    }
}
EMU_EXPORT(softmax_xent_f32)

// ---- softmax over the last axis (src/ops/softmax.rs) ----------------------------------------
// The attention weights of the DDPM++ self-attention (docs/SPEC.md section 11 (DDPM++)): rows as
// long as the feature map has pixels (1024 at 32x32), so one warp per row, each lane striding
// over the row, and the reductions by shuffles; 8 rows per block of 256 threads. A warp whose row
// is past the end leaves as a whole, so every shuffle sees all 32 lanes.

// y = exp(x - max x) / sum exp(x - max x) per row of `len`. fmaxf skips a NaN, which then reaches
// the sum through its exp: a row with a NaN comes out all NaN, as in the cpu reference.
extern "C" __global__ void softmax_rows_f32(const float* __restrict__ x, float* __restrict__ y, int rows,
                                            int len) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xr = x + (size_t)row * len;
    float* yr = y + (size_t)row * len;
    float m = -INFINITY;
    for (int j = lane; j < len; j += 32) m = fmaxf(m, xr[j]);
    m = warp_max_all(m);
    float sum = 0.0f;
    for (int j = lane; j < len; j += 32) sum += expf(xr[j] - m);
    sum = warp_sum_all(sum);
    for (int j = lane; j < len; j += 32) yr[j] = expf(xr[j] - m) / sum;
}
EMU_EXPORT(softmax_rows_f32)

// dx = y (dy - sum(dy y)) per row of `len`: the gradient of softmax_rows_f32 from its output.
extern "C" __global__ void softmax_rows_backward_f32(const float* __restrict__ y, const float* __restrict__ dy,
                                                     float* __restrict__ dx, int rows, int len) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const size_t base = (size_t)row * len;
    float dot = 0.0f;
    for (int j = lane; j < len; j += 32) dot = fmaf(dy[base + j], y[base + j], dot);
    dot = warp_sum_all(dot);
    for (int j = lane; j < len; j += 32) dx[base + j] = y[base + j] * (dy[base + j] - dot);
}
EMU_EXPORT(softmax_rows_backward_f32)
