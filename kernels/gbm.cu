// gbm.cu: the GBM diffusion's element-wise kernels (SPEC sections 2, 4, 6, 8): closed-form forward
// noising (multiplicative and additive), the fused sampler steps (Dale-Langevin in log space,
// sign-agnostic in ambient space, additive annealed Langevin). Every step draws its normal in
// registers from Philox (SPEC section 5) and updates x in place. One thread per element with a
// grid-stride loop; the geometry is chosen in src/ops/launch.rs.
#include "common.cuh"

// x_k = x_0 * exp(m[b] + s[b] * z), z = N(seed, stream, step, i), b = i / per_sample (SPEC 2).
// Also writes z, which the M-DSM loss needs.
extern "C" __global__ void gbm_forward_f32(const float* __restrict__ x0, const float* __restrict__ m,
                                           const float* __restrict__ s, float* __restrict__ xk,
                                           float* __restrict__ z_out, uint64_t seed, uint32_t stream,
                                           uint32_t step, uint64_t per_sample, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const uint64_t b = i / per_sample;
        const float z = philox_normal(seed, stream, step, i);
        xk[i] = x0[i] * expf(m[b] + s[b] * z);
        z_out[i] = z;
    }
}
EMU_EXPORT(gbm_forward_f32)

// The additive baseline's noising x + sigma[b] * z (SPEC section 8).
extern "C" __global__ void additive_forward_f32(const float* __restrict__ x0, const float* __restrict__ sigma,
                                                float* __restrict__ xn, float* __restrict__ z_out, uint64_t seed,
                                                uint32_t stream, uint32_t step, uint64_t per_sample, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const float z = philox_normal(seed, stream, step, i);
        xn[i] = x0[i] + sigma[i / per_sample] * z;
        z_out[i] = z;
    }
}
EMU_EXPORT(additive_forward_f32)

// The step's normal; none is drawn when the noise is switched off (kappa = 0).
__device__ __forceinline__ float step_noise(float noise_coef, uint64_t seed, uint32_t stream, uint32_t step,
                                            uint64_t i) {
    return noise_coef != 0.0f ? noise_coef * philox_normal(seed, stream, step, i) : 0.0f;
}

// The fused steps read their coefficients and Philox step from memory, `scalars` = [coefs..,
// noise_coef, step bits] (ops::StepScalars), not from arguments: a step captured once in a CUDA
// graph then replays with each step's own values, written there before each replay. The seed and
// stream, fixed for a run, stay arguments. Every thread reads the same few words (one broadcast
// load each).
__device__ __forceinline__ uint32_t step_index(const float* scalars, int at) { return __float_as_uint(scalars[at]); }

// Log-space step x <- x * exp(drift + score_coef * h + noise_coef * z): the Dale-Langevin step
// (SPEC 4; drift = -delta_s*(mu_k - 3 sigma_k^2/2), score_coef = delta_s sigma_k^2,
// noise_coef = kappa sigma_k sqrt(delta_s)) and the mirrored Langevin step (SPEC 6). The factor
// is positive, so no sign ever changes. scalars = [drift, score_coef, noise_coef, step].
extern "C" __global__ void gbm_dale_step_f32(float* __restrict__ x, const float* __restrict__ h,
                                             const float* __restrict__ scalars, uint64_t seed, uint32_t stream,
                                             uint64_t n) {
    const float drift = scalars[0], score_coef = scalars[1], noise_coef = scalars[2];
    const uint32_t step = step_index(scalars, 3);
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const float noise = step_noise(noise_coef, seed, stream, step, i);
        x[i] *= expf(drift + score_coef * h[i] + noise);
    }
}
EMU_EXPORT(gbm_dale_step_f32)

// Ambient step x <- x * (1 + drift + score_coef * h + noise_coef * z) (SPEC 4, sign-agnostic;
// drift = -delta_s*(mu_k - 2 sigma_k^2)); scalars = [drift, score_coef, noise_coef, step].
// Entries that were non-zero and changed sign or hit zero are counted: a per-block sum (exact:
// counts below 2^24 per block) then one atomic add per block into *flip_count.
extern "C" __global__ void gbm_sign_agnostic_step_f32(float* __restrict__ x, const float* __restrict__ h,
                                                      uint32_t* __restrict__ flip_count,
                                                      const float* __restrict__ scalars, uint64_t seed,
                                                      uint32_t stream, uint64_t n) {
    __shared__ float scratch[32];
    const float drift = scalars[0], score_coef = scalars[1], noise_coef = scalars[2];
    const uint32_t step = step_index(scalars, 3);
    float flips = 0.0f;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const float noise = step_noise(noise_coef, seed, stream, step, i);
        const float old = x[i];
        const float updated = old * (1.0f + drift + score_coef * h[i] + noise);
        x[i] = updated;
        const bool changed = old != 0.0f && (updated == 0.0f || (updated < 0.0f) != (old < 0.0f));
        flips += changed ? 1.0f : 0.0f;
    }
    flips = block_reduce_sum(flips, scratch);
    if (threadIdx.x == 0 && flips > 0.0f) atomicAdd(flip_count, (uint32_t)flips);
}
EMU_EXPORT(gbm_sign_agnostic_step_f32)

// Annealed Langevin step of the additive baseline x <- x + alpha/2 * s + sqrt(alpha) z (SPEC 8);
// scalars = [half_alpha, noise_coef, step].
extern "C" __global__ void additive_langevin_step_f32(float* __restrict__ x, const float* __restrict__ score,
                                                      const float* __restrict__ scalars, uint64_t seed,
                                                      uint32_t stream, uint64_t n) {
    const float half_alpha = scalars[0], noise_coef = scalars[1];
    const uint32_t step = step_index(scalars, 2);
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        x[i] += half_alpha * score[i] + step_noise(noise_coef, seed, stream, step, i);
    }
}
EMU_EXPORT(additive_langevin_step_f32)
