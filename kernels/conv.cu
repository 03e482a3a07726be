// conv.cu: 2-D convolution, NCHW, stride, zero padding per axis, dilation (SPEC section 9: the
// 3x3 convolutions of dilation 1, 2, 4 and the 1x1 shortcuts of the NCSN network, and the
// stride-2, 1x7 and 7x1 convolutions of an InceptionV3).
//
// All three passes are one tiled implicit GEMM, C[m][n] = sum_k A(m, k) B(k, n), whose operands
// are gathered on the fly from the tensors (no im2col buffer):
//   forward          y[b,co,p]  : M = C_out, N = batch*H_out*W_out, K = C_in*KH*KW
//   backward data    dx[b,ci,p] : M = C_in,  N = batch*H_in*W_in,   K = C_out*KH*KW
//   backward weight  dw[co,j]   : M = C_out, N = C_in*KH*KW,        K = batch*H_out*W_out (split-K)
// A block of 16x16 threads computes a 64x64 tile of C, each thread a 4x4 sub-tile; K advances in
// slices of 16 staged through shared memory, each slice's global loads issued into registers
// before the previous slice's arithmetic (register double buffering), and the gathers divide by
// the launch's fixed sizes with a multiply and a shift (FastDivmod). Launch geometry:
// conv_geometry in src/ops/conv.rs.
// Each pass also has tensor-core forms in tf32 and bf16 operands (conv2d_forward_tf32_f32,
// conv2d_forward_bf16_f32, ...; tf32 is cuda's default precision, SPEC section 9.3) on the same
// tiles and launch geometry, and a channel-slice form of them where the channels allow (K or N
// ordered tap-major, so that a slice's gather is an add per element; "channel slices" below).
#include <type_traits>

#include "common.cuh"
#include "async_copy.cuh"
#include "mma_operands.cuh"

// Integer min/max under both nvcc and the emulator (which has no global min/max for int).
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// Division by a divisor fixed for the whole launch (a tap count, a row width, a plane size)
// without the integer division sequence (about 20 instructions, with a reciprocal) that the
// gathers below would otherwise run for every element they stage: q = umulhi(n, mul) >> shift
// with mul = ceil(2^(31 + l) / d), l = ceil(log2 d), exact for 0 <= n < 2^31 (Granlund and
// Montgomery's round-up method). Built once per thread; every index divided here is
// non-negative and below 2^31.
struct FastDivmod {
    int d;
    unsigned mul, shift;
    __device__ explicit FastDivmod(int divisor) : d(divisor), mul(0), shift(0) {
        if (divisor > 1) {
            unsigned l = 0;
            while ((1u << l) < (unsigned)divisor) ++l;
            mul = (unsigned)(((1ull << (31 + l)) + (unsigned)divisor - 1) / (unsigned)divisor);
            shift = l - 1;
        }
    }
    __device__ __forceinline__ int div(int n) const {
        return d == 1 ? n : (int)(__umulhi((unsigned)n, mul) >> shift);
    }
    // n = q d + r: q returned, r through `rem`.
    __device__ __forceinline__ int divmod(int n, int& rem) const {
        const int q = div(n);
        rem = n - q * d;
        return q;
    }
};

#define CONV_TILE_M 64
#define CONV_TILE_N 64
#define CONV_TILE_K 16
#define CONV_THREADS 256
// Each thread stages this many elements of each operand per K slice.
#define CONV_LOADS ((CONV_TILE_M * CONV_TILE_K) / CONV_THREADS)

// Which element of a K slice's operand tile staging load `l` of thread `tid` reads: (row, kk) of
// A (row = m) or (kk, column) of B (column = n), element tid + l * CONV_THREADS of the tile.
// `K_FAST`: consecutive threads step along k (the tensor's contiguous direction), so global loads
// coalesce. `TILE_K` is the slice's depth. Written so that the part fixed by the thread (kk along
// k, or the row or column across it) is visibly the same for every l: the gathers' index
// arithmetic for it is then done once, not once per load. `WIDTH`: the tile's extent across k.
template <bool K_FAST, int TILE_K, int WIDTH = CONV_TILE_M>
__device__ __forceinline__ void conv_stage_slot(int tid, int l, int& outer, int& kk) {
    static_assert(CONV_THREADS % TILE_K == 0 && CONV_THREADS % WIDTH == 0, "whole rows per pass");
    outer = K_FAST ? tid / TILE_K + l * (CONV_THREADS / TILE_K) : tid % WIDTH;
    kk = K_FAST ? tid % TILE_K : tid / WIDTH + l * (CONV_THREADS / WIDTH);
}

// The loader conv_fetch_slice reads the K slice starting at k0 through: the loader itself, unless
// the loader has a form for one slice that costs less per element (an overload for its type, such
// as TapMajorColumn's below).
template <class Load>
__device__ __forceinline__ const Load& conv_slice_loader(const Load& load, int) {
    return load;
}

// Reads this thread's share of the K slice starting at k0 into registers: LOADS_A elements of A
// (TILE_M rows) and LOADS_B of B (B_WIDTH columns), zero for rows m >= M, columns n >= N and
// k >= k_end. Issued before the previous slice's arithmetic, so the loads are in flight while it
// runs (register double buffering). Every load is made, at clamped indices, and the out-of-range
// ones zeroed after: without a branch around each load, the index arithmetic shared by a thread's
// loads (the column n of B, the same for every l) is computed once. `WHOLE_SLICES`: the caller
// guarantees that k_end - k0 is a multiple of TILE_K (the channel-slice kernels), so k needs no
// clamp or test: fewer live registers. The loads are conv_fetch_a's and conv_fetch_b's, which a
// slice loader may overload (TapMajorSlice's and the backward weight's channel slices below).
template <bool B_K_FAST, int TILE_K, int LOADS_B, int B_WIDTH, bool WHOLE_SLICES, class SliceB>
__device__ __forceinline__ void conv_fetch_b(const SliceB& slice_b, int N, int k_end, int n0, int k0,
                                             float rb[LOADS_B]) {
#pragma unroll
    for (int l = 0; l < LOADS_B; ++l) {
        int nn, kk;
        conv_stage_slot<B_K_FAST, TILE_K, B_WIDTH>(threadIdx.x, l, nn, kk);
        const int n = n0 + nn, k = k0 + kk;
        const float v = slice_b(WHOLE_SLICES ? k : imin(k, k_end - 1), imin(n, N - 1));
        rb[l] = (n < N && (WHOLE_SLICES || k < k_end)) ? v : 0.0f;
    }
}

template <bool A_K_FAST, int TILE_K, int LOADS_A, bool WHOLE_SLICES, class SliceA>
__device__ __forceinline__ void conv_fetch_a(const SliceA& slice_a, int M, int k_end, int m0, int k0,
                                             float ra[LOADS_A]) {
#pragma unroll
    for (int l = 0; l < LOADS_A; ++l) {
        int mm, kk;
        conv_stage_slot<A_K_FAST, TILE_K>(threadIdx.x, l, mm, kk);
        const int m = m0 + mm, k = k0 + kk;
        const float v = slice_a(imin(m, M - 1), WHOLE_SLICES ? k : imin(k, k_end - 1));
        ra[l] = (m < M && (WHOLE_SLICES || k < k_end)) ? v : 0.0f;
    }
}

template <bool A_K_FAST, bool B_K_FAST, int TILE_K, int LOADS_A, int LOADS_B, int B_WIDTH, bool WHOLE_SLICES,
          class LoadA, class LoadB>
__device__ __forceinline__ void conv_fetch_slice(const LoadA& load_a, const LoadB& load_b, int M, int N, int k_end,
                                                 int m0, int n0, int k0, float ra[LOADS_A], float rb[LOADS_B]) {
    // Unrolled loops, so ra and rb stay in registers.
    conv_fetch_a<A_K_FAST, TILE_K, LOADS_A, WHOLE_SLICES>(conv_slice_loader(load_a, k0), M, k_end, m0, k0, ra);
    conv_fetch_b<B_K_FAST, TILE_K, LOADS_B, B_WIDTH, WHOLE_SLICES>(conv_slice_loader(load_b, k0), N, k_end, n0, k0,
                                                                    rb);
}

// Accumulates the block's tile of C over k in [k_begin, k_end). Rows m >= M, columns n >= N and
// k beyond the range read as zero. `A_K_FAST`/`B_K_FAST` say along which index consecutive
// threads load (the tensor's contiguous direction), so global loads coalesce.
template <bool A_K_FAST, bool B_K_FAST, class LoadA, class LoadB>
__device__ __forceinline__ void conv_gemm_tile(const LoadA& load_a, const LoadB& load_b, int M, int N,
                                               int k_begin, int k_end, int m0, int n0,
                                               float acc[4][4]) {
    // +1 column: the k-fast stores hit distinct banks.
    __shared__ float a_tile[CONV_TILE_K][CONV_TILE_M + 1];
    __shared__ float b_tile[CONV_TILE_K][CONV_TILE_N + 1];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    float ra[CONV_LOADS], rb[CONV_LOADS];
    const auto fetch = [&](int k0) {
        conv_fetch_slice<A_K_FAST, B_K_FAST, CONV_TILE_K, CONV_LOADS, CONV_LOADS, CONV_TILE_N, false>(
            load_a, load_b, M, N, k_end, m0, n0, k0, ra, rb);
    };
    fetch(k_begin);
    for (int k0 = k_begin; k0 < k_end; k0 += CONV_TILE_K) {
#pragma unroll
        for (int l = 0; l < CONV_LOADS; ++l) {
            int mm, nn, kk;
            conv_stage_slot<A_K_FAST, CONV_TILE_K>(tid, l, mm, kk);
            a_tile[kk][mm] = ra[l];
            conv_stage_slot<B_K_FAST, CONV_TILE_K>(tid, l, nn, kk);
            b_tile[kk][nn] = rb[l];
        }
        __syncthreads();
        if (k0 + CONV_TILE_K < k_end) fetch(k0 + CONV_TILE_K);
        for (int kk = 0; kk < CONV_TILE_K; ++kk) {
            float a[4], b[4];
            for (int i = 0; i < 4; ++i) a[i] = a_tile[kk][ty + 16 * i];
            for (int j = 0; j < 4; ++j) b[j] = b_tile[kk][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        DML_COUNT_FLOPS(2 * 16 * CONV_TILE_K);  // 4x4 FMAs per kk
        __syncthreads();
    }
}

// Where element (m, n) of a GEMM result whose rows are channels and whose columns are
// (batch, pixel) pairs lives in an NCHW tensor of `channels` planes of `hw` pixels: the output
// layout of the forward and backward-data passes.
__device__ __forceinline__ size_t nchw_index(int m, int n, int channels, const FastDivmod& hw) {
    int p;
    const int b = hw.divmod(n, p);
    return ((size_t)b * channels + m) * hw.d + p;
}

// The shape of one convolution: x [batch, c_in, h_in, w_in], w [c_out, c_in, kh, kw],
// y [batch, c_out, h_out, w_out] with h_out = (h_in + 2 pad_h - dil (kh - 1) - 1) / stride + 1
// (and w_out likewise with pad_w): output pixel oh reads input row oh stride - pad_h + ki dil.
struct ConvDims {
    int batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil;
};

// B(k, n) of the forward pass: x at the input pixel that filter tap k of input channel ci sees
// from output pixel n (zero in the padding).
struct ForwardInput {
    const float* x;
    ConvDims d;
    FastDivmod taps, kw, hw, w_out;
    __device__ ForwardInput(const float* x, const ConvDims& d)
        : x(x), d(d), taps(d.kh * d.kw), kw(d.kw), hw(d.h_out * d.w_out), w_out(d.w_out) {}
    __device__ float operator()(int k, int n) const {
        int t, p, ow, tw;
        const int ci = taps.divmod(k, t);
        const int b = hw.divmod(n, p);
        const int oh = w_out.divmod(p, ow);
        const int th = kw.divmod(t, tw);
        const int ih = oh * d.stride - d.pad_h + th * d.dil;
        const int iw = ow * d.stride - d.pad_w + tw * d.dil;
        if (ih < 0 || ih >= d.h_in || iw < 0 || iw >= d.w_in) return 0.0f;
        return x[(((size_t)b * d.c_in + ci) * d.h_in + ih) * d.w_in + iw];
    }
};

// A(m, k) of the forward pass: the weights as a [c_out, c_in*kh*kw] matrix.
struct RowMajor {
    const float* a;
    int cols;
    __device__ float operator()(int m, int k) const { return a[(size_t)m * cols + k]; }
};

// RowMajor with a 32-bit offset, for a matrix known to be under 2^31 elements (the weights:
// ConvDims::new): the compiler can then step from one row to the next with one add.
struct RowMajor32 {
    const float* a;
    int cols;
    __device__ float operator()(int m, int k) const { return a[m * cols + k]; }
};

// The forward's output element (m, n) of every form: the sum v, plus the bias and the residual
// when given, added in the order the separate ops would add them, (v + bias) + residual, so that
// a convolution fused with the addition that follows it (ops::conv2d_add) is bit for bit the two
// ops in sequence.
struct ForwardOutput {
    float* y;
    const float* bias;
    const float* residual;
    int has_bias, has_residual, c_out;
    FastDivmod hw;
    __device__ void operator()(int m, int n, float v) const {
        const size_t i = nchw_index(m, n, c_out, hw);
        float out = v + (has_bias ? bias[m] : 0.0f);
        if (has_residual) out += residual[i];
        y[i] = out;
    }
};

extern "C" __global__ void conv2d_forward_f32(const float* __restrict__ x, const float* __restrict__ w,
                                              const float* __restrict__ bias, float* __restrict__ y,
                                              const float* __restrict__ residual, int has_bias, int has_residual,
                                              int batch, int c_in, int h_in, int w_in, int c_out, int h_out,
                                              int w_out, int kh, int kw, int stride, int pad_h, int pad_w, int dil) {
    const ConvDims d{batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil};
    const int M = c_out, N = batch * h_out * w_out, K = c_in * kh * kw;
    const int m0 = blockIdx.y * CONV_TILE_M, n0 = blockIdx.x * CONV_TILE_N;
    float acc[4][4];
    conv_gemm_tile<true, false>(RowMajor{w, K}, ForwardInput{x, d}, M, N, 0, K, m0, n0, acc);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const ForwardOutput out{y, bias, residual, has_bias, has_residual, c_out, FastDivmod(h_out * w_out)};
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n < N) out(m, n, acc[i][j]);
        }
    }
}
EMU_EXPORT(conv2d_forward_f32)

// ---- tensor cores (wmma: tf32 m16n16k8, bf16 m16n16k16) ---------------------------------------
// The same implicit GEMM as conv2d_forward_f32 with both operands rounded to tf32 or bf16
// (mma_operands.cuh) while they are staged, and fp32 accumulation. A block's tile is 64 rows by
// TILE_N columns (64, or 128 for the channel-slice forms below); its 8 warps each take a 16 x 32
// slab (TILE_N 64: 4 rows x 2 columns of warps) or a 32 x 32 one (TILE_N 128: 2 x 4), two or four
// accumulator fragments: the wider warp tile loads one operand fragment per mma instead of one
// and a half. K advances in slices of 32: four mma steps of 8 in tf32, two of 16 in bf16.
#define CONV_MMA_TILE_K 32
// A is staged k-fast (the weights' and dy's contiguous direction); B n-fast (the gathered
// activations' contiguous direction) unless a tile's configuration says k-fast (below).
constexpr bool CONV_MMA_A_K_FAST = true;
// At least two blocks of 8 warps per multiprocessor: the slice fetched ahead into registers took
// the tf32 kernels to 116-130 registers (one block per SM on sm_90) without a bound.
#define CONV_MMA_MIN_BLOCKS 2
#define CONV_MMA_A_LOADS ((CONV_TILE_M * CONV_MMA_TILE_K) / CONV_THREADS)

// A tensor-core tile's configuration, fixed by its kernel: the operand format Ops (Tf32Operands
// or Bf16Operands); TILE_N columns; B staged k-fast (B_K_FAST, then held transposed in shared
// memory, B^T[n][k], and read as a column-major operand, so that consecutive threads store to
// consecutive banks) or n-fast; WHOLE_SLICES: k_end - k_begin is a multiple of the slice
// (conv_fetch_slice); A_ROUNDED: A's elements are already rounded to Ops' format.
template <class Ops_, int TILE_N_, bool B_K_FAST_ = false, bool WHOLE_SLICES_ = false, bool A_ROUNDED_ = false>
struct ConvMmaTile {
    using Ops = Ops_;
    using Stored = typename Ops::Stored;
    static constexpr int TILE_N = TILE_N_;
    static constexpr bool B_K_FAST = B_K_FAST_, WHOLE_SLICES = WHOLE_SLICES_, A_ROUNDED = A_ROUNDED_;
    // Staged by cp.async (conv_mma_tile_pipelined) where that costs fewer instructions than
    // staging through registers: operands copied as they are (tf32) and only B's fragments to
    // round after loading (A rounded in memory). Rounding A's fragments too, the backward weight's
    // channel slices would take 443 SASS instructions a slice on sm_90 against 388 staged.
    static constexpr bool PIPELINED = Ops::ASYNC_COPIES && A_ROUNDED;
    // Leading dimensions: multiples of 16 bytes (wmma's rule), padded off the bank stride.
    static constexpr int A_LD = CONV_MMA_TILE_K + Ops::PAD;
    // B in shared memory: [TILE_K][B_LD] row-major, or transposed [TILE_N][B_LD] when k-fast.
    static constexpr int B_ROWS = B_K_FAST ? TILE_N : CONV_MMA_TILE_K;
    static constexpr int B_LD = B_K_FAST ? CONV_MMA_TILE_K + Ops::PAD : TILE_N + 2 * Ops::PAD, C_LD = TILE_N + 8;
    static constexpr int B_LOADS = (TILE_N * CONV_MMA_TILE_K) / CONV_THREADS;
    static constexpr int FRAGS_M = TILE_N / 64, FRAGS_N = 2;  // accumulator fragments per warp
    static constexpr int WARPS_N = TILE_N / (16 * FRAGS_N);
    static_assert(WARPS_N * (CONV_THREADS / 32 / WARPS_N) == CONV_THREADS / 32, "whole warp rows");
    static_assert((CONV_THREADS / 32 / WARPS_N) * 16 * FRAGS_M == CONV_TILE_M, "warps cover the rows");
    using BLayout = typename std::conditional<B_K_FAST, nvcuda::wmma::col_major, nvcuda::wmma::row_major>::type;
    // Where B(k, n) of the slice lives in shared memory.
    __device__ static Stored& b_at(Stored (&b)[B_ROWS][B_LD], int k, int n) { return B_K_FAST ? b[n][k] : b[k][n]; }
    __device__ static const Stored& b_at(const Stored (&b)[B_ROWS][B_LD], int k, int n) {
        return B_K_FAST ? b[n][k] : b[k][n];
    }
};

// One K slice of both operands in shared memory.
template <class Tile>
struct ConvMmaOperands {
    typename Tile::Stored a[CONV_TILE_M][Tile::A_LD];  // A(m, k), row-major
    typename Tile::Stored b[Tile::B_ROWS][Tile::B_LD];  // B(k, n) (Tile::b_at)
};

// The result tile, row-major, for the epilogue.
template <class Tile>
using ConvMmaResult = float[CONV_TILE_M][Tile::C_LD];

// The operand tiles during the K loop, then the result tile for the epilogue. 32-byte aligned and
// every fragment's first element 32 bytes from the last, as load/store_matrix_sync require.
template <class Tile_>
union alignas(32) ConvMmaShared {
    using Tile = Tile_;
    ConvMmaOperands<Tile> in;
    ConvMmaResult<Tile> c;
};

// Stages a K slice fetched into registers by conv_fetch_slice, rounded to the tile's operand
// format (A as it is when Tile::A_ROUNDED: already rounded in memory, conv2d_weight_tap_major_*).
template <class Tile>
__device__ __forceinline__ void conv_mma_stage(ConvMmaShared<Tile>& s, const float ra[CONV_MMA_A_LOADS],
                                               const float rb[Tile::B_LOADS]) {
#pragma unroll
    for (int l = 0; l < CONV_MMA_A_LOADS; ++l) {
        int mm, kk;
        conv_stage_slot<CONV_MMA_A_K_FAST, CONV_MMA_TILE_K>(threadIdx.x, l, mm, kk);
        s.in.a[mm][kk] = Tile::Ops::stage(ra[l], Tile::A_ROUNDED);
    }
#pragma unroll
    for (int l = 0; l < Tile::B_LOADS; ++l) {
        int nn, kk;
        conv_stage_slot<Tile::B_K_FAST, CONV_MMA_TILE_K, Tile::TILE_N>(threadIdx.x, l, nn, kk);
        Tile::b_at(s.in.b, kk, nn) = Tile::Ops::stage(rb[l], false);
    }
}

// One warp's part of a block's tensor-core tile: its FRAGS_M x FRAGS_N accumulator fragments,
// whose 16 x 16 blocks start at (row, col) of the tile.
template <class Tile>
struct ConvMmaWarpTile {
    using Operand = typename Tile::Ops::Fragment;
    static constexpr int MMA_K = Tile::Ops::MMA_K;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, MMA_K, float> acc[Tile::FRAGS_M][Tile::FRAGS_N];
    int row, col;

    __device__ ConvMmaWarpTile() {
        const int warp = threadIdx.x / 32;
        row = (warp / Tile::WARPS_N) * 16 * Tile::FRAGS_M;
        col = (warp % Tile::WARPS_N) * 16 * Tile::FRAGS_N;
        for (int i = 0; i < Tile::FRAGS_M; ++i)
            for (int j = 0; j < Tile::FRAGS_N; ++j) nvcuda::wmma::fill_fragment(acc[i][j], 0.0f);
    }

    // Accumulates the product of one K slice staged in `in`. ROUND_B: B's elements were copied
    // as they are (cp.async) and are rounded to tf32 in each fragment; A's always arrive rounded.
    template <bool ROUND_B>
    __device__ __forceinline__ void multiply(const ConvMmaOperands<Tile>& in) {
        using namespace nvcuda;
#pragma unroll
        for (int kk = 0; kk < CONV_MMA_TILE_K; kk += MMA_K) {
            wmma::fragment<wmma::matrix_a, 16, 16, MMA_K, Operand, wmma::row_major> a[Tile::FRAGS_M];
            for (int i = 0; i < Tile::FRAGS_M; ++i) wmma::load_matrix_sync(a[i], &in.a[row + 16 * i][kk], Tile::A_LD);
            for (int j = 0; j < Tile::FRAGS_N; ++j) {
                wmma::fragment<wmma::matrix_b, 16, 16, MMA_K, Operand, typename Tile::BLayout> b;
                wmma::load_matrix_sync(b, &Tile::b_at(in.b, kk, col + 16 * j), Tile::B_LD);
                if (ROUND_B)
                    for (int t = 0; t < b.num_elements; ++t) b.x[t] = wmma::__float_to_tf32(b.x[t]);
                for (int i = 0; i < Tile::FRAGS_M; ++i) wmma::mma_sync(acc[i][j], a[i], b, acc[i][j]);
            }
        }
    }

    // Writes the accumulators into the result tile (row-major) for the epilogue.
    __device__ __forceinline__ void store(ConvMmaResult<Tile>& c) const {
        for (int i = 0; i < Tile::FRAGS_M; ++i)
            for (int j = 0; j < Tile::FRAGS_N; ++j)
                nvcuda::wmma::store_matrix_sync(&c[row + 16 * i][col + 16 * j], acc[i][j], Tile::C_LD,
                                                nvcuda::wmma::mem_row_major);
    }
};

// The block's 64 x TILE_N tile of C = A B over k in [k_begin, k_end) on tensor cores, left in s.c
// for the kernel's epilogue (the fragment layout is opaque, so results leave through shared memory).
template <class Tile, class LoadA, class LoadB>
__device__ __forceinline__ void conv_mma_tile(ConvMmaShared<Tile>& s, const LoadA& load_a, const LoadB& load_b,
                                              int M, int N, int k_begin, int k_end, int m0, int n0) {
    ConvMmaWarpTile<Tile> warp;
    float ra[CONV_MMA_A_LOADS], rb[Tile::B_LOADS];
    const auto fetch = [&](int k0) {
        conv_fetch_slice<CONV_MMA_A_K_FAST, Tile::B_K_FAST, CONV_MMA_TILE_K, CONV_MMA_A_LOADS, Tile::B_LOADS,
                         Tile::TILE_N, Tile::WHOLE_SLICES>(load_a, load_b, M, N, k_end, m0, n0, k0, ra, rb);
    };
    fetch(k_begin);
    for (int k0 = k_begin; k0 < k_end; k0 += CONV_MMA_TILE_K) {
        conv_mma_stage<Tile>(s, ra, rb);
        __syncthreads();
        if (k0 + CONV_MMA_TILE_K < k_end) fetch(k0 + CONV_MMA_TILE_K);
        warp.template multiply<false>(s.in);
        __syncthreads();  // the operand tiles are overwritten next (or become the result tile)
    }
    warp.store(s.c);
    __syncthreads();
}

// Writes the in-bounds part of the result tile in s.c through `store(m, n, value)`, consecutive
// threads on consecutive n (the contiguous direction of every pass's output). Not unrolled: the
// loop runs once per block, and unrolled its hoisted index arithmetic took the registers that the
// tf32 channel-slice forward's K loop needs (8 bytes spilled on sm_90 once the forward's epilogue
// added a residual).
template <class Shared, class Store>
__device__ __forceinline__ void conv_mma_store_tile(const Shared& s, int M, int N, int m0, int n0,
                                                    const Store& store) {
    constexpr int TILE_N = Shared::Tile::TILE_N;
#pragma unroll 1
    for (int e = threadIdx.x; e < CONV_TILE_M * TILE_N; e += CONV_THREADS) {
        const int mm = e / TILE_N, nn = e % TILE_N;
        const int m = m0 + mm, n = n0 + nn;
        if (m < M && n < N) store(m, n, s.c[mm][nn]);
    }
}

// ---- asynchronous multi-stage staging (cp.async) ---------------------------------------------
// The tiles that allow it (ConvMmaTile::PIPELINED: the tf32 forward and backward-data channel
// slices) copy their operands from global to shared memory with cp.async (async_copy.cuh),
// CONV_MMA_STAGES slices in flight: while the warps multiply slice i, the copies of slices i + 1
// and i + 2 are under way, and they do not pass through registers (conv_mma_tile holds one slice
// ahead in 24 registers a thread, and stalls on those loads when it stages them). Elements are copied as they are and rounded to
// tf32 in the fragments (mma_operands.cuh). Each thread's copies of a slice are one batch
// (__pipeline_commit); before multiplying slice i a thread waits for its batch i
// (__pipeline_wait_prior) and the block meets at a barrier, after which every thread's copies of
// slice i have landed and every warp is done with slice i - 1, whose stage the copies of slice
// i + CONV_MMA_STAGES - 1 then overwrite: one barrier per slice.
#define CONV_MMA_STAGES 3

// The stages of the K loop, then the result tile for the epilogue, in dynamic shared memory (more
// than the 48 KB a block may declare statically).
template <class Tile_>
union alignas(128) ConvMmaStages {
    using Tile = Tile_;
    ConvMmaOperands<Tile> in[CONV_MMA_STAGES];
    ConvMmaResult<Tile> c;
};

// Issues this thread's copies of K slice i (from k_begin + i * CONV_MMA_TILE_K) into its stage as
// one batch, through the slice loaders' conv_copy_a / conv_copy_b (found by argument-dependent
// lookup, beside each loader below). A batch past the last slice is empty, so that every thread
// commits one batch per slice and the waits count alike.
template <class Stages, class LoadA, class LoadB>
__device__ __forceinline__ void conv_mma_copy_slice(Stages& s, const LoadA& load_a, const LoadB& load_b, int M, int N,
                                                    int k_begin, int slices, int m0, int n0, int i) {
    if (i < slices) {
        const int k0 = k_begin + i * CONV_MMA_TILE_K;
        auto& stage = s.in[i % CONV_MMA_STAGES];
        conv_copy_a(stage, conv_slice_loader(load_a, k0), M, m0, k0);
        conv_copy_b(stage, conv_slice_loader(load_b, k0), N, n0, k0);
    }
    __pipeline_commit();
}

// conv_mma_tile's product through the cp.async stages: the block's 64 x TILE_N tile of C = A B
// over k in [k_begin, k_end), left in s.c.
template <class Stages, class LoadA, class LoadB>
__device__ __forceinline__ void conv_mma_tile_pipelined(Stages& s, const LoadA& load_a, const LoadB& load_b, int M,
                                                        int N, int k_begin, int k_end, int m0, int n0) {
    using Tile = typename Stages::Tile;
    static_assert(Tile::PIPELINED, "operands copied as they are, A already rounded");
    const int slices = (k_end - k_begin + CONV_MMA_TILE_K - 1) / CONV_MMA_TILE_K;
    ConvMmaWarpTile<Tile> warp;
    for (int i = 0; i < CONV_MMA_STAGES - 1; ++i)
        conv_mma_copy_slice(s, load_a, load_b, M, N, k_begin, slices, m0, n0, i);
    for (int slice = 0; slice < slices; ++slice) {
        __pipeline_wait_prior(CONV_MMA_STAGES - 2);  // this thread's copies of the slice have landed
        __syncthreads();                             // everyone's have, and the last slice is done
        conv_mma_copy_slice(s, load_a, load_b, M, N, k_begin, slices, m0, n0, slice + CONV_MMA_STAGES - 1);
        warp.template multiply<true>(s.in[slice % CONV_MMA_STAGES]);
    }
    __syncthreads();  // every warp is done with the stages (no copy is pending) before they become s.c
    warp.store(s.c);
    __syncthreads();
}

// A's copies from a row-major matrix of whole slices (the channel-slice kernels' tap-major
// weights: K a multiple of 32 and the matrix 16-byte aligned, so every slice of a row is too):
// 16 bytes (four k) a copy, eight consecutive threads a row; rows past M zero-filled.
template <class Tile>
__device__ __forceinline__ void conv_copy_a(ConvMmaOperands<Tile>& s, const RowMajor32& a, int M, int m0, int k0) {
    static_assert(Tile::WHOLE_SLICES, "k is not bounded here");
    constexpr int VEC = 4, CHUNKS_PER_ROW = CONV_MMA_TILE_K / VEC;
#pragma unroll
    for (int l = 0; l < CONV_TILE_M * CHUNKS_PER_ROW / CONV_THREADS; ++l) {
        const int chunk = threadIdx.x + l * CONV_THREADS;
        const int mm = chunk / CHUNKS_PER_ROW, kk = (chunk % CHUNKS_PER_ROW) * VEC, m = m0 + mm;
        async_copy<4 * VEC>(&s.a[mm][kk], a.a + imin(m, M - 1) * a.cols + k0 + kk, m < M);
    }
}

// The general tensor-core tile: 64 x 64, B staged n-fast.
template <class Ops>
using ConvMmaTile64 = ConvMmaTile<Ops, CONV_TILE_N>;

// Each tensor-core pass is a body templated on its operand format, exported as one kernel per
// format (conv2d_forward_tf32_f32 and conv2d_forward_bf16_f32 here): build.rs reads every
// kernel's signature from its `extern "C"` declaration.
template <class Ops>
__device__ __forceinline__ void conv2d_forward_mma(const float* __restrict__ x, const float* __restrict__ w,
                                                   const float* __restrict__ bias, float* __restrict__ y,
                                                   const float* __restrict__ residual, int has_bias, int has_residual,
                                                   int batch, int c_in, int h_in, int w_in, int c_out, int h_out,
                                                   int w_out, int kh, int kw, int stride, int pad_h, int pad_w,
                                                   int dil) {
    __shared__ ConvMmaShared<ConvMmaTile64<Ops>> s;
    const ConvDims d{batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil};
    const int M = c_out, N = batch * h_out * w_out, K = c_in * kh * kw;
    const int m0 = blockIdx.y * CONV_TILE_M, n0 = blockIdx.x * CONV_TILE_N;
    conv_mma_tile(s, RowMajor{w, K}, ForwardInput{x, d}, M, N, 0, K, m0, n0);
    conv_mma_store_tile(s, M, N, m0, n0,
                        ForwardOutput{y, bias, residual, has_bias, has_residual, c_out, FastDivmod(h_out * w_out)});
}

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_forward_tf32_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                        float* __restrict__ y, const float* __restrict__ residual, int has_bias, int has_residual,
                        int batch, int c_in, int h_in, int w_in, int c_out, int h_out, int w_out, int kh, int kw,
                        int stride, int pad_h, int pad_w, int dil) {
    conv2d_forward_mma<Tf32Operands>(x, w, bias, y, residual, has_bias, has_residual, batch, c_in, h_in, w_in, c_out,
                                     h_out, w_out, kh, kw, stride, pad_h, pad_w, dil);
}
EMU_EXPORT(conv2d_forward_tf32_f32)

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_forward_bf16_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                        float* __restrict__ y, const float* __restrict__ residual, int has_bias, int has_residual,
                        int batch, int c_in, int h_in, int w_in, int c_out, int h_out, int w_out, int kh, int kw,
                        int stride, int pad_h, int pad_w, int dil) {
    conv2d_forward_mma<Bf16Operands>(x, w, bias, y, residual, has_bias, has_residual, batch, c_in, h_in, w_in, c_out,
                                     h_out, w_out, kh, kw, stride, pad_h, pad_w, dil);
}
EMU_EXPORT(conv2d_forward_bf16_f32)

// ---- channel slices (the gathered tensor's channels a multiple of 32) -------------------------
// The forward and backward-data GEMMs with K ordered tap-major, k = tap * channels + c over the
// channels of the tensor gathered into B (x for the forward, dy for backward data), so that every
// 32-wide K slice lies inside one filter tap: the slice's row and column offsets and their padding
// test are then fixed for the whole slice, and each staged element of B costs an add and a
// predicated load instead of the two divisions, the tap arithmetic and the four bounds tests of
// ForwardInput (1305 SASS instructions per slice in conv2d_forward_tf32_f32's loop; 535 for twice
// the mma here, in tf32). The weights are read from a copy reordered to match, and rounded to the
// operand format, by conv2d_weight_tap_major_*. Tiles are 64 x 128 (ConvMmaTile<Ops, 128>): the
// sampler's and training's batches make N = batch * pixels long.
#define CONV_MMA_WIDE_TILE_N 128
// Whole slices, and A (the weights) rounded by conv2d_weight_tap_major_*.
template <class Ops>
using ConvMmaChannelSliceTile = ConvMmaTile<Ops, CONV_MMA_WIDE_TILE_N, false, true, true>;
// The dynamic shared memory the pipelined channel-slice kernels are launched with
// (MMA_PIPELINED_SHARED_BYTES in src/ops/conv.rs): three stages of a 64 x 32 slice of A and a
// 32 x 128 one of B, padded (26 KB each).
#define CONV_MMA_PIPELINED_SHARED_BYTES 79872
static_assert(sizeof(ConvMmaStages<ConvMmaChannelSliceTile<Tf32Operands>>) == CONV_MMA_PIPELINED_SHARED_BYTES,
              "src/ops/conv.rs launches with this size");

// The weights w [c_out, c_in, taps] as the A operand of a tap-major GEMM, rounded to the operand
// format once here rather than by every block that stages them: out [rows, taps, cols], the
// forward's (rows = c_out, cols = c_in: out[co, tap, ci]) unless `by_input`, then backward data's
// (rows = c_in, cols = c_out: out[ci, tap, co]).
template <class Ops>
__device__ __forceinline__ void conv2d_weight_tap_major(const float* __restrict__ w, float* __restrict__ out,
                                                        int c_out, int c_in, int taps, int by_input) {
    const int cols = by_input ? c_out : c_in;
    const uint64_t n = (uint64_t)c_out * c_in * taps;
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        const int col = (int)(i % cols);
        const uint64_t rest = i / cols;  // row * taps + tap
        const int tap = (int)(rest % taps), row = (int)(rest / taps);
        const int co = by_input ? col : row, ci = by_input ? row : col;
        out[i] = Ops::round(w[((uint64_t)co * c_in + ci) * taps + tap]);
    }
}

extern "C" __global__ void conv2d_weight_tap_major_tf32_f32(const float* __restrict__ w, float* __restrict__ out,
                                                            int c_out, int c_in, int taps, int by_input) {
    conv2d_weight_tap_major<Tf32Operands>(w, out, c_out, c_in, taps, by_input);
}
EMU_EXPORT(conv2d_weight_tap_major_tf32_f32)

extern "C" __global__ void conv2d_weight_tap_major_bf16_f32(const float* __restrict__ w, float* __restrict__ out,
                                                            int c_out, int c_in, int taps, int by_input) {
    conv2d_weight_tap_major<Bf16Operands>(w, out, c_out, c_in, taps, by_input);
}
EMU_EXPORT(conv2d_weight_tap_major_bf16_f32)

// B(k, n) of a tap-major GEMM for the one column n a thread stages (B is staged n-fast, so each
// thread's column is the same for every load of every slice: conv_stage_slot): the element of
// `src` [batch, channels, rows, cols] that filter tap k sees from the column's pixel. Tap (th, tw)
// sees pixel (r0 + th * step, c0 + tw * step): the forward reads x at (oh stride - pad_h + th dil,
// ...), step = dil; backward data at stride 1 reads dy at (ih + pad_h - th dil, ...), step = -dil.
// The column is divided into (b, r0, c0) once per thread by the kernel; the offsets are 32-bit, as
// every tensor is under 2^31 elements (ConvDims::new in src/ops/conv.rs).
struct TapMajorColumn {
    const float* src;
    int channels, rows, cols, kw, step;
    int r0, c0;  // the pixel tap (0, 0) sees (may be padding)
    int column;  // offset of src[b, 0, r0, c0] from src
    __device__ TapMajorColumn(const float* src, int channels, int rows, int cols, int kw, int step, int b, int r0,
                              int c0)
        : src(src), channels(channels), rows(rows), cols(cols), kw(kw), step(step), r0(r0), c0(c0),
          column((b * channels * rows + r0) * cols + c0) {}
};

// One 32-channel slice [k0, k0 + CONV_MMA_TILE_K) of a TapMajorColumn, inside one tap: channel
// c0 + (k - k0) of the pixel the tap sees, or zero in the padding.
struct TapMajorSlice {
    const float* p;  // src at the slice's first channel of the tap's pixel (not read in the padding)
    int plane, k0;
    bool inside;
    __device__ float operator()(int k, int /* the column the slice was built for */) const {
        return inside ? p[(k - k0) * plane] : 0.0f;
    }
};

// The loader of one slice of tap-major K (found by argument-dependent lookup from
// conv_fetch_slice): one tap, so one padding test and one base offset for the whole slice.
// Plain divisions: once per slice they cost less than the registers FastDivmod's multipliers
// would hold through the K loop (the kernels are at their 128-register bound).
__device__ __forceinline__ TapMajorSlice conv_slice_loader(const TapMajorColumn& in, int k0) {
    const int tap = k0 / in.channels, channel0 = k0 - tap * in.channels;
    const int th = tap / in.kw, tw = tap - th * in.kw;
    const int dr = th * in.step, dc = tw * in.step;
    const int r = in.r0 + dr, c = in.c0 + dc;
    const int plane = in.rows * in.cols;
    const bool inside = r >= 0 && r < in.rows && c >= 0 && c < in.cols;
    return TapMajorSlice{in.src + (inside ? in.column + channel0 * plane + dr * in.cols + dc : 0), plane, k0,
                         inside};
}

// B's loads from one TapMajorSlice (found by argument-dependent lookup from conv_fetch_slice, over
// the general conv_fetch_b): a thread's loads are one column at channels kk, kk + 2, ... of the
// slice (n-fast staging, conv_stage_slot), so they step one pointer by a fixed stride. Written
// with the general loop's (k - k0) * plane, the compiler re-derived each offset from the first
// under register pressure: about 120 integer instructions per slice, now 16 adds.
template <bool B_K_FAST, int TILE_K, int LOADS_B, int B_WIDTH, bool WHOLE_SLICES>
__device__ __forceinline__ void conv_fetch_b(const TapMajorSlice& slice, int N, int, int n0, int,
                                             float rb[LOADS_B]) {
    static_assert(!B_K_FAST && WHOLE_SLICES, "a TapMajorSlice is one column over whole slices");
    int nn, kk;
    conv_stage_slot<B_K_FAST, TILE_K, B_WIDTH>(threadIdx.x, 0, nn, kk);
    const bool read = slice.inside && n0 + nn < N;
    const float* q = slice.p + (read ? kk * slice.plane : 0);
    const int stride = read ? (CONV_THREADS / B_WIDTH) * slice.plane : 0;  // kk's step per load
#pragma unroll
    for (int l = 0; l < LOADS_B; ++l) {
        const float v = *q;  // x's first element when not `read`: in bounds, then dropped
        rb[l] = read ? v : 0.0f;
        q += stride;
    }
}

// B's copies from one TapMajorSlice (conv_mma_tile_pipelined): conv_fetch_b's loads above, each
// a 4-byte cp.async into the stage, zero-filled where conv_fetch_b zeroes (the source then not
// read: x's first element stands in).
template <class Tile>
__device__ __forceinline__ void conv_copy_b(ConvMmaOperands<Tile>& s, const TapMajorSlice& slice, int N, int n0,
                                            int) {
    static_assert(!Tile::B_K_FAST && Tile::WHOLE_SLICES, "a TapMajorSlice is one column over whole slices");
    int nn, kk;
    conv_stage_slot<false, CONV_MMA_TILE_K, Tile::TILE_N>(threadIdx.x, 0, nn, kk);
    const bool read = slice.inside && n0 + nn < N;
    const float* q = slice.p + (read ? kk * slice.plane : 0);
    constexpr int K_STEP = CONV_THREADS / Tile::TILE_N;  // kk's step per copy
    const int stride = read ? K_STEP * slice.plane : 0;
#pragma unroll
    for (int l = 0; l < Tile::B_LOADS; ++l) {
        async_copy<4>(&Tile::b_at(s.b, kk + l * K_STEP, nn), q, read);
        q += stride;
    }
}

// This thread's column of B (conv_stage_slot, n-fast) in a 64 x CONV_MMA_WIDE_TILE_N tile,
// clamped as conv_fetch_slice clamps, divided into (b, row, col) of a `rows` x `cols` plane.
__device__ __forceinline__ int conv_thread_column(int n0, int N, int rows, int cols, int& row, int& col) {
    int p;
    const int n = imin(n0 + (int)threadIdx.x % CONV_MMA_WIDE_TILE_N, N - 1);
    const int b = FastDivmod(rows * cols).divmod(n, p);
    row = FastDivmod(cols).divmod(p, col);
    return b;
}

// A channel-slice kernel's GEMM and epilogue, `store(m, n, value)`: through the cp.async stages in
// dynamic shared memory where the tile allows (Tile::PIPELINED), else staged through registers.
template <class Tile, class LoadA, class LoadB, class Store>
__device__ __forceinline__ void conv_channel_slice_gemm(const LoadA& load_a, const LoadB& load_b, int M, int N,
                                                        int k_begin, int k_end, int m0, int n0, const Store& store) {
    if constexpr (Tile::PIPELINED) {
        EMU_DYNAMIC_SHARED(unsigned char, shared);
        EMU_REQUIRE_DYNAMIC_SHARED(sizeof(ConvMmaStages<Tile>));
        auto& s = *reinterpret_cast<ConvMmaStages<Tile>*>(shared);
        conv_mma_tile_pipelined(s, load_a, load_b, M, N, k_begin, k_end, m0, n0);
        conv_mma_store_tile(s, M, N, m0, n0, store);
    } else {
        __shared__ ConvMmaShared<Tile> s;
        conv_mma_tile(s, load_a, load_b, M, N, k_begin, k_end, m0, n0);
        conv_mma_store_tile(s, M, N, m0, n0, store);
    }
}

template <class Ops>
__device__ __forceinline__ void conv2d_forward_channel_slices(const float* __restrict__ x,
                                                              const float* __restrict__ wt,
                                                              const float* __restrict__ bias, float* __restrict__ y,
                                                              const float* __restrict__ residual, int has_bias,
                                                              int has_residual, int batch, int c_in, int h_in,
                                                              int w_in, int c_out, int h_out, int w_out, int kh,
                                                              int kw, int stride, int pad_h, int pad_w, int dil) {
    const int M = c_out, N = batch * h_out * w_out, K = c_in * kh * kw;
    const int m0 = blockIdx.y * CONV_TILE_M, n0 = blockIdx.x * CONV_MMA_WIDE_TILE_N;
    int oh, ow;
    const int b = conv_thread_column(n0, N, h_out, w_out, oh, ow);
    const TapMajorColumn in(x, c_in, h_in, w_in, kw, dil, b, oh * stride - pad_h, ow * stride - pad_w);
    // K = channels * taps, the channels a multiple of the slice: whole slices; wt rounded.
    conv_channel_slice_gemm<ConvMmaChannelSliceTile<Ops>>(
        RowMajor32{wt, K}, in, M, N, 0, K, m0, n0,
        ForwardOutput{y, bias, residual, has_bias, has_residual, c_out, FastDivmod(h_out * w_out)});
}

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_forward_tf32_channel_slices_f32(const float* __restrict__ x, const float* __restrict__ wt,
                                       const float* __restrict__ bias, float* __restrict__ y,
                                       const float* __restrict__ residual, int has_bias, int has_residual, int batch,
                                       int c_in, int h_in, int w_in, int c_out, int h_out, int w_out, int kh, int kw,
                                       int stride, int pad_h, int pad_w, int dil) {
    conv2d_forward_channel_slices<Tf32Operands>(x, wt, bias, y, residual, has_bias, has_residual, batch, c_in, h_in,
                                                w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil);
}
EMU_EXPORT(conv2d_forward_tf32_channel_slices_f32)

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_forward_bf16_channel_slices_f32(const float* __restrict__ x, const float* __restrict__ wt,
                                       const float* __restrict__ bias, float* __restrict__ y,
                                       const float* __restrict__ residual, int has_bias, int has_residual, int batch,
                                       int c_in, int h_in, int w_in, int c_out, int h_out, int w_out, int kh, int kw,
                                       int stride, int pad_h, int pad_w, int dil) {
    conv2d_forward_channel_slices<Bf16Operands>(x, wt, bias, y, residual, has_bias, has_residual, batch, c_in, h_in,
                                                w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil);
}
EMU_EXPORT(conv2d_forward_bf16_channel_slices_f32)

// A(ci, k) of the backward-data pass, k = (co, tap): w[co, ci, tap].
struct WeightTransposed {
    const float* w;
    ConvDims d;
    FastDivmod taps;
    __device__ WeightTransposed(const float* w, const ConvDims& d) : w(w), d(d), taps(d.kh * d.kw) {}
    __device__ float operator()(int ci, int k) const {
        int t;
        const int co = taps.divmod(k, t);
        return w[((size_t)co * d.c_in + ci) * taps.d + t];
    }
};

// B(k, n) of the backward-data pass: the output gradient at the output pixel that reaches input
// pixel n through tap k: dx[ih] gets w[ki] * dy[(ih + pad_h - ki*dil) / stride] when the division
// is exact (no output pixel reaches ih through ki otherwise).
struct OutputGradAtInput {
    const float* dy;
    ConvDims d;
    FastDivmod taps, kw, hw, w_in;
    __device__ OutputGradAtInput(const float* dy, const ConvDims& d)
        : dy(dy), d(d), taps(d.kh * d.kw), kw(d.kw), hw(d.h_in * d.w_in), w_in(d.w_in) {}
    __device__ float operator()(int k, int n) const {
        int t, p, iw, tw;
        const int co = taps.divmod(k, t);
        const int b = hw.divmod(n, p);
        const int ih = w_in.divmod(p, iw);
        const int th = kw.divmod(t, tw);
        int oh = ih + d.pad_h - th * d.dil;
        int ow = iw + d.pad_w - tw * d.dil;
        // Skipped at stride 1 (the network's convolutions), where it would add two integer
        // divisions per element. An exact quotient of a negative value stays negative, and is
        // rejected below.
        if (d.stride != 1) {
            if (oh % d.stride != 0 || ow % d.stride != 0) return 0.0f;
            oh /= d.stride;
            ow /= d.stride;
        }
        if (oh < 0 || oh >= d.h_out || ow < 0 || ow >= d.w_out) return 0.0f;
        return dy[(((size_t)b * d.c_out + co) * d.h_out + oh) * d.w_out + ow];
    }
};

extern "C" __global__ void conv2d_backward_data_f32(const float* __restrict__ dy, const float* __restrict__ w,
                                                    float* __restrict__ dx, int batch, int c_in, int h_in,
                                                    int w_in, int c_out, int h_out, int w_out, int kh, int kw,
                                                    int stride, int pad_h, int pad_w, int dil) {
    const ConvDims d{batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil};
    const int M = c_in, N = batch * h_in * w_in, K = c_out * kh * kw;
    const int m0 = blockIdx.y * CONV_TILE_M, n0 = blockIdx.x * CONV_TILE_N;
    float acc[4][4];
    conv_gemm_tile<true, false>(WeightTransposed{w, d}, OutputGradAtInput{dy, d}, M, N, 0, K, m0, n0, acc);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const FastDivmod hw(h_in * w_in);
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n < N) dx[nchw_index(m, n, c_in, hw)] = acc[i][j];
        }
    }
}
EMU_EXPORT(conv2d_backward_data_f32)

// The backward-data GEMM above on tensor cores (conv_mma_tile): dy and w rounded to the operand
// format, fp32 accumulation.
template <class Ops>
__device__ __forceinline__ void conv2d_backward_data_mma(const float* __restrict__ dy, const float* __restrict__ w,
                                                         float* __restrict__ dx, int batch, int c_in, int h_in,
                                                         int w_in, int c_out, int h_out, int w_out, int kh, int kw,
                                                         int stride, int pad_h, int pad_w, int dil) {
    __shared__ ConvMmaShared<ConvMmaTile64<Ops>> s;
    const ConvDims d{batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil};
    const int M = c_in, N = batch * h_in * w_in, K = c_out * kh * kw;
    const int m0 = blockIdx.y * CONV_TILE_M, n0 = blockIdx.x * CONV_TILE_N;
    conv_mma_tile(s, WeightTransposed{w, d}, OutputGradAtInput{dy, d}, M, N, 0, K, m0, n0);
    const FastDivmod hw(h_in * w_in);
    conv_mma_store_tile(s, M, N, m0, n0, [&](int m, int n, float v) { dx[nchw_index(m, n, c_in, hw)] = v; });
}

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_backward_data_tf32_f32(const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
                              int batch, int c_in, int h_in, int w_in, int c_out, int h_out, int w_out, int kh,
                              int kw, int stride, int pad_h, int pad_w, int dil) {
    conv2d_backward_data_mma<Tf32Operands>(dy, w, dx, batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride,
                                           pad_h, pad_w, dil);
}
EMU_EXPORT(conv2d_backward_data_tf32_f32)

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_backward_data_bf16_f32(const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,
                              int batch, int c_in, int h_in, int w_in, int c_out, int h_out, int w_out, int kh,
                              int kw, int stride, int pad_h, int pad_w, int dil) {
    conv2d_backward_data_mma<Bf16Operands>(dy, w, dx, batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride,
                                           pad_h, pad_w, dil);
}
EMU_EXPORT(conv2d_backward_data_bf16_f32)

// The backward-data GEMM at stride 1 over channel slices of dy (c_out a multiple of 32): K =
// (tap, co) tap-major, wt [c_in, kh, kw, c_out] from conv2d_weight_tap_major_* (by_input), dy
// gathered by TapMajorColumn from input pixel (ih, iw) at (ih + pad_h - th dil, iw + pad_w - tw dil).
template <class Ops>
__device__ __forceinline__ void conv2d_backward_data_channel_slices(const float* __restrict__ dy,
                                                                    const float* __restrict__ wt,
                                                                    float* __restrict__ dx, int batch, int c_in,
                                                                    int h_in, int w_in, int c_out, int h_out,
                                                                    int w_out, int kh, int kw, int stride, int pad_h,
                                                                    int pad_w, int dil) {
    const int M = c_in, N = batch * h_in * w_in, K = c_out * kh * kw;
    const int m0 = blockIdx.y * CONV_TILE_M, n0 = blockIdx.x * CONV_MMA_WIDE_TILE_N;
    int ih, iw;
    const int b = conv_thread_column(n0, N, h_in, w_in, ih, iw);
    const TapMajorColumn in(dy, c_out, h_out, w_out, kw, -dil, b, ih + pad_h, iw + pad_w);
    const FastDivmod hw(h_in * w_in);
    // K = channels * taps, the channels a multiple of the slice: whole slices; wt rounded.
    conv_channel_slice_gemm<ConvMmaChannelSliceTile<Ops>>(
        RowMajor32{wt, K}, in, M, N, 0, K, m0, n0, [&](int m, int n, float v) { dx[nchw_index(m, n, c_in, hw)] = v; });
}

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_backward_data_tf32_channel_slices_f32(const float* __restrict__ dy, const float* __restrict__ wt,
                                             float* __restrict__ dx, int batch, int c_in, int h_in, int w_in,
                                             int c_out, int h_out, int w_out, int kh, int kw, int stride, int pad_h,
                                             int pad_w, int dil) {
    conv2d_backward_data_channel_slices<Tf32Operands>(dy, wt, dx, batch, c_in, h_in, w_in, c_out, h_out, w_out, kh,
                                                      kw, stride, pad_h, pad_w, dil);
}
EMU_EXPORT(conv2d_backward_data_tf32_channel_slices_f32)

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_backward_data_bf16_channel_slices_f32(const float* __restrict__ dy, const float* __restrict__ wt,
                                             float* __restrict__ dx, int batch, int c_in, int h_in, int w_in,
                                             int c_out, int h_out, int w_out, int kh, int kw, int stride, int pad_h,
                                             int pad_w, int dil) {
    conv2d_backward_data_channel_slices<Bf16Operands>(dy, wt, dx, batch, c_in, h_in, w_in, c_out, h_out, w_out, kh,
                                                      kw, stride, pad_h, pad_w, dil);
}
EMU_EXPORT(conv2d_backward_data_bf16_channel_slices_f32)

// A(co, k) of the backward-weight pass, k = (b, output pixel): dy[b, co, p].
struct OutputGradByPixel {
    const float* dy;
    ConvDims d;
    FastDivmod hw;
    __device__ OutputGradByPixel(const float* dy, const ConvDims& d) : dy(dy), d(d), hw(d.h_out * d.w_out) {}
    __device__ float operator()(int co, int k) const {
        int p;
        const int b = hw.divmod(k, p);
        return dy[((size_t)b * d.c_out + co) * hw.d + p];
    }
};

// B(k, j) of the backward-weight pass, j = (ci, tap): the input pixel tap j sees from output
// pixel k (the forward gather, transposed).
struct InputByTap {
    ForwardInput in;
    __device__ float operator()(int k, int j) const { return in(j, k); }
};

// The block of a split-K backward-weight GEMM: its 64x64 tile of dw ([c_out, c_in*kh*kw]) at
// (m0, n0) and its k range [k_begin, k_end) of K = batch x output pixels; `out`: its split's
// partial sums, partial[z].
struct WeightGradBlock {
    int M, N, m0, n0, k_begin, k_end;
    float* out;
    __device__ WeightGradBlock(const ConvDims& d, int k_chunk, float* partial)
        : M(d.c_out), N(d.c_in * d.kh * d.kw), m0(blockIdx.y * CONV_TILE_M), n0(blockIdx.x * CONV_TILE_N),
          k_begin(blockIdx.z * k_chunk), k_end(imin(d.batch * d.h_out * d.w_out, k_begin + k_chunk)),
          out(partial + (size_t)blockIdx.z * M * N) {}
};

// Split-K: block z sums k in [z*k_chunk, (z+1)*k_chunk) into partial[z] ([c_out, c_in*kh*kw]);
// conv2d_sum_splits_f32 adds the splits in a fixed order, so the result is deterministic.
extern "C" __global__ void conv2d_backward_weight_f32(const float* __restrict__ dy, const float* __restrict__ x,
                                                      float* __restrict__ partial, int batch, int c_in,
                                                      int h_in, int w_in, int c_out, int h_out, int w_out,
                                                      int kh, int kw, int stride, int pad_h, int pad_w,
                                                      int dil, int k_chunk) {
    const ConvDims d{batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil};
    const WeightGradBlock g(d, k_chunk, partial);
    float acc[4][4];
    conv_gemm_tile<true, true>(OutputGradByPixel{dy, d}, InputByTap{ForwardInput{x, d}}, g.M, g.N, g.k_begin,
                               g.k_end, g.m0, g.n0, acc);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int i = 0; i < 4; ++i) {
        const int m = g.m0 + ty + 16 * i;
        if (m >= g.M) continue;
        for (int j = 0; j < 4; ++j) {
            const int n = g.n0 + tx + 16 * j;
            if (n < g.N) g.out[(size_t)m * g.N + n] = acc[i][j];
        }
    }
}
EMU_EXPORT(conv2d_backward_weight_f32)

// The split-K backward-weight GEMM above on tensor cores (conv_mma_tile over the block's k range):
// dy and x rounded to the operand format, fp32 accumulation; conv2d_sum_splits_f32 adds the splits.
template <class Ops>
__device__ __forceinline__ void conv2d_backward_weight_mma(const float* __restrict__ dy, const float* __restrict__ x,
                                                           float* __restrict__ partial, int batch, int c_in, int h_in,
                                                           int w_in, int c_out, int h_out, int w_out, int kh, int kw,
                                                           int stride, int pad_h, int pad_w, int dil, int k_chunk) {
    __shared__ ConvMmaShared<ConvMmaTile64<Ops>> s;
    const ConvDims d{batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil};
    const WeightGradBlock g(d, k_chunk, partial);
    conv_mma_tile(s, OutputGradByPixel{dy, d}, InputByTap{ForwardInput{x, d}}, g.M, g.N, g.k_begin, g.k_end, g.m0,
                  g.n0);
    conv_mma_store_tile(s, g.M, g.N, g.m0, g.n0, [&](int m, int n, float v) { g.out[(size_t)m * g.N + n] = v; });
}

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_backward_weight_tf32_f32(const float* __restrict__ dy, const float* __restrict__ x,
                                float* __restrict__ partial, int batch, int c_in, int h_in, int w_in, int c_out,
                                int h_out, int w_out, int kh, int kw, int stride, int pad_h, int pad_w, int dil,
                                int k_chunk) {
    conv2d_backward_weight_mma<Tf32Operands>(dy, x, partial, batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw,
                                             stride, pad_h, pad_w, dil, k_chunk);
}
EMU_EXPORT(conv2d_backward_weight_tf32_f32)

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_backward_weight_bf16_f32(const float* __restrict__ dy, const float* __restrict__ x,
                                float* __restrict__ partial, int batch, int c_in, int h_in, int w_in, int c_out,
                                int h_out, int w_out, int kh, int kw, int stride, int pad_h, int pad_w, int dil,
                                int k_chunk) {
    conv2d_backward_weight_mma<Bf16Operands>(dy, x, partial, batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw,
                                             stride, pad_h, pad_w, dil, k_chunk);
}
EMU_EXPORT(conv2d_backward_weight_bf16_f32)

// ---- backward weight over channel slices (c_in a multiple of 64) -----------------------------
// The backward-weight GEMM with its columns ordered tap-major, n = tap * c_in + ci, so that a
// block's 64 columns are 64 channels of one tap. Both operands are staged k-fast (k = batch x
// output pixels, contiguous in dy and x), so each thread reads one k per slice: its division into
// (b, oh, ow), the tap's input pixel and the padding test are once per slice, and its loads step
// through channels (x) or output channels (dy) by a fixed stride, instead of two to four divisions
// and four bounds tests per element (1237 SASS instructions for 32 HMMA in
// conv2d_backward_weight_tf32_f32's loop). The epilogue writes each partial sum back at its place
// in w's [c_out, c_in, kh, kw] order, so conv2d_sum_splits_f32 adds the splits as for the others.

// The thread's k of the slice starting at k0 (k-fast staging: conv_stage_slot), divided into
// (b, oh, ow); false when it is past k_end.
__device__ __forceinline__ bool conv_slice_pixel(int k0, int k_end, int h_out, int w_out, int& b, int& oh,
                                                 int& ow) {
    const int k = k0 + (int)threadIdx.x % CONV_MMA_TILE_K;
    const int kc = imin(k, k_end - 1), hw = h_out * w_out;
    b = kc / hw;
    const int p = kc - b * hw;
    oh = p / w_out;
    ow = p - oh * w_out;
    return k < k_end;
}

// A(co, k) of the channel-slice backward weight: dy[b, co, oh, ow] for the block's rows m0...
struct OutputGradRows {
    const float* dy;
    int c_out, h_out, w_out, k_end, m0;
};

// One slice of OutputGradRows for this thread's k: its rows co = m0 + tid / 32 + 8 l step by 8
// planes of dy.
struct OutputGradRowsSlice {
    const float* q;  // dy at the thread's first row and k (not read unless `read`)
    int stride, first_row;
    bool read;
};

__device__ __forceinline__ OutputGradRowsSlice conv_slice_loader(const OutputGradRows& a, int k0) {
    int b, oh, ow;
    const bool read = conv_slice_pixel(k0, a.k_end, a.h_out, a.w_out, b, oh, ow);
    const int first_row = a.m0 + (int)threadIdx.x / CONV_MMA_TILE_K, plane = a.h_out * a.w_out;
    const int row = imin(first_row, a.c_out - 1);
    return OutputGradRowsSlice{a.dy + ((b * a.c_out + row) * a.h_out + oh) * a.w_out + ow,
                               (CONV_THREADS / CONV_MMA_TILE_K) * plane, first_row, read};
}

template <bool A_K_FAST, int TILE_K, int LOADS_A, bool WHOLE_SLICES>
__device__ __forceinline__ void conv_fetch_a(const OutputGradRowsSlice& slice, int M, int, int, int,
                                             float ra[LOADS_A]) {
    static_assert(A_K_FAST && TILE_K == CONV_MMA_TILE_K, "one k per thread, rows 8 apart");
    const float* q = slice.q;
#pragma unroll
    for (int l = 0; l < LOADS_A; ++l) {
        const int row = slice.first_row + l * (CONV_THREADS / TILE_K);
        // Rows past c_out (the tile's rest for a narrow layer) read nothing.
        ra[l] = (slice.read && row < M) ? *q : 0.0f;
        q += slice.stride;
    }
}

// B(k, n) of the channel-slice backward weight: x at the input pixel that the block's tap sees
// from output pixel k, for the block's channels ci0...
struct InputTapChannels {
    const float* x;
    ConvDims d;
    int k_end, ci0, dh, dw;  // dh, dw: the tap's offset from the output pixel's (stride-scaled) one
};

// One slice of InputTapChannels for this thread's k: its channels ci0 + tid / 32 + 8 l step by
// 8 planes of x.
struct InputTapChannelsSlice {
    const float* q;  // x at the thread's first channel (not read unless `read`)
    int stride;
    bool read;
};

__device__ __forceinline__ InputTapChannelsSlice conv_slice_loader(const InputTapChannels& in, int k0) {
    const ConvDims& d = in.d;
    int b, oh, ow;
    const bool in_range = conv_slice_pixel(k0, in.k_end, d.h_out, d.w_out, b, oh, ow);
    const int ih = oh * d.stride + in.dh, iw = ow * d.stride + in.dw;
    const bool read = in_range && ih >= 0 && ih < d.h_in && iw >= 0 && iw < d.w_in;
    const int ci = in.ci0 + (int)threadIdx.x / CONV_MMA_TILE_K, plane = d.h_in * d.w_in;
    return InputTapChannelsSlice{in.x + (read ? ((b * d.c_in + ci) * d.h_in + ih) * d.w_in + iw : 0),
                                 read ? (CONV_THREADS / CONV_MMA_TILE_K) * plane : 0, read};
}

template <bool B_K_FAST, int TILE_K, int LOADS_B, int B_WIDTH, bool WHOLE_SLICES>
__device__ __forceinline__ void conv_fetch_b(const InputTapChannelsSlice& slice, int, int, int, int,
                                             float rb[LOADS_B]) {
    static_assert(B_K_FAST && TILE_K == CONV_MMA_TILE_K, "one k per thread, channels 8 apart");
    const float* q = slice.q;
#pragma unroll
    for (int l = 0; l < LOADS_B; ++l) {
        const float v = *q;  // x's first element when not `read`: in bounds, then dropped
        rb[l] = slice.read ? v : 0.0f;
        q += slice.stride;
    }
}

// B (x) staged k-fast, like A (dy): each thread's loads share one k.
template <class Ops>
using ConvMmaBackwardWeightSliceTile = ConvMmaTile<Ops, CONV_TILE_N, true>;

template <class Ops>
__device__ __forceinline__ void conv2d_backward_weight_channel_slices(const float* __restrict__ dy,
                                                                      const float* __restrict__ x,
                                                                      float* __restrict__ partial, int batch,
                                                                      int c_in, int h_in, int w_in, int c_out,
                                                                      int h_out, int w_out, int kh, int kw,
                                                                      int stride, int pad_h, int pad_w, int dil,
                                                                      int k_chunk) {
    const ConvDims d{batch, c_in, h_in, w_in, c_out, h_out, w_out, kh, kw, stride, pad_h, pad_w, dil};
    const WeightGradBlock g(d, k_chunk, partial);
    // The block's 64 columns: channels ci0... of one tap (c_in a multiple of 64).
    const int taps = kh * kw, tap = g.n0 / c_in, ci0 = g.n0 - tap * c_in, th = tap / kw, tw = tap - th * kw;
    const OutputGradRows a{dy, c_out, h_out, w_out, g.k_end, g.m0};
    const InputTapChannels b{x, d, g.k_end, ci0, th * dil - pad_h, tw * dil - pad_w};
    // Column n = tap * c_in + ci of the tile is dw's column ci * taps + tap.
    conv_channel_slice_gemm<ConvMmaBackwardWeightSliceTile<Ops>>(
        a, b, g.M, g.N, g.k_begin, g.k_end, g.m0, g.n0,
        [&](int m, int n, float v) { g.out[(size_t)m * g.N + (size_t)(ci0 + n - g.n0) * taps + tap] = v; });
}

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_backward_weight_tf32_channel_slices_f32(const float* __restrict__ dy, const float* __restrict__ x,
                                               float* __restrict__ partial, int batch, int c_in, int h_in, int w_in,
                                               int c_out, int h_out, int w_out, int kh, int kw, int stride, int pad_h,
                                               int pad_w, int dil, int k_chunk) {
    conv2d_backward_weight_channel_slices<Tf32Operands>(dy, x, partial, batch, c_in, h_in, w_in, c_out, h_out, w_out,
                                                        kh, kw, stride, pad_h, pad_w, dil, k_chunk);
}
EMU_EXPORT(conv2d_backward_weight_tf32_channel_slices_f32)

extern "C" __global__ void __launch_bounds__(CONV_THREADS, CONV_MMA_MIN_BLOCKS)
conv2d_backward_weight_bf16_channel_slices_f32(const float* __restrict__ dy, const float* __restrict__ x,
                                               float* __restrict__ partial, int batch, int c_in, int h_in, int w_in,
                                               int c_out, int h_out, int w_out, int kh, int kw, int stride, int pad_h,
                                               int pad_w, int dil, int k_chunk) {
    conv2d_backward_weight_channel_slices<Bf16Operands>(dy, x, partial, batch, c_in, h_in, w_in, c_out, h_out, w_out,
                                                        kh, kw, stride, pad_h, pad_w, dil, k_chunk);
}
EMU_EXPORT(conv2d_backward_weight_bf16_channel_slices_f32)

// out[i] = sum over s of partial[s][i], s in order.
extern "C" __global__ void conv2d_sum_splits_f32(const float* __restrict__ partial, float* __restrict__ out,
                                                 int splits, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        float acc = 0.0f;
        for (int s = 0; s < splits; ++s) acc += partial[(uint64_t)s * n + i];
        out[i] = acc;
    }
}
EMU_EXPORT(conv2d_sum_splits_f32)

// db[co] = sum over batch and pixels of dy[b, co, p]; one block per output channel.
extern "C" __global__ void conv2d_backward_bias_f32(const float* __restrict__ dy, float* __restrict__ db,
                                                    int batch, int c_out, int hw) {
    __shared__ float scratch[32];
    const int co = blockIdx.x;
    float acc = 0.0f;
    for (int b = 0; b < batch; ++b) {
        const float* plane = dy + ((size_t)b * c_out + co) * hw;
        for (int p = threadIdx.x; p < hw; p += blockDim.x) acc += plane[p];
    }
    acc = block_reduce_sum(acc, scratch);
    if (threadIdx.x == 0) db[co] = acc;
}
EMU_EXPORT(conv2d_backward_bias_f32)
