// mma_operands.cuh: the two operand formats the tensor-core kernels multiply in (SPEC section 9.3,
// `--precision tf32` and `--precision bf16`), as types the tiles of conv.cu and matmul.cu are
// templated on. Both accumulate in fp32; an operand is rounded once, when it is staged into shared
// memory, and the product of two rounded operands is exact in fp32.
//   tf32: fp32's exponent and 10 mantissa bits, rounded to nearest, ties away (cvt.rna.tf32.f32);
//         staged as a float, multiplied by wmma m16n16k8.
//   bf16: fp32's exponent and 7 mantissa bits, rounded to nearest, ties to even
//         (cvt.rn.bf16.f32); staged as a 16-bit __nv_bfloat16 (half the shared memory and
//         fragment loads of tf32), multiplied by wmma m16n16k16, twice tf32's depth per mma.
// A tf32 operand is an fp32 value with its low 13 bits ignored, so it can be copied into shared
// memory as it is (cp.async, ASYNC_COPIES) and rounded in the fragment once loaded: the same
// rounding of the same values. A bf16 operand is converted on the way, which an asynchronous
// global-to-shared copy cannot do.
#pragma once

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <mma.h>  // the emulator supplies both itself (emu/bf16_emu.h, emu/wmma_emu.h)
#endif

struct Tf32Operands {
    using Stored = float;                              // an element in shared memory
    using Fragment = nvcuda::wmma::precision::tf32;    // wmma's name for the operand type
    static constexpr int MMA_K = 8;                    // the depth of one mma: m16n16k8
    static constexpr int PAD = 4;                      // leading-dimension padding: 16 bytes
    static constexpr bool ASYNC_COPIES = true;         // staged by cp.async, rounded in fragments
    // An operand as staged: rounded, unless `rounded` says it already is.
    __device__ static __forceinline__ Stored stage(float v, bool rounded) {
        return rounded ? v : nvcuda::wmma::__float_to_tf32(v);
    }
    // A float holding the rounded value (for operands rounded once in global memory).
    __device__ static __forceinline__ float round(float v) { return nvcuda::wmma::__float_to_tf32(v); }
};

struct Bf16Operands {
    using Stored = __nv_bfloat16;
    using Fragment = __nv_bfloat16;
    static constexpr int MMA_K = 16;
    static constexpr int PAD = 8;
    static constexpr bool ASYNC_COPIES = false;
    // The conversion to 16 bits is the rounding, and exact for a value already rounded.
    __device__ static __forceinline__ Stored stage(float v, bool) { return __float2bfloat16(v); }
    __device__ static __forceinline__ float round(float v) { return __bfloat162float(__float2bfloat16(v)); }
};
