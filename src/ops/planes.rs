//! One value per (sample, channel) plane of an NCHW tensor (kernels/planes.cu): added to every
//! element of its plane, or summed from it. DDPM++ conditions each residual block on the level
//! this way, `h + Dense(temb)[:, :, None, None]` (SPEC section 11); the bias's gradient is the
//! plane sum of the output's. [`add_channel_bias`] adds one value per channel instead, shared by
//! the batch (the bias of DDPM++'s linear and 1x1 layers).
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{check_same_device, launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// Most blocks [`sum_planes`] launches; the kernel strides over planes beyond them.
const MAX_PLANE_BLOCKS: usize = 65_535;

/// (planes, elements per plane) of a [B, C, ...] shape (no trailing axes: one element each).
fn plane_dims(shape: &[usize], op: &'static str) -> Result<(usize, usize)> {
    match shape {
        [b, c, rest @ ..] => Ok((b * c, rest.iter().product())),
        _ => Err(Error::shape(op, format!("{shape:?} is not [B, C, ...]"))),
    }
}

/// `x + bias[:, :, None, None]`: `x` [B, C, H, W] (or any [B, C, ...]), `bias` [B, C].
pub fn add_plane_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    add_bias(
        "add_plane_bias",
        x,
        bias,
        &x.shape()[..x.shape().len().min(2)],
        "[B, C]",
    )
}

/// `x + bias[None, :, None, None]`: `x` [B, C, ...], `bias` [C]. Its gradient with respect to the
/// bias is `conv::conv2d_backward_bias` of the output's, viewed as [B, C, HW, 1].
pub fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    add_bias(
        "add_channel_bias",
        x,
        bias,
        &x.shape()[1..x.shape().len().min(2)],
        "[C]",
    )
}

/// `x` plus `bias` on every element of each plane, the bias's elements taken in order one per
/// plane and repeated (the whole [B, C], or [C] once per sample); `bias_shape` is what it must be.
fn add_bias(
    op: &'static str,
    x: &Tensor,
    bias: &Tensor,
    bias_shape: &[usize],
    want: &str,
) -> Result<Tensor> {
    let (planes, hw) = plane_dims(x.shape(), op)?;
    if bias.shape() != bias_shape {
        return Err(Error::shape(
            op,
            format!(
                "bias {:?} for input {:?} (want {want})",
                bias.shape(),
                x.shape()
            ),
        ));
    }
    check_same_device(&[x, bias], op)?;
    // Zero only when there are no planes (B C = 0), so the kernel never divides by it.
    let period = bias.numel();
    let mut y = Tensor::uninit(x.shape(), x.device())?;
    match x.device() {
        Device::Cpu => {
            let (xs, bs, ys) = (x.host()?, bias.host()?, y.host_mut()?);
            if hw > 0 {
                let per_plane = xs.chunks(hw).zip(ys.chunks_mut(hw));
                for ((src, dst), &b) in per_plane.zip(bs.iter().cycle()) {
                    dst.iter_mut().zip(src).for_each(|(o, &v)| *o = v + b);
                }
            }
        }
        dev => launch(
            dev,
            "add_plane_bias_f32",
            LaunchGeometry::elementwise(planes * hw),
            &mut [
                Arg::In(x),
                Arg::In(bias),
                Arg::Out(&mut y),
                Arg::U64(planes as u64),
                Arg::U64(period as u64),
                Arg::U64(hw as u64),
            ],
        )?,
    }
    Ok(y)
}

/// The sum of each plane of `x` [B, C, ...]: a [B, C] tensor (zero for empty planes).
pub fn sum_planes(x: &Tensor) -> Result<Tensor> {
    let (planes, hw) = plane_dims(x.shape(), "sum_planes")?;
    let mut sums = Tensor::uninit(&x.shape()[..2], x.device())?;
    match x.device() {
        Device::Cpu => {
            let (xs, out) = (x.host()?, sums.host_mut()?);
            for (p, s) in out.iter_mut().enumerate() {
                *s = xs[p * hw..][..hw].iter().sum();
            }
        }
        dev => {
            let blocks = planes.clamp(1, MAX_PLANE_BLOCKS) as u32;
            let geometry = LaunchGeometry::new([blocks, 1, 1], [256, 1, 1], 0);
            launch(
                dev,
                "sum_planes_f32",
                geometry,
                &mut [
                    Arg::In(x),
                    Arg::Out(&mut sums),
                    Arg::U64(planes as u64),
                    Arg::U64(hw as u64),
                ],
            )?
        }
    }
    Ok(sums)
}
