// pipeline_emu.h: the asynchronous global-to-shared copies of CUDA's <cuda_pipeline.h>
// (`__pipeline_memcpy_async`, `__pipeline_commit`, `__pipeline_wait_prior`: cp.async on sm_80 and
// later) for the host emulator (docs/DESIGN.md section 2).
//
// On a GPU a copy lands in shared memory at some moment between its issue and the wait that
// covers its batch; code may rely on neither end. The emulator takes both: in the forward schedule
// a copy lands when it is issued (so one that overwrites a stage other threads still read shows),
// in the reverse schedule only when a `__pipeline_wait_prior` covers its batch (so a read before
// the wait finds the stage's old contents, or the poison of never-written dynamic shared memory).
// A kernel that passes its tests in both schedules does not depend on when its copies land.
//
// As on the GPU, the copy size is 4, 8 or 16 bytes, both addresses aligned to it (a misaligned
// copy is a fault there; here it stops the process with the reason), and `zfill` trailing bytes
// are written as zeros instead of read (all of them for a predicated-off copy, whose source is
// then not read).
#pragma once

#include <cstdio>
#include <cstdlib>

namespace emu {
// The calling thread's copy of `bytes - zfill` bytes from `src` and `zfill` zeros to `dst`, now
// or at the wait that covers it (emu_runtime.cpp); `site` names the instruction when profiling.
void async_copy(void* dst, const void* src, unsigned bytes, unsigned zfill, uintptr_t site);
// Closes the thread's current batch of copies.
void async_commit();
// Completes every batch of the thread's but the `prior` most recently committed.
void async_wait_prior(unsigned prior);
}  // namespace emu

EMU_UNINSTRUMENTED inline void __pipeline_memcpy_async(void* dst, const void* src, size_t size_and_align,
                                                       size_t zfill = 0) {
    const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
    if ((size_and_align != 4 && size_and_align != 8 && size_and_align != 16) || zfill > size_and_align ||
        d % size_and_align != 0 || s % size_and_align != 0) {
        std::fprintf(stderr,
                     "emu cp.async: %zu bytes (must be 4, 8 or 16, zfill %zu at most that) from %p to %p (both "
                     "must be aligned to the size)\n",
                     size_and_align, zfill, src, dst);
        std::abort();
    }
#ifdef EMU_PROFILE
    const uintptr_t site = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
#else
    const uintptr_t site = 0;
#endif
    emu::async_copy(dst, src, (unsigned)size_and_align, (unsigned)zfill, site);
}
EMU_UNINSTRUMENTED inline void __pipeline_commit() { emu::async_commit(); }
EMU_UNINSTRUMENTED inline void __pipeline_wait_prior(size_t prior) { emu::async_wait_prior((unsigned)prior); }
