// loss.cu: the fused denoising score-matching losses (SPEC sections 3 and 8). One launch computes,
// per element, the loss term and the gradient w.r.t. the network output; each block writes the sum
// of its grid-stride share to partial[blockIdx.x]; a second, one-block pass (sum_partial_f32)
// adds the partials in a fixed order, so the loss is deterministic. The geometry (a fixed number
// of blocks for a given n) is chosen in src/ops/launch.rs.
#include "common.cuh"

// M-DSM (SPEC 3). Element i belongs to sample b = i / per_sample, noised at level k_b with
// s_b = s_{k_b}; t_b is the s of the level the loss is taken at: s_b itself for the exact target,
// s_{k_b + 1} for the released code's offset (SPEC 3.1).
//   target = -(1 + z / s_b)               (t_b == s_b)
//          = -(1 + z s_b / t_b^2)         (otherwise)
//   h      = out             (stein == 0: the network outputs h)
//          = x_k * out       (stein == 1: the network outputs the Stein score)
//   loss  += w_b / 2 * (h - target)^2 * inv_batch,  w_b = t_b^weight_power (0, 2 or 4)
//   grad   = w_b * (h - target) * inv_batch * (stein ? x_k : 1)
extern "C" __global__ void mdsm_loss_f32(const float* __restrict__ out, const float* __restrict__ xk,
                                         const float* __restrict__ z, const float* __restrict__ s_level,
                                         const float* __restrict__ t_level, float* __restrict__ grad,
                                         float* __restrict__ partial, int weight_power, int stein,
                                         float inv_batch, uint64_t per_sample, uint64_t n) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const float s = s_level[i / per_sample];
        const float t = t_level[i / per_sample];
        const float t2 = t * t;
        const float w = weight_power == 4 ? t2 * t2 : weight_power == 2 ? t2 : 1.0f;
        const float target = t == s ? -(1.0f + z[i] / s) : -(1.0f + z[i] * s / t2);
        const float h = stein ? xk[i] * out[i] : out[i];
        const float r = h - target;
        acc += 0.5f * w * r * r;
        const float g = w * r * inv_batch;
        grad[i] = stein ? g * xk[i] : g;
    }
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc * inv_batch;
}
EMU_EXPORT(mdsm_loss_f32)

// Additive DSM (SPEC 8): loss += sigma_b^2 / 2 * (s + z / sigma_b)^2 * inv_batch,
// grad = sigma_b^2 * (s + z / sigma_b) * inv_batch.
extern "C" __global__ void dsm_loss_f32(const float* __restrict__ out, const float* __restrict__ z,
                                        const float* __restrict__ sigma_level, float* __restrict__ grad,
                                        float* __restrict__ partial, float inv_batch, uint64_t per_sample,
                                        uint64_t n) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const float sigma = sigma_level[i / per_sample];
        const float r = out[i] + z[i] / sigma;
        acc += 0.5f * sigma * sigma * r * r;
        grad[i] = sigma * sigma * r * inv_batch;
    }
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc * inv_batch;
}
EMU_EXPORT(dsm_loss_f32)
