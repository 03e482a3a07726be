// wmma_emu.h: the tf32 m16n16k8 and bf16 m16n16k16 shapes of CUDA's warp matrix API
// (`nvcuda::wmma`, <mma.h>) for the host emulator (docs/DESIGN.md section 2: tensor-core code in a
// form the emulator can run).
//
// On a GPU a fragment is spread over the 32 lanes of a warp in an unspecified layout; code that
// only uses the API (load, fill, mma, store, and element-wise maps over `x[0, num_elements)`)
// cannot tell. Here every lane holds the whole tile and computes the whole product redundantly.
// Each `_sync` operation ends at a warp barrier, so a lane that skips it (divergent use, a
// deadlock or undefined behaviour on a GPU) is reported by the scheduler, while a lane that reads
// shared memory another lane has not written yet still shows up as a schedule-dependent race.
//
// When profiling (EMU_PROFILE), each lane reports only the fragment elements it holds on a GPU,
// in the mma.m16n8k8 .tf32 or mma.m16n8k16 .bf16 register layout of the PTX ISA (m16n16kK is two
// n8 halves), one warp-level access per element index, so coalescing and bank conflicts are those
// of the per-element loads and stores the compiler issues; mma_sync counts 2 M N K tensor FLOPs a
// warp.
//
// The tensor core reads only the top 19 bits of a tf32 operand (sign, 8 exponent, 10 mantissa):
// mma_sync truncates them the same way, so a kernel that forgets __float_to_tf32 gets the GPU's
// (truncated) result here too, not a silently better one. bf16 operands are staged as
// __nv_bfloat16 (bf16_emu.h), so they are exact bf16 values by construction.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision

enum layout_t { mem_row_major, mem_col_major };

// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits; the result is an
// fp32 value whose low 13 bits are zero. Adding half a unit of the last kept place to the
// magnitude bits and truncating is exactly that (a carry into the exponent is the correct
// rounding up, and the largest finite values round to infinity as on the GPU).
inline float __float_to_tf32(float in) {
    uint32_t bits;
    std::memcpy(&bits, &in, 4);
    if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u;
    float out;
    std::memcpy(&out, &bits, 4);
    return out;
}

namespace emu_detail {

// The rows and columns of each operand of an m x n x k product.
template <class Use, int M, int N, int K>
struct Shape;
template <int M, int N, int K>
struct Shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};

// The fragment types emulated, K the depth of the shape they belong to, and what a load reads
// them from (`Memory`): tf32 operands from floats at k = 8, bf16 operands from __nv_bfloat16 at
// k = 16, float accumulators of either.
template <class Use, class T, int K>
struct Supported : std::false_type {};
template <class Use>
struct Supported<Use, precision::tf32, 8> : std::true_type {
    using Memory = float;
};
template <class Use>
struct Supported<Use, __nv_bfloat16, 16> : std::true_type {
    using Memory = __nv_bfloat16;
};
template <int K>
struct Supported<accumulator, float, K> : std::true_type {
    using Memory = float;
};
template <>
struct Supported<accumulator, precision::tf32, 8> : std::false_type {};
template <>
struct Supported<accumulator, __nv_bfloat16, 16> : std::false_type {};

inline float element_value(float v) { return v; }
inline float element_value(__nv_bfloat16 v) { return __bfloat162float(v); }

// What the hardware requires of every load and store: a 256-bit aligned pointer and a leading
// dimension that is a multiple of 16 bytes. On a GPU a violation is a misaligned-address fault
// or garbage; here it stops the process with the reason.
template <class P>
inline void check_matrix_address(const char* op, const P* p, unsigned ldm) {
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * sizeof(P)) % 16 != 0) {
        std::fprintf(stderr,
                     "emu wmma: %s with pointer %p (needs 32-byte alignment) and ldm %u (needs a multiple of %u)\n",
                     op, static_cast<const void*>(p), ldm, (unsigned)(16 / sizeof(P)));
        std::abort();
    }
}

// The bits of an operand the tensor core reads: the top 19 of a tf32; all of a bf16 value.
inline float mma_operand(precision::tf32, float v) { return __uint_as_float(__float_as_uint(v) & 0xffffe000u); }
inline float mma_operand(__nv_bfloat16, float v) { return v; }

inline void warp_barrier() { emu::sync_warp(0xffffffffu); }

}  // namespace emu_detail

// A whole tile per lane, row-major by logical (row, column) whatever the memory layout.
template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
    static_assert(M == 16 && N == 16 && (K == 8 || K == 16), "emu wmma: only m16n16k8 and m16n16k16 are emulated");
    static_assert(emu_detail::Supported<Use, T, K>::value,
                  "emu wmma: only tf32 (k 8) and bf16 (k 16) matrix_a/matrix_b and float accumulators are emulated");

public:
    // Loads read this from memory; every element is held as the float it stands for.
    using memory_type = typename emu_detail::Supported<Use, T, K>::Memory;
    using element_type = float;
    static constexpr int rows = emu_detail::Shape<Use, M, N, K>::rows;
    static constexpr int cols = emu_detail::Shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    static constexpr bool is_b = std::is_same<Use, matrix_b>::value;
    float x[num_elements];

    float& at(int r, int c) { return x[r * cols + c]; }
    float at(int r, int c) const { return x[r * cols + c]; }
};

template <class Use, int M, int N, int K, class T, class Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

namespace emu_detail {

#ifdef EMU_PROFILE
// The (row, column) of every element lane `lane` holds of a rows x cols fragment (PTX ISA,
// "Matrix Fragments for mma.m16n8k8" with .tf32 operands and "for mma.m16n8k16" with .bf16): the
// tf32 A 16x8 and B 8x16, the bf16 A 16x16 and B 16x16 (`is_b`, two n8 halves), or the 16x16
// accumulator of either.
template <int Rows, int Cols>
inline int lane_elements(unsigned lane, bool is_b, int rc[8][2]) {
    const int g = (int)(lane >> 2), t = (int)(lane & 3);
    int n = 0;
    auto put = [&](int r, int c) {
        rc[n][0] = r;
        rc[n][1] = c;
        ++n;
    };
    if (Rows == 16 && Cols == 8) {
        put(g, t), put(g + 8, t), put(g, t + 4), put(g + 8, t + 4);
    } else if (Rows == 8) {
        for (int h = 0; h < 2; ++h) put(t, g + 8 * h), put(t + 4, g + 8 * h);
    } else if (is_b) {
        for (int h = 0; h < 2; ++h)
            put(2 * t, g + 8 * h), put(2 * t + 1, g + 8 * h), put(2 * t + 8, g + 8 * h), put(2 * t + 9, g + 8 * h);
    } else {
        // The bf16 A (k pairs 2t, 2t + 1 then 2t + 8, 2t + 9) and the accumulator (column pairs
        // 2t, 2t + 1 of each n8 half) place their elements alike.
        for (int h = 0; h < 2; ++h)
            put(g, 8 * h + 2 * t), put(g, 8 * h + 2 * t + 1), put(g + 8, 8 * h + 2 * t), put(g + 8, 8 * h + 2 * t + 1);
    }
    return n;
}

// Reports this lane's elements of a tile at p: element e of every lane is one warp-level access.
template <int Rows, int Cols, class P>
inline void record_fragment(uintptr_t site, const P* p, unsigned ldm, bool is_b, bool row_major_memory,
                            bool store) {
    int rc[8][2];
    const int n = lane_elements<Rows, Cols>(emu::lane_id(), is_b, rc);
    for (int e = 0; e < n; ++e) {
        const int r = rc[e][0], c = rc[e][1];
        emu::profile::record(site * 8 + (uintptr_t)e, row_major_memory ? p + r * ldm + c : p + c * ldm + r,
                             sizeof(P), store);
    }
}
#define EMU_RECORD_FRAGMENT(F, p, ldm, row_major_memory, store)                                             \
    record_fragment<F::rows, F::cols>(reinterpret_cast<uintptr_t>(__builtin_return_address(0)), p, ldm, F::is_b, \
                                      row_major_memory, store)
#else
#define EMU_RECORD_FRAGMENT(F, p, ldm, row_major_memory, store) ((void)0)
#endif

template <class F, class P>
EMU_UNINSTRUMENTED inline void load_tile(F& f, const P* p, unsigned ldm, bool row_major_memory) {
    static_assert(std::is_same<P, typename F::memory_type>::value,
                  "emu wmma: a fragment loads from its own element type (float for tf32, __nv_bfloat16 for bf16)");
    check_matrix_address("load_matrix_sync", p, ldm);
    EMU_RECORD_FRAGMENT(F, p, ldm, row_major_memory, false);
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            f.at(r, c) = element_value(row_major_memory ? p[r * ldm + c] : p[c * ldm + r]);
    warp_barrier();
}

template <class F>
EMU_UNINSTRUMENTED inline void store_tile(float* p, const F& f, unsigned ldm, bool row_major_memory) {
    check_matrix_address("store_matrix_sync", p, ldm);
    EMU_RECORD_FRAGMENT(F, p, ldm, row_major_memory, true);
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c) (row_major_memory ? p[r * ldm + c] : p[c * ldm + r]) = f.at(r, c);
    warp_barrier();
}
}  // namespace emu_detail

template <class Use, int M, int N, int K, class T, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const P* p, unsigned ldm) {
    emu_detail::load_tile(f, p, ldm, true);
}
template <class Use, int M, int N, int K, class T, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, col_major>& f, const P* p, unsigned ldm) {
    emu_detail::load_tile(f, p, ldm, false);
}
template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                             layout_t layout) {
    emu_detail::load_tile(f, p, ldm, layout == mem_row_major);
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                              layout_t layout) {
    emu_detail::store_tile(p, f, ldm, layout == mem_row_major);
}

// d = a b + c with fp32 accumulation; products of two tf32 or two bf16 values are exact in fp32.
template <int M, int N, int K, class T, class LayoutA, class LayoutB>
EMU_UNINSTRUMENTED inline void mma_sync(fragment<accumulator, M, N, K, float>& d,
                     const fragment<matrix_a, M, N, K, T, LayoutA>& a,
                     const fragment<matrix_b, M, N, K, T, LayoutB>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
    fragment<accumulator, M, N, K, float> r;
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            float acc = c.at(i, j);
            for (int k = 0; k < K; ++k)
                acc = std::fma(emu_detail::mma_operand(T{}, a.at(i, k)), emu_detail::mma_operand(T{}, b.at(k, j)), acc);
            r.at(i, j) = acc;
        }
    d = r;
#ifdef EMU_PROFILE
    if (emu::lane_id() == 0) emu::profile::count_tensor_flops(2ull * M * N * K, std::is_same<T, __nv_bfloat16>::value);
#endif
    emu_detail::warp_barrier();
}

}  // namespace wmma
}  // namespace nvcuda
