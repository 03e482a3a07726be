//! Element-wise operations (kernels/elementwise.cu): fill, copy, affine maps, exp, log, sums and
//! products of tensors, the ELU of the score network (SPEC section 9) and the SiLU of the DDPM++
//! score network (section 11) with their backwards, the ReLU of the FID Inception (forward only),
//! and channel concatenation with its inverse, the slice. Each
//! kernel takes its tensor operands, the output, any scalars, and the element count last;
//! [`map_unary`] and [`map_binary`] hold that convention and the CPU reference loop once.
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::cpu_exp;
use crate::ops::cpu_parallel::for_each_element_chunk;
use crate::ops::cpu_simd::{map1, map2};
use crate::ops::launch::{check_same_device, launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// `out[i] = f(x[i])`: the reference on cpu, else `kernel(x, out, scalars.., n)` (f32 scalars).
fn map_unary(
    x: &Tensor,
    kernel: &str,
    scalars: &[f32],
    f: impl Fn(f32) -> f32 + Sync,
) -> Result<Tensor> {
    let mut out = Tensor::uninit(x.shape(), x.device())?;
    let n = x.numel();
    match x.device() {
        Device::Cpu => {
            let xs = x.host()?;
            for_each_element_chunk(out.host_mut()?, |offset, part| {
                map1(part, &xs[offset..], &f)
            })
        }
        dev => {
            let mut args = vec![Arg::In(x), Arg::Out(&mut out)];
            args.extend(scalars.iter().map(|&v| Arg::F32(v)));
            args.push(Arg::U64(n as u64));
            launch(dev, kernel, LaunchGeometry::elementwise(n), &mut args)?
        }
    }
    Ok(out)
}

/// `out[i] = f(a[i], b[i])`: the reference on cpu, else `kernel(a, b, out, scalars.., n)`.
fn map_binary(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    kernel: &str,
    scalars: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    a.check_same_shape(b, op)?;
    let mut out = Tensor::uninit(a.shape(), a.device())?;
    let n = a.numel();
    match a.device() {
        Device::Cpu => {
            let (xa, xb) = (a.host()?, b.host()?);
            for_each_element_chunk(out.host_mut()?, |offset, part| {
                map2(part, &xa[offset..], &xb[offset..], &f)
            })
        }
        dev => {
            let mut args = vec![Arg::In(a), Arg::In(b), Arg::Out(&mut out)];
            args.extend(scalars.iter().map(|&v| Arg::F32(v)));
            args.push(Arg::U64(n as u64));
            launch(dev, kernel, LaunchGeometry::elementwise(n), &mut args)?
        }
    }
    Ok(out)
}

/// Sets every element to `value`.
pub fn fill(t: &mut Tensor, value: f32) -> Result<()> {
    let n = t.numel();
    match t.device().clone() {
        Device::Cpu => t.host_mut()?.fill(value),
        dev => launch(
            &dev,
            "fill_f32",
            LaunchGeometry::elementwise(n),
            &mut [Arg::Out(t), Arg::F32(value), Arg::U64(n as u64)],
        )?,
    }
    Ok(())
}

/// A copy on the same device.
pub fn copy(x: &Tensor) -> Result<Tensor> {
    map_unary(x, "copy_f32", &[], |v| v)
}

/// Copies `x` into the existing tensor `out` of the same shape.
pub fn copy_into(x: &Tensor, out: &mut Tensor) -> Result<()> {
    x.check_same_shape(out, "copy_into")?;
    let n = x.numel();
    match x.device() {
        Device::Cpu => out.host_mut()?.copy_from_slice(x.host()?),
        dev => launch(
            dev,
            "copy_f32",
            LaunchGeometry::elementwise(n),
            &mut [Arg::In(x), Arg::Out(out), Arg::U64(n as u64)],
        )?,
    }
    Ok(())
}

/// `alpha * x + beta`.
pub fn scale(x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    map_unary(x, "scale_f32", &[alpha, beta], |v| alpha * v + beta)
}

pub fn exp(x: &Tensor) -> Result<Tensor> {
    map_unary(x, "exp_f32", &[], cpu_exp::exp)
}

pub fn log(x: &Tensor) -> Result<Tensor> {
    map_unary(x, "log_f32", &[], f32::ln)
}

/// ELU with alpha = 1, the network's activation (SPEC section 9).
pub fn elu(x: &Tensor) -> Result<Tensor> {
    map_unary(x, "elu_f32", &[], cpu_exp::elu)
}

/// sigmoid(x) and 1 - sigmoid(x), both from e = exp(-|x|) <= 1: exp never overflows, and each
/// of the pair keeps its full relative precision where it is tiny (1 - sigmoid(x) is not formed
/// by a subtraction that would cancel). NaN gives NaN for both. The same f32 operations as
/// `sigmoid_pair` in kernels/elementwise.cu, which calls expf where this calls the cpu backend's
/// branch-free exponential (within 2 ulp, so the loops vectorise; 0 where e is subnormal).
#[inline(always)]
fn sigmoid_pair(x: f32) -> (f32, f32) {
    let e = cpu_exp::exp_nonpositive(-x.abs());
    let (big, small) = (1.0 / (1.0 + e), e / (1.0 + e));
    if x >= 0.0 {
        (big, small)
    } else {
        (small, big)
    }
}

/// SiLU (swish), `x sigmoid(x)`: the activation of the DDPM++ score network (docs/SPEC.md
/// section 11). Finite for every finite x; NaN passes through.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    map_unary(x, "silu_f32", &[], |v| v * sigmoid_pair(v).0)
}

/// The gradient of [`silu`] at `x` applied to the upstream gradient `dy`:
/// `dy s (1 + x (1 - s))` with s = sigmoid(x), which is `s + x s (1 - s)` (PyTorch's form).
pub fn silu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    map_binary("silu_backward", x, dy, "silu_backward_f32", &[], |v, g| {
        let (s, s_comp) = sigmoid_pair(v);
        g * (s * (1.0 + v * s_comp))
    })
}

/// `max(x, 0)`, NaN passing through as in PyTorch. Forward only (the FID Inception's activation).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    map_unary(x, "relu_f32", &[], |v| if v < 0.0 { 0.0 } else { v })
}

/// Concatenation of NCHW tensors along the channels (`torch.cat(parts, 1)`): every part has the
/// same batch, height and width and lives on the same device.
pub fn concat_channels(parts: &[&Tensor]) -> Result<Tensor> {
    let op = "concat_channels";
    let Some(first) = parts.first() else {
        return Err(Error::invalid(format!("{op}: no tensors to concatenate")));
    };
    let &[batch, _, h, w] = first.shape() else {
        return Err(Error::shape(op, format!("{:?} is not NCHW", first.shape())));
    };
    let mut c_dst = 0;
    for p in parts {
        match *p.shape() {
            [b, c, ph, pw] if (b, ph, pw) == (batch, h, w) => c_dst += c,
            _ => {
                return Err(Error::shape(
                    op,
                    format!(
                        "{:?} does not match {:?} but in channels",
                        p.shape(),
                        first.shape()
                    ),
                ))
            }
        }
    }
    check_same_device(parts, op)?;
    let hw = h * w;
    let mut out = Tensor::uninit(&[batch, c_dst, h, w], first.device())?;
    let mut c_offset = 0;
    for p in parts {
        let c_src = p.shape()[1];
        match p.device() {
            Device::Cpu => {
                let (src, dst) = (p.host()?, out.host_mut()?);
                for (b, part) in src.chunks(c_src * hw).enumerate() {
                    dst[(b * c_dst + c_offset) * hw..][..c_src * hw].copy_from_slice(part);
                }
            }
            dev => {
                let dims = ChannelBlock {
                    batch,
                    c_src,
                    c_dst,
                    c_offset,
                    hw,
                };
                launch_channel_copy(dev, "copy_channels_f32", p, &mut out, dims)?
            }
        }
        c_offset += c_src;
    }
    Ok(out)
}

/// Channels `[c_offset, c_offset + channels)` of the NCHW tensor `x` (`x[:, c_offset:c_offset +
/// channels]`), the gradient of [`concat_channels`] for one part.
pub fn slice_channels(x: &Tensor, c_offset: usize, channels: usize) -> Result<Tensor> {
    let op = "slice_channels";
    let &[batch, c_src, h, w] = x.shape() else {
        return Err(Error::shape(op, format!("{:?} is not NCHW", x.shape())));
    };
    if c_offset.checked_add(channels).is_none_or(|end| end > c_src) {
        return Err(Error::shape(
            op,
            format!(
                "channels [{c_offset}, {c_offset} + {channels}) of {:?}",
                x.shape()
            ),
        ));
    }
    let hw = h * w;
    let mut out = Tensor::uninit(&[batch, channels, h, w], x.device())?;
    match x.device() {
        Device::Cpu => {
            let (src, dst) = (x.host()?, out.host_mut()?);
            if channels * hw > 0 {
                for (b, part) in dst.chunks_mut(channels * hw).enumerate() {
                    part.copy_from_slice(&src[(b * c_src + c_offset) * hw..][..channels * hw]);
                }
            }
        }
        dev => {
            let dims = ChannelBlock {
                batch,
                c_src,
                c_dst: channels,
                c_offset,
                hw,
            };
            launch_channel_copy(dev, "slice_channels_f32", x, &mut out, dims)?
        }
    }
    Ok(out)
}

/// Where a block of channels moves between two NCHW tensors of `hw` pixels per plane: `c_offset`
/// is its first channel in the wider of `src` (`c_src` channels) and `dst` (`c_dst`).
struct ChannelBlock {
    batch: usize,
    c_src: usize,
    c_dst: usize,
    c_offset: usize,
    hw: usize,
}

/// Launches `copy_channels_f32` (a part into the concatenation) or `slice_channels_f32` (a part
/// out of it), which take the same arguments; one thread per element of the part.
fn launch_channel_copy(
    dev: &Device,
    kernel: &str,
    src: &Tensor,
    dst: &mut Tensor,
    d: ChannelBlock,
) -> Result<()> {
    let part = d.batch * d.c_src.min(d.c_dst) * d.hw;
    launch(
        dev,
        kernel,
        LaunchGeometry::elementwise(part),
        &mut [
            Arg::In(src),
            Arg::Out(dst),
            Arg::U64(d.batch as u64),
            Arg::I32(d.c_src as i32),
            Arg::I32(d.c_dst as i32),
            Arg::I32(d.c_offset as i32),
            Arg::U64(d.hw as u64),
        ],
    )
}

/// The gradient of [`elu`] at `x` applied to the upstream gradient `dy`.
pub fn elu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    map_binary("elu_backward", x, dy, "elu_backward_f32", &[], |v, g| {
        g * cpu_exp::elu_slope(v)
    })
}

/// `alpha * a + beta * b`.
pub fn axpby(alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
    map_binary("axpby", a, b, "add_f32", &[alpha, beta], |u, v| {
        alpha * u + beta * v
    })
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    axpby(1.0, a, 1.0, b)
}

pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    axpby(1.0, a, -1.0, b)
}

pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    map_binary("mul", a, b, "mul_f32", &[], |u, v| u * v)
}
