// optim.cu: the optimiser updates (SPEC section 7): AdamW, exponentiated gradient
// descent, the EMA of weights, and the pieces of global-norm gradient clipping.
// One thread per element with a grid-stride loop; the geometry is `LaunchGeometry::elementwise`.
// Every update reads its gradient times `grad_scale`, so clipping costs no extra pass.
#include "common.cuh"

// AdamW (Loshchilov & Hutter, decoupled weight decay), in the order PyTorch applies it:
//   theta <- theta * (1 - lr * weight_decay)
//   m <- beta1 m + (1 - beta1) g,  v <- beta2 v + (1 - beta2) g^2
//   theta <- theta - lr * (m / bias1) / (sqrt(v / bias2) + eps)
// bias1 = 1 - beta1^t and bias2 = 1 - beta2^t are computed on the host in double precision.
extern "C" __global__ void adamw_step_f32(float* __restrict__ param, const float* __restrict__ grad,
                                          float* __restrict__ m, float* __restrict__ v, float lr,
                                          float beta1, float beta2, float eps, float weight_decay,
                                          float bias1, float bias2, float grad_scale, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = param[i] * (1.0f - lr * weight_decay);
        param[i] = p - lr * (mi / bias1) / (sqrtf(vi / bias2) + eps);
    }
}
EMU_EXPORT(adamw_step_f32)

// Exponentiated gradient descent, SPEC section 7: theta <- theta * exp(-lr * g * sign(theta)).
// Multiplicative, so a weight never changes sign. The magnitude is kept within the normal f32
// range [FLT_MIN, FLT_MAX]: an underflow to zero would let the zero rule below flip the sign on
// the next step, and an overflow to infinity would turn into NaN. A weight that is exactly zero
// (only ever one initialised so) cannot move multiplicatively; it takes the additive step
// theta <- -lr * g instead, after which its sign is fixed for good.
#define EGD_MIN_MAGNITUDE 1.17549435e-38f
#define EGD_MAX_MAGNITUDE 3.40282347e+38f
extern "C" __global__ void egd_step_f32(float* __restrict__ param, const float* __restrict__ grad, float lr,
                                        float grad_scale, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        float p = param[i];
        float g = grad[i] * grad_scale;
        if (p == 0.0f) {
            param[i] = -lr * g;
        } else {
            float step = p > 0.0f ? -lr * g : lr * g;
            float magnitude = fminf(fmaxf(fabsf(p) * expf(step), EGD_MIN_MAGNITUDE), EGD_MAX_MAGNITUDE);
            param[i] = copysignf(magnitude, p);
        }
    }
}
EMU_EXPORT(egd_step_f32)

// Exponential moving average of the weights: ema <- decay * ema + (1 - decay) * w.
extern "C" __global__ void ema_update_f32(float* __restrict__ ema, const float* __restrict__ w, float decay,
                                          uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d())
        ema[i] = decay * ema[i] + (1.0f - decay) * w[i];
}
EMU_EXPORT(ema_update_f32)

// First pass of a deterministic sum of squares: block b writes the sum of x^2 over its
// grid-stride share to partial[offset + b], so the partials of many tensors share one buffer and
// one final `sum_partial_f32` launch. blockDim.x is a multiple of 32.
extern "C" __global__ void sum_squares_partial_f32(const float* __restrict__ x, float* __restrict__ partial,
                                                   uint64_t offset, uint64_t n) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) acc += x[i] * x[i];
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) partial[offset + blockIdx.x] = acc;
}
EMU_EXPORT(sum_squares_partial_f32)

// x <- alpha * x in place (gradient clipping when the caller wants clipped gradients stored).
extern "C" __global__ void scale_in_place_f32(float* x, float alpha, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) x[i] *= alpha;
}
EMU_EXPORT(scale_in_place_f32)
