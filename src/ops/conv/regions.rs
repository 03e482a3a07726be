//! The cpu backend's dilated stride-1 convolutions by im2col over regions of outputs that read
//! the image with the same taps (docs/SPEC.md section 9.2). A same-padded 3x3 convolution at
//! dilation 4 on a 14x14 plane reads the padding with a third of its taps (8 of the 14 rows and
//! of the 14 columns lose one of their 3 taps), and im2col multiplies those zeros; oneDNN skips
//! them, and PyTorch ran these convolutions at 1.5-1.9x our speed (benches/RESULTS.md).
//!
//! Each axis is cut into bands of outputs that read inside the image with the same run of kernel
//! taps (3 bands at 14x14 for dilation 2 and 4); a region, a band of rows by a band of columns,
//! is an im2col matrix of its valid taps alone times those taps' weights. The weights are laid
//! out tap-major once a call, so that one row tap's run of column taps is one run of each weight
//! row: a packed operand per (row tap, column band) serves every region and worker, and a
//! region's product is one GEMM per row tap. A worker's samples go into one product a region,
//! so that the 4x4 corner regions still make products some tens of columns wide. Every output is
//! computed by one thread in one order, and the weight gradient's samples are taken in runs fixed
//! by the batch alone: the result never depends on the thread count.
use std::ops::Range;

use rayon::prelude::*;

use super::super::cpu_gemm::{gemm, gemm_shared, MatRef, SharedLhs};
use super::super::cpu_parallel::{batch_workers, for_each_item_chunk};
use super::{sized, with_worker_scratch, ConvDims};

/// The least share of an im2col matrix's taps that must fall in the padding for the regions to
/// pay. Measured on the development VM (128 -> 128 at 14x14, batch 8, min of alternate runs): at
/// dilation 4 (35% skipped) the three passes took 24-30% less time than im2col; at dilation 2
/// (18%) none was faster, and the weight gradient slower (its 10x10 centre region is most of
/// the work, for one thread).
const MIN_SKIPPED_TAPS: f64 = 0.25;

/// Samples per product of the weight gradient: bounds the scratch whatever the batch.
const WEIGHT_GRAD_SAMPLES: usize = 16;

/// Whether the cpu runs this convolution over regions: stride 1, dilated, and at least
/// [`MIN_SKIPPED_TAPS`] of the taps in the padding.
pub(super) fn applies(d: &ConvDims) -> bool {
    if d.stride != 1 || d.dil == 1 {
        return false;
    }
    let all = (d.h_out * d.w_out * d.taps()) as f64;
    let valid: usize = regions(d).iter().map(|r| r.pixels() * r.taps()).sum();
    1.0 - valid as f64 / all >= MIN_SKIPPED_TAPS
}

/// Outputs along one axis whose kernel taps read inside the image are the same ones.
struct Band {
    outputs: Range<usize>,
    /// Kernel indices along this axis (`ki` or `kj`) whose input lies inside the image: always
    /// a run, since tap `k` of output `o` is inside for `(pad - o) / dil <= k < (size + pad - o)
    /// / dil`.
    taps: Range<usize>,
}

/// The bands of one axis: `out` outputs, `size` inputs, `k` taps `dil` apart, `pad` zeros
/// before the image. Tap `k` of output `o` reads input `o - pad + k dil`, inside the image for
/// `o` in `[pad - k dil, size + pad - k dil)`: the ends of those ranges cut the axis.
fn bands(out: usize, size: usize, k: usize, dil: usize, pad: usize) -> Vec<Band> {
    let reads_image = |tap: usize| {
        let bound = |v: usize| v.saturating_sub(tap * dil).min(out);
        bound(pad)..bound(size + pad)
    };
    let mut cuts = vec![0, out];
    for tap in 0..k {
        let range = reads_image(tap);
        cuts.extend([range.start, range.end]);
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| {
            let inside = |t: &usize| reads_image(*t).contains(&w[0]);
            let first = (0..k).find(inside).unwrap_or(k);
            let end = (first..k).find(|t| !inside(t)).unwrap_or(k);
            Band {
                outputs: w[0]..w[1],
                taps: first..end,
            }
        })
        .collect()
}

/// A band of output rows by a band of output columns, and the kernel taps (`row_taps` x
/// `col_taps`) that read inside the image for all of its outputs.
struct Region {
    rows: Range<usize>,
    cols: Range<usize>,
    row_taps: Range<usize>,
    col_taps: Range<usize>,
    /// Which column band: the weight operands are per (row tap, column band).
    col_band: usize,
}

impl Region {
    fn pixels(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    fn taps(&self) -> usize {
        self.row_taps.len() * self.col_taps.len()
    }

    /// The rows of this region's im2col matrix: its taps, row taps outer, each `c_in` channels.
    fn depth(&self, d: &ConvDims) -> usize {
        d.c_in * self.taps()
    }

    /// The rows of its im2col matrix one row tap reads: its column taps' channels.
    fn row_tap_depth(&self, d: &ConvDims) -> usize {
        d.c_in * self.col_taps.len()
    }

    /// Its taps in im2col row order: (index, ki, kj).
    fn tap_order(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.row_taps
            .clone()
            .flat_map(|ki| self.col_taps.clone().map(move |kj| (ki, kj)))
            .enumerate()
            .map(|(j, (ki, kj))| (j, ki, kj))
    }
}

/// The column bands and the regions of a stride-1 convolution, row bands by column bands, in
/// row-major order.
fn regions_and_col_bands(d: &ConvDims) -> (Vec<Region>, Vec<Band>) {
    let rows = bands(d.h_out, d.h_in, d.kh, d.dil, d.pad_h);
    let cols = bands(d.w_out, d.w_in, d.kw, d.dil, d.pad_w);
    let mut out = Vec::with_capacity(rows.len() * cols.len());
    for r in &rows {
        for (col_band, c) in cols.iter().enumerate() {
            out.push(Region {
                rows: r.outputs.clone(),
                cols: c.outputs.clone(),
                row_taps: r.taps.clone(),
                col_taps: c.taps.clone(),
                col_band,
            });
        }
    }
    (out, cols)
}

fn regions(d: &ConvDims) -> Vec<Region> {
    regions_and_col_bands(d).0
}

/// The weights tap-major, `w_tm[co, (t, ci)] = w[co, ci, t]`: the columns that row tap `ki` and
/// a run of column taps multiply are then one run of each row.
fn tap_major(d: &ConvDims, w: &[f32]) -> Vec<f32> {
    let mut w_tm = vec![0.0; w.len()];
    for (src, dst) in w
        .chunks_exact(d.c_in * d.taps())
        .zip(w_tm.chunks_exact_mut(d.c_in * d.taps()))
    {
        for (ci, kernel) in src.chunks_exact(d.taps()).enumerate() {
            for (t, &v) in kernel.iter().enumerate() {
                dst[t * d.c_in + ci] = v;
            }
        }
    }
    w_tm
}

/// The inverse of [`tap_major`]: `w[co, ci, t] = w_tm[co, (t, ci)]`.
fn from_tap_major(d: &ConvDims, w_tm: &[f32], w: &mut [f32]) {
    for (src, dst) in w_tm
        .chunks_exact(d.c_in * d.taps())
        .zip(w.chunks_exact_mut(d.c_in * d.taps()))
    {
        for (ci, kernel) in dst.chunks_exact_mut(d.taps()).enumerate() {
            for (t, v) in kernel.iter_mut().enumerate() {
                *v = src[t * d.c_in + ci];
            }
        }
    }
}

/// For each row tap `ki` and column band: the `[c_out, c_in |col_taps|]` view of `w_tm` those
/// taps multiply, transposed when `transpose` (the input gradient), packed once for every
/// product of the call. `None` where the band reads no pixel.
fn weight_operands<'a>(
    d: &ConvDims,
    w_tm: &'a [f32],
    col_bands: &[Band],
    transpose: bool,
) -> Vec<Option<SharedLhs<'a>>> {
    let views: Vec<_> = (0..d.kh)
        .flat_map(|ki| col_bands.iter().map(move |c| (ki, c.taps.clone())))
        .collect();
    views
        .into_par_iter()
        .map(|(ki, kj)| {
            (!kj.is_empty()).then(|| {
                let view = MatRef {
                    data: &w_tm[(ki * d.kw + kj.start) * d.c_in..],
                    rows: d.c_out,
                    cols: kj.len() * d.c_in,
                    row_stride: d.taps() * d.c_in,
                    col_stride: 1,
                };
                SharedLhs::new(if transpose { view.t() } else { view })
            })
        })
        .collect()
}

/// The operand of row tap `ki` for a region (see [`weight_operands`]).
fn operand<'o, 'a>(
    operands: &'o [Option<SharedLhs<'a>>],
    col_bands: usize,
    r: &Region,
    ki: usize,
) -> &'o SharedLhs<'a> {
    operands[ki * col_bands + r.col_band]
        .as_ref()
        .expect("a region with taps has their operand")
}

/// For each of the region's (tap `j` = (ki, kj), sample `b`, output row): where the row's run of
/// inputs starts in an input plane and where its outputs start in a region matrix row of
/// `samples` samples. Every input of a run lies inside the image by the region's construction,
/// and a run is the region's width long.
fn runs<'a>(
    d: &'a ConvDims,
    r: &'a Region,
    samples: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> + 'a {
    r.tap_order().flat_map(move |(j, ki, kj)| {
        let iw = r.cols.start + kj * d.dil - d.pad_w;
        (0..samples).flat_map(move |b| {
            r.rows.clone().enumerate().map(move |(i, oh)| {
                let ih = oh + ki * d.dil - d.pad_h;
                let at = (b * r.rows.len() + i) * r.cols.len();
                (j, b, ih * d.w_in + iw, at)
            })
        })
    })
}

/// The region's im2col matrix for `samples` samples of `x`: `col[(j, ci), (b, oh, ow)] =
/// x[b, ci, oh - pad_h + ki dil, ow - pad_w + kj dil]` for tap `j` = (ki, kj).
fn gather_inputs(d: &ConvDims, r: &Region, x: &[f32], samples: usize, col: &mut [f32]) {
    let (plane, n, width) = (d.h_in * d.w_in, samples * r.pixels(), r.cols.len());
    for (j, b, src, at) in runs(d, r, samples) {
        for ci in 0..d.c_in {
            let x_bc = &x[(b * d.c_in + ci) * plane + src..][..width];
            copy_run(&mut col[(j * d.c_in + ci) * n + at..][..width], x_bc);
        }
    }
}

/// The adjoint of [`gather_inputs`]: adds the region's im2col matrix into `dx`.
fn scatter_add_inputs(d: &ConvDims, r: &Region, col: &[f32], samples: usize, dx: &mut [f32]) {
    let (plane, n, width) = (d.h_in * d.w_in, samples * r.pixels(), r.cols.len());
    for (j, b, dst, at) in runs(d, r, samples) {
        for ci in 0..d.c_in {
            let dx_bc = &mut dx[(b * d.c_in + ci) * plane + dst..][..width];
            let src = &col[(j * d.c_in + ci) * n + at..][..width];
            dx_bc.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
        }
    }
}

/// `dst = src` for the short runs of a region (4-7 floats at 14x14) as two overlapping moves of
/// a length the compiler knows, without a loop: a `copy_from_slice`, or any loop, becomes a
/// memmove call per run, which cost more than the copy (a sixth of the forward pass).
#[inline]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    fn ends<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let len = dst.len();
        for at in [0, len - N] {
            let piece: &[f32; N] = src[at..at + N].try_into().expect("N floats");
            let out: &mut [f32; N] = (&mut dst[at..at + N]).try_into().expect("N floats");
            *out = *piece;
        }
    }
    match dst.len() {
        0 => {}
        1 => dst[0] = src[0],
        2..=3 => ends::<2>(dst, src),
        4..=7 => ends::<4>(dst, src),
        8..=15 => ends::<8>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// For each (channel row of a region matrix, sample, output row): the run's start in the
/// output planes of `samples` samples and in the `[c_out, (b, oh, ow)]` region matrix.
fn output_runs<'a>(
    d: &'a ConvDims,
    r: &'a Region,
    samples: usize,
) -> impl Iterator<Item = (usize, usize, usize)> + 'a {
    let n = samples * r.pixels();
    (0..d.c_out).flat_map(move |co| {
        (0..samples).flat_map(move |b| {
            r.rows.clone().enumerate().map(move |(i, oh)| {
                let plane = (b * d.c_out + co) * d.h_out * d.w_out;
                let at = co * n + (b * r.rows.len() + i) * r.cols.len();
                (co, plane + oh * d.w_out + r.cols.start, at)
            })
        })
    })
}

/// `y[b, co, oh, ow] = m[co, (b, oh, ow)] + bias[co]` over the region.
fn scatter_outputs(
    d: &ConvDims,
    r: &Region,
    m: &[f32],
    samples: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let width = r.cols.len();
    for (co, dst, at) in output_runs(d, r, samples) {
        let b_c = bias.map_or(0.0, |bias| bias[co]);
        y[dst..][..width]
            .iter_mut()
            .zip(&m[at..][..width])
            .for_each(|(o, &v)| *o = v + b_c);
    }
}

/// `m[co, (b, oh, ow)] = dy[b, co, oh, ow]` over the region: the adjoint's right operand.
fn gather_outputs(d: &ConvDims, r: &Region, dy: &[f32], samples: usize, m: &mut [f32]) {
    let width = r.cols.len();
    for (_, src, at) in output_runs(d, r, samples) {
        copy_run(&mut m[at..][..width], &dy[src..][..width]);
    }
}

fn flops_per_sample(d: &ConvDims) -> usize {
    2 * d.c_out * d.c_in * d.taps() * d.h_out * d.w_out
}

/// The forward convolution: `y = conv(x, w) + bias`, region by region, each region's product a
/// sum over its row taps.
pub(super) fn forward(d: &ConvDims, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (regions, col_bands) = regions_and_col_bands(d);
    let w_tm = tap_major(d, w);
    let operands = weight_operands(d, &w_tm, &col_bands, false);
    let (x_len, y_len) = (d.c_in * d.h_in * d.w_in, d.c_out * d.h_out * d.w_out);
    let workers = batch_workers(d.batch, flops_per_sample(d));
    for_each_item_chunk(y, y_len, workers, |first, ys| {
        let samples = ys.len() / y_len;
        let x_w = &x[first * x_len..][..samples * x_len];
        with_worker_scratch(|[col, m]| {
            for r in &regions {
                let n = samples * r.pixels();
                let m = sized(m, d.c_out * n);
                if r.taps() == 0 {
                    // Outputs that read only padding: the bias alone.
                    m.fill(0.0);
                }
                let col = sized(col, r.depth(d) * n);
                gather_inputs(d, r, x_w, samples, col);
                let block = r.row_tap_depth(d);
                for (i, ki) in r.row_taps.clone().enumerate() {
                    let lhs = operand(&operands, col_bands.len(), r, ki);
                    let rhs = MatRef::row_major(&col[i * block * n..][..block * n], block, n);
                    // The first row tap writes the product, the others add to it.
                    let beta = if i == 0 { 0.0 } else { 1.0 };
                    gemm_shared(lhs, rhs, beta, m);
                }
                scatter_outputs(d, r, m, samples, bias, ys);
            }
        });
    });
}

/// The input gradient: for each region, its im2col matrix `w_r^T dy_r` (a product per row tap)
/// added back where its inputs came from.
pub(super) fn backward_data(d: &ConvDims, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (regions, col_bands) = regions_and_col_bands(d);
    let w_tm = tap_major(d, w);
    let operands = weight_operands(d, &w_tm, &col_bands, true);
    let (x_len, y_len) = (d.c_in * d.h_in * d.w_in, d.c_out * d.h_out * d.w_out);
    let workers = batch_workers(d.batch, flops_per_sample(d));
    for_each_item_chunk(dx, x_len, workers, |first, dxs| {
        let samples = dxs.len() / x_len;
        let dy_w = &dy[first * y_len..][..samples * y_len];
        dxs.fill(0.0);
        with_worker_scratch(|[col, m]| {
            for r in regions.iter().filter(|r| r.taps() > 0) {
                let n = samples * r.pixels();
                let m = sized(m, d.c_out * n);
                gather_outputs(d, r, dy_w, samples, m);
                let col = sized(col, r.depth(d) * n);
                let block = r.row_tap_depth(d);
                for (i, ki) in r.row_taps.clone().enumerate() {
                    let lhs_t = operand(&operands, col_bands.len(), r, ki);
                    let out = &mut col[i * block * n..][..block * n];
                    gemm_shared(lhs_t, MatRef::row_major(m, d.c_out, n), 0.0, out);
                }
                scatter_add_inputs(d, r, col, samples, dxs);
            }
        });
    });
}

/// The weight gradient: each region's `dw_r = sum over samples of dy_r col_r^T` (one thread a
/// region, samples in runs of [`WEIGHT_GRAD_SAMPLES`] in order), then added into `dw` region by
/// region. Regions, not samples, are spread over the cores: a partial per run of samples would
/// be each region's weights again, and summing those cost more than the products saved.
pub(super) fn backward_weight(d: &ConvDims, dy: &[f32], x: &[f32], dw: &mut [f32]) {
    let regions = regions(d);
    let (x_len, y_len) = (d.c_in * d.h_in * d.w_in, d.c_out * d.h_out * d.w_out);
    let region_grads: Vec<Vec<f32>> = regions
        .par_iter()
        .map(|r| {
            let depth = r.depth(d);
            let mut dw_r = vec![0.0; d.c_out * depth];
            if depth == 0 {
                return dw_r;
            }
            with_worker_scratch(|[col, m]| {
                for b0 in (0..d.batch).step_by(WEIGHT_GRAD_SAMPLES) {
                    let samples = WEIGHT_GRAD_SAMPLES.min(d.batch - b0);
                    let n = samples * r.pixels();
                    let m = sized(m, d.c_out * n);
                    gather_outputs(d, r, &dy[b0 * y_len..][..samples * y_len], samples, m);
                    let col = sized(col, depth * n);
                    gather_inputs(d, r, &x[b0 * x_len..][..samples * x_len], samples, col);
                    let col_t = MatRef::row_major(col, depth, n).t();
                    let beta = if b0 == 0 { 0.0 } else { 1.0 };
                    gemm(MatRef::row_major(m, d.c_out, n), col_t, beta, &mut dw_r);
                }
            });
            dw_r
        })
        .collect();
    let mut dw_tm = vec![0.0; dw.len()];
    for (r, dw_r) in regions.iter().zip(&region_grads) {
        add_region_weight_grad(d, r, dw_r, &mut dw_tm);
    }
    from_tap_major(d, &dw_tm, dw);
}

/// `dw_tm[co, (t, ci)] += dw_r[co, (j, ci)]` for the region's taps `j` = t: per row tap, one run
/// of each row.
fn add_region_weight_grad(d: &ConvDims, r: &Region, dw_r: &[f32], dw_tm: &mut [f32]) {
    if r.taps() == 0 {
        return;
    }
    let block = r.row_tap_depth(d);
    for (dst, src) in dw_tm
        .chunks_exact_mut(d.c_in * d.taps())
        .zip(dw_r.chunks_exact(r.depth(d)))
    {
        for (i, ki) in r.row_taps.clone().enumerate() {
            let start = (ki * d.kw + r.col_taps.start) * d.c_in;
            dst[start..][..block]
                .iter_mut()
                .zip(&src[i * block..][..block])
                .for_each(|(o, &v)| *o += v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{cpu, test_normals as random, Conv2dCfg};
    use super::*;

    fn dims(x: [usize; 4], w: [usize; 4], cfg: Conv2dCfg) -> ConvDims {
        ConvDims::new(&x, &w, cfg, "conv2d").unwrap()
    }

    /// Each output's bound: 16 ulp of its sum of |products| (the two ways reassociate the same
    /// products, and im2col adds the padding's zeros).
    fn assert_close(d: &ConvDims, pass: &str, got: &[f32], want: &[f32], magnitude: &[f32]) {
        for (i, ((g, w), m)) in got.iter().zip(want).zip(magnitude).enumerate() {
            let tol = 16.0 * f32::EPSILON * m;
            assert!(
                (g - w).abs() <= tol,
                "{d:?} {pass}: element {i}: {g} vs {w} (tolerance {tol})"
            );
        }
    }

    /// The three passes by regions and by im2col + GEMM, on fresh inputs, and each one's
    /// magnitudes (the same pass on absolute values, by im2col).
    fn check_against_im2col(d: &ConvDims, seed: u64) {
        let x = random(d.batch * d.c_in * d.h_in * d.w_in, seed);
        let w = random(d.c_out * d.c_in * d.taps(), seed + 1);
        let bias = random(d.c_out, seed + 2);
        let dy = random(d.batch * d.c_out * d.h_out * d.w_out, seed + 3);
        let abs = |v: &[f32]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
        let (xa, wa, ba, dya) = (abs(&x), abs(&w), abs(&bias), abs(&dy));

        let mut y = [vec![f32::NAN; dy.len()], vec![f32::NAN; dy.len()]];
        let mut mag = vec![f32::NAN; dy.len()];
        forward(d, &x, &w, Some(&bias), &mut y[0]);
        cpu::forward(d, &x, &w, Some(&bias), &mut y[1]);
        cpu::forward(d, &xa, &wa, Some(&ba), &mut mag);
        assert_close(d, "forward", &y[0], &y[1], &mag);

        let mut dx = [vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]];
        let mut mag = vec![f32::NAN; x.len()];
        backward_data(d, &dy, &w, &mut dx[0]);
        cpu::backward_data(d, &dy, &w, &mut dx[1]);
        cpu::backward_data(d, &dya, &wa, &mut mag);
        assert_close(d, "backward data", &dx[0], &dx[1], &mag);

        let mut dw = [vec![f32::NAN; w.len()], vec![f32::NAN; w.len()]];
        let mut mag = vec![f32::NAN; w.len()];
        backward_weight(d, &dy, &x, &mut dw[0]);
        cpu::backward_weight(d, &dy, &x, &mut dw[1]);
        cpu::backward_weight(d, &dya, &xa, &mut mag);
        assert_close(d, "backward weight", &dw[0], &dw[1], &mag);
    }

    /// Edge shapes: the network's, odd planes, planes smaller than the dilation, padding wider
    /// than the dilated kernel (outputs that read only padding), unequal padding and kernels, batches of more than 16 samples
    /// (weight-gradient runs of two) and a batch of one.
    #[test]
    fn matches_im2col_on_edge_shapes() {
        let same = |k, dil| Conv2dCfg::same(k, dil);
        let dilated = |cfg, dilation| Conv2dCfg { dilation, ..cfg };
        let shapes = [
            dims([3, 16, 14, 14], [12, 16, 3, 3], same(3, 4)),
            dims([2, 8, 14, 14], [9, 8, 3, 3], same(3, 2)),
            dims([1, 5, 9, 11], [7, 5, 3, 3], same(3, 3)),
            dims([2, 3, 3, 2], [4, 3, 3, 3], same(3, 4)),
            dims([1, 2, 1, 1], [3, 2, 3, 3], same(3, 2)),
            dims(
                [2, 4, 8, 7],
                [5, 4, 3, 5],
                dilated(Conv2dCfg::padded(1, 6), 3),
            ),
            dims(
                [2, 4, 10, 10],
                [6, 4, 3, 3],
                dilated(Conv2dCfg::padded(5, 0), 2),
            ),
            dims([17, 3, 6, 6], [4, 3, 3, 3], same(3, 2)),
        ];
        for (s, d) in shapes.iter().enumerate() {
            check_against_im2col(d, 100 + 10 * s as u64);
        }
    }

    #[test]
    fn result_does_not_depend_on_the_thread_count() {
        let d = dims([5, 6, 9, 8], [7, 6, 3, 3], Conv2dCfg::same(3, 2));
        let run = || {
            let x = random(d.batch * d.c_in * d.h_in * d.w_in, 3);
            let w = random(d.c_out * d.c_in * 9, 4);
            let dy = random(d.batch * d.c_out * d.h_out * d.w_out, 5);
            let mut out = [vec![0.0; dy.len()], vec![0.0; x.len()], vec![0.0; w.len()]];
            forward(&d, &x, &w, None, &mut out[0]);
            backward_data(&d, &dy, &w, &mut out[1]);
            backward_weight(&d, &dy, &x, &mut out[2]);
            out
        };
        let many = run();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        for (a, b) in many.iter().zip(&one) {
            assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn bands_cut_where_taps_leave_the_image() {
        // Dilation 4, 14 pixels, padding 4: tap 0 reads the image from output 4, tap 2 until 10.
        let b = bands(14, 14, 3, 4, 4);
        let cut: Vec<_> = b
            .iter()
            .map(|b| (b.outputs.clone(), b.taps.clone()))
            .collect();
        assert_eq!(cut, [(0..4, 1..3), (4..10, 0..3), (10..14, 0..2)]);
        // Two pixels at dilation 4: each output reads only itself.
        let b = bands(2, 2, 3, 4, 4);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].taps, 1..2);
    }

    #[test]
    fn serves_stride_1_dilated_with_padding_enough() {
        // A 3x3 "same" convolution of `c` channels on one `size` x `size` image.
        let serves = |c, size, dilation| {
            applies(&dims(
                [1, c, size, size],
                [c, c, 3, 3],
                Conv2dCfg::same(3, dilation),
            ))
        };
        assert!(serves(128, 14, 4));
        assert!(!serves(128, 14, 2));
        assert!(serves(8, 6, 2));
        assert!(!serves(64, 14, 1));
        assert!(!serves(64, 64, 2));
        let strided = Conv2dCfg::same(3, 2).with_stride(2);
        assert!(!applies(&dims([1, 8, 14, 14], [8, 8, 3, 3], strided)));
    }
}
