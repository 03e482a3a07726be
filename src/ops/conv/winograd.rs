//! The cpu backend's 3x3 "same" convolutions at stride 1 by Winograd's minimal filtering
//! F(2x2, 3x3) (docs/SPEC.md section 9.1; Lavin and Gray 2016): a 2x2 block of outputs of one
//! channel pair costs 16 multiplies instead of 36, so the GEMMs do 2.25x fewer flops. im2col +
//! GEMM already runs near the machine's FMA peak, PyTorch's rate (benches/RESULTS.md), so fewer
//! flops is what is left (issue 19). The transformed tiles are four times the activations, so
//! the forward pass runs a block of tiles at a time through all its steps while the block is in
//! L2; the saving is measured, not assumed, and [`applies`] chooses it only where it was faster
//! (benches/RESULTS.md): 11-17% on the forward convolutions it serves, 5-14% on DDPM++ steps.
//!
//! With `V = B^T d B` (a 4x4 input tile `d` per channel), `U = G g G^T` (per 3x3 kernel `g`) and
//! the output tile `Y = A^T M A`, all three passes are 16 GEMMs, one per point `xi` of the 4x4
//! transform domain, between transforms that only add:
//! - forward: `M_xi[co, n] = sum_ci U_xi[co, ci] V_xi[ci, n]` over the tiles `n`;
//! - input gradient: the forward pass of `dy` with the kernels flipped and their channels swapped
//!   (a same-padded convolution's adjoint is one);
//! - weight gradient: `dU_xi[co, ci] = sum_n (A dY A^T)_xi[co, n] V_xi[ci, n]`, then
//!   `dg = G^T dU G` (the adjoint of each linear step).
//!
//! Dilation `dil` splits each axis into `dil` classes of outputs `r, r + dil, ...`, each an
//! undilated convolution of the pixels of that class, so tiles run along a class. Every output
//! and every tile is computed by one thread in one order, and the tiles of a batch are taken in
//! groups whose size depends on the shapes alone: the result never depends on the thread count.
use std::cell::RefCell;

use super::super::cpu_gemm::{gemm, gemm_shared, MatRef, SharedLhs};
use super::super::cpu_parallel::{cores, for_each_item_chunk};
use super::super::cpu_simd::avx2_fma;
use super::{sized, with_worker_scratch, ConvDims};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Points of the 4x4 transform domain: one GEMM each.
const XI: usize = 16;
/// The least GEMM work per unit of transform work, `c_in c_out / (c_in + c_out)`, that pays: the
/// transforms cost the same per channel whatever the other side's width. Measured on the
/// development VM (A/B against im2col, alternate runs): 128 -> 128 (64) and 128 -> 64 (43) gain
/// 10-30%; 64 -> 64 (32) gains since the forward pass runs a block of tiles in L2 (batch 8:
/// forward 2.92 -> 2.55 ms at 28x28 and 0.91 -> 0.76 ms at 14x14, input gradient 2.7 -> 2.56 ms).
const MIN_WORK_RATIO: usize = 32;
/// The same for the weight gradient, whose transforms cover the whole batch: with the portable
/// transforms, 64 -> 64 was even at 28x28 (3.13 ms) and slower at 14x14 (0.88 -> 0.97-1.5 ms),
/// so 64 -> 64 keeps im2col.
const MIN_WORK_RATIO_WEIGHT_GRAD: usize = 40;
/// With AVX-512's transforms 64 -> 64 is faster by F(2x2, 3x3) (Zen 5, alternate runs, batch 8):
/// 1.69-1.81 -> 1.34-1.36 ms at 28x28, 0.50 -> 0.37-0.38 ms at 14x14.
const MIN_WORK_RATIO_WEIGHT_GRAD_AVX512: usize = 32;
/// The transformed tiles of one group of samples (V and M together) stay under this: a batch
/// larger than it is taken a group at a time, so memory stays bounded whatever the batch.
#[cfg(not(test))]
const GROUP_BYTES: usize = 48 << 20;
/// The unit tests' budget: small, so that their batches span several groups.
#[cfg(test)]
const GROUP_BYTES: usize = 256 << 10;
/// The forward pass's block of transformed tiles (V and M) stays under this, half a core's L2
/// cache on the development VM (1 MiB), leaving room for the packed kernels streaming past.
/// Measured (alternate runs): 1 MiB was as fast; 256 KiB 40-60% slower (GEMMs of 16 columns).
#[cfg(not(test))]
const BLOCK_BYTES: usize = 512 << 10;
/// The unit tests' block: 16 tiles, so that their planes span several blocks.
#[cfg(test)]
const BLOCK_BYTES: usize = 16 << 10;

/// Whether F(2x2, 3x3) can compute this convolution: a 3x3 kernel at stride 1 whose padding
/// equals its dilation on both axes (output as large as the input).
fn computes(d: &ConvDims) -> bool {
    d.kh == 3
        && d.kw == 3
        && d.stride == 1
        && d.pad_h == d.dil
        && d.pad_w == d.dil
        && d.h_out == d.h_in
        && d.w_out == d.w_in
}

/// Whether the tile transforms run on AVX-512 ([`avx512`]): the measured rules below differ,
/// as the transforms' share of the work does.
fn fast_transforms() -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx512::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the cpu runs this convolution's forward pass and input gradient by F(2x2, 3x3): where
/// it [`computes`] it and was measured faster than im2col (alternate runs, batch 8). Dilation 2
/// runs by classes of 7 pixels at 14x14: forward 2.97 -> 2.31 ms, input gradient 3.1 -> 2.3-2.7
/// ms at 128 -> 128. At dilation 4 the classes of 3-4 pixels leave a third more tiles than
/// outputs / 4: with the portable transforms the regions of [`super::regions`] are as fast; with
/// AVX-512's the forward is even (1.13-1.15 ms, 128 -> 128 at 14x14) and the input gradient
/// faster (1.23 -> 1.14 ms), so there dilation 4 runs by F(2x2, 3x3) too.
pub(super) fn applies(d: &ConvDims) -> bool {
    let max_dil = if fast_transforms() { 4 } else { 2 };
    computes(d) && d.dil <= max_dil && work_ratio_reaches(d, MIN_WORK_RATIO)
}

/// Whether the cpu runs this convolution's weight gradient by F(2x2, 3x3), with more channels
/// than the other passes need. With the portable transforms undilated ones only (at dilation 2
/// it was slower than im2col, 2.9 -> 3.2-3.5 ms at 128 -> 128); with AVX-512's dilated ones too
/// (14x14, 128 -> 128, alternate runs: dilation 2 1.67-1.68 -> 1.29-1.31 ms, dilation 4
/// 2.38-2.44 -> 1.36-1.41 ms).
pub(super) fn applies_to_weight_grad(d: &ConvDims) -> bool {
    let (max_dil, ratio) = if fast_transforms() {
        (4, MIN_WORK_RATIO_WEIGHT_GRAD_AVX512)
    } else {
        (1, MIN_WORK_RATIO_WEIGHT_GRAD)
    };
    computes(d) && d.dil <= max_dil && work_ratio_reaches(d, ratio)
}

/// Whether `c_in c_out / (c_in + c_out)`, the GEMM work per unit of transform work, is at least
/// `ratio`.
fn work_ratio_reaches(d: &ConvDims, ratio: usize) -> bool {
    d.c_in * d.c_out >= ratio * (d.c_in + d.c_out)
}

/// One axis of the (equal) input and output planes cut into tiles of two outputs. Dilation
/// `dil` splits the outputs into classes `r, r + dil, r + 2 dil, ...` (`r < dil`), each an
/// undilated convolution of the pixels of its class, so a tile's two outputs are `dil` apart and
/// its four inputs are the pixels `dil` before, the two outputs and `dil` after.
struct Axis {
    /// Each tile's first output pixel, classes in order; its first input pixel is `dil` before.
    origins: Vec<usize>,
    size: usize,
    dil: usize,
}

impl Axis {
    fn new(size: usize, dil: usize) -> Self {
        let mut origins = Vec::new();
        for r in 0..dil.min(size) {
            let len = (size - r).div_ceil(dil);
            origins.extend((0..len.div_ceil(2)).map(|s| r + 2 * dil * s));
        }
        Self { origins, size, dil }
    }

    fn tiles(&self) -> usize {
        self.origins.len()
    }

    /// A plane's extent along this axis with `dil` zeros before it and enough after for the
    /// last tile's inputs (up to `size - 1 + 2 dil`): `dil` + size + 2 dil.
    fn padded(&self) -> usize {
        self.size + 3 * self.dil
    }
}

/// The tiling of one convolution's planes.
struct Tiling {
    rows: Axis,
    cols: Axis,
}

impl Tiling {
    fn new(d: &ConvDims) -> Self {
        Self {
            rows: Axis::new(d.h_in, d.dil),
            cols: Axis::new(d.w_in, d.dil),
        }
    }

    fn plane_len(&self) -> usize {
        self.rows.size * self.cols.size
    }

    fn per_sample(&self) -> usize {
        self.rows.tiles() * self.cols.tiles()
    }

    /// Samples per group: as many as keep `floats_per_tile` floats a tile under GROUP_BYTES.
    fn group(&self, batch: usize, floats_per_tile: usize) -> usize {
        let per_sample = self.per_sample() * floats_per_tile * size_of::<f32>();
        (GROUP_BYTES / per_sample.max(1)).clamp(1, batch.max(1))
    }

    /// A zeroed plane with room for `dil` zeros before each axis and the last tiles' reach
    /// after it ([`Axis::padded`]).
    fn padded_plane(&self) -> PaddedPlane {
        PaddedPlane {
            data: vec![0.0; self.rows.padded() * self.cols.padded()],
            width: self.cols.padded(),
        }
    }
}

/// One plane copied into a larger zeroed one at an offset, so that every tile reads and writes
/// without a bounds test; the border stays zero from one plane to the next.
struct PaddedPlane {
    data: Vec<f32>,
    width: usize,
}

impl PaddedPlane {
    /// Copies `plane` (`cols.size` wide) in with its first pixel at (`offset`, `offset`).
    fn load(&mut self, plane: &[f32], cols: usize, offset: usize) {
        for (r, row) in plane.chunks_exact(cols).enumerate() {
            self.data[(r + offset) * self.width + offset..][..cols].copy_from_slice(row);
        }
    }
}

thread_local! {
    /// The caller's transformed tiles (V, M, and the weights' U), reused across calls: every
    /// element is written before it is read, so a reused buffer is never cleared.
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Runs `f` on this thread's scratch buffers, or on fresh ones where a call on this thread is
/// already using them (a rayon thread waiting on its own parallel step may run another
/// convolution's task).
fn with_scratch<R>(f: impl FnOnce(&mut [Vec<f32>; 3]) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        Err(_) => f(&mut [Vec::new(), Vec::new(), Vec::new()]),
    })
}

/// The floats from one point's GEMM result to the next's: at least `len`, and 256 bytes past a
/// multiple of 4 KiB, so that the 16 points of a tile, read together by the output transform,
/// fall in 16 different cache sets (whole 4 KiB strides put them all in one set and made that
/// transform 6x slower at 64 -> 128 channels, 28x28).
fn point_stride(len: usize) -> usize {
    len.next_multiple_of(1024) + 64
}

/// The forward convolution of [`applies`]' shapes: `y = conv(x, w) + bias`.
pub(super) fn forward(d: &ConvDims, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    with_scratch(|[_, _, u]| {
        let u = sized(u, XI * d.c_out * d.c_in);
        transform_weights(w, d.c_out, d.c_in, u);
        correlate(d, x, u, bias, y);
    });
}

/// The input gradient: the forward pass of `dy` through the kernels flipped in both axes with
/// input and output channels swapped (`w'[ci, co, 2 - ki, 2 - kj] = w[co, ci, ki, kj]`).
pub(super) fn backward_data(d: &ConvDims, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let adjoint = ConvDims {
        c_in: d.c_out,
        c_out: d.c_in,
        ..*d
    };
    let mut flipped = vec![0.0; w.len()];
    for (co, w_co) in w.chunks_exact(d.c_in * 9).enumerate() {
        for (ci, g) in w_co.chunks_exact(9).enumerate() {
            let out = &mut flipped[(ci * d.c_out + co) * 9..][..9];
            for (t, &v) in g.iter().enumerate() {
                out[8 - t] = v;
            }
        }
    }
    forward(&adjoint, dy, &flipped, None, dx);
}

/// The weight gradient: `dU_xi = sum over tiles of (A dY A^T)_xi V_xi^T`, groups of samples in
/// order, then `dw = G^T dU G`.
pub(super) fn backward_weight(d: &ConvDims, dy: &[f32], x: &[f32], dw: &mut [f32]) {
    let tiling = Tiling::new(d);
    let group = tiling.group(d.batch, XI * (d.c_in + d.c_out));
    let (x_len, y_len) = (d.c_in * d.h_in * d.w_in, d.c_out * d.h_out * d.w_out);
    with_scratch(|[v, m, du]| {
        let du = sized(du, XI * d.c_out * d.c_in);
        for b0 in (0..d.batch).step_by(group) {
            let samples = group.min(d.batch - b0);
            let n = samples * tiling.per_sample();
            let v = sized(v, d.c_in * XI * n);
            let m = sized(m, d.c_out * XI * n);
            transform_inputs(&tiling, &x[b0 * x_len..][..samples * x_len], d.c_in, v);
            transform_output_grads(&tiling, &dy[b0 * y_len..][..samples * y_len], d.c_out, m);
            // dU_xi [c_out, c_in] = M_xi [c_out, n] V_xi^T [n, c_in], one GEMM a point.
            let beta = if b0 == 0 { 0.0 } else { 1.0 };
            let (v, m) = (&*v, &*m);
            for_each_item_chunk(du, d.c_out * d.c_in, cores(), |first, chunk| {
                for (i, du_xi) in chunk.chunks_exact_mut(d.c_out * d.c_in).enumerate() {
                    let xi = first + i;
                    gemm(
                        point(m, xi, d.c_out, n),
                        point(v, xi, d.c_in, n).t(),
                        beta,
                        du_xi,
                    );
                }
            });
        }
        untransform_weight_grads(du, d.c_out, d.c_in, dw);
    });
}

/// Point `xi`'s `[channels, n]` matrix in transformed tiles laid out `[channels, XI, n]`.
fn point(tiles: &[f32], xi: usize, channels: usize, n: usize) -> MatRef<'_> {
    MatRef {
        data: &tiles[xi * n..],
        rows: channels,
        cols: n,
        row_stride: XI * n,
        col_stride: 1,
    }
}

/// The forward pass with the kernels already transformed (`u`: [XI, c_out, c_in]). Samples are
/// spread over the cores; each sample's tiles are taken a block at a time, transformed, multiplied
/// and transformed back while the block is in the core's L2 cache (transforming a whole batch
/// first made every transform a pass over tiles four times the activations, through memory).
fn correlate(d: &ConvDims, x: &[f32], u: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let tiling = Tiling::new(d);
    let block = block_tiles(d.c_in + d.c_out, tiling.per_sample());
    let (x_len, y_len) = (d.c_in * d.h_in * d.w_in, d.c_out * d.h_out * d.w_out);
    let u_lhs: Vec<SharedLhs<'_>> = u
        .chunks_exact(d.c_out * d.c_in)
        .map(|u_xi| SharedLhs::new(MatRef::row_major(u_xi, d.c_out, d.c_in)))
        .collect();
    for_each_item_chunk(y, y_len, cores().min(d.batch), |first, samples| {
        with_worker_scratch(|[v, m]| {
            let v = sized(v, d.c_in * XI * block);
            let m_stride = point_stride(d.c_out * block);
            let m = sized(m, XI * m_stride);
            for (i, y_b) in samples.chunks_exact_mut(y_len).enumerate() {
                let x_b = &x[(first + i) * x_len..][..x_len];
                for t0 in (0..tiling.per_sample()).step_by(block) {
                    let tiles = t0..(t0 + block).min(tiling.per_sample());
                    let n = tiles.len();
                    transform_input_block(&tiling, x_b, d.c_in, tiles.clone(), &mut v[..]);
                    // M_xi [c_out, n] = U_xi [c_out, c_in] V_xi [c_in, n], one GEMM a point.
                    for (xi, lhs) in u_lhs.iter().enumerate() {
                        let v_xi = point(v, xi, d.c_in, n);
                        gemm_shared(lhs, v_xi, 0.0, &mut m[xi * m_stride..][..d.c_out * n]);
                    }
                    untransform_output_block(&tiling, m, m_stride, tiles, bias, y_b);
                }
            }
        })
    });
}

/// Tiles a block: as many as keep its transformed tiles (`XI` floats per tile and channel, for
/// `channels` input and output channels together) within BLOCK_BYTES, a multiple of the GEMM's
/// 16 columns, at most a sample's `per_sample`.
fn block_tiles(channels: usize, per_sample: usize) -> usize {
    let fit = BLOCK_BYTES / (XI * channels * size_of::<f32>()).max(1);
    (fit / 16 * 16).max(16).min(per_sample.max(1))
}

/// Tiles transformed together, one per lane: [`LANES`] consecutive tiles of a block.
const LANES: usize = 16;
type Lanes = [f32; LANES];

/// The first output pixel (row, column) of each of the tiles `tiles`, in order.
fn tile_origins(tiling: &Tiling, tiles: std::ops::Range<usize>) -> Vec<(usize, usize)> {
    let per_row = tiling.cols.tiles();
    tiles
        .map(|t| {
            (
                tiling.rows.origins[t / per_row],
                tiling.cols.origins[t % per_row],
            )
        })
        .collect()
}

/// `B^T` of [`input_tile`] on four vectors of tiles, lane by lane: `[d0 - d2, d1 + d2, d2 - d1,
/// d1 - d3]`.
#[inline(always)]
fn b_t_lanes(d0: &Lanes, d1: &Lanes, d2: &Lanes, d3: &Lanes, out: &mut [Lanes; 4]) {
    for s in 0..LANES {
        out[0][s] = d0[s] - d2[s];
        out[1][s] = d1[s] + d2[s];
        out[2][s] = d2[s] - d1[s];
        out[3][s] = d1[s] - d3[s];
    }
}

/// `A^T` of [`output_tile`] on four vectors of tiles, lane by lane: `[m0 + m1 + m2, m1 - m2 -
/// m3]`.
#[inline(always)]
fn a_t_lanes(m0: &Lanes, m1: &Lanes, m2: &Lanes, m3: &Lanes, out: &mut [Lanes; 2]) {
    for s in 0..LANES {
        out[0][s] = m0[s] + m1[s] + m2[s];
        out[1][s] = m1[s] - m2[s] - m3[s];
    }
}

/// Lanes `[0, len)` of `lanes` into `dst`: all [`LANES`] when `len` is, a copy of known size
/// (a copy of `len` floats was a memmove call per point).
#[inline(always)]
fn store_lanes(lanes: &Lanes, len: usize, dst: &mut [f32]) {
    if len == LANES {
        let whole: &mut Lanes = (&mut dst[..LANES]).try_into().expect("LANES floats");
        *whole = *lanes;
    } else {
        for (s, o) in dst[..len].iter_mut().enumerate() {
            *o = lanes[s];
        }
    }
}

/// `lanes[s] = src[s]` for `s < len`, all [`LANES`] when `len` is.
#[inline(always)]
fn load_lanes(src: &[f32], len: usize, lanes: &mut Lanes) {
    if len == LANES {
        *lanes = src[..LANES].try_into().expect("LANES floats");
    } else {
        for (s, lane) in lanes[..len].iter_mut().enumerate() {
            *lane = src[s];
        }
    }
}

/// `v[c, xi, n] = (B^T d B)_xi` for the tiles `tiles` of one sample `x` ([channels, H, W]),
/// `n` counting from the block's first tile; `d` is the tile's 4x4 inputs, from `dil` before its
/// first output, zero outside the image. [`input_tile`]'s arithmetic on [`LANES`] tiles at once,
/// so the same bits, with each point's results stored for the lanes together: one tile at a
/// time, this and [`untransform_output_block`] were a third of a 64 -> 64 forward at 28x28.
fn transform_input_block(
    tiling: &Tiling,
    x: &[f32],
    channels: usize,
    tiles: std::ops::Range<usize>,
    v: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide(
        tiling: &Tiling,
        x: &[f32],
        channels: usize,
        tiles: std::ops::Range<usize>,
        v: &mut [f32],
    ) {
        input_block(tiling, x, channels, tiles, v)
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the core runs AVX2 and FMA.
        return unsafe { wide(tiling, x, channels, tiles, v) };
    }
    input_block(tiling, x, channels, tiles, v)
}

#[inline(always)]
fn input_block(
    tiling: &Tiling,
    x: &[f32],
    channels: usize,
    tiles: std::ops::Range<usize>,
    v: &mut [f32],
) {
    let n = tiles.len();
    let (width, plane_len, dil) = (tiling.cols.size, tiling.plane_len(), tiling.rows.dil);
    // The block's rows of tiles read the padded rows [top, bottom): those go into a zeroed
    // strip once per channel, so each tile reads its 4x4 pixels without a bounds test.
    let per_row = tiling.cols.tiles();
    let tile_rows = &tiling.rows.origins[tiles.start / per_row..tiles.end.div_ceil(per_row)];
    let top = tile_rows.iter().copied().min().unwrap_or(0);
    let bottom = tile_rows.iter().copied().max().unwrap_or(0) + 3 * dil + 1;
    let stride = tiling.cols.padded();
    let mut strip = vec![0.0; (bottom - top) * stride];
    // Each tile's first input in the strip.
    let corners = Corners::new(
        tile_origins(tiling, tiles)
            .into_iter()
            .map(|(ro, co)| (ro - top) * stride + co),
        dil,
    );
    // Padded row p holds image row p - dil.
    let image_rows = top.max(dil)..bottom.min(tiling.rows.size + dil);
    for (c, plane) in x.chunks_exact(plane_len).take(channels).enumerate() {
        for p in image_rows.clone() {
            let row = &plane[(p - dil) * width..][..width];
            strip[(p - top) * stride + tiling.cols.dil..][..width].copy_from_slice(row);
        }
        let v_c = &mut v[c * XI * n..][..XI * n];
        transform_chunks(&strip, &corners, stride, dil, TileTransform::Input, v_c, n);
    }
}

/// `y = A^T M A + bias` for the tiles `tiles` of one sample `y` ([channels, H, W]), `m` as [XI,
/// channels, n] with points `m_stride` apart; a last tile's outputs past the image are dropped.
/// [`output_tile`]'s arithmetic on [`LANES`] tiles at once, as [`transform_input_block`]: by
/// AVX-512 where the core has it (masked row stores at dilation 1, scatters above), else lane by
/// lane; the same bits either way.
fn untransform_output_block(
    tiling: &Tiling,
    m: &[f32],
    m_stride: usize,
    tiles: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        let (rows, cols) = (&tiling.rows, &tiling.cols);
        let origins = tile_origins(tiling, tiles);
        let plane = (rows.size, cols.size, rows.dil);
        return avx512::output_block(plane, &origins, m, m_stride, bias, y);
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide(
        tiling: &Tiling,
        m: &[f32],
        m_stride: usize,
        tiles: std::ops::Range<usize>,
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) {
        output_block(tiling, m, m_stride, tiles, bias, y)
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the core runs AVX2 and FMA.
        return unsafe { wide(tiling, m, m_stride, tiles, bias, y) };
    }
    output_block(tiling, m, m_stride, tiles, bias, y)
}

#[inline(always)]
fn output_block(
    tiling: &Tiling,
    m: &[f32],
    m_stride: usize,
    tiles: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let n = tiles.len();
    let (height, width, dil) = (tiling.rows.size, tiling.cols.size, tiling.rows.dil);
    let origins = tile_origins(tiling, tiles);
    let (mut points, mut cols, mut outputs) = (
        [[0.0; LANES]; XI],
        [[[0.0; LANES]; 2]; 4],
        [[0.0; LANES]; 2],
    );
    for (c, plane) in y.chunks_exact_mut(tiling.plane_len()).enumerate() {
        let b_c = bias.map_or(0.0, |bias| bias[c]);
        let m_c = &m[c * n..];
        for (chunk, j) in origins.chunks(LANES).zip((0..n).step_by(LANES)) {
            for (xi, lanes) in points.iter_mut().enumerate() {
                load_lanes(&m_c[xi * m_stride + j..], chunk.len(), lanes);
            }
            for (jj, cols_j) in cols.iter_mut().enumerate() {
                a_t_lanes(
                    &points[jj],
                    &points[4 + jj],
                    &points[8 + jj],
                    &points[12 + jj],
                    cols_j,
                );
            }
            // Output row i of the chunk's tiles, from the four columns' i-th values.
            let [c0, c1, c2, c3] = &cols;
            for (i, (((m0, m1), m2), m3)) in c0.iter().zip(c1).zip(c2).zip(c3).enumerate() {
                a_t_lanes(m0, m1, m2, m3, &mut outputs);
                for (l, lanes) in outputs.iter().enumerate() {
                    for (&value, &(ro, co)) in lanes.iter().zip(chunk) {
                        let (r, col) = (ro + i * dil, co + l * dil);
                        if r < height && col < width {
                            plane[r * width + col] = value + b_c;
                        }
                    }
                }
            }
        }
    }
}

/// `u[xi, co, ci] = (G g G^T)_xi` for each 3x3 kernel `g = w[co, ci]`, with
/// `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]`.
fn transform_weights(w: &[f32], c_out: usize, c_in: usize, u: &mut [f32]) {
    let g_rows = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    let kernels = c_out * c_in;
    // A block of kernels at a time into a [kernel, xi] block in L1, then point by point into
    // u: writing u's 16 points per kernel strode 16 ways at once, and a whole [kernel, xi]
    // matrix left L1 (each was a tenth of a 128 -> 128 forward at 14x14).
    const BLOCK: usize = 256;
    let mut tiles = [[0.0f32; XI]; BLOCK];
    for (block, gs) in w.chunks(9 * BLOCK).enumerate() {
        for (tile, g) in tiles.iter_mut().zip(gs.chunks_exact(9)) {
            // Columns first (G g), then rows ((G g) G^T).
            let cols: [[f32; 4]; 3] = std::array::from_fn(|j| g_rows(g[j], g[3 + j], g[6 + j]));
            for i in 0..4 {
                tile[4 * i..4 * i + 4].copy_from_slice(&g_rows(cols[0][i], cols[1][i], cols[2][i]));
            }
        }
        let k0 = block * BLOCK;
        let count = gs.len() / 9;
        for xi in 0..XI {
            let u_xi = &mut u[xi * kernels + k0..][..count];
            u_xi.iter_mut().zip(&tiles).for_each(|(o, t)| *o = t[xi]);
        }
    }
}

/// `dw[co, ci] = G^T dU[co, ci] G`, the adjoint of [`transform_weights`].
fn untransform_weight_grads(du: &[f32], c_out: usize, c_in: usize, dw: &mut [f32]) {
    let pairs = c_out * c_in;
    let g_t =
        |a: f32, b: f32, c: f32, e: f32| [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + e];
    for (k, g) in dw.chunks_exact_mut(9).enumerate() {
        let at = |i: usize, j: usize| du[(4 * i + j) * pairs + k];
        let cols: [[f32; 3]; 4] =
            std::array::from_fn(|j| g_t(at(0, j), at(1, j), at(2, j), at(3, j)));
        for i in 0..3 {
            let row = g_t(cols[0][i], cols[1][i], cols[2][i], cols[3][i]);
            g[3 * i..3 * i + 3].copy_from_slice(&row);
        }
    }
}

/// `v[c, xi, n] = (B^T d B)_xi` for every tile `n` of every sample of `x` ([samples, channels,
/// H, W]), `d` the tile's 4x4 inputs, which start `dil` before its outputs: at its origin once
/// the plane is padded by `dil`. [`input_tile`] on [`LANES`] tiles at once.
fn transform_inputs(tiling: &Tiling, x: &[f32], channels: usize, v: &mut [f32]) {
    transform_tiles(
        tiling,
        x,
        channels,
        tiling.rows.dil,
        v,
        TileTransform::Input,
    );
}

/// `m[c, xi, n] = (A g A^T)_xi` for every tile of every sample of `dy`, `g` the tile's 2x2
/// output gradients (zero outside the image): the adjoint of [`untransform_output_block`].
/// [`output_grad_tile`] on [`LANES`] tiles at once.
fn transform_output_grads(tiling: &Tiling, dy: &[f32], channels: usize, m: &mut [f32]) {
    transform_tiles(tiling, dy, channels, 0, m, TileTransform::OutputGrad);
}

/// Which transform [`transform_chunks`] applies to each tile.
#[derive(Clone, Copy)]
enum TileTransform {
    /// [`input_tile`] of the 4x4 pixels `dil` apart from the tile's origin.
    Input,
    /// [`output_grad_tile`] of the 2x2 pixels `dil` apart from it.
    OutputGrad,
}

impl TileTransform {
    /// Pixels along each side of the tile it reads.
    fn side(self) -> usize {
        match self {
            TileTransform::Input => 4,
            TileTransform::OutputGrad => 2,
        }
    }
}

/// `out[c, xi, n] = transform(tile n)_xi` for every tile `n` of every sample of `planes`
/// ([samples, channels, H, W]), each plane copied into a zeroed larger one with its first pixel at
/// (`offset`, `offset`) so that tiles read without bounds tests. Channels are spread over the
/// cores; [`LANES`] tiles of a sample at a time, the same arithmetic as one tile at a time (whose
/// 16-way strided stores were most of the weight gradient's transforms).
fn transform_tiles(
    tiling: &Tiling,
    planes: &[f32],
    channels: usize,
    offset: usize,
    out: &mut [f32],
    transform: TileTransform,
) {
    let plane_len = tiling.plane_len();
    let samples = planes.len() / (channels * plane_len).max(1);
    let n = samples * tiling.per_sample();
    // Each tile's first pixel in the padded plane.
    let width = tiling.cols.padded();
    let corners = Corners::new(
        tile_origins(tiling, 0..tiling.per_sample())
            .into_iter()
            .map(|(ro, co)| ro * width + co),
        tiling.rows.dil,
    );
    for_each_item_chunk(out, XI * n, cores(), |first, chunk| {
        let mut padded = tiling.padded_plane();
        for (i, out_c) in chunk.chunks_exact_mut(XI * n).enumerate() {
            for b in 0..samples {
                let plane = &planes[(b * channels + first + i) * plane_len..][..plane_len];
                padded.load(plane, tiling.cols.size, offset);
                let tile0 = b * tiling.per_sample();
                let out_b = &mut out_c[tile0..];
                transform_plane(&padded, &corners, tiling.rows.dil, transform, out_b, n);
            }
        }
    });
}

/// One padded plane's tiles (first pixels at `corners`) through `transform`, point `xi` of
/// tile `t` into `out[xi n + t]`.
fn transform_plane(
    padded: &PaddedPlane,
    corners: &Corners,
    dil: usize,
    transform: TileTransform,
    out: &mut [f32],
    n: usize,
) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn wide(
        padded: &PaddedPlane,
        corners: &Corners,
        dil: usize,
        transform: TileTransform,
        out: &mut [f32],
        n: usize,
    ) {
        transform_chunks(&padded.data, corners, padded.width, dil, transform, out, n)
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the core runs AVX2 and FMA.
        return unsafe { wide(padded, corners, dil, transform, out, n) };
    }
    transform_chunks(&padded.data, corners, padded.width, dil, transform, out, n)
}

/// The tiles a transform reads: each tile's first pixel in its source (a padded plane or strip),
/// and, at dilation 1, the runs of tiles side by side in a row of tiles (first pixels two apart),
/// which the AVX-512 form transforms from whole rows of pixels instead of gathering them.
struct Corners {
    at: Vec<u32>,
    /// Positions in `at`, in order, covering it; empty at dilations above 1.
    runs: Vec<std::ops::Range<usize>>,
    /// The largest of `at` (0 when there are none).
    max: usize,
}

impl Corners {
    /// Panics on an index of 2^32 or more: a plane that large is far past any memory budget.
    fn new(at: impl Iterator<Item = usize>, dil: usize) -> Self {
        let at: Vec<u32> = at
            .map(|c| u32::try_from(c).expect("a plane of fewer than 2^32 floats"))
            .collect();
        let mut runs = Vec::new();
        if dil == 1 {
            let mut start = 0;
            for t in 1..=at.len() {
                if t == at.len() || at[t] != at[t - 1] + 2 {
                    runs.push(start..t);
                    start = t;
                }
            }
        }
        let max = at.iter().copied().max().unwrap_or(0) as usize;
        Self { at, runs, max }
    }
}

/// The tiles whose first pixels are `src[corner]` for each of `corners` (rows `row_stride`
/// apart in `src`) through `transform`, [`LANES`] at a time: point `xi` of tile `t` into
/// `out[xi n + t]`. The forward's input transform and the weight gradient's two transforms. By
/// AVX-512 where the core has it (rows of pixels at dilation 1, gathers above), else lane by
/// lane; the same bits either way.
#[inline(always)]
fn transform_chunks(
    src: &[f32],
    corners: &Corners,
    row_stride: usize,
    dil: usize,
    transform: TileTransform,
    out: &mut [f32],
    n: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        return avx512::transform_chunks(src, corners, row_stride, dil, transform, out, n);
    }
    portable_chunks(src, corners, row_stride, dil, transform, out, n)
}

/// [`transform_chunks`] lane by lane: each pixel of the chunk's tiles loaded one lane at a time
/// (the corners' runs are not used).
#[inline(always)]
fn portable_chunks(
    src: &[f32],
    corners: &Corners,
    row_stride: usize,
    dil: usize,
    transform: TileTransform,
    out: &mut [f32],
    n: usize,
) {
    let mut d = [[[0.0; LANES]; 4]; 4];
    let (mut rows, mut points) = ([[[0.0; LANES]; 4]; 4], [[0.0; LANES]; 4]);
    let side = transform.side();
    for (chunk, t0) in corners.at.chunks(LANES).zip((0..).step_by(LANES)) {
        // d[k][l][s]: pixel (k, l) of the chunk's tile s.
        for (k, d_k) in d.iter_mut().take(side).enumerate() {
            for (l, d_kl) in d_k.iter_mut().take(side).enumerate() {
                let offset = k * dil * row_stride + l * dil;
                for (lane, &corner) in d_kl.iter_mut().zip(chunk) {
                    *lane = src[corner as usize + offset];
                }
            }
        }
        // The transform down each column l, then (below) along each row i of the result.
        for (l, rows_l) in rows.iter_mut().take(side).enumerate() {
            match transform {
                TileTransform::Input => b_t_lanes(&d[0][l], &d[1][l], &d[2][l], &d[3][l], rows_l),
                TileTransform::OutputGrad => a_lanes(&d[0][l], &d[1][l], rows_l),
            }
        }
        for i in 0..4 {
            match transform {
                TileTransform::Input => b_t_lanes(
                    &rows[0][i],
                    &rows[1][i],
                    &rows[2][i],
                    &rows[3][i],
                    &mut points,
                ),
                TileTransform::OutputGrad => a_lanes(&rows[0][i], &rows[1][i], &mut points),
            }
            for (m, lanes) in points.iter().enumerate() {
                store_lanes(lanes, chunk.len(), &mut out[(4 * i + m) * n + t0..]);
            }
        }
    }
}

/// `A` of [`output_grad_tile`] on two vectors of tiles, lane by lane: `[g0, g0 + g1, g0 - g1,
/// -g1]`.
#[inline(always)]
fn a_lanes(g0: &Lanes, g1: &Lanes, out: &mut [Lanes; 4]) {
    for s in 0..LANES {
        out[0][s] = g0[s];
        out[1][s] = g0[s] + g1[s];
        out[2][s] = g0[s] - g1[s];
        out[3][s] = -g1[s];
    }
}

/// `B^T d B` with `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`, as 16
/// points row by row: the per-tile definition the lanes of [`transform_chunks`] are tested
/// against, bit for bit.
#[cfg(test)]
fn input_tile(d: [[f32; 4]; 4]) -> [f32; XI] {
    let b_t = |[d0, d1, d2, d3]: [f32; 4]| [d0 - d2, d1 + d2, d2 - d1, d1 - d3];
    let rows: [[f32; 4]; 4] = std::array::from_fn(|l| b_t([d[0][l], d[1][l], d[2][l], d[3][l]]));
    let mut out = [0.0; XI];
    for i in 0..4 {
        out[4 * i..4 * i + 4]
            .copy_from_slice(&b_t([rows[0][i], rows[1][i], rows[2][i], rows[3][i]]));
    }
    out
}

/// `A^T M A` with `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`: a tile's 2x2 outputs. The definition
/// [`untransform_output_block`]'s lanes are tested against, bit for bit.
#[cfg(test)]
fn output_tile(m: [f32; XI]) -> [[f32; 2]; 2] {
    let a_t = |[m0, m1, m2, m3]: [f32; 4]| [m0 + m1 + m2, m1 - m2 - m3];
    let cols: [[f32; 2]; 4] = std::array::from_fn(|j| a_t([m[j], m[4 + j], m[8 + j], m[12 + j]]));
    std::array::from_fn(|i| a_t([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]))
}

/// `A g A^T`, the adjoint of [`output_tile`]: 16 points row by row from 2x2 output gradients.
#[cfg(test)]
fn output_grad_tile(g: [[f32; 2]; 2]) -> [f32; XI] {
    let a = |[g0, g1]: [f32; 2]| [g0, g0 + g1, g0 - g1, -g1];
    let cols: [[f32; 4]; 2] = std::array::from_fn(|l| a([g[0][l], g[1][l]]));
    let mut out = [0.0; XI];
    for i in 0..4 {
        out[4 * i..4 * i + 4].copy_from_slice(&a([cols[0][i], cols[1][i]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{cpu, test_normals as random, Conv2dCfg};
    use super::*;

    fn dims(batch: usize, c_in: usize, h: usize, w: usize, c_out: usize, dil: usize) -> ConvDims {
        let cfg = Conv2dCfg::same(3, dil);
        ConvDims::new(&[batch, c_in, h, w], &[c_out, c_in, 3, 3], cfg, "conv2d").unwrap()
    }

    /// The three passes by Winograd, and by im2col + GEMM (the cpu's other path).
    fn both_ways(d: &ConvDims, seed: u64) -> [(Vec<f32>, Vec<f32>); 3] {
        let x = random(d.batch * d.c_in * d.h_in * d.w_in, seed);
        let w = random(d.c_out * d.c_in * 9, seed + 1);
        let bias = random(d.c_out, seed + 2);
        let dy = random(d.batch * d.c_out * d.h_out * d.w_out, seed + 3);
        let mut y = [vec![f32::NAN; dy.len()], vec![f32::NAN; dy.len()]];
        forward(d, &x, &w, Some(&bias), &mut y[0]);
        cpu::forward(d, &x, &w, Some(&bias), &mut y[1]);
        let mut dx = [vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]];
        backward_data(d, &dy, &w, &mut dx[0]);
        cpu::backward_data(d, &dy, &w, &mut dx[1]);
        let mut dw = [vec![f32::NAN; w.len()], vec![f32::NAN; w.len()]];
        backward_weight(d, &dy, &x, &mut dw[0]);
        cpu::backward_weight(d, &dy, &x, &mut dw[1]);
        [y, dx, dw].map(|[a, b]| (a, b))
    }

    /// The transforms on lanes are the per-tile ones, bit for bit (the same operations in the
    /// same order: the cpu's results do not change with the vectorisation).
    #[test]
    fn lane_transforms_are_the_per_tile_ones_bit_for_bit() {
        let values = random(XI * LANES, 7);
        let tile = |t: usize| -> [f32; XI] { std::array::from_fn(|xi| values[xi * LANES + t]) };
        let lanes: [Lanes; XI] =
            std::array::from_fn(|xi| values[xi * LANES..][..LANES].try_into().unwrap());
        // Input: d[k][l] of tile t is value (4 k + l).
        let mut rows = [[[0.0; LANES]; 4]; 4];
        for (l, rows_l) in rows.iter_mut().enumerate() {
            b_t_lanes(
                &lanes[l],
                &lanes[4 + l],
                &lanes[8 + l],
                &lanes[12 + l],
                rows_l,
            );
        }
        let mut got = [[0.0; LANES]; 4];
        for t in 0..LANES {
            let d = tile(t);
            let want = input_tile(std::array::from_fn(|k| {
                std::array::from_fn(|l| d[4 * k + l])
            }));
            for i in 0..4 {
                b_t_lanes(&rows[0][i], &rows[1][i], &rows[2][i], &rows[3][i], &mut got);
                for m in 0..4 {
                    assert_eq!(
                        got[m][t].to_bits(),
                        want[4 * i + m].to_bits(),
                        "input, tile {t}"
                    );
                }
            }
        }
        // Output gradient: g[k][l] of tile t is value (2 k + l).
        let mut rows = [[[0.0; LANES]; 4]; 2];
        for (l, rows_l) in rows.iter_mut().enumerate() {
            a_lanes(&lanes[l], &lanes[2 + l], rows_l);
        }
        let mut got = [[0.0; LANES]; 4];
        for t in 0..LANES {
            let g = tile(t);
            let want = output_grad_tile(std::array::from_fn(|k| {
                std::array::from_fn(|l| g[2 * k + l])
            }));
            for i in 0..4 {
                a_lanes(&rows[0][i], &rows[1][i], &mut got);
                for m in 0..4 {
                    assert_eq!(
                        got[m][t].to_bits(),
                        want[4 * i + m].to_bits(),
                        "output grad, tile {t}"
                    );
                }
            }
        }
        // Output: point xi of tile t is value xi.
        let mut cols = [[[0.0; LANES]; 2]; 4];
        for (j, cols_j) in cols.iter_mut().enumerate() {
            a_t_lanes(
                &lanes[j],
                &lanes[4 + j],
                &lanes[8 + j],
                &lanes[12 + j],
                cols_j,
            );
        }
        let mut got = [[0.0; LANES]; 2];
        for t in 0..LANES {
            let want = output_tile(tile(t));
            for i in 0..2 {
                a_t_lanes(&cols[0][i], &cols[1][i], &cols[2][i], &cols[3][i], &mut got);
                for l in 0..2 {
                    assert_eq!(
                        got[l][t].to_bits(),
                        want[i][l].to_bits(),
                        "output, tile {t}"
                    );
                }
            }
        }
    }

    /// Edge sizes: odd planes (a last tile of one output), dilations 2 and 4 (classes of
    /// unequal length), a plane smaller than the dilation, one pixel, and batches of several
    /// groups and planes of several blocks (this build's budgets are small: GROUP_BYTES, BLOCK_BYTES).
    #[test]
    fn matches_im2col_on_edge_sizes_and_dilations() {
        let shapes = [
            dims(2, 32, 7, 7, 33, 1),
            dims(1, 40, 13, 11, 32, 2),
            dims(2, 32, 9, 10, 35, 4),
            dims(1, 32, 1, 1, 32, 1),
            dims(1, 33, 2, 3, 34, 4),
            dims(5, 32, 14, 14, 32, 1),
            dims(3, 64, 6, 8, 32, 2),
        ];
        for (s, d) in shapes.iter().enumerate() {
            assert!(computes(d));
            for (pass, (got, want)) in ["forward", "backward data", "backward weight"]
                .iter()
                .zip(both_ways(d, 10 * s as u64))
            {
                // Both are f32 sums of the same products, reassociated: a few ulp of the
                // largest value apart.
                let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 2e-5 * scale,
                        "{d:?} {pass}: element {i}: {g} vs {w}"
                    );
                }
            }
        }
        assert!(
            Tiling::new(&shapes[5]).group(5, XI * 64) < 5,
            "no test spans groups"
        );
        assert!(
            block_tiles(64, 49) < 49 && 49 % block_tiles(64, 49) != 0,
            "no test spans blocks with a partial last one"
        );
    }

    #[test]
    fn result_does_not_depend_on_the_thread_count() {
        let d = dims(3, 32, 10, 9, 40, 2);
        let many = both_ways(&d, 7);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| both_ways(&d, 7));
        for ((a, _), (b, _)) in many.iter().zip(&one) {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn serves_only_same_3x3_stride_1_with_channels_enough() {
        assert!(applies(&dims(1, 64, 28, 28, 128, 1)));
        assert!(applies(&dims(1, 128, 14, 14, 128, 1)));
        assert!(applies(&dims(1, 64, 28, 28, 64, 1)));
        assert!(!applies(&dims(1, 32, 28, 28, 64, 1)), "too few channels");
        assert!(applies(&dims(1, 128, 14, 14, 128, 2)));
        assert!(applies_to_weight_grad(&dims(1, 128, 14, 14, 128, 1)));
        assert!(!applies_to_weight_grad(&dims(1, 32, 14, 14, 64, 1)));
        // Dilation 4, 64 -> 64 weight gradients and dilated ones by the transforms that make
        // them pay (AVX-512), by regions and im2col otherwise.
        let fast = fast_transforms();
        assert_eq!(applies(&dims(1, 128, 14, 14, 128, 4)), fast);
        assert_eq!(applies_to_weight_grad(&dims(1, 128, 14, 14, 128, 2)), fast);
        assert_eq!(applies_to_weight_grad(&dims(1, 64, 14, 14, 64, 1)), fast);
        assert!(computes(&dims(1, 128, 14, 14, 128, 4)));
        assert!(
            !applies(&dims(1, 128, 28, 28, 128, 8)),
            "no F(2x2, 3x3) past dilation 4"
        );
        let cfg = Conv2dCfg::same(3, 1).with_stride(2);
        let strided = ConvDims::new(&[1, 64, 28, 28], &[64, 64, 3, 3], cfg, "c").unwrap();
        assert!(!applies(&strided));
        let cfg = Conv2dCfg::padded(0, 0);
        let valid = ConvDims::new(&[1, 64, 28, 28], &[64, 64, 3, 3], cfg, "c").unwrap();
        assert!(!applies(&valid));
        let cfg = Conv2dCfg::same(1, 1);
        let pointwise = ConvDims::new(&[1, 64, 28, 28], &[64, 64, 1, 1], cfg, "c").unwrap();
        assert!(!applies(&pointwise));
    }
}
