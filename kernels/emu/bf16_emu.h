// bf16_emu.h: the bfloat16 storage type of CUDA's <cuda_bf16.h> for the host emulator, as far as
// the kernels use it: a 16-bit value staged in shared memory for the bf16 tensor-core operands
// (wmma_emu.h), made by __float2bfloat16 and read back by __bfloat162float.
//
// bfloat16 is the top half of an fp32: sign, the same 8-bit exponent, 7 mantissa bits.
// __float2bfloat16 rounds to nearest with ties to even, as cvt.rn.bf16.f32 does: the largest
// finite values round to infinity, and every NaN becomes the canonical 0x7fff, as in CUDA's own
// header.
#pragma once

#include <cstdint>

struct __nv_bfloat16 {
    unsigned short __x;
};

inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
    // Adding 0x7fff plus the lowest kept bit rounds the dropped half to nearest, ties to even (a
    // carry into the exponent is the correct rounding up, to infinity past the largest finite).
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return __nv_bfloat16{(unsigned short)(bits >> 16)};
}

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t bits = (uint32_t)h.__x << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
