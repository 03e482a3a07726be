//! The two ceilings every item is compared with, measured on the machine at hand.
use std::time::Duration;

use super::time_median;
use crate::device::Device;
use crate::error::Result;
use crate::ops::MatRef;
use crate::{ops, Tensor};

#[derive(Clone, Copy, Debug)]
pub struct Ceilings {
    /// Bytes read plus bytes written per second by a large copy.
    pub copy_bytes_per_s: f64,
    /// FP32 multiply-adds (as 2 FLOPs) per second of a large matrix product.
    pub gemm_flops_per_s: f64,
}

/// Copy: 64 Mi floats through the copy kernel (a plain copy on the host). GEMM: a 1024^3 single-precision product on the
/// host by the cpu backend's own GEMM on every core (ops::cpu_gemm: the AVX-512 kernel or the `gemm` crate); on a GPU the GEMM ceiling is taken from the PyTorch reference run
/// (reference/bench_torch.py) and passed in, since the engine links no BLAS.
pub fn measure_ceilings(device: &Device, budget: Duration) -> Result<Ceilings> {
    let n = 64 << 20;
    // Any values will do for a copy; a ramp is quicker to make than random draws.
    let x = Tensor::from_vec((0..n).map(|i| (i % 1024) as f32).collect(), &[n], device)?;
    let mut y = Tensor::zeros(&[n], device)?;
    // Into a buffer that already exists, so first-touch page faults are not counted.
    let copy = time_median(device, &mut || ops::copy_into(&x, &mut y), budget)?;
    let copy_bytes_per_s = 2.0 * 4.0 * n as f64 / copy.as_secs_f64();
    drop((x, y));

    let m = 1024;
    let a: Vec<f32> = (0..m * m).map(|i| (i % 7) as f32 * 0.1).collect();
    let b = a.clone();
    let mut c = vec![0.0f32; m * m];
    let gemm = time_median(
        &Device::Cpu,
        &mut || {
            let (a, b) = (MatRef::row_major(&a, m, m), MatRef::row_major(&b, m, m));
            ops::gemm_all_cores(a, b, &mut c);
            Ok(())
        },
        budget,
    )?;
    let gemm_flops_per_s = 2.0 * (m as f64).powi(3) / gemm.as_secs_f64();
    Ok(Ceilings {
        copy_bytes_per_s,
        gemm_flops_per_s,
    })
}
