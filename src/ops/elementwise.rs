//! Element-wise operations (kernels/elementwise.cu).
use crate::device::Device;
use crate::error::Result;
use crate::ops::launch::{launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

fn unary(x: &Tensor, kernel: &str, f: impl Fn(f32) -> f32) -> Result<Tensor> {
    let mut out = Tensor::uninit(x.shape(), x.device())?;
    let n = x.numel();
    match x.device() {
        Device::Cpu => out
            .host_mut()?
            .iter_mut()
            .zip(x.host()?)
            .for_each(|(o, &v)| *o = f(v)),
        dev => launch(
            dev,
            kernel,
            LaunchGeometry::elementwise(n),
            &mut [Arg::In(x), Arg::Out(&mut out), Arg::U64(n as u64)],
        )?,
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
    unary(x, "copy_f32", |v| v)
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
    let mut out = Tensor::uninit(x.shape(), x.device())?;
    let n = x.numel();
    match x.device() {
        Device::Cpu => out
            .host_mut()?
            .iter_mut()
            .zip(x.host()?)
            .for_each(|(o, &v)| *o = alpha * v + beta),
        dev => launch(
            dev,
            "scale_f32",
            LaunchGeometry::elementwise(n),
            &mut [
                Arg::In(x),
                Arg::Out(&mut out),
                Arg::F32(alpha),
                Arg::F32(beta),
                Arg::U64(n as u64),
            ],
        )?,
    }
    Ok(out)
}

pub fn exp(x: &Tensor) -> Result<Tensor> {
    unary(x, "exp_f32", f32::exp)
}

pub fn log(x: &Tensor) -> Result<Tensor> {
    unary(x, "log_f32", f32::ln)
}

/// ELU with alpha = 1, the network's activation (SPEC section 9).
pub fn elu(x: &Tensor) -> Result<Tensor> {
    unary(x, "elu_f32", |v| if v > 0.0 { v } else { v.exp_m1() })
}

/// The gradient of [`elu`] at `x` applied to the upstream gradient `dy`.
pub fn elu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    x.check_same_shape(dy, "elu_backward")?;
    let mut dx = Tensor::uninit(x.shape(), x.device())?;
    let n = x.numel();
    match x.device() {
        Device::Cpu => {
            let (xs, dys) = (x.host()?, dy.host()?);
            for ((o, &v), &g) in dx.host_mut()?.iter_mut().zip(xs).zip(dys) {
                *o = if v > 0.0 { g } else { g * v.exp() };
            }
        }
        dev => launch(
            dev,
            "elu_backward_f32",
            LaunchGeometry::elementwise(n),
            &mut [
                Arg::In(x),
                Arg::In(dy),
                Arg::Out(&mut dx),
                Arg::U64(n as u64),
            ],
        )?,
    }
    Ok(dx)
}

/// `alpha * a + beta * b`.
pub fn axpby(alpha: f32, a: &Tensor, beta: f32, b: &Tensor) -> Result<Tensor> {
    a.check_same_shape(b, "axpby")?;
    let mut out = Tensor::uninit(a.shape(), a.device())?;
    let n = a.numel();
    match a.device() {
        Device::Cpu => {
            let (xa, xb) = (a.host()?, b.host()?);
            for ((o, &u), &v) in out.host_mut()?.iter_mut().zip(xa).zip(xb) {
                *o = alpha * u + beta * v;
            }
        }
        dev => launch(
            dev,
            "add_f32",
            LaunchGeometry::elementwise(n),
            &mut [
                Arg::In(a),
                Arg::In(b),
                Arg::Out(&mut out),
                Arg::F32(alpha),
                Arg::F32(beta),
                Arg::U64(n as u64),
            ],
        )?,
    }
    Ok(out)
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    axpby(1.0, a, 1.0, b)
}

pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    axpby(1.0, a, -1.0, b)
}

pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.check_same_shape(b, "mul")?;
    let mut out = Tensor::uninit(a.shape(), a.device())?;
    let n = a.numel();
    match a.device() {
        Device::Cpu => {
            let (xa, xb) = (a.host()?, b.host()?);
            for ((o, &u), &v) in out.host_mut()?.iter_mut().zip(xa).zip(xb) {
                *o = u * v;
            }
        }
        dev => launch(
            dev,
            "mul_f32",
            LaunchGeometry::elementwise(n),
            &mut [
                Arg::In(a),
                Arg::In(b),
                Arg::Out(&mut out),
                Arg::U64(n as u64),
            ],
        )?,
    }
    Ok(out)
}
