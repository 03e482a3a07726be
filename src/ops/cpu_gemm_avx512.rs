//! The cpu backend's matrix product on cores with AVX-512: a packed GEMM in the BLIS layout. The
//! `gemm` crate runs AVX-512 only on a nightly compiler, so on stable Rust it stops at AVX2's
//! 8-lane FMAs; AVX-512 halves the instructions per flop (and doubles the width on cores with
//! 512-bit FMA pipes). The convolutions of the paper network are most of its time (issue 19).
//!
//! Blocking, from the outside in: columns of C in blocks of [`NC`], depth in blocks of [`KC`]
//! (each block of B packed once into micro-panels of [`NR`] columns), rows in blocks of [`MC`]
//! (each block of A packed into micro-panels of [`MR`] rows, about 100 KiB, held in L2), then an
//! `MR x NR` register tile per micro-kernel call whose B micro-panel (`KC x NR`, 32 KiB) is reused
//! from L1 while every A micro-panel of the block streams past it. The depth is summed in blocks of
//! KC in order, so a result depends on the shapes alone, never on the thread that computes it.
use std::arch::x86_64::{
    __m512, __mmask16, _mm512_castpd_ps, _mm512_castps_pd, _mm512_fmadd_ps, _mm512_load_ps,
    _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_unpackhi_pd, _mm512_unpackhi_ps,
    _mm512_unpacklo_pd, _mm512_unpacklo_ps,
};
use std::cell::RefCell;
use std::sync::OnceLock;

use super::cpu_gemm::MatRef;

/// Rows of the register tile: 12 rows x 2 vectors = 24 accumulators, plus 2 vectors of B and one
/// broadcast of A, of the 32 vector registers.
pub(super) const MR: usize = 12;
/// Columns of the register tile: two 16-lane vectors.
const NR: usize = 32;
/// Depth of a packed block: a B micro-panel of KC x NR floats is 32 KiB, the L1d of the
/// development VM's cores (not tuned yet).
const KC: usize = 256;
/// Rows of a packed block of A: 96 x KC floats, 96 KiB, inside L2.
const MC: usize = 96;
/// Columns of a packed block of B: KC x NC floats, 1 MiB.
const NC: usize = 1024;
/// Floats per 64-byte cache line: packed panels start on a line, so aligned loads never split.
const LINE: usize = 16;

/// Whether this core runs AVX-512F (asked once).
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

thread_local! {
    /// Each thread's packing buffers, reused across calls (a call per sample per convolution).
    static PACKED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `a` packed once for many products with it (a convolution's weights, the same for every sample
/// of a batch): every (depth block, row block) of [`gemm`]'s loops as [`pack_a`] lays it out,
/// depth blocks outer. Row blocks are MC rows, a multiple of MR, so the block at depth `pc` and
/// row `ic` starts at `pc * rows.next_multiple_of(MR) + ic * kc`.
pub(super) struct PackedA {
    data: Vec<f32>,
    rows: usize,
    depth: usize,
}

impl PackedA {
    pub(super) fn new(a: MatRef<'_>) -> Self {
        let (m, k) = (a.rows, a.cols);
        let mut data = vec![0.0; m.next_multiple_of(MR) * k];
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                let start = pc * m.next_multiple_of(MR) + ic * kc;
                pack_a(
                    a,
                    ic,
                    mc,
                    pc,
                    kc,
                    &mut data[start..start + mc.next_multiple_of(MR) * kc],
                );
            }
        }
        Self {
            data,
            rows: m,
            depth: k,
        }
    }

    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    pub(super) fn depth(&self) -> usize {
        self.depth
    }

    fn block(&self, pc: usize, kc: usize, ic: usize, mc: usize) -> &[f32] {
        let start = pc * self.rows.next_multiple_of(MR) + ic * kc;
        &self.data[start..start + mc.next_multiple_of(MR) * kc]
    }
}

/// The left operand of one product: packed by it, or once beforehand.
#[derive(Clone, Copy)]
enum Lhs<'a> {
    Plain(MatRef<'a>),
    Packed(&'a PackedA),
}

/// `c = a b + beta c`, with `c` a contiguous row-major `[a.rows, b.cols]` matrix. The caller has
/// checked that every element the views address lies inside their slices and that `c` holds
/// `a.rows * b.cols` elements. Panics when the core lacks AVX-512F ([`available`] says).
pub(super) fn gemm(a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    product(Lhs::Plain(a), a.rows, a.cols, b, beta, c);
}

/// [`gemm`] with `a` packed beforehand: the same arithmetic in the same order, so the same bits.
pub(super) fn gemm_packed(a: &PackedA, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    product(Lhs::Packed(a), a.rows, a.depth, b, beta, c);
}

fn product(a: Lhs<'_>, m: usize, k: usize, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    assert!(
        available(),
        "the AVX-512 GEMM ran on a core without AVX-512F"
    );
    let n = b.cols;
    let c = &mut c[..m * n];
    if k == 0 {
        scale(c, beta);
        return;
    }
    PACKED.with(|bufs| {
        let (a_buf, b_buf) = &mut *bufs.borrow_mut();
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let b_packed = aligned(b_buf, nc.next_multiple_of(NR) * kc);
                pack_b(b, pc, kc, jc, nc, b_packed);
                // The first depth block applies beta; the later ones add to what it wrote.
                let beta_block = if pc == 0 { beta } else { 1.0 };
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    let a_packed: &[f32] = match a {
                        Lhs::Plain(a) => {
                            let buf = aligned(a_buf, mc.next_multiple_of(MR) * kc);
                            pack_a(a, ic, mc, pc, kc, buf);
                            buf
                        }
                        Lhs::Packed(packed) => packed.block(pc, kc, ic, mc),
                    };
                    let block = Block {
                        kc,
                        a_packed,
                        b_packed,
                        beta: beta_block,
                    };
                    block.multiply(&mut c[ic * n + jc..], n, mc, nc);
                }
            }
        }
    });
}

/// `c *= beta`, with beta 0 writing zeros whatever c held (as the product with k = 0 does).
fn scale(c: &mut [f32], beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else {
        c.iter_mut().for_each(|v| *v *= beta);
    }
}

/// `len` floats of `buf` starting on a cache line, growing it when needed.
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + LINE {
        buf.resize(len + LINE, 0.0);
    }
    let skip = buf.as_ptr().align_offset(LINE * size_of::<f32>()).min(LINE);
    &mut buf[skip..skip + len]
}

/// Rows `ic..ic+mc`, columns `pc..pc+kc` of `a` as micro-panels of MR rows: panel `r` holds
/// element (r MR + i, p) at `r MR kc + p MR + i`; rows past `mc` are zeros. Reads run along
/// whichever of `a`'s dimensions is contiguous.
fn pack_a(a: MatRef<'_>, ic: usize, mc: usize, pc: usize, kc: usize, out: &mut [f32]) {
    let at = |row: usize, p: usize| a.data[(ic + row) * a.row_stride + (pc + p) * a.col_stride];
    for (panel, rows) in out.chunks_exact_mut(MR * kc).enumerate() {
        let height = MR.min(mc.saturating_sub(panel * MR));
        if height < MR {
            rows.fill(0.0);
        }
        if a.col_stride == 1 {
            // A row-major (a weight gradient's dy or transformed tiles): each row is contiguous
            // along the depth, so whole panels go 16 deep at a time through register transposes
            // (rows past MR repeat the first and are dropped); the depth past the last whole
            // block, and panels short of MR rows, one float at a time. All of it one float at a
            // time was a third of a weight gradient by Winograd at 64 -> 128, 28x28.
            let transposed = if height == MR { kc / LANES * LANES } else { 0 };
            let row = |i: usize| (ic + panel * MR + if i < MR { i } else { 0 }) * a.row_stride + pc;
            for p0 in (0..transposed).step_by(LANES) {
                let block: [&[f32; LANES]; LANES] = std::array::from_fn(|i| {
                    a.data[row(i) + p0..][..LANES]
                        .try_into()
                        .expect("16 floats")
                });
                // SAFETY: AVX-512F is present (checked by `gemm`).
                unsafe { transpose_16x16(block, &mut rows[p0 * MR..], MR, MR) };
            }
            for i in 0..height {
                for p in transposed..kc {
                    rows[p * MR + i] = at(panel * MR + i, p);
                }
            }
        } else {
            for (p, dst) in rows.chunks_exact_mut(MR).enumerate() {
                for (i, v) in dst[..height].iter_mut().enumerate() {
                    *v = at(panel * MR + i, p);
                }
            }
        }
    }
}

/// Rows `pc..pc+kc`, columns `jc..jc+nc` of `b` as micro-panels of NR columns: panel `q` holds
/// element (p, q NR + j) at `q NR kc + p NR + j`; columns past `nc` are zeros. Reads run along
/// whichever of `b`'s dimensions is contiguous.
fn pack_b(b: MatRef<'_>, pc: usize, kc: usize, jc: usize, nc: usize, out: &mut [f32]) {
    for (panel, cols) in out.chunks_exact_mut(NR * kc).enumerate() {
        let j0 = jc + panel * NR;
        let width = NR.min(nc - panel * NR);
        if b.col_stride == 1 && width == NR {
            // A whole panel row is NR floats, a length the compiler knows: register moves rather
            // than a memmove call per 128 bytes (a tenth of the FID Inception's time).
            for (p, dst) in cols.chunks_exact_mut(NR).enumerate() {
                let start = (pc + p) * b.row_stride + j0;
                let row: &[f32; NR] = b.data[start..start + NR].try_into().expect("NR floats");
                dst.copy_from_slice(row);
            }
        } else if b.col_stride == 1 {
            for (p, dst) in cols.chunks_exact_mut(NR).enumerate() {
                let start = (pc + p) * b.row_stride + j0;
                dst[..width].copy_from_slice(&b.data[start..start + width]);
                dst[width..].fill(0.0);
            }
        } else if b.row_stride == 1 && width == NR {
            // B transposed in memory (a weight gradient's im2col matrix): each column is
            // contiguous along the depth, so 16x16 blocks are transposed in registers; one
            // element at a time, this store-bound loop was 7% of a paper training step.
            let blocks = kc / LANES * LANES;
            for half in 0..NR / LANES {
                let column = |j: usize| (j0 + half * LANES + j) * b.col_stride + pc;
                for p0 in (0..blocks).step_by(LANES) {
                    let rows: [&[f32; LANES]; LANES] = std::array::from_fn(|j| {
                        b.data[column(j) + p0..][..LANES]
                            .try_into()
                            .expect("16 floats")
                    });
                    let dst = &mut cols[p0 * NR + half * LANES..];
                    // SAFETY: AVX-512F is present (checked by `gemm`).
                    unsafe { transpose_16x16(rows, dst, NR, LANES) };
                }
                for j in 0..LANES {
                    for p in blocks..kc {
                        cols[p * NR + half * LANES + j] = b.data[column(j) + p];
                    }
                }
            }
        } else {
            if width < NR {
                cols.fill(0.0);
            }
            for j in 0..width {
                let column = &b.data[(j0 + j) * b.col_stride..];
                for p in 0..kc {
                    cols[p * NR + j] = column[(pc + p) * b.row_stride];
                }
            }
        }
    }
}

/// Floats in an AVX-512 vector.
const LANES: usize = 16;

/// `dst[q stride + j] = rows[j][q]` for a 16x16 block, `j < width` (the other rows are read and
/// dropped): interleaves of 32-bit, then 64-bit elements within 128-bit lanes, then two rounds of
/// lane shuffles.
///
/// # Safety
/// The core must run AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_16x16(
    rows: [&[f32; LANES]; LANES],
    dst: &mut [f32],
    stride: usize,
    width: usize,
) {
    debug_assert!(width <= LANES);
    // SAFETY (loads): each row is 16 floats.
    let r: [__m512; LANES] = std::array::from_fn(|j| unsafe { _mm512_loadu_ps(rows[j].as_ptr()) });
    // t[2k], t[2k + 1]: rows 2k and 2k + 1 interleaved, first and second pair of each lane.
    let t: [__m512; LANES] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + c]: lane L holds column 4L + c of rows 4g..4g + 3.
    let u: [__m512; LANES] = std::array::from_fn(|i| {
        let (g, c) = (i / 4, i % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * g + c / 2]),
            _mm512_castps_pd(t[4 * g + 2 + c / 2]),
        );
        _mm512_castpd_ps(if c % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    for c in 0..4 {
        // Lanes 0 and 2 (even) or 1 and 3 (odd) of rows 0..8, then of rows 8..16.
        let even_lo = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let odd_lo = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        let even_hi = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let odd_hi = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
        let columns = [
            (c, _mm512_shuffle_f32x4::<0x88>(even_lo, even_hi)),
            (4 + c, _mm512_shuffle_f32x4::<0x88>(odd_lo, odd_hi)),
            (8 + c, _mm512_shuffle_f32x4::<0xdd>(even_lo, even_hi)),
            (12 + c, _mm512_shuffle_f32x4::<0xdd>(odd_lo, odd_hi)),
        ];
        for (q, v) in columns {
            let out = &mut dst[q * stride..][..width];
            // SAFETY: `out` is `width` floats, the lanes the mask stores.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), lanes(width), v) };
        }
    }
}

/// One packed block of A (`mc x kc`) and of B (`kc x nc`), multiplied into C.
struct Block<'a> {
    kc: usize,
    a_packed: &'a [f32],
    b_packed: &'a [f32],
    beta: f32,
}

impl Block<'_> {
    /// `c[i * ldc + j] = (a b)[i][j] + beta c[i * ldc + j]` for `i < mc`, `j < nc`, one register
    /// tile at a time, B's micro-panel outside so it stays in L1.
    fn multiply(&self, c: &mut [f32], ldc: usize, mc: usize, nc: usize) {
        let kc = self.kc;
        for jr in (0..nc).step_by(NR) {
            let nr = NR.min(nc - jr);
            let b = &self.b_packed[jr * kc..(jr + NR) * kc];
            for ir in (0..mc).step_by(MR) {
                let mr = MR.min(mc - ir);
                let a = &self.a_packed[ir * kc..(ir + MR) * kc];
                let tile = &mut c[ir * ldc + jr..];
                assert!(tile.len() >= (mr - 1) * ldc + nr, "GEMM tile outside C");
                // SAFETY: AVX-512F is present (checked by `gemm`); `a` and `b` are whole
                // micro-panels, and `b` starts on a cache line (the packed block does, and each
                // panel is kc NR floats, a whole number of lines); the tile covers the rows and
                // columns the kernel writes (asserted above).
                unsafe { micro_kernel(kc, a, b, tile, ldc, self.beta, mr, nr) };
            }
        }
    }
}

/// The 16-lane mask of the first `n` lanes (`n` may exceed 16).
pub(super) fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        (1u16 << n) - 1
    }
}

/// One MR x NR tile: `c[i * ldc + j] = sum_p a[p MR + i] b[p NR + j] + beta c[..]` for `i < mr`,
/// `j < nr`; C is read only when beta is not zero.
///
/// # Safety
/// The core must run AVX-512F. `a` holds `kc MR` floats and `b` holds `kc NR` floats starting on
/// a 64-byte boundary; `c` holds at least `(mr - 1) ldc + nr` floats.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR && b.as_ptr().addr().is_multiple_of(64));
    let mut acc: [[__m512; 2]; MR] = [[_mm512_setzero_ps(); 2]; MR];
    let (a, b) = (a.as_ptr(), b.as_ptr());
    for p in 0..kc {
        // SAFETY: p < kc, so both loads and every broadcast stay inside the micro-panels; the
        // B rows are 128 bytes apart from an aligned start.
        let (b0, b1) = unsafe {
            (
                _mm512_load_ps(b.add(p * NR)),
                _mm512_load_ps(b.add(p * NR + 16)),
            )
        };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: p MR + i < kc MR.
            let a_pi = _mm512_set1_ps(unsafe { *a.add(p * MR + i) });
            row[0] = _mm512_fmadd_ps(a_pi, b0, row[0]);
            row[1] = _mm512_fmadd_ps(a_pi, b1, row[1]);
        }
    }
    let (mask0, mask1) = (lanes(nr), lanes(nr.saturating_sub(16)));
    let beta_v = _mm512_set1_ps(beta);
    for (i, row) in acc.iter().take(mr).enumerate() {
        // SAFETY: row i < mr starts at i ldc, and the masks keep every access below i ldc + nr,
        // inside `c`; masked-off lanes are neither read nor written.
        unsafe {
            let out = c.as_mut_ptr().add(i * ldc);
            let (mut v0, mut v1) = (row[0], row[1]);
            if beta != 0.0 {
                v0 = _mm512_fmadd_ps(beta_v, _mm512_maskz_loadu_ps(mask0, out), v0);
                v1 = _mm512_fmadd_ps(beta_v, _mm512_maskz_loadu_ps(mask1, out.add(16)), v1);
            }
            _mm512_mask_storeu_ps(out, mask0, v0);
            _mm512_mask_storeu_ps(out.add(16), mask1, v1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{fill_normals, stream};

    /// `a b + beta c` in f64, the reference.
    fn reference(a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &[f32]) -> Vec<f64> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                let dot: f64 = (0..k)
                    .map(|p| {
                        let av = a.data[i * a.row_stride + p * a.col_stride] as f64;
                        av * b.data[p * b.row_stride + j * b.col_stride] as f64
                    })
                    .sum();
                dot + if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * c[ij] as f64
                }
            })
            .collect()
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut values = vec![0.0; len];
        fill_normals(seed, stream::TEST, 0, 0, &mut values);
        values
    }

    #[test]
    fn matches_f64_on_edge_shapes_strides_and_betas() {
        if !available() {
            eprintln!(
                "skipped: this core has no AVX-512F, so the product falls back to the gemm crate"
            );
            return;
        }
        // Edges of every blocking level: a row short of and past MR and MC, a column short of
        // and past NR and NC, depths short of and past KC, and degenerate sizes.
        let shapes = [
            (1, 1, 1),
            (11, 7, 31),
            (13, 257, 33),
            (97, 513, 17),
            (64, 576, 784),
            (25, 9, 1025),
            (200, 300, 20),
            (5, 0, 40),
        ];
        for (s, &(m, k, n)) in shapes.iter().enumerate() {
            for (t, &(a_t, b_t)) in [(false, false), (true, false), (false, true)]
                .iter()
                .enumerate()
            {
                for beta in [0.0, 1.0, 0.5] {
                    let seed = (s * 10 + t) as u64;
                    let (a_data, b_data) = (random(m * k, seed), random(k * n, seed + 100));
                    let a = if a_t {
                        MatRef::row_major(&a_data, k, m).t()
                    } else {
                        MatRef::row_major(&a_data, m, k)
                    };
                    let b = if b_t {
                        MatRef::row_major(&b_data, n, k).t()
                    } else {
                        MatRef::row_major(&b_data, k, n)
                    };
                    let mut c = random(m * n, seed + 200);
                    if beta == 0.0 {
                        c.iter_mut().step_by(7).for_each(|v| *v = f32::NAN);
                    }
                    let want = reference(a, b, beta, &c);
                    // Packed beforehand, the same product must give the same bits.
                    let mut c_packed = c.clone();
                    gemm_packed(&PackedA::new(a), b, beta, &mut c_packed);
                    gemm(a, b, beta, &mut c);
                    assert!(
                        c.iter()
                            .zip(&c_packed)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{m}x{k}x{n} a_t {a_t} b_t {b_t} beta {beta}: packed beforehand differs"
                    );
                    for (ij, (&got, &want)) in c.iter().zip(&want).enumerate() {
                        let tol = 1e-5 * (k as f64 + 1.0).sqrt() * 4.0;
                        assert!(
                            (got as f64 - want).abs() <= tol * (1.0 + want.abs()),
                            "{m}x{k}x{n} a_t {a_t} b_t {b_t} beta {beta}: element {ij}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
