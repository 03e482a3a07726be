// pool.cu: average pooling and bilinear resizing of NCHW planes (SPEC section 9: the mean-pool
// downsampling of the residual blocks, the 5x5 pooling of chained residual pooling, the bilinear
// upsampling of multi-resolution fusion). One thread per output element (forward) or per input
// element (backward): the backward passes gather rather than scatter, so they need no atomics and
// are deterministic. Geometry: LaunchGeometry::elementwise in src/nn/pool.rs.
#include "common.cuh"

// Integer min/max under both nvcc and the emulator (which has no global min/max for int).
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// The reciprocal of the divisor of the window of output (oh, ow): kernel*kernel with
// count_include_pad (PyTorch's default, padding counting as zeros), else the number of in-bounds
// input pixels (count_include_pad=False, the FID Inception's blocks). As inv_divisor in
// src/ops/pool.rs.
__device__ __forceinline__ float pool_inv_divisor(int oh, int ow, int h_in, int w_in, int kernel, int stride,
                                                  int pad, int count_include_pad) {
    if (count_include_pad) return 1.0f / (float)(kernel * kernel);
    const int h0 = oh * stride - pad, w0 = ow * stride - pad;
    const int rows = imin(h0 + kernel, h_in) - imax(h0, 0), cols = imin(w0 + kernel, w_in) - imax(w0, 0);
    return 1.0f / (float)(rows * cols);
}

// Average pooling with a square window.
extern "C" __global__ void avg_pool2d_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                                  uint64_t planes, int h_in, int w_in, int h_out, int w_out,
                                                  int kernel, int stride, int pad, int count_include_pad) {
    const uint64_t n = planes * h_out * w_out;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int ow = (int)(i % w_out), oh = (int)((i / w_out) % h_out);
        const float* plane = x + (i / ((uint64_t)w_out * h_out)) * h_in * w_in;
        const int h0 = oh * stride - pad, w0 = ow * stride - pad;
        float acc = 0.0f;
        for (int ih = imax(h0, 0); ih < imin(h0 + kernel, h_in); ++ih)
            for (int iw = imax(w0, 0); iw < imin(w0 + kernel, w_in); ++iw) acc += plane[ih * w_in + iw];
        y[i] = acc * pool_inv_divisor(oh, ow, h_in, w_in, kernel, stride, pad, count_include_pad);
    }
}
EMU_EXPORT(avg_pool2d_forward_f32)

// The first output index whose window starting at o*stride - pad reaches input index i, and one
// past the last (clamped to [0, size_out)).
__device__ __forceinline__ int pool_first_window(int i, int kernel, int stride, int pad) {
    const int num = i + pad - kernel + 1;  // o*stride >= num
    return num <= 0 ? 0 : (num + stride - 1) / stride;
}

extern "C" __global__ void avg_pool2d_backward_f32(const float* __restrict__ dy, float* __restrict__ dx,
                                                   uint64_t planes, int h_in, int w_in, int h_out, int w_out,
                                                   int kernel, int stride, int pad, int count_include_pad) {
    const uint64_t n = planes * h_in * w_in;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int iw = (int)(i % w_in), ih = (int)((i / w_in) % h_in);
        const float* plane = dy + (i / ((uint64_t)w_in * h_in)) * h_out * w_out;
        const int oh_end = imin(h_out, (ih + pad) / stride + 1), ow_end = imin(w_out, (iw + pad) / stride + 1);
        float acc = 0.0f;
        // With one divisor for every window it is applied once, after the sum.
        for (int oh = pool_first_window(ih, kernel, stride, pad); oh < oh_end; ++oh)
            for (int ow = pool_first_window(iw, kernel, stride, pad); ow < ow_end; ++ow)
                acc += count_include_pad
                           ? plane[oh * w_out + ow]
                           : plane[oh * w_out + ow] *
                                 pool_inv_divisor(oh, ow, h_in, w_in, kernel, stride, pad, count_include_pad);
        dx[i] = count_include_pad ? acc * pool_inv_divisor(0, 0, h_in, w_in, kernel, stride, pad, 1) : acc;
    }
}
EMU_EXPORT(avg_pool2d_backward_f32)

// Max pooling with a square window: padding never wins, and a NaN in the window does (PyTorch's
// `val > maxval || isnan(val)`). Forward only (the FID Inception is never trained here).
extern "C" __global__ void max_pool2d_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                                  uint64_t planes, int h_in, int w_in, int h_out, int w_out,
                                                  int kernel, int stride, int pad) {
    const uint64_t n = planes * h_out * w_out;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int ow = (int)(i % w_out), oh = (int)((i / w_out) % h_out);
        const float* plane = x + (i / ((uint64_t)w_out * h_out)) * h_in * w_in;
        const int h0 = oh * stride - pad, w0 = ow * stride - pad;
        float best = -INFINITY;
        for (int ih = imax(h0, 0); ih < imin(h0 + kernel, h_in); ++ih)
            for (int iw = imax(w0, 0); iw < imin(w0 + kernel, w_in); ++iw) {
                const float v = plane[ih * w_in + iw];
                if (v > best || (isnan(v) && !isnan(best))) best = v;
            }
        y[i] = best;
    }
}
EMU_EXPORT(max_pool2d_forward_f32)

// Bilinear interpolation with align_corners=True (ncsn's F.interpolate in CondMSFBlock): output
// index o samples the input at o * (size_in - 1) / (size_out - 1), scale 0 when size_out is 1.
// The same float arithmetic as PyTorch's area_pixel_compute_source_index, and as the Rust
// reference in src/nn/pool.rs.
struct BilinearTap {
    int i0, i1;
    float w0, w1;
};

__device__ __forceinline__ BilinearTap bilinear_tap(int o, float scale, int size_in) {
    const float src = scale * (float)o;
    const int i0 = imin((int)src, size_in - 1);
    const int i1 = i0 + (i0 < size_in - 1 ? 1 : 0);
    const float w1 = src - (float)i0;
    return BilinearTap{i0, i1, 1.0f - w1, w1};
}

__device__ __forceinline__ float align_corners_scale(int size_in, int size_out) {
    return size_out > 1 ? (float)(size_in - 1) / (float)(size_out - 1) : 0.0f;
}

extern "C" __global__ void upsample_bilinear_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                                         uint64_t planes, int h_in, int w_in, int h_out,
                                                         int w_out) {
    const uint64_t n = planes * h_out * w_out;
    const float sh = align_corners_scale(h_in, h_out), sw = align_corners_scale(w_in, w_out);
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int ow = (int)(i % w_out), oh = (int)((i / w_out) % h_out);
        const float* plane = x + (i / ((uint64_t)w_out * h_out)) * h_in * w_in;
        const BilinearTap th = bilinear_tap(oh, sh, h_in), tw = bilinear_tap(ow, sw, w_in);
        y[i] = th.w0 * (tw.w0 * plane[th.i0 * w_in + tw.i0] + tw.w1 * plane[th.i0 * w_in + tw.i1]) +
               th.w1 * (tw.w0 * plane[th.i1 * w_in + tw.i0] + tw.w1 * plane[th.i1 * w_in + tw.i1]);
    }
}
EMU_EXPORT(upsample_bilinear_forward_f32)

// Bilinear interpolation with align_corners=False (PyTorch's default; the FID Inception's resize
// to 299x299): output index o samples the input at (o + 0.5) size_in / size_out - 0.5, clamped at
// 0 below, as area_pixel_compute_source_index; the same f32 arithmetic as half_pixel_tap in
// src/ops/pool.rs. Forward only.
__device__ __forceinline__ BilinearTap half_pixel_tap(int o, int size_in, int size_out) {
    const float scale = (float)size_in / (float)size_out;
    const float src = fmaxf(__fsub_rn(__fmul_rn(scale, (float)o + 0.5f), 0.5f), 0.0f);
    const int i0 = imin((int)src, size_in - 1);
    const int i1 = i0 + (i0 < size_in - 1 ? 1 : 0);
    const float w1 = fminf(fmaxf(src - (float)i0, 0.0f), 1.0f);
    return BilinearTap{i0, i1, 1.0f - w1, w1};
}

extern "C" __global__ void resize_bilinear_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                                       uint64_t planes, int h_in, int w_in, int h_out, int w_out) {
    const uint64_t n = planes * h_out * w_out;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int ow = (int)(i % w_out), oh = (int)((i / w_out) % h_out);
        const float* plane = x + (i / ((uint64_t)w_out * h_out)) * h_in * w_in;
        const BilinearTap th = half_pixel_tap(oh, h_in, h_out), tw = half_pixel_tap(ow, w_in, w_out);
        y[i] = th.w0 * (tw.w0 * plane[th.i0 * w_in + tw.i0] + tw.w1 * plane[th.i0 * w_in + tw.i1]) +
               th.w1 * (tw.w0 * plane[th.i1 * w_in + tw.i0] + tw.w1 * plane[th.i1 * w_in + tw.i1]);
    }
}
EMU_EXPORT(resize_bilinear_forward_f32)

// The weight output index o gives input index i along one axis (0 if it does not touch it).
__device__ __forceinline__ float bilinear_weight(BilinearTap t, int i) {
    return (t.i0 == i ? t.w0 : 0.0f) + (t.i1 == i ? t.w1 : 0.0f);
}

// The output indices that can touch input index i: src = o*scale within (i-1, i+1), widened by
// one on each side against rounding; the taps themselves decide exactly.
__device__ __forceinline__ void bilinear_source_range(int i, float scale, int size_out, int* first, int* end) {
    if (scale <= 0.0f) {
        *first = 0;
        *end = size_out;
        return;
    }
    *first = imax(0, (int)floorf((float)(i - 1) / scale) - 1);
    *end = imin(size_out, (int)ceilf((float)(i + 1) / scale) + 2);
}

extern "C" __global__ void upsample_bilinear_backward_f32(const float* __restrict__ dy, float* __restrict__ dx,
                                                          uint64_t planes, int h_in, int w_in, int h_out,
                                                          int w_out) {
    const uint64_t n = planes * h_in * w_in;
    const float sh = align_corners_scale(h_in, h_out), sw = align_corners_scale(w_in, w_out);
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int iw = (int)(i % w_in), ih = (int)((i / w_in) % h_in);
        const float* plane = dy + (i / ((uint64_t)w_in * h_in)) * h_out * w_out;
        int oh0, oh1, ow0, ow1;
        bilinear_source_range(ih, sh, h_out, &oh0, &oh1);
        bilinear_source_range(iw, sw, w_out, &ow0, &ow1);
        float acc = 0.0f;
        for (int oh = oh0; oh < oh1; ++oh) {
            const float wh = bilinear_weight(bilinear_tap(oh, sh, h_in), ih);
            if (wh == 0.0f) continue;
            float row = 0.0f;
            for (int ow = ow0; ow < ow1; ++ow)
                row += bilinear_weight(bilinear_tap(ow, sw, w_in), iw) * plane[oh * w_out + ow];
            acc += wh * row;
        }
        dx[i] = acc;
    }
}
EMU_EXPORT(upsample_bilinear_backward_f32)

// Nearest-neighbour upsampling by an integer factor (`F.interpolate(x, scale_factor=f,
// mode='nearest')`, the DDPM++ residual blocks' naive upsampling, SPEC section 11): y[oh][ow] =
// x[oh / f][ow / f].
extern "C" __global__ void upsample_nearest_forward_f32(const float* __restrict__ x, float* __restrict__ y,
                                                        uint64_t planes, int h_in, int w_in, int factor) {
    const int h_out = h_in * factor, w_out = w_in * factor;
    const uint64_t n = planes * h_out * w_out;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int ow = (int)(i % w_out), oh = (int)((i / w_out) % h_out);
        const uint64_t plane = i / ((uint64_t)w_out * h_out);
        y[i] = x[plane * h_in * w_in + (oh / factor) * w_in + ow / factor];
    }
}
EMU_EXPORT(upsample_nearest_forward_f32)

// Its gradient: each input pixel sums the factor x factor outputs it was copied to, row by row
// in the same order as the cpu reference.
extern "C" __global__ void upsample_nearest_backward_f32(const float* __restrict__ dy, float* __restrict__ dx,
                                                         uint64_t planes, int h_in, int w_in, int factor) {
    const int w_out = w_in * factor;
    const uint64_t n = planes * h_in * w_in;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int iw = (int)(i % w_in), ih = (int)((i / w_in) % h_in);
        const float* plane = dy + (i / ((uint64_t)w_in * h_in)) * h_in * factor * w_out;
        float acc = 0.0f;
        for (int a = 0; a < factor; ++a)
            for (int b = 0; b < factor; ++b) acc += plane[(ih * factor + a) * w_out + iw * factor + b];
        dx[i] = acc;
    }
}
EMU_EXPORT(upsample_nearest_backward_f32)
