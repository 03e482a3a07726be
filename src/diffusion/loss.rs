//! The denoising score-matching losses: M-DSM for the GBM diffusion (SPEC section 3) with its
//! per-level weighting and parameterisation, and DSM for the additive baseline (SPEC section 8).
//! Both run as fused kernels in [`crate::ops`] (loss and gradient in one launch, deterministic).
use super::score::Parameterisation;
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

pub use crate::ops::LossAndGrad;

crate::named::value_names! {
    /// The per-level weight `w_k` of the M-DSM loss (SPEC section 3).
    #[derive(Default)]
    pub enum LossWeighting parsed as "loss weighting" {
        /// `w_k = 1` (paper 001 Eq. 33/38): levels with small `s_k` dominate, their target
        /// `-(1 + z/s_k)` being O(1/s_k).
        Unit = "unit" | "1" => "w_k = 1 (paper 001 Eq. 33): levels with small s_k dominate",
        /// `w_k = s_k^2` (the NCSN choice): every level contributes O(1). The default until a
        /// measurement says otherwise.
        #[default]
        SkSquared = "sk2" | "s_k^2" => "w_k = s_k^2 (as NCSN): every level contributes O(1)",
        /// `w_k = s_k^4`: the released code's weighting (SPEC 3.1), which squares the residual
        /// `s_k^2 (h - target)`.
        SkFourth = "sk4" | "s_k^4" => "w_k = s_k^4 (the paper's released code, SPEC 3.1)",
    }
}

crate::named::value_names! {
    /// The level the M-DSM loss is taken at, for a sample noised at level `k` (SPEC 3.1).
    #[derive(Default)]
    pub enum LossTarget parsed as "loss target" {
        /// The exact M-DSM target `-(1 + z/s_k)` at the level the sample was noised at.
        #[default]
        Exact = "exact" => "the exact target -(1 + z/s_k) at the noised level (SPEC 3)",
        /// The released code's offset: noised at `k`, the loss is taken with `s_{k+1}` (target
        /// `-(1 + z s_k / s_{k+1}^2)`, weight from `s_{k+1}`), for reproducing its runs.
        ReleasedOffset = "released-offset" => "the released code's k+1 offset (SPEC 3.1; biased at small k)",
    }
}

/// The M-DSM loss `(1/B) sum_b w_k 1/2 ||h - target||^2`, `target = -(1 + z/s_k)` (SPEC 3), and
/// its gradient w.r.t. `output` ([`ops::mdsm_loss`]). `output`, `x_k` and `z` share a shape
/// `[B, ...]`; `s_level` is `[B]`, each sample's `s_k` (see [`super::forward::NoisedBatch`]). With
/// [`Parameterisation::Stein`], `h = x_k * output`.
pub fn mdsm_loss(
    output: &Tensor,
    x_k: &Tensor,
    z: &Tensor,
    s_level: &Tensor,
    weighting: LossWeighting,
    parameterisation: Parameterisation,
) -> Result<LossAndGrad> {
    mdsm_loss_at(
        output,
        x_k,
        z,
        (s_level, s_level),
        weighting,
        parameterisation,
    )
}

/// [`mdsm_loss`] taken at another level than the noised one (SPEC 3.1): `t_level` holds, per
/// sample, the `s` of that level (see [`LossTarget`]); with `t_level` equal to `s_level` this is
/// [`mdsm_loss`].
pub fn mdsm_loss_at(
    output: &Tensor,
    x_k: &Tensor,
    z: &Tensor,
    (s_level, t_level): (&Tensor, &Tensor),
    weighting: LossWeighting,
    parameterisation: Parameterisation,
) -> Result<LossAndGrad> {
    let weight_power = match weighting {
        LossWeighting::Unit => 0,
        LossWeighting::SkSquared => 2,
        LossWeighting::SkFourth => 4,
    };
    let stein = parameterisation == Parameterisation::Stein;
    ops::mdsm_loss(output, (x_k, z), (s_level, t_level), (weight_power, stein))
}

/// The additive DSM loss `(1/B) sum_b sigma_b^2/2 ||s + z/sigma_b||^2` (SPEC 8) and its gradient
/// w.r.t. `output` (the Stein score at `x_0 + sigma_b z`). `sigma_level` is `[B]`.
pub fn dsm_loss(output: &Tensor, z: &Tensor, sigma_level: &Tensor) -> Result<LossAndGrad> {
    ops::dsm_loss(output, z, sigma_level)
}
