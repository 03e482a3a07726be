//! The diffusions: the GBM ("Dale meets Langevin") process and the additive baseline.
//!
//! - [`schedule`]: `sigma(t)`, `mu(t)` and the per-level `m_k`, `s_k` (SPEC section 2);
//! - [`forward`]: closed-form noising and level draws (SPEC 2, 3);
//! - [`loss`]: the fused M-DSM and additive DSM losses (SPEC 3, 8);
//! - [`score`]: where samplers get scores (one trait per diffusion);
//! - [`samplers`]: step kernels, Algorithm 1 / ADLS / ASAMS, initialisation (SPEC 4);
//! - [`analytic`]: log-normal mixture targets with exact scores (SPEC 6);
//! - [`additive`]: the additive baseline's levels, noising and annealed Langevin (SPEC 8).
pub mod additive;
pub mod analytic;
pub mod forward;
pub mod loss;
pub mod samplers;
pub mod schedule;
pub mod score;

pub use schedule::{Drift, Schedule, SigmaShape};
pub use score::{
    GaussianScoreSource, Level, NetworkGaussianScore, NetworkScore, Parameterisation, ScoreSource,
};
