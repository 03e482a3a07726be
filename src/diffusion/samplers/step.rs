//! The sampler steps (SPEC section 4): their coefficients, folded on the host from the schedule
//! so that the kernels stay generic (the mirrored Langevin iteration of SPEC 6 reuses the Dale
//! kernel), and the steps themselves, each one fused kernel in [`crate::ops`] that reads `x` and
//! the score, draws the normal in registers from Philox and updates `x` in place.
use crate::device::Device;
use crate::error::Result;
use crate::ops::{self, FlipCounter, PhiloxDraw, StepScalars};
use crate::tensor::Tensor;

crate::named::value_names! {
    /// Which drift constant the Dale-Langevin step uses (SPEC section 4).
    #[derive(Default)]
    pub enum DaleVariant {
        /// `-delta_s (mu_k - 3 sigma_k^2/2)`: the reverse SDE in log space, as derived and as in the
        /// papers' main text.
        #[default]
        Derived = "derived" => "drift -delta_s (mu_k - 3 sigma_k^2/2): the reverse SDE as derived (SPEC section 4)",
        /// `-delta_s (mu_k - sigma_k^2/2)`: the supplement's Algorithm 2 (file 000), which drops the
        /// `+1` of `grad_y log p_Y = 1 + h`. Offered for comparison only.
        Supplement = "supplement" => "drift -delta_s (mu_k - sigma_k^2/2): the supplement's Algorithm 2, for comparison",
    }
}

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

impl StepCoefficients {
    /// The coefficients as the fused kernels read them, `[drift, score]` (the noise apart).
    fn coefs(&self) -> [f32; 2] {
        [self.drift, self.score]
    }

    /// Step scalars in `device`'s memory holding these coefficients and `noise`'s step, for
    /// steps drawing from `noise`'s seed and stream.
    pub fn scalars(&self, device: &Device, noise: PhiloxDraw) -> Result<StepScalars> {
        StepScalars::new(device, &self.coefs(), self.noise, noise)
    }

    /// Writes these coefficients and the Philox step `step` into `scalars` in place.
    pub fn write(&self, scalars: &mut StepScalars, step: u32) -> Result<()> {
        scalars.set(&self.coefs(), self.noise, step)
    }
}

/// The Dale-Langevin step (or any log-space step), `x` updated in place; never changes a sign
/// ([`ops::gbm_dale_step`]).
pub fn dale_step(x: &mut Tensor, h: &Tensor, c: StepCoefficients, noise: PhiloxDraw) -> Result<()> {
    ops::gbm_dale_step(x, h, &c.scalars(x.device(), noise)?)
}

/// The sign-agnostic step, `x` updated in place; entries that were non-zero and changed sign or
/// became zero are added to `flips` ([`ops::gbm_sign_agnostic_step`]).
pub fn sign_agnostic_step(
    x: &mut Tensor,
    h: &Tensor,
    c: StepCoefficients,
    noise: PhiloxDraw,
    flips: &mut FlipCounter,
) -> Result<()> {
    ops::gbm_sign_agnostic_step(x, h, flips, &c.scalars(x.device(), noise)?)
}

/// The additive baseline's annealed Langevin step `x <- x + alpha/2 s + sqrt(alpha) z`
/// (SPEC 8), `x` updated in place ([`ops::additive_langevin_step`]).
pub fn additive_langevin_step(
    x: &mut Tensor,
    s: &Tensor,
    alpha: f32,
    noise: PhiloxDraw,
) -> Result<()> {
    let (coefs, noise_coef) = additive_coefficients(alpha);
    let scalars = StepScalars::new(x.device(), &coefs, noise_coef, noise)?;
    ops::additive_langevin_step(x, s, &scalars)
}

/// The additive step's coefficients as its kernel reads them: `[alpha / 2]` and the noise's
/// `sqrt(alpha)`.
pub fn additive_coefficients(alpha: f32) -> ([f32; 1], f32) {
    ([0.5 * alpha], alpha.sqrt())
}
