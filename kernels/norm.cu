// norm.cu: conditional instance normalisation++ (ncsn's ConditionalInstanceNorm2dPlus, SPEC
// section 9), forward and backward. For sample n with level k = levels[n], channel c, plane x_c
// of P = H*W pixels:
//   mu_c = mean(x_c), r_c = 1/sqrt(var_c + eps) (biased variance), xhat = (x - mu_c) r_c
//   m = mean_c mu_c, s = 1/sqrt(v + eps) with v the UNBIASED variance of the mu_c over channels
//   u_c = (mu_c - m) s
//   y = gamma[k,c] (xhat + alpha[k,c] u_c) + beta[k,c]
// gamma, alpha, beta are the three column blocks of one embedding table [n_classes, 3C].
// Saved statistics `stats` [3, N*C]: mu, r, u. The forward runs one block per sample, the
// backward one per (n, c) plane; blockDim.x is a multiple of 32 (NORM_THREADS and
// NORM_SAMPLE_THREADS in src/ops/norm.rs). Reductions run in a fixed order: deterministic.
// With `elu` set, the forward writes ELU(y) and the backward takes the gradient of ELU(y): the
// network always follows these norms by an ELU, and the fusion saves a pass over the activations
// and a launch each way. The backward recomputes y from x and the statistics (it needs only the
// sign and exp of y), so nothing more is saved than for the plain norm.
#include "common.cuh"

#define NORM_EPS 1e-5f

// The level of sample n as an embedding row, or -1 when it is not an integer in [0, n_classes).
__device__ __forceinline__ int level_row(const float* levels, int n, int n_classes) {
    const float l = levels[n];
    const int k = (int)l;
    return ((float)k == l && k >= 0 && k < n_classes) ? k : -1;
}

// m and s of sample n from the channel means mu (every thread gets them).
__device__ __forceinline__ void channel_mean_stats(const float* mu, int channels, float* scratch, float* m,
                                                   float* s) {
    float acc = 0.0f;
    for (int c = threadIdx.x; c < channels; c += blockDim.x) acc += mu[c];
    *m = block_sum_all(acc, scratch) / (float)channels;
    acc = 0.0f;
    for (int c = threadIdx.x; c < channels; c += blockDim.x) {
        const float d = mu[c] - *m;
        acc += d * d;
    }
    *s = rsqrtf(block_sum_all(acc, scratch) / (float)(channels - 1) + NORM_EPS);
}

// The whole forward of sample n = blockIdx.x in one launch (it was two: the channel statistics
// m and s need every plane's mean first). Each warp reduces planes c = warp, warp + warps, ...
// to mu_c and r_c (two passes over the plane, in shared memory and saved); after one barrier the
// block forms m and s, then normalises and modulates every plane. Dynamic shared memory: 2
// `channels` floats. blockDim.x is a multiple of 32.
extern "C" __global__ void cin_pp_forward_f32(const float* __restrict__ x, const float* __restrict__ levels,
                                              const float* __restrict__ embed, float* __restrict__ stats,
                                              float* __restrict__ y, int elu, int batch, int channels,
                                              int hw, int n_classes) {
    __shared__ float scratch[32];
    EMU_DYNAMIC_SHARED(float, plane_stats);  // mu_c, then r_c
    const int n = blockIdx.x, planes = batch * channels;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (int c = warp; c < channels; c += warps) {
        const int plane = n * channels + c;
        const float* xp = x + (size_t)plane * hw;
        float acc = 0.0f;
        for (int p = lane; p < hw; p += 32) acc += xp[p];
        const float mu = warp_sum_all(acc) / (float)hw;
        acc = 0.0f;
        for (int p = lane; p < hw; p += 32) {
            const float d = xp[p] - mu;
            acc += d * d;
        }
        const float r = rsqrtf(warp_sum_all(acc) / (float)hw + NORM_EPS);
        if (lane == 0) {
            plane_stats[c] = mu;
            plane_stats[channels + c] = r;
            stats[plane] = mu;
            stats[planes + plane] = r;
        }
    }
    __syncthreads();
    float m, s;
    channel_mean_stats(plane_stats, channels, scratch, &m, &s);
    const int k = level_row(levels, n, n_classes);
    const float* e = embed + (size_t)(k < 0 ? 0 : k) * 3 * channels;
    for (int c = 0; c < channels; ++c) {
        const int plane = n * channels + c;
        const float mu = plane_stats[c], r = plane_stats[channels + c];
        const float u = (mu - m) * s;
        const float gamma = k < 0 ? NAN : e[c], alpha = e[channels + c], beta = e[2 * channels + c];
        if (threadIdx.x == 0) stats[2 * planes + plane] = u;
        const float* xp = x + (size_t)plane * hw;
        float* yp = y + (size_t)plane * hw;
        const float shift = alpha * u;
        for (int p = threadIdx.x; p < hw; p += blockDim.x) {
            const float v = gamma * ((xp[p] - mu) * r + shift) + beta;
            yp[p] = elu ? elu_of(v) : v;
        }
    }
}
EMU_EXPORT(cin_pp_forward_f32)

// Pass 1 of the backward: per plane sum(g) and sum(g xhat) into sums [2, N*C], and the
// per-sample embedding gradients into dembed_sample [N, 3C]:
//   dgamma = sum(g xhat) + alpha u sum(g), dalpha = gamma u sum(g), dbeta = sum(g).
extern "C" __global__ void cin_pp_backward_sums_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                                    const float* __restrict__ levels,
                                                    const float* __restrict__ embed,
                                                    const float* __restrict__ stats, float* __restrict__ sums,
                                                    float* __restrict__ dembed_sample, int elu, int batch,
                                                    int channels, int hw, int n_classes) {
    __shared__ float scratch[32];
    const int plane = blockIdx.x, n = plane / channels, c = plane % channels;
    const int planes = batch * channels;
    const float mu = stats[plane], r = stats[planes + plane], u = stats[2 * planes + plane];
    const int k = level_row(levels, n, n_classes);
    const float* e = embed + (size_t)(k < 0 ? 0 : k) * 3 * channels;
    const float gamma = k < 0 ? NAN : e[c], alpha = e[channels + c], beta = e[2 * channels + c];
    const float shift = alpha * u;
    const float* xp = x + (size_t)plane * hw;
    const float* gp = dy + (size_t)plane * hw;
    float sg = 0.0f, sgx = 0.0f;
    for (int p = threadIdx.x; p < hw; p += blockDim.x) {
        const float xhat = (xp[p] - mu) * r;
        const float g = elu ? gp[p] * elu_slope(gamma * (xhat + shift) + beta) : gp[p];
        sg += g;
        sgx += g * xhat;
    }
    sg = block_sum_all(sg, scratch);
    sgx = block_sum_all(sgx, scratch);
    if (threadIdx.x == 0) {
        sums[plane] = sg;
        sums[planes + plane] = sgx;
        float* d = dembed_sample + (size_t)n * 3 * channels;
        d[c] = sgx + alpha * u * sg;
        d[channels + c] = gamma * u * sg;
        d[2 * channels + c] = sg;
    }
}
EMU_EXPORT(cin_pp_backward_sums_f32)

// Pass 2 of the backward: dx. With du_c = gamma_c alpha_c sum(g_c) the gradient reaching u_c,
//   dmu_c = s (du_c - mean(du)) - s u_c sum_j(du_j u_j) / (C - 1)   (through m and the unbiased v)
//   dx = r gamma (g - sum(g)/P - xhat sum(g xhat)/P) + dmu_c / P     (instance norm, and mu_c)
extern "C" __global__ void cin_pp_backward_input_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                                     const float* __restrict__ levels,
                                                     const float* __restrict__ embed,
                                                     const float* __restrict__ stats,
                                                     const float* __restrict__ sums, float* __restrict__ dx,
                                                     int elu, int batch, int channels, int hw, int n_classes) {
    __shared__ float scratch[32];
    const int plane = blockIdx.x, n = plane / channels, c = plane % channels;
    const int planes = batch * channels;
    const int k = level_row(levels, n, n_classes);
    const float* e = embed + (size_t)(k < 0 ? 0 : k) * 3 * channels;
    const float* u_n = stats + 2 * planes + (size_t)n * channels;
    const float* sg_n = sums + (size_t)n * channels;
    float m, s;
    channel_mean_stats(stats + (size_t)n * channels, channels, scratch, &m, &s);
    float acc_du = 0.0f, acc_duu = 0.0f;
    for (int j = threadIdx.x; j < channels; j += blockDim.x) {
        const float du = e[j] * e[channels + j] * sg_n[j];
        acc_du += du;
        acc_duu += du * u_n[j];
    }
    const float mean_du = block_sum_all(acc_du, scratch) / (float)channels;
    const float sum_duu = block_sum_all(acc_duu, scratch);
    const float gamma = k < 0 ? NAN : e[c], alpha = e[channels + c], beta = e[2 * channels + c];
    const float shift = alpha * u_n[c];
    const float du_c = gamma * alpha * sg_n[c];
    const float dmu = s * (du_c - mean_du) - s * u_n[c] * sum_duu / (float)(channels - 1);
    const float mu = stats[plane], r = stats[planes + plane];
    const float inv_hw = 1.0f / (float)hw;
    const float mean_g = sg_n[c] * inv_hw, mean_gx = sums[planes + plane] * inv_hw;
    const float* xp = x + (size_t)plane * hw;
    const float* gp = dy + (size_t)plane * hw;
    float* dp = dx + (size_t)plane * hw;
    for (int p = threadIdx.x; p < hw; p += blockDim.x) {
        const float xhat = (xp[p] - mu) * r;
        const float g = elu ? gp[p] * elu_slope(gamma * (xhat + shift) + beta) : gp[p];
        dp[p] = r * gamma * (g - mean_g - xhat * mean_gx) + dmu * inv_hw;
    }
}
EMU_EXPORT(cin_pp_backward_input_f32)

// Pass 3: the embedding table gradient [n_classes, 3C], each row the sum over the samples at that
// level in sample order (a gather, so deterministic and without atomics).
extern "C" __global__ void cin_pp_embed_grad_f32(const float* __restrict__ levels,
                                                 const float* __restrict__ dembed_sample,
                                                 float* __restrict__ dembed, int batch, int n_classes,
                                                 int width) {
    const uint64_t total = (uint64_t)n_classes * width;
    for (uint64_t i = global_index_1d(); i < total; i += grid_stride_1d()) {
        const int k = (int)(i / width), j = (int)(i % width);
        float acc = 0.0f;
        for (int n = 0; n < batch; ++n)
            if (level_row(levels, n, n_classes) == k) acc += dembed_sample[(size_t)n * width + j];
        dembed[i] = acc;
    }
}
EMU_EXPORT(cin_pp_embed_grad_f32)
