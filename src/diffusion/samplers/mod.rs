//! The reverse-time samplers (SPEC section 4): fused step kernels, the driver loop, and the
//! initial draws.
mod driver;
mod init;
mod preset;
mod step;

pub use driver::{
    max_delta_s, sample, SamplerConfig, SamplerKind, SamplerProgress, SamplerStats, StepKind,
    MAX_SAMPLER_STEPS, PAPER_CHI, PAPER_DELTA_S, PAPER_INNER_STEPS, PROGRESS_EVERY,
};
pub use init::{class_average_init, class_means, LogNormalInit};
pub use preset::SamplerPreset;
pub use step::{
    additive_coefficients, additive_langevin_step, dale_step, sign_agnostic_step, DaleVariant,
    StepCoefficients,
};

pub use crate::ops::{FlipCounter, PhiloxDraw};
