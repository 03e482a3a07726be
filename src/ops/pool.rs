//! Average pooling and bilinear resizing of NCHW tensors (kernels/pool.cu), SPEC section 9.
//!
//! - [`avg_pool2d`] is PyTorch's `nn.AvgPool2d(kernel, stride, padding)` with its default
//!   `count_include_pad=True` (every window divided by kernel^2) and floor output sizes. ncsn's
//!   mean-pool (the average of the four subsamples `x[::2, ::2]`, ...) is [`PoolCfg::MEAN_POOL_2X2`]
//!   on even sizes; chained residual pooling uses [`PoolCfg::CRP_5X5`].
//!   With `count_include_pad: false` it divides by the in-bounds part of each window instead, as
//!   the FID Inception's blocks do.
//! - [`max_pool2d`] is `F.max_pool2d(x, kernel, stride, padding)` (floor sizes, padding never
//!   wins, NaN propagates); forward only, for inference networks.
//! - [`upsample_bilinear`] is `F.interpolate(x, size, mode='bilinear', align_corners=True)`.
//! - [`resize_bilinear`] is the same with `align_corners=False` (PyTorch's default, the FID
//!   Inception's resize to 299x299); forward only.
//! - [`upsample_nearest`] is `F.interpolate(x, scale_factor=f, mode='nearest')` for an integer
//!   factor, the DDPM++ residual blocks' upsampling (SPEC section 11), with its backward.
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::cpu_parallel::{batch_workers, for_each_item_chunk};
use crate::ops::launch::{launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// A square pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolCfg {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Whether an average divides by the whole window, padding counting as zeros (PyTorch's
    /// default `count_include_pad=True`), or by the in-bounds part only (`False`). Max pooling
    /// ignores it.
    pub count_include_pad: bool,
}

impl PoolCfg {
    /// ncsn's ConvMeanPool / MeanPoolConv downsampling: halves each side.
    pub const MEAN_POOL_2X2: PoolCfg = PoolCfg::new(2, 2, 0);
    /// ncsn's CondCRPBlock pooling, `nn.AvgPool2d(kernel_size=5, stride=1, padding=2)`.
    pub const CRP_5X5: PoolCfg = PoolCfg::new(5, 1, 2);

    /// A `kernel` x `kernel` window moved by `stride`, `padding` on every side, with PyTorch's
    /// default `count_include_pad=True`.
    pub const fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kernel,
            stride,
            padding,
            count_include_pad: true,
        }
    }

    /// This window averaging over its in-bounds part only (`count_include_pad=False`).
    pub const fn excluding_pad(self) -> Self {
        Self {
            count_include_pad: false,
            ..self
        }
    }

    /// The reciprocal of the divisor of output (oh, ow) of an input of `h` x `w`.
    fn inv_divisor(&self, oh: usize, ow: usize, h: usize, w: usize) -> f32 {
        if self.count_include_pad {
            1.0 / (self.kernel * self.kernel) as f32
        } else {
            1.0 / (window(oh, *self, h).len() * window(ow, *self, w).len()) as f32
        }
    }

    fn out_size(&self, size: usize) -> Option<usize> {
        (size + 2 * self.padding)
            .checked_sub(self.kernel)
            .map(|s| s / self.stride + 1)
    }
}

/// Batch*channels planes of h x w, from an NCHW shape.
fn planes(shape: &[usize], op: &'static str) -> Result<(usize, usize, usize)> {
    match *shape {
        [b, c, h, w] if h > 0 && w > 0 => Ok((b * c, h, w)),
        _ => Err(Error::shape(
            op,
            format!("{shape:?} is not a non-empty NCHW shape"),
        )),
    }
}

/// Launches one of the plane kernels of kernels/pool.cu: `kernel(src, dst, planes, dims..)`,
/// with `threads` threads (one per element each thread computes).
fn launch_planes(
    dev: &Device,
    kernel: &str,
    src: &Tensor,
    dst: &mut Tensor,
    planes: usize,
    dims: &[usize],
    threads: usize,
) -> Result<()> {
    let mut args = vec![Arg::In(src), Arg::Out(dst), Arg::U64(planes as u64)];
    args.extend(dims.iter().map(|&v| Arg::I32(v as i32)));
    launch(dev, kernel, LaunchGeometry::elementwise(threads), &mut args)
}

fn check_pool(
    shape: &[usize],
    cfg: PoolCfg,
    op: &'static str,
) -> Result<(usize, usize, usize, usize, usize)> {
    let (p, h, w) = planes(shape, op)?;
    // PyTorch also requires padding <= kernel / 2.
    let valid = cfg.kernel > 0 && cfg.stride > 0 && 2 * cfg.padding <= cfg.kernel;
    match (valid, cfg.out_size(h), cfg.out_size(w)) {
        (true, Some(ho), Some(wo)) => Ok((p, h, w, ho, wo)),
        _ => Err(Error::shape(
            op,
            format!("{cfg:?} does not fit input {shape:?}"),
        )),
    }
}

/// Average pooling of `x` [B, C, H, W].
pub fn avg_pool2d(x: &Tensor, cfg: PoolCfg) -> Result<Tensor> {
    let include_pad = [cfg.count_include_pad as usize];
    pool_forward(
        x,
        cfg,
        "avg_pool2d",
        "avg_pool2d_forward_f32",
        &include_pad,
        cpu::avg_pool,
    )
}

/// One pooling forward pass: `cpu_pool` on cpu, else `kernel(x, y, planes, h, w, ho, wo,
/// kernel, stride, padding, extra..)`.
fn pool_forward(
    x: &Tensor,
    cfg: PoolCfg,
    op: &'static str,
    kernel: &str,
    extra: &[usize],
    cpu_pool: fn(&[f32], &mut [f32], [usize; 4], PoolCfg),
) -> Result<Tensor> {
    let (p, h, w, ho, wo) = check_pool(x.shape(), cfg, op)?;
    let mut y = Tensor::uninit(&[x.shape()[0], x.shape()[1], ho, wo], x.device())?;
    match x.device() {
        Device::Cpu => cpu_pool(x.host()?, y.host_mut()?, [h, w, ho, wo], cfg),
        dev => {
            let mut dims = vec![h, w, ho, wo, cfg.kernel, cfg.stride, cfg.padding];
            dims.extend_from_slice(extra);
            launch_planes(dev, kernel, x, &mut y, p, &dims, p * ho * wo)?
        }
    }
    Ok(y)
}

/// The input indices of output index `o`'s window, clipped to the input.
fn window(o: usize, cfg: PoolCfg, size: usize) -> std::ops::Range<usize> {
    let start = o * cfg.stride;
    start.saturating_sub(cfg.padding)..(start + cfg.kernel).saturating_sub(cfg.padding).min(size)
}

/// The gradient of [`avg_pool2d`] with respect to its input of shape `x_shape`.
pub fn avg_pool2d_backward(dy: &Tensor, x_shape: &[usize], cfg: PoolCfg) -> Result<Tensor> {
    let (p, h, w, ho, wo) = check_pool(x_shape, cfg, "avg_pool2d_backward")?;
    if dy.shape() != [x_shape[0], x_shape[1], ho, wo] {
        return Err(Error::shape(
            "avg_pool2d_backward",
            format!(
                "output gradient {:?} for input {x_shape:?} with {cfg:?}",
                dy.shape()
            ),
        ));
    }
    let mut dx = Tensor::uninit(x_shape, dy.device())?;
    match dy.device() {
        Device::Cpu => cpu::avg_pool_backward(dy.host()?, dx.host_mut()?, [h, w, ho, wo], cfg),
        dev => launch_planes(
            dev,
            "avg_pool2d_backward_f32",
            dy,
            &mut dx,
            p,
            &[
                h,
                w,
                ho,
                wo,
                cfg.kernel,
                cfg.stride,
                cfg.padding,
                cfg.count_include_pad as usize,
            ],
            p * h * w,
        )?,
    }
    Ok(dx)
}

/// Max pooling of `x` [B, C, H, W] (`cfg.count_include_pad` plays no part). Forward only: the
/// networks that use it (the FID Inception) are never trained here.
pub fn max_pool2d(x: &Tensor, cfg: PoolCfg) -> Result<Tensor> {
    pool_forward(
        x,
        cfg,
        "max_pool2d",
        "max_pool2d_forward_f32",
        &[],
        cpu::max_pool,
    )
}

/// One axis of align_corners=True bilinear sampling: for output index `o`, the two input indices
/// and their weights. The same f32 arithmetic as `bilinear_tap` in kernels/pool.cu.
fn bilinear_tap(o: usize, size_in: usize, size_out: usize) -> (usize, usize, f32, f32) {
    let scale = if size_out > 1 {
        (size_in - 1) as f32 / (size_out - 1) as f32
    } else {
        0.0
    };
    let src = scale * o as f32;
    let i0 = (src as usize).min(size_in - 1);
    let i1 = if i0 < size_in - 1 { i0 + 1 } else { i0 };
    let w1 = src - i0 as f32;
    (i0, i1, 1.0 - w1, w1)
}

fn check_resize(
    shape: &[usize],
    size: (usize, usize),
    op: &'static str,
) -> Result<(usize, usize, usize)> {
    let (p, h, w) = planes(shape, op)?;
    if size.0 == 0 || size.1 == 0 {
        return Err(Error::shape(
            op,
            format!("output size {size:?} for input {shape:?}"),
        ));
    }
    Ok((p, h, w))
}

/// Bilinear resizing of `x` [B, C, H, W] to [B, C, size.0, size.1], align_corners=True.
pub fn upsample_bilinear(x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    let op = "upsample_bilinear";
    resize_planes(x, size, op, "upsample_bilinear_forward_f32", bilinear_tap)
}

/// One axis of align_corners=False bilinear sampling: output index `o` samples the input at
/// (o + 0.5) size_in / size_out - 0.5, clamped at 0, as PyTorch's
/// `area_pixel_compute_source_index`; the two input indices and their weights. The same f32
/// arithmetic as `half_pixel_tap` in kernels/pool.cu.
fn half_pixel_tap(o: usize, size_in: usize, size_out: usize) -> (usize, usize, f32, f32) {
    let scale = size_in as f32 / size_out as f32;
    let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (src as usize).min(size_in - 1);
    let i1 = if i0 < size_in - 1 { i0 + 1 } else { i0 };
    let w1 = (src - i0 as f32).clamp(0.0, 1.0);
    (i0, i1, 1.0 - w1, w1)
}

/// Bilinear resizing of `x` [B, C, H, W] to [B, C, size.0, size.1] with align_corners=False
/// (`F.interpolate(x, size, mode='bilinear')`, no antialiasing). Forward only.
pub fn resize_bilinear(x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    resize_planes(
        x,
        size,
        "resize_bilinear",
        "resize_bilinear_forward_f32",
        half_pixel_tap,
    )
}

/// One axis's sampling rule: output index, input size, output size -> (i0, i1, w0, w1).
type Tap = fn(usize, usize, usize) -> (usize, usize, f32, f32);

/// Bilinear resizing by the taps `tap` gives each axis on cpu, `kernel` elsewhere (which must
/// compute the same taps).
fn resize_planes(
    x: &Tensor,
    size: (usize, usize),
    op: &'static str,
    kernel: &str,
    tap: Tap,
) -> Result<Tensor> {
    let (p, h, w) = check_resize(x.shape(), size, op)?;
    let (ho, wo) = size;
    let mut y = Tensor::uninit(&[x.shape()[0], x.shape()[1], ho, wo], x.device())?;
    match x.device() {
        Device::Cpu => {
            let (xs, ys) = (x.host()?, y.host_mut()?);
            let rows: Vec<_> = (0..ho).map(|o| tap(o, h, ho)).collect();
            let cols: Vec<_> = (0..wo).map(|o| tap(o, w, wo)).collect();
            for_each_item_chunk(ys, ho * wo, batch_workers(p, 8 * ho * wo), |first, ys| {
                for (i, y_p) in ys.chunks_mut(ho * wo).enumerate() {
                    let src = &xs[(first + i) * h * w..][..h * w];
                    for (y_row, &(h0, h1, a0, a1)) in y_p.chunks_mut(wo).zip(&rows) {
                        for (o, &(w0, w1, b0, b1)) in y_row.iter_mut().zip(&cols) {
                            *o = a0 * (b0 * src[h0 * w + w0] + b1 * src[h0 * w + w1])
                                + a1 * (b0 * src[h1 * w + w0] + b1 * src[h1 * w + w1]);
                        }
                    }
                }
            });
        }
        dev => launch_planes(dev, kernel, x, &mut y, p, &[h, w, ho, wo], p * ho * wo)?,
    }
    Ok(y)
}

/// The plane count and input size of a nearest upsampling by `factor` of `x_shape`.
fn check_nearest(
    x_shape: &[usize],
    factor: usize,
    op: &'static str,
) -> Result<(usize, usize, usize)> {
    let (p, h, w) = planes(x_shape, op)?;
    let fits = |size: usize| {
        size.checked_mul(factor)
            .is_some_and(|s| s <= i32::MAX as usize)
    };
    if factor == 0 || !fits(h) || !fits(w) {
        return Err(Error::invalid(format!(
            "{op}: factor {factor} for a {h}x{w} plane (want a factor >= 1 and a size that fits i32)"
        )));
    }
    Ok((p, h, w))
}

/// Nearest-neighbour upsampling of `x` [B, C, H, W] to [B, C, H f, W f]: each pixel copied into
/// an f x f square.
pub fn upsample_nearest(x: &Tensor, factor: usize) -> Result<Tensor> {
    let (p, h, w) = check_nearest(x.shape(), factor, "upsample_nearest")?;
    let (ho, wo) = (h * factor, w * factor);
    let mut y = Tensor::uninit(&[x.shape()[0], x.shape()[1], ho, wo], x.device())?;
    match x.device() {
        Device::Cpu => {
            let (src, dst) = (x.host()?, y.host_mut()?);
            for (plane, out) in src.chunks(h * w).zip(dst.chunks_mut(ho * wo)) {
                for (oh, row) in out.chunks_mut(wo).enumerate() {
                    let from = &plane[oh / factor * w..][..w];
                    for (ow, v) in row.iter_mut().enumerate() {
                        *v = from[ow / factor];
                    }
                }
            }
        }
        dev => launch_planes(
            dev,
            "upsample_nearest_forward_f32",
            x,
            &mut y,
            p,
            &[h, w, factor],
            p * ho * wo,
        )?,
    }
    Ok(y)
}

/// The gradient of [`upsample_nearest`] by `factor` with respect to its input of shape
/// `x_shape`: each input pixel's f x f outputs summed, row by row.
pub fn upsample_nearest_backward(dy: &Tensor, x_shape: &[usize], factor: usize) -> Result<Tensor> {
    let op = "upsample_nearest_backward";
    let (p, h, w) = check_nearest(x_shape, factor, op)?;
    let (ho, wo) = (h * factor, w * factor);
    if dy.shape() != [x_shape[0], x_shape[1], ho, wo] {
        return Err(Error::shape(
            op,
            format!(
                "output gradient {:?} for input {x_shape:?} upsampled by {factor}",
                dy.shape()
            ),
        ));
    }
    let mut dx = Tensor::uninit(x_shape, dy.device())?;
    match dy.device() {
        Device::Cpu => {
            let (g, d) = (dy.host()?, dx.host_mut()?);
            for (plane, out) in g.chunks(ho * wo).zip(d.chunks_mut(h * w)) {
                for (i, v) in out.iter_mut().enumerate() {
                    let (ih, iw) = (i / w, i % w);
                    let mut acc = 0.0f32;
                    for a in 0..factor {
                        let row = &plane[(ih * factor + a) * wo + iw * factor..][..factor];
                        for &gv in row {
                            acc += gv;
                        }
                    }
                    *v = acc;
                }
            }
        }
        dev => launch_planes(
            dev,
            "upsample_nearest_backward_f32",
            dy,
            &mut dx,
            p,
            &[h, w, factor],
            p * h * w,
        )?,
    }
    Ok(dx)
}

/// The gradient of [`upsample_bilinear`] with respect to its input of shape `x_shape`.
pub fn upsample_bilinear_backward(dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    let op = "upsample_bilinear_backward";
    let &[b, c, ho, wo] = dy.shape() else {
        return Err(Error::shape(
            op,
            format!("output gradient {:?} is not 4-D", dy.shape()),
        ));
    };
    let (p, h, w) = check_resize(x_shape, (ho, wo), op)?;
    if x_shape[..2] != [b, c] {
        return Err(Error::shape(
            op,
            format!("output gradient {:?} for input {x_shape:?}", dy.shape()),
        ));
    }
    let mut dx = Tensor::uninit(x_shape, dy.device())?;
    match dy.device() {
        Device::Cpu => {
            let (g, d) = (dy.host()?, dx.host_mut()?);
            d.fill(0.0);
            for (i, &gv) in g.iter().enumerate() {
                let (plane, oh, ow) = (i / (ho * wo), i / wo % ho, i % wo);
                let dst = &mut d[plane * h * w..][..h * w];
                let (h0, h1, a0, a1) = bilinear_tap(oh, h, ho);
                let (w0, w1, b0, b1) = bilinear_tap(ow, w, wo);
                dst[h0 * w + w0] += gv * a0 * b0;
                dst[h0 * w + w1] += gv * a0 * b1;
                dst[h1 * w + w0] += gv * a1 * b0;
                dst[h1 * w + w1] += gv * a1 * b1;
            }
        }
        dev => launch_planes(
            dev,
            "upsample_bilinear_backward_f32",
            dy,
            &mut dx,
            p,
            &[h, w, ho, wo],
            p * h * w,
        )?,
    }
    Ok(dx)
}

/// The cpu average pooling: each plane's window sums taken in two passes, along rows then down
/// columns (kernel + kernel additions per output instead of kernel^2), planes spread over
/// threads. `dims` = [h, w, ho, wo].
mod cpu {
    use super::{batch_workers, for_each_item_chunk, window, PoolCfg};

    pub(super) fn avg_pool(x: &[f32], y: &mut [f32], [h, w, ho, wo]: [usize; 4], cfg: PoolCfg) {
        let workers = batch_workers(y.len() / (ho * wo), 2 * cfg.kernel * ho * wo);
        for_each_item_chunk(y, ho * wo, workers, |first, ys| {
            // row_sums[ih, ow]: the sum over the window of column ow in input row ih.
            let mut row_sums = vec![0.0f32; h * wo];
            for (i, y_p) in ys.chunks_mut(ho * wo).enumerate() {
                let x_p = &x[(first + i) * h * w..][..h * w];
                for (x_row, sums) in x_p.chunks(w).zip(row_sums.chunks_mut(wo)) {
                    for (ow, s) in sums.iter_mut().enumerate() {
                        *s = window(ow, cfg, w).map(|iw| x_row[iw]).sum();
                    }
                }
                for (oh, y_row) in y_p.chunks_mut(wo).enumerate() {
                    y_row.fill(0.0);
                    for ih in window(oh, cfg, h) {
                        let sums = &row_sums[ih * wo..][..wo];
                        y_row.iter_mut().zip(sums).for_each(|(o, &s)| *o += s);
                    }
                    for (ow, o) in y_row.iter_mut().enumerate() {
                        *o *= cfg.inv_divisor(oh, ow, h, w);
                    }
                }
            }
        });
    }

    /// The adjoint of [`avg_pool`], the same two passes in reverse order. Windows that all share
    /// one divisor (count_include_pad) apply it once at the end; otherwise each output's
    /// gradient is divided by its own window's size as it is gathered.
    pub(super) fn avg_pool_backward(
        dy: &[f32],
        dx: &mut [f32],
        [h, w, ho, wo]: [usize; 4],
        cfg: PoolCfg,
    ) {
        let (per_output, at_end) = if cfg.count_include_pad {
            (None, cfg.inv_divisor(0, 0, h, w))
        } else {
            (Some(cfg), 1.0)
        };
        let workers = batch_workers(dx.len() / (h * w), 2 * cfg.kernel * ho * wo);
        for_each_item_chunk(dx, h * w, workers, |first, dxs| {
            // col_sums[ih, ow]: the gradient reaching input row ih through output column ow.
            let mut col_sums = vec![0.0f32; h * wo];
            for (i, dx_p) in dxs.chunks_mut(h * w).enumerate() {
                let dy_p = &dy[(first + i) * ho * wo..][..ho * wo];
                col_sums.fill(0.0);
                for (oh, g_row) in dy_p.chunks(wo).enumerate() {
                    for ih in window(oh, cfg, h) {
                        let sums = &mut col_sums[ih * wo..][..wo];
                        for (ow, (s, &g)) in sums.iter_mut().zip(g_row).enumerate() {
                            *s += per_output.map_or(g, |c| g * c.inv_divisor(oh, ow, h, w));
                        }
                    }
                }
                for (dx_row, sums) in dx_p.chunks_mut(w).zip(col_sums.chunks(wo)) {
                    dx_row.fill(0.0);
                    for (ow, &s) in sums.iter().enumerate() {
                        window(ow, cfg, w).for_each(|iw| dx_row[iw] += s);
                    }
                    dx_row.iter_mut().for_each(|o| *o *= at_end);
                }
            }
        });
    }

    /// The larger of `best` and `v`, NaN winning (PyTorch's `val > maxval || isnan(val)`).
    fn nan_max(best: f32, v: f32) -> f32 {
        if v > best || (v.is_nan() && !best.is_nan()) {
            v
        } else {
            best
        }
    }

    /// Max pooling, one plane at a time: the largest in-bounds value of each window (a NaN in the
    /// window wins, as in PyTorch).
    pub(super) fn max_pool(x: &[f32], y: &mut [f32], [h, w, ho, wo]: [usize; 4], cfg: PoolCfg) {
        let workers = batch_workers(y.len() / (ho * wo), cfg.kernel * cfg.kernel * ho * wo);
        for_each_item_chunk(y, ho * wo, workers, |first, ys| {
            for (i, y_p) in ys.chunks_mut(ho * wo).enumerate() {
                let x_p = &x[(first + i) * h * w..][..h * w];
                for (oh, y_row) in y_p.chunks_mut(wo).enumerate() {
                    let rows = window(oh, cfg, h);
                    for (ow, out) in y_row.iter_mut().enumerate() {
                        let cols = window(ow, cfg, w);
                        let mut best = f32::NEG_INFINITY;
                        for ih in rows.clone() {
                            for &v in &x_p[ih * w..][cols.clone()] {
                                best = nan_max(best, v);
                            }
                        }
                        *out = best;
                    }
                }
            }
        });
    }
}
