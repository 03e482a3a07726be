//! Deterministic reductions (kernels/elementwise.cu, `sum_partial_f32`): a fixed number of blocks
//! each sum a grid-stride share, then one block sums the partials, so the same input always gives
//! the same bits (the fixed-order sums SPEC sections 3 and 7 ask of the loss and the norm).
use super::launch::{launch, with_partials, Arg, LaunchGeometry};
use crate::device::Device;
use crate::error::Result;
use crate::tensor::Tensor;

/// The sum of all elements, as a one-element tensor on the same device.
pub fn sum(x: &Tensor) -> Result<Tensor> {
    let n = x.numel();
    match x.device() {
        Device::Cpu => {
            let s: f64 = x.host()?.iter().map(|&v| v as f64).sum();
            Tensor::scalar(s as f32, x.device())
        }
        dev => {
            let g = with_partials(n);
            let mut partial = Tensor::uninit(&[g.grid[0] as usize], dev)?;
            launch(
                dev,
                "sum_partial_f32",
                g,
                &mut [Arg::In(x), Arg::Out(&mut partial), Arg::U64(n as u64)],
            )?;
            let mut total = Tensor::uninit(&[], dev)?;
            let one = LaunchGeometry::reduction(1, 1);
            let np = partial.numel() as u64;
            launch(
                dev,
                "sum_partial_f32",
                one,
                &mut [Arg::In(&partial), Arg::Out(&mut total), Arg::U64(np)],
            )?;
            Ok(total)
        }
    }
}

/// Whether every element is finite: exactly on the host; on a device from the sum, which is NaN
/// or infinite when an element is (or when finite values overflow f32, itself a divergence), so
/// a sampler can check once per level without copying the tensor back.
pub fn all_finite(x: &Tensor) -> Result<bool> {
    if x.device().is_host() {
        return Ok(x.to_vec()?.iter().all(|v| v.is_finite()));
    }
    Ok(sum(x)?.item()?.is_finite())
}

/// The mean of all elements (0 for an empty tensor is not defined: it is NaN, as 0/0).
pub fn mean(x: &Tensor) -> Result<Tensor> {
    let n = x.numel() as f32;
    super::scale(&sum(x)?, 1.0 / n, 0.0)
}
