// async_copy.cuh: the asynchronous global-to-shared copy (cp.async, sm_80 and later) that the
// pipelined tensor-core tiles stage their operands with, predicated by a zero-fill size.
//
// <cuda_pipeline.h>'s __pipeline_memcpy_async takes its zero fill as a size, which nvcc compiles
// into two predicated copies (one reading, one zero-filling) that both take an issue slot; PTX's
// cp.async takes the source size from a register, one instruction either way. The emulator runs
// the same copy through its __pipeline_memcpy_async (emu/pipeline_emu.h); batches are committed
// and waited for with <cuda_pipeline.h>'s __pipeline_commit and __pipeline_wait_prior.
#pragma once

#ifdef __CUDACC__
#include <cuda_pipeline.h>
#endif

// Copies BYTES (4 or 16) from global `src` to shared `dst` when `read`, else writes BYTES zeros
// to `dst` without reading `src` (which must still be a valid address). Both aligned to BYTES.
template <int BYTES>
__device__ __forceinline__ void async_copy(void* dst, const void* src, bool read) {
    static_assert(BYTES == 4 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes; the tiles use 4 and 16");
#ifdef __CUDACC__
    const unsigned shared_dst = (unsigned)__cvta_generic_to_shared(dst);
    const int src_bytes = read ? BYTES : 0;
    // 16 bytes bypass L1 (.cg: the operands are read once per block); 4 must go through it (.ca).
    if constexpr (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_dst), "l"(src), "r"(src_bytes)
                     : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_dst), "l"(src), "r"(src_bytes)
                     : "memory");
#else
    __pipeline_memcpy_async(dst, src, BYTES, read ? 0 : BYTES);
#endif
}
