// matmul.cu: batched matrix products for the self-attention and the linear (NIN, nn.Linear)
// layers of the DDPM++ score network (docs/SPEC.md section 11 (DDPM++)).
//
// Output matrix z of a launch, with P = per_out, is
//   C_z = sum over b in [z P, min(batch, (z + 1) P)) of op(A_b) op(B_b)
// with op(A_b) [M, K] (A_b stored [M, K], or [K, M] read transposed) and op(B_b) [K, N] (B_b
// stored [K, N], or [N, K] read transposed). P = 1 is the plain batched product; P > 1 sums runs
// of the batch, the gradient of an operand shared by the whole batch (src/ops/matmul.rs adds the
// runs with matmul_sum_runs_f32 in a fixed order, so the result is deterministic). A_b starts
// at a + b a_stride: a stride of 0 broadcasts one matrix over the batch (a shared weight).
//
// The tiling is conv.cu's GEMM tile, on operands read in place: a block of 16x16 threads
// computes a 64x64 tile of C_z, each thread a 4x4 sub-tile, K staged through shared memory in
// slices of 16; matmul_tf32_f32 and matmul_bf16_f32 are the same tile on tensor cores, in tf32 or
// bf16 operands (mma_operands.cuh, SPEC section 9.3). blockIdx.x numbers the
// tiles of one output matrix, blockIdx.y strides over the output matrices (65535 blocks at most
// along y). Launch geometry: `geometry` in src/ops/matmul.rs.
#include "common.cuh"
#include "mma_operands.cuh"

#define MATMUL_TILE_M 64
#define MATMUL_TILE_N 64
#define MATMUL_TILE_K 16
#define MATMUL_THREADS 256
// Each thread stages this many elements of each operand per K slice.
#define MATMUL_LOADS ((MATMUL_TILE_M * MATMUL_TILE_K) / MATMUL_THREADS)

// Integer min under both nvcc and the emulator (which has no global min for int).
__device__ __forceinline__ int matmul_imin(int a, int b) { return a < b ? a : b; }

// The sizes of one launch (see the file comment).
struct MatmulDims {
    int batch, per_out, m, n, k;
    uint64_t a_stride, b_stride;

    __device__ int outputs() const { return (batch + per_out - 1) / per_out; }
};

// Element (row, col) of op(A_b) [M, K]: A_b stored [M, K], or [K, M] when TRANS.
template <bool TRANS>
__device__ __forceinline__ float load_a(const float* a, const MatmulDims& d, int row, int col) {
    return TRANS ? a[(size_t)col * d.m + row] : a[(size_t)row * d.k + col];
}

// Element (row, col) of op(B_b) [K, N]: B_b stored [K, N], or [N, K] when TRANS.
template <bool TRANS>
__device__ __forceinline__ float load_b(const float* b, const MatmulDims& d, int row, int col) {
    return TRANS ? b[(size_t)col * d.k + row] : b[(size_t)row * d.n + col];
}

// The tile at (m0, n0) of output matrix z, in tile coordinates taken from blockIdx.x.
__device__ __forceinline__ void matmul_tile_origin(const MatmulDims& d, int* m0, int* n0) {
    const int tiles_n = (d.n + MATMUL_TILE_N - 1) / MATMUL_TILE_N;
    *m0 = (blockIdx.x / tiles_n) * MATMUL_TILE_M;
    *n0 = (blockIdx.x % tiles_n) * MATMUL_TILE_N;
}

// ---- fp32 SIMT ------------------------------------------------------------------------------

struct MatmulTiles {
    // +1 column: stores along k hit distinct banks.
    float a[MATMUL_TILE_K][MATMUL_TILE_M + 1];
    float b[MATMUL_TILE_K][MATMUL_TILE_N + 1];
};

// Adds op(A_b) op(B_b) restricted to the block's tile to acc. Rows m >= M, columns n >= N and
// k >= K read as zero. Consecutive threads load along each operand's stored contiguous index,
// so global loads coalesce whatever the transposes.
template <bool TA, bool TB>
__device__ __forceinline__ void matmul_accumulate(MatmulTiles& s, const float* a, const float* b,
                                                  const MatmulDims& d, int m0, int n0, float acc[4][4]) {
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    for (int k0 = 0; k0 < d.k; k0 += MATMUL_TILE_K) {
        // Two loads in flight, not all four: fully unrolled, ptxas (CUDA 13, sm_90) keeps every
        // address and value live and gives the kernel 96 registers (2 blocks per SM); this way 42.
#pragma unroll 2
        for (int l = 0; l < MATMUL_LOADS; ++l) {
            const int e = tid + l * MATMUL_THREADS;
            int mm = TA ? e % MATMUL_TILE_M : e / MATMUL_TILE_K;
            int kk = TA ? e / MATMUL_TILE_M : e % MATMUL_TILE_K;
            int m = m0 + mm, k = k0 + kk;
            s.a[kk][mm] = (m < d.m && k < d.k) ? load_a<TA>(a, d, m, k) : 0.0f;
            const int nn = TB ? e / MATMUL_TILE_K : e % MATMUL_TILE_N;
            kk = TB ? e % MATMUL_TILE_K : e / MATMUL_TILE_N;
            const int n = n0 + nn;
            k = k0 + kk;
            s.b[kk][nn] = (n < d.n && k < d.k) ? load_b<TB>(b, d, k, n) : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < MATMUL_TILE_K; ++kk) {
            float av[4], bv[4];
            for (int i = 0; i < 4; ++i) av[i] = s.a[kk][ty + 16 * i];
            for (int j = 0; j < 4; ++j) bv[j] = s.b[kk][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        DML_COUNT_FLOPS(2 * 16 * MATMUL_TILE_K);  // 4x4 FMAs per kk
        __syncthreads();  // the tiles are overwritten next
    }
}

template <bool TA, bool TB>
__device__ __forceinline__ void matmul_f32_body(MatmulTiles& s, const float* a, const float* b, float* c,
                                                const MatmulDims& d) {
    int m0, n0;
    matmul_tile_origin(d, &m0, &n0);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int z = blockIdx.y; z < d.outputs(); z += gridDim.y) {
        float acc[4][4];
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
        const int b_end = matmul_imin(d.batch, (z + 1) * d.per_out);
        for (int bt = z * d.per_out; bt < b_end; ++bt)
            matmul_accumulate<TA, TB>(s, a + bt * d.a_stride, b + bt * d.b_stride, d, m0, n0, acc);
        float* cz = c + (size_t)z * d.m * d.n;
        for (int i = 0; i < 4; ++i) {
            const int m = m0 + ty + 16 * i;
            if (m >= d.m) continue;
            for (int j = 0; j < 4; ++j) {
                const int n = n0 + tx + 16 * j;
                if (n < d.n) cz[(size_t)m * d.n + n] = acc[i][j];
            }
        }
    }
}

// The transposes are flags of one kernel (uniform over the launch, so no divergence); each of the
// four combinations is its own instantiation with the loads' index arithmetic fixed at compile
// time. The shared tiles are declared once here, not in the template, so the four do not each
// reserve their own.
extern "C" __global__ void matmul_f32(const float* __restrict__ a, const float* __restrict__ b,
                                      float* __restrict__ c, int batch, int per_out, int m, int n, int k,
                                      int trans_a, int trans_b, uint64_t a_stride, uint64_t b_stride) {
    __shared__ MatmulTiles s;
    const MatmulDims d{batch, per_out, m, n, k, a_stride, b_stride};
    if (trans_a) {
        if (trans_b) matmul_f32_body<true, true>(s, a, b, c, d);
        else matmul_f32_body<true, false>(s, a, b, c, d);
    } else {
        if (trans_b) matmul_f32_body<false, true>(s, a, b, c, d);
        else matmul_f32_body<false, false>(s, a, b, c, d);
    }
}
EMU_EXPORT(matmul_f32)

// ---- tensor cores (wmma: tf32 m16n16k8, bf16 m16n16k16) ---------------------------------------
// The same products with both operands rounded to tf32 or bf16 (mma_operands.cuh) while they are
// staged, and fp32 accumulation, as conv.cu's tensor-core kernels. The 8 warps of the block tile
// its 64x64 result as 4 rows x 2 columns of 16x32 slabs, two accumulator fragments each. K
// advances in slices of 32: four mma steps of 8 in tf32, two of 16 in bf16.
#define MATMUL_MMA_TILE_K 32
#define MATMUL_MMA_LOADS ((MATMUL_TILE_M * MATMUL_MMA_TILE_K) / MATMUL_THREADS)
#define MATMUL_MMA_C_LD (MATMUL_TILE_N + 8)

// The operand tiles during the K loop, then the result tile for the epilogue. 32-byte aligned and
// every fragment's first element 32 bytes from the last, as load/store_matrix_sync require.
template <class Ops>
union alignas(32) MatmulMmaShared {
    // Leading dimensions: multiples of 16 bytes (wmma's rule), padded off the bank stride.
    static constexpr int A_LD = MATMUL_MMA_TILE_K + Ops::PAD, B_LD = MATMUL_TILE_N + 2 * Ops::PAD;
    struct Operands {
        typename Ops::Stored a[MATMUL_TILE_M][A_LD];      // op(A)(m, k), row-major
        typename Ops::Stored b[MATMUL_MMA_TILE_K][B_LD];  // op(B)(k, n), row-major
    } in;
    float c[MATMUL_TILE_M][MATMUL_MMA_C_LD];
};

// Stages the slice [k0, k0 + MATMUL_MMA_TILE_K) of op(A_b) and op(B_b), rounded to the operand
// format, zero for rows m >= M, columns n >= N and k >= K; consecutive threads along each
// operand's stored contiguous index.
template <class Ops, bool TA, bool TB>
__device__ __forceinline__ void matmul_mma_stage(MatmulMmaShared<Ops>& s, const float* a, const float* b,
                                                 const MatmulDims& d, int m0, int n0, int k0) {
    // Four loads in flight, not all eight: fully unrolled, ptxas (CUDA 13, sm_90) gives the kernel
    // 210 registers, one block per SM, where every warp then waits on its loads; this way 72.
#pragma unroll 4
    for (int l = 0; l < MATMUL_MMA_LOADS; ++l) {
        const int e = threadIdx.x + l * MATMUL_THREADS;
        const int mm = TA ? e % MATMUL_TILE_M : e / MATMUL_MMA_TILE_K;
        int kk = TA ? e / MATMUL_TILE_M : e % MATMUL_MMA_TILE_K;
        const int m = m0 + mm;
        int k = k0 + kk;
        s.in.a[mm][kk] = Ops::stage((m < d.m && k < d.k) ? load_a<TA>(a, d, m, k) : 0.0f, false);
        const int nn = TB ? e / MATMUL_MMA_TILE_K : e % MATMUL_TILE_N;
        kk = TB ? e % MATMUL_MMA_TILE_K : e / MATMUL_TILE_N;
        const int n = n0 + nn;
        k = k0 + kk;
        s.in.b[kk][nn] = Ops::stage((n < d.n && k < d.k) ? load_b<TB>(b, d, k, n) : 0.0f, false);
    }
}

template <class Ops, bool TA, bool TB>
__device__ __forceinline__ void matmul_mma_body(MatmulMmaShared<Ops>& s, const float* a, const float* b, float* c,
                                                const MatmulDims& d) {
    using namespace nvcuda;
    using Shared = MatmulMmaShared<Ops>;
    constexpr int MMA_K = Ops::MMA_K;
    int m0, n0;
    matmul_tile_origin(d, &m0, &n0);
    const int warp = threadIdx.x / 32;
    const int row = (warp % 4) * 16, col = (warp / 4) * 32;
    for (int z = blockIdx.y; z < d.outputs(); z += gridDim.y) {
        wmma::fragment<wmma::accumulator, 16, 16, MMA_K, float> acc[2];
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[j], 0.0f);
        const int b_end = matmul_imin(d.batch, (z + 1) * d.per_out);
        for (int bt = z * d.per_out; bt < b_end; ++bt) {
            const float* ab = a + bt * d.a_stride;
            const float* bb = b + bt * d.b_stride;
            for (int k0 = 0; k0 < d.k; k0 += MATMUL_MMA_TILE_K) {
                matmul_mma_stage<Ops, TA, TB>(s, ab, bb, d, m0, n0, k0);
                __syncthreads();
                for (int kk = 0; kk < MATMUL_MMA_TILE_K; kk += MMA_K) {
                    wmma::fragment<wmma::matrix_a, 16, 16, MMA_K, typename Ops::Fragment, wmma::row_major> fa;
                    wmma::load_matrix_sync(fa, &s.in.a[row][kk], Shared::A_LD);
                    for (int j = 0; j < 2; ++j) {
                        wmma::fragment<wmma::matrix_b, 16, 16, MMA_K, typename Ops::Fragment, wmma::row_major> fb;
                        wmma::load_matrix_sync(fb, &s.in.b[kk][col + 16 * j], Shared::B_LD);
                        wmma::mma_sync(acc[j], fa, fb, acc[j]);
                    }
                }
                __syncthreads();  // the operand tiles are overwritten next (or become the result tile)
            }
        }
        // The fragment layout is opaque, so results leave through shared memory.
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(&s.c[row][col + 16 * j], acc[j], MATMUL_MMA_C_LD, wmma::mem_row_major);
        __syncthreads();
        float* cz = c + (size_t)z * d.m * d.n;
        for (int e = threadIdx.x; e < MATMUL_TILE_M * MATMUL_TILE_N; e += MATMUL_THREADS) {
            const int mm = e / MATMUL_TILE_N, nn = e % MATMUL_TILE_N;
            const int m = m0 + mm, n = n0 + nn;
            if (m < d.m && n < d.n) cz[(size_t)m * d.n + n] = s.c[mm][nn];
        }
        __syncthreads();  // s.c is the next output's operand tiles
    }
}

template <class Ops>
__device__ __forceinline__ void matmul_mma(const float* __restrict__ a, const float* __restrict__ b,
                                           float* __restrict__ c, int batch, int per_out, int m, int n, int k,
                                           int trans_a, int trans_b, uint64_t a_stride, uint64_t b_stride) {
    __shared__ MatmulMmaShared<Ops> s;
    const MatmulDims d{batch, per_out, m, n, k, a_stride, b_stride};
    if (trans_a) {
        if (trans_b) matmul_mma_body<Ops, true, true>(s, a, b, c, d);
        else matmul_mma_body<Ops, true, false>(s, a, b, c, d);
    } else {
        if (trans_b) matmul_mma_body<Ops, false, true>(s, a, b, c, d);
        else matmul_mma_body<Ops, false, false>(s, a, b, c, d);
    }
}

extern "C" __global__ void matmul_tf32_f32(const float* __restrict__ a, const float* __restrict__ b,
                                           float* __restrict__ c, int batch, int per_out, int m, int n, int k,
                                           int trans_a, int trans_b, uint64_t a_stride, uint64_t b_stride) {
    matmul_mma<Tf32Operands>(a, b, c, batch, per_out, m, n, k, trans_a, trans_b, a_stride, b_stride);
}
EMU_EXPORT(matmul_tf32_f32)

extern "C" __global__ void matmul_bf16_f32(const float* __restrict__ a, const float* __restrict__ b,
                                           float* __restrict__ c, int batch, int per_out, int m, int n, int k,
                                           int trans_a, int trans_b, uint64_t a_stride, uint64_t b_stride) {
    matmul_mma<Bf16Operands>(a, b, c, batch, per_out, m, n, k, trans_a, trans_b, a_stride, b_stride);
}
EMU_EXPORT(matmul_bf16_f32)

// out[i] = sum over r of partial[r][i], r in order: the runs of a batch sum, added in a fixed
// order so the result does not depend on the schedule.
extern "C" __global__ void matmul_sum_runs_f32(const float* __restrict__ partial, float* __restrict__ out,
                                               int runs, uint64_t n) {
    for (uint64_t i = global_index_1d(); i < n; i += grid_stride_1d()) {
        float acc = 0.0f;
        for (int r = 0; r < runs; ++r) acc += partial[(uint64_t)r * n + i];
        out[i] = acc;
    }
}
EMU_EXPORT(matmul_sum_runs_f32)
