// embedding.cu: the sinusoidal embedding of the level index that conditions DDPM++ (SPEC section
// 11): out[b] = [sin(k_b w_0) .. sin(k_b w_{h-1}) | cos(k_b w_0) .. cos(k_b w_{h-1})], h = dim / 2,
// w_j = 10000^(-j / (h - 1)), a zero column last when dim is odd. In double precision: k w reaches
// 1000 radians, where a float argument alone is off by 3e-5; the cpu reference does the same.
#include "common.cuh"

extern "C" __global__ void timestep_embedding_f32(const float* __restrict__ levels, float* __restrict__ out,
                                                  int batch, int dim) {
    const int half = dim / 2;
    const uint64_t n = (uint64_t)batch * dim;
    const double log_step = log(10000.0) / (double)(half - 1);  // the caller checks half >= 2
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int j = (int)(i % dim), b = (int)(i / dim);
        if (j >= 2 * half) {
            out[i] = 0.0f;
            continue;
        }
        const int f = j < half ? j : j - half;
        const double arg = (double)levels[b] * exp(-(double)f * log_step);
        out[i] = (float)(j < half ? sin(arg) : cos(arg));
    }
}
EMU_EXPORT(timestep_embedding_f32)
