// softmax.cu: fused softmax cross-entropy, forward and backward in one launch, for the
// evaluation classifier (SPEC section 10). One thread per row: rows are images, columns classes
// (10 for the datasets here), so a row fits in registers and loops are short.
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
