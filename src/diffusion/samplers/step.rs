//! One fused sampler step per kernel (SPEC section 4): read `x` and the score, draw the normal in
//! registers from Philox, update `x` in place. The coefficients are folded on the host so that
//! the kernels stay generic (the mirrored Langevin iteration of SPEC 6 reuses the Dale kernel).
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::launch::{launch, with_partials, Arg, LaunchGeometry};
use crate::ops::PhiloxDraw;
use crate::tensor::Tensor;

/// Which drift constant the Dale-Langevin step uses (SPEC section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DaleVariant {
    /// `-delta_s (mu_k - 3 sigma_k^2/2)`: the reverse SDE in log space, as derived and as in the
    /// papers' main text.
    #[default]
    Derived,
    /// `-delta_s (mu_k - sigma_k^2/2)`: the supplement's Algorithm 2 (file 000), which drops the
    /// `+1` of `grad_y log p_Y = 1 + h`. Offered for comparison only.
    Supplement,
}

crate::named::value_names!(DaleVariant {
    Derived = "derived" => "drift -delta_s (mu_k - 3 sigma_k^2/2): the reverse SDE as derived (SPEC section 4)",
    Supplement = "supplement" => "drift -delta_s (mu_k - sigma_k^2/2): the supplement's Algorithm 2, for comparison",
});

/// `x <- x * F(drift + score * h + noise * z)` with `F = exp` (log-space steps) or
/// `F(v) = 1 + v` (the ambient sign-agnostic step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoefficients {
    pub drift: f32,
    pub score: f32,
    pub noise: f32,
}

impl StepCoefficients {
    /// The Dale-Langevin step at a level with `sigma_k`, `mu_k` (SPEC 4).
    pub fn dale(sigma: f32, mu: f32, delta_s: f32, kappa: f32, variant: DaleVariant) -> Self {
        let (sigma, mu, delta_s) = (sigma as f64, mu as f64, delta_s as f64);
        let ito = match variant {
            DaleVariant::Derived => 1.5,
            DaleVariant::Supplement => 0.5,
        };
        Self {
            drift: (-delta_s * (mu - ito * sigma * sigma)) as f32,
            score: (delta_s * sigma * sigma) as f32,
            noise: (kappa as f64 * sigma * delta_s.sqrt()) as f32,
        }
    }

    /// The sign-agnostic (ambient Euler-Maruyama) step (SPEC 4).
    pub fn sign_agnostic(sigma: f32, mu: f32, delta_s: f32, kappa: f32) -> Self {
        let (sigma, mu, delta_s) = (sigma as f64, mu as f64, delta_s as f64);
        Self {
            drift: (-delta_s * (mu - 2.0 * sigma * sigma)) as f32,
            score: (delta_s * sigma * sigma) as f32,
            noise: (kappa as f64 * sigma * delta_s.sqrt()) as f32,
        }
    }

    /// The mirrored (log-space) Langevin iteration `x <- x exp(eta (1 + h) + sqrt(2 eta) z)`
    /// (SPEC 6), run through the Dale kernel.
    pub fn mirrored_langevin(eta: f32) -> Self {
        Self {
            drift: eta,
            score: eta,
            noise: (2.0 * eta as f64).sqrt() as f32,
        }
    }
}

/// `coef * z_i`; no normal is drawn when `coef` is 0 (the kernels do the same).
fn scaled_normal(draw: PhiloxDraw, coef: f32, i: usize) -> f32 {
    if coef != 0.0 {
        coef * draw.normal(i as u64)
    } else {
        0.0
    }
}

fn check_step_inputs(x: &Tensor, score: &Tensor, op: &'static str) -> Result<()> {
    x.check_same_shape(score, op)
}

/// The Dale-Langevin step (or any log-space step), `x` updated in place; never changes a sign.
pub fn dale_step(x: &mut Tensor, h: &Tensor, c: StepCoefficients, noise: PhiloxDraw) -> Result<()> {
    check_step_inputs(x, h, "dale_step")?;
    let n = x.numel();
    match x.device().clone() {
        Device::Cpu => {
            let hs = h.host()?;
            for (i, xi) in x.host_mut()?.iter_mut().enumerate() {
                let z = scaled_normal(noise, c.noise, i);
                *xi *= (c.drift + c.score * hs[i] + z).exp();
            }
        }
        dev => {
            let [seed, stream, step] = Arg::philox(noise);
            launch(
                &dev,
                "gbm_dale_step_f32",
                LaunchGeometry::elementwise(n),
                &mut [
                    Arg::Out(x),
                    Arg::In(h),
                    Arg::F32(c.drift),
                    Arg::F32(c.score),
                    Arg::F32(c.noise),
                    seed,
                    stream,
                    step,
                    Arg::U64(n as u64),
                ],
            )?
        }
    }
    Ok(())
}

/// A device-side count of entries that changed sign or hit zero (SPEC 4 and 10), accumulated by
/// [`sign_agnostic_step`] without a host round trip; [`FlipCounter::drain`] reads and resets it.
/// A u32 held in f32 storage: drain at least every 2^32 flips (once per level is plenty).
pub struct FlipCounter {
    count: Tensor,
}

impl FlipCounter {
    pub fn new(device: &Device) -> Result<Self> {
        Ok(Self {
            count: Tensor::zeros(&[1], device)?,
        })
    }

    /// The flips since the last drain.
    pub fn drain(&mut self) -> Result<u64> {
        let bits = self.count.item()?.to_bits();
        if bits != 0 {
            self.count = Tensor::zeros(&[1], self.count.device())?;
        }
        Ok(bits as u64)
    }
}

/// The sign-agnostic step, `x` updated in place; entries that were non-zero and changed sign or
/// became zero are added to `flips`.
pub fn sign_agnostic_step(
    x: &mut Tensor,
    h: &Tensor,
    c: StepCoefficients,
    noise: PhiloxDraw,
    flips: &mut FlipCounter,
) -> Result<()> {
    check_step_inputs(x, h, "sign_agnostic_step")?;
    if !flips.count.device().same(x.device()) {
        return Err(Error::DeviceMismatch {
            op: "sign_agnostic_step",
            a: x.device().to_string(),
            b: flips.count.device().to_string(),
        });
    }
    let n = x.numel();
    match x.device().clone() {
        Device::Cpu => {
            let hs = h.host()?;
            let mut changed = 0u32;
            for (i, xi) in x.host_mut()?.iter_mut().enumerate() {
                let z = scaled_normal(noise, c.noise, i);
                let old = *xi;
                let updated = old * (1.0 + c.drift + c.score * hs[i] + z);
                *xi = updated;
                changed +=
                    (old != 0.0 && (updated == 0.0 || (updated < 0.0) != (old < 0.0))) as u32;
            }
            let slot = &mut flips.count.host_mut()?[0];
            *slot = f32::from_bits(slot.to_bits().wrapping_add(changed));
        }
        dev => {
            let [seed, stream, step] = Arg::philox(noise);
            launch(
                &dev,
                "gbm_sign_agnostic_step_f32",
                with_partials(n),
                &mut [
                    Arg::Out(x),
                    Arg::In(h),
                    Arg::OutWords(&mut flips.count),
                    Arg::F32(c.drift),
                    Arg::F32(c.score),
                    Arg::F32(c.noise),
                    seed,
                    stream,
                    step,
                    Arg::U64(n as u64),
                ],
            )?
        }
    }
    Ok(())
}

/// The additive baseline's annealed Langevin step `x <- x + alpha/2 s + sqrt(alpha) z`
/// (SPEC 8), `x` updated in place.
pub fn additive_langevin_step(
    x: &mut Tensor,
    s: &Tensor,
    alpha: f32,
    noise: PhiloxDraw,
) -> Result<()> {
    check_step_inputs(x, s, "additive_langevin_step")?;
    let half_alpha = 0.5 * alpha;
    let noise_coef = alpha.sqrt();
    let n = x.numel();
    match x.device().clone() {
        Device::Cpu => {
            let ss = s.host()?;
            for (i, xi) in x.host_mut()?.iter_mut().enumerate() {
                *xi += half_alpha * ss[i] + scaled_normal(noise, noise_coef, i);
            }
        }
        dev => {
            let [seed, stream, step] = Arg::philox(noise);
            launch(
                &dev,
                "additive_langevin_step_f32",
                LaunchGeometry::elementwise(n),
                &mut [
                    Arg::Out(x),
                    Arg::In(s),
                    Arg::F32(half_alpha),
                    Arg::F32(noise_coef),
                    seed,
                    stream,
                    step,
                    Arg::U64(n as u64),
                ],
            )?
        }
    }
    Ok(())
}
