//! What the network is trained to predict: the GBM M-DSM objective (SPEC 3) or the additive DSM
//! baseline (SPEC 8), behind one interface so the trainer, checkpoints and the sampler treat both
//! diffusions alike.
use crate::checkpoint::Checkpoint;
use crate::diffusion::additive::{noise_additive_batch, NoiseLevels};
use crate::diffusion::forward::noise_batch;
use crate::diffusion::loss::{dsm_loss, mdsm_loss, LossAndGrad, LossWeighting};
use crate::diffusion::{Parameterisation, Schedule};
use crate::error::Result;
use crate::tensor::Tensor;

/// Which diffusion a model is trained for, without its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diffusion {
    /// Geometric Brownian motion (SPEC sections 2-3).
    Gbm,
    /// The additive Gaussian baseline (SPEC section 8).
    Additive,
}

crate::named::value_names!(Diffusion {
    Gbm = "gbm" => "geometric Brownian motion: multiplicative noise, positive pixels (SPEC sections 2-3)",
    Additive = "additive" => "the Gaussian baseline x + sigma z (SPEC section 8)",
});

impl Diffusion {
    /// The diffusion called `name`, as checkpoints store it.
    pub fn parse(name: &str) -> Result<Self> {
        crate::named::parse(name, "diffusion")
    }
}

/// The diffusion a model is trained for, with everything its loss needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// Geometric Brownian motion: `x_k = x_0 exp(m_k + s_k z)`, the M-DSM loss.
    Gbm {
        schedule: Schedule,
        weighting: LossWeighting,
        parameterisation: Parameterisation,
    },
    /// The additive baseline: `x_0 + sigma_i z`, the DSM loss on the Stein score.
    Additive { levels: NoiseLevels },
}

/// A noised batch: the network's input, the level index of each sample, and what the loss needs.
pub struct NoisedInput {
    pub x: Tensor,
    pub levels: Vec<usize>,
    z: Tensor,
    /// `s_k` (GBM) or `sigma_i` (additive) per sample, `[B]`.
    per_sample: Tensor,
}

impl Objective {
    /// Which diffusion this is.
    pub fn diffusion(&self) -> Diffusion {
        match self {
            Self::Gbm { .. } => Diffusion::Gbm,
            Self::Additive { .. } => Diffusion::Additive,
        }
    }

    /// Classes of the network's conditional normalisation: one per level.
    pub fn n_levels(&self) -> usize {
        match self {
            Self::Gbm { schedule, .. } => schedule.n_levels(),
            Self::Additive { levels } => levels.len(),
        }
    }

    /// Batch `step`'s noised input; levels and noise are Philox draws keyed by (seed, step), so a
    /// resumed run draws exactly what an uninterrupted one would (SPEC 5).
    pub fn noise(&self, x0: &Tensor, seed: u64, step: u32) -> Result<NoisedInput> {
        match self {
            Self::Gbm { schedule, .. } => {
                let b = noise_batch(x0, schedule, seed, step)?;
                Ok(NoisedInput {
                    x: b.x_k,
                    levels: b.levels,
                    z: b.z,
                    per_sample: b.s_level,
                })
            }
            Self::Additive { levels } => {
                let b = noise_additive_batch(x0, levels, seed, step)?;
                Ok(NoisedInput {
                    x: b.x_noisy,
                    levels: b.indices,
                    z: b.z,
                    per_sample: b.sigma_level,
                })
            }
        }
    }

    /// The loss of the network `output` on `input` and its gradient w.r.t. `output`.
    pub fn loss(&self, output: &Tensor, input: &NoisedInput) -> Result<LossAndGrad> {
        match self {
            Self::Gbm {
                weighting,
                parameterisation,
                ..
            } => mdsm_loss(
                output,
                &input.x,
                &input.z,
                &input.per_sample,
                *weighting,
                *parameterisation,
            ),
            Self::Additive { .. } => dsm_loss(output, &input.z, &input.per_sample),
        }
    }

    /// One line for logs and `--help`-style summaries.
    pub fn summary(&self) -> String {
        match self {
            Self::Gbm {
                schedule,
                weighting,
                parameterisation,
            } => format!(
                "gbm, {} levels, sigma {} {}..{}, weighting {}, output {}",
                schedule.n_levels(),
                schedule.shape().name(),
                schedule.sigma(0),
                schedule.sigma(schedule.n_levels() - 1),
                weighting.name(),
                parameterisation.name()
            ),
            Self::Additive { levels } => format!(
                "additive, {} levels, sigma {}..{}",
                levels.len(),
                levels.sigma(0),
                levels.sigma(levels.len() - 1)
            ),
        }
    }

    /// Writes the objective into checkpoint metadata.
    pub fn export_to(&self, ckpt: &mut Checkpoint) {
        ckpt.put_meta("diffusion", self.diffusion().name());
        let pairs = match self {
            Self::Gbm {
                schedule,
                weighting,
                parameterisation,
            } => {
                ckpt.put_meta("loss.weighting", weighting.name());
                ckpt.put_meta("parameterisation", parameterisation.name());
                schedule.describe()
            }
            Self::Additive { levels } => levels.describe(),
        };
        for (k, v) in pairs {
            ckpt.put_meta(k, v);
        }
    }

    /// Reads back what [`Objective::export_to`] wrote.
    pub fn import_from(ckpt: &Checkpoint) -> Result<Self> {
        let pairs: Vec<(String, String)> = ckpt
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match Diffusion::parse(ckpt.meta("diffusion")?)? {
            Diffusion::Gbm => Ok(Self::Gbm {
                schedule: Schedule::from_describe(&pairs)?,
                weighting: LossWeighting::parse(ckpt.meta("loss.weighting")?)?,
                parameterisation: Parameterisation::parse(ckpt.meta("parameterisation")?)?,
            }),
            Diffusion::Additive => Ok(Self::Additive {
                levels: NoiseLevels::from_describe(&pairs)?,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusion_names_are_the_checkpoint_strings() {
        assert_eq!(Diffusion::Gbm.name(), "gbm");
        assert_eq!(Diffusion::Additive.name(), "additive");
        assert_eq!(Diffusion::parse("additive").unwrap(), Diffusion::Additive);
        assert!(Diffusion::parse("ddpm")
            .unwrap_err()
            .to_string()
            .contains("ddpm"));
    }
}
