//! The sinusoidal embedding of the level index (kernels/embedding.cu) that conditions DDPM++,
//! SPEC section 11: `[sin(k w_j) | cos(k w_j)]`, `w_j = 10000^(-j / (dim/2 - 1))`, as score_sde's
//! `get_timestep_embedding` with the level index as the time step. A constant of the levels: no
//! gradient flows through it.
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{launch, Arg, LaunchGeometry};
use crate::tensor::Tensor;

/// The embedding [B, dim] of `levels` [B]. Computed in f64 (the arguments reach 1000 radians),
/// rounded once; `dim` >= 4 (the frequencies divide by dim/2 - 1).
pub fn timestep_embedding(levels: &Tensor, dim: usize) -> Result<Tensor> {
    let op = "timestep_embedding";
    let &[batch] = levels.shape() else {
        return Err(Error::shape(
            op,
            format!("levels {:?} are not [B]", levels.shape()),
        ));
    };
    if !(4..=i32::MAX as usize).contains(&dim) || batch > i32::MAX as usize {
        return Err(Error::invalid(format!(
            "{op}: width {dim} for {batch} levels (want a width >= 4)"
        )));
    }
    let mut out = Tensor::uninit(&[batch, dim], levels.device())?;
    match levels.device() {
        Device::Cpu => {
            let half = dim / 2;
            let log_step = 10000f64.ln() / (half - 1) as f64;
            let (ks, rows) = (levels.host()?, out.host_mut()?);
            for (&k, row) in ks.iter().zip(rows.chunks_mut(dim)) {
                for f in 0..half {
                    let arg = k as f64 * (-(f as f64) * log_step).exp();
                    row[f] = arg.sin() as f32;
                    row[half + f] = arg.cos() as f32;
                }
                row[2 * half..].fill(0.0);
            }
        }
        dev => launch(
            dev,
            "timestep_embedding_f32",
            LaunchGeometry::elementwise(batch * dim),
            &mut [
                Arg::In(levels),
                Arg::Out(&mut out),
                Arg::I32(batch as i32),
                Arg::I32(dim as i32),
            ],
        )?,
    }
    Ok(out)
}
