// group_norm.cu: group normalisation, PyTorch's nn.GroupNorm(G, C, eps) with its affine weight and
// bias, the normalisation of the DDPM++ score network (docs/SPEC.md section 11), forward and
// backward. x is [B, C, P], P the product of the trailing dimensions; the G groups of a sample
// are its consecutive runs of C/G channels, so group (b, g) is one contiguous run of n = (C/G) P
// values:
//   mean, rstd = 1/sqrt(var + eps) over the run (biased variance), xhat = (x - mean) rstd
//   y = xhat weight[c] + bias[c]
// Saved statistics `stats` [2, B*G]: mean, rstd. The backward, with g' = dy weight[c]:
//   dx = rstd (g' - mean(g') - xhat mean(g' xhat))            (means over the group)
//   dweight[c] = sum over b, p of dy xhat,   dbias[c] = sum over b, p of dy
// Every sum runs in a fixed order (per-thread partials, then a fixed tree; the parameter
// gradients over the batch in sample order) and nothing is accumulated atomically, so the
// results are the same on every run and in both emulator schedules. blockDim.x is a multiple of
// 32 (GROUP_NORM_THREADS in src/ops/group_norm.rs); a block past the last group or plane (the
// one block launched for an empty batch) returns at once.
#include "common.cuh"

// The forward, one block per group (b, g): the mean, then the sum of squared deviations from it
// (two passes rather than sum and sum of squares, which cancel catastrophically when the mean is
// large against the spread), then y.
extern "C" __global__ void group_norm_forward_f32(const float* __restrict__ x, const float* __restrict__ weight,
                                                  const float* __restrict__ bias, float* __restrict__ stats,
                                                  float* __restrict__ y, float eps, int batch, int channels,
                                                  int groups, int hw) {
    __shared__ float scratch[32];
    const int group = blockIdx.x, n_groups = batch * groups;
    if (group >= n_groups) return;
    const int per_group = channels / groups, n = per_group * hw;
    const float* xg = x + (size_t)group * n;
    float acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += xg[i];
    const float mean = block_sum_all(acc, scratch) / (float)n;
    acc = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float d = xg[i] - mean;
        acc += d * d;
    }
    const float rstd = rsqrtf(block_sum_all(acc, scratch) / (float)n + eps);
    if (threadIdx.x == 0) {
        stats[group] = mean;
        stats[n_groups + group] = rstd;
    }
    const int first_channel = (group % groups) * per_group;
    float* yg = y + (size_t)group * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int c = first_channel + i / hw;
        yg[i] = (xg[i] - mean) * rstd * weight[c] + bias[c];
    }
}
EMU_EXPORT(group_norm_forward_f32)

// Pass 1 of the backward, one block per plane (b, c): sum(dy) and sum(dy xhat) over the plane
// into plane_sums [2, B*C]. Per plane rather than per group so that both the group sums of dx
// and the per-channel sums of dweight and dbias can be formed from them.
extern "C" __global__ void group_norm_backward_sums_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                                        const float* __restrict__ stats,
                                                        float* __restrict__ plane_sums, int batch, int channels,
                                                        int groups, int hw) {
    __shared__ float scratch[32];
    const int plane = blockIdx.x, planes = batch * channels;
    if (plane >= planes) return;
    // plane = b C + c = (b G + c / (C/G)) (C/G) + c % (C/G): its group is plane / (C/G).
    const int group = plane / (channels / groups);
    const float mean = stats[group], rstd = stats[batch * groups + group];
    const float* xp = x + (size_t)plane * hw;
    const float* gp = dy + (size_t)plane * hw;
    float sg = 0.0f, sgx = 0.0f;
    for (int p = threadIdx.x; p < hw; p += blockDim.x) {
        sg += gp[p];
        sgx += gp[p] * ((xp[p] - mean) * rstd);
    }
    sg = block_sum_all(sg, scratch);
    sgx = block_sum_all(sgx, scratch);
    if (threadIdx.x == 0) {
        plane_sums[plane] = sg;
        plane_sums[planes + plane] = sgx;
    }
}
EMU_EXPORT(group_norm_backward_sums_f32)

// Pass 2 of the backward, one block per plane: mean(g') and mean(g' xhat) over the plane's group
// from the plane sums of its channels (every plane of a group forms them in the same order, so
// they agree to the bit), then dx of the plane.
extern "C" __global__ void group_norm_backward_input_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                                         const float* __restrict__ weight,
                                                         const float* __restrict__ stats,
                                                         const float* __restrict__ plane_sums,
                                                         float* __restrict__ dx, int batch, int channels,
                                                         int groups, int hw) {
    __shared__ float scratch[32];
    const int plane = blockIdx.x, planes = batch * channels;
    if (plane >= planes) return;
    const int per_group = channels / groups, group = plane / per_group;
    float acc_g = 0.0f, acc_gx = 0.0f;
    for (int j = threadIdx.x; j < per_group; j += blockDim.x) {
        const int q = group * per_group + j;
        const float w = weight[q % channels];
        acc_g += w * plane_sums[q];
        acc_gx += w * plane_sums[planes + q];
    }
    const float inv_n = 1.0f / (float)(per_group * hw);
    const float mean_g = block_sum_all(acc_g, scratch) * inv_n;
    const float mean_gx = block_sum_all(acc_gx, scratch) * inv_n;
    const float mean = stats[group], rstd = stats[batch * groups + group];
    const float w = weight[plane % channels];
    const float* xp = x + (size_t)plane * hw;
    const float* gp = dy + (size_t)plane * hw;
    float* dp = dx + (size_t)plane * hw;
    for (int p = threadIdx.x; p < hw; p += blockDim.x) {
        const float xhat = (xp[p] - mean) * rstd;
        dp[p] = rstd * (gp[p] * w - mean_g - xhat * mean_gx);
    }
}
EMU_EXPORT(group_norm_backward_input_f32)

// Pass 3 of the backward, one thread per channel: dweight and dbias, the plane sums of the
// channel added over the batch in sample order (a gather: deterministic, no atomics).
extern "C" __global__ void group_norm_param_grad_f32(const float* __restrict__ plane_sums,
                                                     float* __restrict__ dweight, float* __restrict__ dbias,
                                                     int batch, int channels) {
    const uint64_t planes = (uint64_t)batch * channels;
    for (uint64_t c = global_index_1d(); c < (uint64_t)channels; c += grid_stride_1d()) {
        float sg = 0.0f, sgx = 0.0f;
        for (int b = 0; b < batch; ++b) {
            const uint64_t plane = (uint64_t)b * channels + c;
            sg += plane_sums[plane];
            sgx += plane_sums[planes + plane];
        }
        dbias[c] = sg;
        dweight[c] = sgx;
    }
}
EMU_EXPORT(group_norm_param_grad_f32)
