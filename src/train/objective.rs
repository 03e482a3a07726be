//! What the network is trained to predict: the GBM M-DSM objective (SPEC 3) or the additive DSM
//! baseline (SPEC 8), behind one interface so the trainer, checkpoints and the sampler treat both
//! diffusions alike.
use crate::checkpoint::Checkpoint;
use crate::data::PixelRange;
use crate::device::Device;
use crate::diffusion::additive::{self, noise_additive_batch, NoiseLevels};
use crate::diffusion::forward::noise_batch;
use crate::diffusion::loss::{dsm_loss, mdsm_loss_at, LossAndGrad, LossTarget, LossWeighting};
use crate::diffusion::schedule::{PAPER_LEVELS, PAPER_SIGMA};
use crate::diffusion::{Parameterisation, Schedule, SigmaShape};
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

/// The loss target (SPEC 3.1); absent in checkpoints written before it was stored, which used
/// the exact target.
const TARGET_KEY: &str = "loss.target";

crate::named::value_names! {
    /// Which diffusion a model is trained for, without its settings.
    #[derive(Hash)]
    pub enum Diffusion parsed as "diffusion" {
        /// Geometric Brownian motion (SPEC sections 2-3).
        Gbm = "gbm" => "geometric Brownian motion: multiplicative noise, positive pixels (SPEC sections 2-3)",
        /// The additive Gaussian baseline (SPEC section 8).
        Additive = "additive" => "the Gaussian baseline x + sigma z (SPEC section 8)",
    }
}

/// The noise levels a diffusion trains with when `dml train` is not told otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseDefaults {
    pub shape: SigmaShape,
    pub levels: usize,
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl Diffusion {
    /// GBM: the paper's constant sigma = 0.8 over N = 1000 levels (SPEC section 2). Additive:
    /// paper 004's geometric sigma from 1 down to 0.01 over 10 levels (SPEC section 8).
    pub fn defaults(self) -> NoiseDefaults {
        match self {
            Self::Gbm => NoiseDefaults {
                shape: SigmaShape::Constant,
                levels: PAPER_LEVELS,
                sigma_min: PAPER_SIGMA,
                sigma_max: PAPER_SIGMA,
            },
            Self::Additive => NoiseDefaults {
                shape: SigmaShape::Geometric,
                levels: additive::DEFAULT_LEVELS,
                sigma_min: additive::DEFAULT_SIGMA_MIN,
                sigma_max: additive::DEFAULT_SIGMA_MAX,
            },
        }
    }

    /// Whether every pixel must be positive: GBM multiplies pixels by positive factors, so a
    /// zero stays zero and a sign never changes (SPEC section 1); sign changes during sampling
    /// are then a defect worth counting.
    pub fn requires_positive_pixels(self) -> bool {
        match self {
            Self::Gbm => true,
            Self::Additive => false,
        }
    }

    /// Rejects a pixel range this diffusion cannot model.
    pub fn check_range(self, range: PixelRange) -> Result<()> {
        if self.requires_positive_pixels() && range.lo <= 0.0 {
            return Err(Error::invalid(format!(
                "pixel range [{range}]: the lower end must be positive for {self}: the process \
                 multiplies pixels, a zero stays zero (SPEC section 1)"
            )));
        }
        Ok(())
    }
}

/// An objective as `dml train` describes it: the diffusion and the settings given, `None`
/// standing for the diffusion's default ([`Diffusion::defaults`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectiveSettings {
    pub diffusion: Diffusion,
    pub shape: Option<SigmaShape>,
    pub levels: Option<usize>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// GBM only: the additive DSM loss has a single form.
    pub weighting: LossWeighting,
    /// GBM only: the additive baseline's network always outputs the Stein score.
    pub parameterisation: Parameterisation,
    /// GBM only: the level the loss is taken at (SPEC 3.1).
    pub target: LossTarget,
}

impl ObjectiveSettings {
    /// `diffusion` with all its defaults.
    pub fn new(diffusion: Diffusion) -> Self {
        Self {
            diffusion,
            shape: None,
            levels: None,
            sigma_min: None,
            sigma_max: None,
            weighting: LossWeighting::default(),
            parameterisation: Parameterisation::default(),
            target: LossTarget::default(),
        }
    }

    /// The objective, its schedule validated.
    pub fn objective(&self) -> Result<Objective> {
        let d = self.diffusion.defaults();
        let shape = self.shape.unwrap_or(d.shape);
        let levels = self.levels.unwrap_or(d.levels);
        let sigma_min = self.sigma_min.unwrap_or(d.sigma_min);
        let sigma_max = self.sigma_max.unwrap_or(d.sigma_max);
        Ok(match self.diffusion {
            Diffusion::Gbm => Objective::Gbm {
                schedule: Schedule::new(shape, levels, sigma_min, sigma_max)?,
                weighting: self.weighting,
                parameterisation: self.parameterisation,
                target: self.target,
            },
            Diffusion::Additive => Objective::Additive {
                levels: NoiseLevels::new(shape, levels, sigma_max, sigma_min)?,
            },
        })
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
        target: LossTarget,
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
    /// GBM with [`LossTarget::ReleasedOffset`]: `s_{k+1}` per sample, the level the loss is
    /// taken at (SPEC 3.1); `None` when that is the noised level.
    loss_level: Option<Tensor>,
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

    /// The levels a network learns: `1..N` for GBM (`s_0 = 0` leaves no noise to learn), all
    /// of the additive ones.
    pub fn trainable_levels(&self) -> std::ops::Range<usize> {
        match self {
            Self::Gbm { .. } => 1..self.n_levels(),
            Self::Additive { .. } => 0..self.n_levels(),
        }
    }

    /// The noise's scale at `level`: `s_k` (GBM, in log space) or `sigma_i` (additive).
    pub fn noise_scale(&self, level: usize) -> f32 {
        match self {
            Self::Gbm { schedule, .. } => schedule.s(level),
            Self::Additive { levels } => levels.sigma(level),
        }
    }

    /// Batch `step`'s noised input; levels and noise are Philox draws keyed by (seed, step), so a
    /// resumed run draws exactly what an uninterrupted one would (SPEC 5).
    pub fn noise(&self, x0: &Tensor, seed: u64, step: u32) -> Result<NoisedInput> {
        match self {
            Self::Gbm {
                schedule, target, ..
            } => {
                let b = noise_batch(x0, schedule, seed, step)?;
                Ok(NoisedInput {
                    loss_level: loss_level(schedule, *target, &b.levels, x0.device())?,
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
                    loss_level: None,
                })
            }
        }
    }

    /// A batch noised with levels and standard normals the caller chose (the PyTorch parity
    /// test feeds its own): `x_k = x_0 exp(m_k + s_k z)` (SPEC 2) or `x_0 + sigma_i z` (SPEC 8),
    /// computed on the host in f32. Levels must be trainable ones, `1..N-1` for GBM (`s_0 = 0`
    /// leaves no noise to learn) and `0..L-1` for the additive levels.
    pub fn noise_given(&self, x0: &Tensor, levels: &[usize], z: &Tensor) -> Result<NoisedInput> {
        let batch = x0.shape().first().copied().unwrap_or(0);
        if z.shape() != x0.shape() || levels.len() != batch {
            return Err(Error::invalid(format!(
                "noise_given: x_0 {:?}, z {:?} and {} levels do not describe one batch",
                x0.shape(),
                z.shape(),
                levels.len()
            )));
        }
        let trainable = self.trainable_levels();
        if let Some(&k) = levels.iter().find(|&&k| !trainable.contains(&k)) {
            return Err(Error::invalid(format!(
                "noise_given: level {k} is outside the trainable levels {}..{}",
                trainable.start,
                trainable.end - 1
            )));
        }
        let (x0_host, z_host) = (x0.to_vec()?, z.to_vec()?);
        let per_image = x0_host.len() / batch.max(1);
        let noised = |shift: &dyn Fn(usize, f32, f32) -> f32| -> Vec<f32> {
            let pairs = x0_host.iter().zip(&z_host).enumerate();
            pairs
                .map(|(i, (&x, &z))| shift(levels[i / per_image], x, z))
                .collect()
        };
        let device = x0.device();
        let (x, per_sample, loss_level) = match self {
            Self::Gbm {
                schedule, target, ..
            } => {
                let x = noised(&|k, x, z| x * (schedule.m(k) + schedule.s(k) * z).exp());
                let s: Vec<f32> = levels.iter().map(|&k| schedule.s(k)).collect();
                (x, s, loss_level(schedule, *target, levels, device)?)
            }
            Self::Additive { levels: sigmas } => {
                let x = noised(&|i, x, z| x + sigmas.sigma(i) * z);
                (x, levels.iter().map(|&i| sigmas.sigma(i)).collect(), None)
            }
        };
        Ok(NoisedInput {
            x: Tensor::from_vec(x, x0.shape(), device)?,
            levels: levels.to_vec(),
            z: ops::copy(z)?,
            per_sample: Tensor::from_vec(per_sample, &[batch], device)?,
            loss_level,
        })
    }

    /// The loss of the network `output` on `input` and its gradient w.r.t. `output`.
    pub fn loss(&self, output: &Tensor, input: &NoisedInput) -> Result<LossAndGrad> {
        match self {
            Self::Gbm {
                weighting,
                parameterisation,
                ..
            } => {
                let t_level = input.loss_level.as_ref().unwrap_or(&input.per_sample);
                let levels = (&input.per_sample, t_level);
                mdsm_loss_at(
                    output,
                    &input.x,
                    &input.z,
                    levels,
                    *weighting,
                    *parameterisation,
                )
            }
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
                target,
            } => format!(
                "gbm, {} levels, sigma {} {}..{}, weighting {}, output {}, target {}",
                schedule.n_levels(),
                schedule.shape().name(),
                schedule.sigma(0),
                schedule.sigma(schedule.n_levels() - 1),
                weighting.name(),
                parameterisation.name(),
                target.name()
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
                target,
            } => {
                ckpt.put_meta("loss.weighting", weighting.name());
                ckpt.put_meta("parameterisation", parameterisation.name());
                ckpt.put_meta(TARGET_KEY, target.name());
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
        let pairs = ckpt.metadata_pairs();
        match Diffusion::parse(ckpt.meta("diffusion")?)? {
            Diffusion::Gbm => Ok(Self::Gbm {
                schedule: Schedule::from_describe(&pairs)?,
                weighting: LossWeighting::parse(ckpt.meta("loss.weighting")?)?,
                parameterisation: Parameterisation::parse(ckpt.meta("parameterisation")?)?,
                target: match ckpt.metadata.get(TARGET_KEY) {
                    Some(name) => LossTarget::parse(name)?,
                    None => LossTarget::Exact,
                },
            }),
            Diffusion::Additive => Ok(Self::Additive {
                levels: NoiseLevels::from_describe(&pairs)?,
            }),
        }
    }
}

/// With [`LossTarget::ReleasedOffset`], `s_{k+1}` of each sample's level: the level the loss is
/// taken at (SPEC 3.1); `None` for the exact target, which takes it at the noised level.
fn loss_level(
    schedule: &Schedule,
    target: LossTarget,
    levels: &[usize],
    device: &Device,
) -> Result<Option<Tensor>> {
    match target {
        LossTarget::Exact => Ok(None),
        LossTarget::ReleasedOffset => {
            let t: Vec<f32> = levels.iter().map(|&k| schedule.s_next(k)).collect();
            Tensor::from_vec(t, &[levels.len()], device).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_per_diffusion_are_the_papers() {
        // `dml train --help` quotes these numbers.
        let gbm = Diffusion::Gbm.defaults();
        assert_eq!(gbm.shape, SigmaShape::Constant);
        assert_eq!((gbm.levels, gbm.sigma_min, gbm.sigma_max), (1000, 0.8, 0.8));
        let add = Diffusion::Additive.defaults();
        assert_eq!(add.shape, SigmaShape::Geometric);
        assert_eq!((add.levels, add.sigma_min, add.sigma_max), (10, 0.01, 1.0));
    }

    #[test]
    fn settings_left_out_take_the_diffusions_defaults() {
        let gbm = ObjectiveSettings::new(Diffusion::Gbm).objective().unwrap();
        assert_eq!(
            gbm,
            Objective::Gbm {
                schedule: Schedule::paper_default(),
                weighting: LossWeighting::SkSquared,
                parameterisation: Parameterisation::H,
                target: LossTarget::Exact,
            }
        );
        let additive = ObjectiveSettings::new(Diffusion::Additive)
            .objective()
            .unwrap();
        assert_eq!(
            additive,
            Objective::Additive {
                levels: NoiseLevels::paper_default()
            }
        );
        for d in [Diffusion::Gbm, Diffusion::Additive] {
            let o = ObjectiveSettings::new(d).objective().unwrap();
            assert_eq!(o.diffusion(), d);
        }
    }

    #[test]
    fn settings_given_override_the_defaults() {
        let settings = ObjectiveSettings {
            shape: Some(SigmaShape::Geometric),
            levels: Some(7),
            sigma_min: Some(0.1),
            sigma_max: Some(0.5),
            weighting: LossWeighting::Unit,
            parameterisation: Parameterisation::Stein,
            ..ObjectiveSettings::new(Diffusion::Gbm)
        };
        let Objective::Gbm {
            schedule,
            weighting,
            parameterisation,
            ..
        } = settings.objective().unwrap()
        else {
            panic!("gbm settings gave another objective");
        };
        assert_eq!(
            schedule,
            Schedule::new(SigmaShape::Geometric, 7, 0.1, 0.5).unwrap()
        );
        assert_eq!(
            (weighting, parameterisation),
            (LossWeighting::Unit, Parameterisation::Stein)
        );
        // The additive levels take sigma_max first: a mix-up would fail validation or differ.
        let additive = ObjectiveSettings {
            levels: Some(4),
            sigma_min: Some(0.05),
            ..ObjectiveSettings::new(Diffusion::Additive)
        };
        assert_eq!(
            additive.objective().unwrap(),
            Objective::Additive {
                levels: NoiseLevels::new(SigmaShape::Geometric, 4, 1.0, 0.05).unwrap()
            }
        );
        let bad = ObjectiveSettings {
            levels: Some(0),
            ..ObjectiveSettings::new(Diffusion::Gbm)
        };
        assert!(bad.objective().is_err());
    }

    #[test]
    fn noise_given_reproduces_the_drawn_noise_and_rejects_what_is_not_a_batch() {
        let device = crate::device::Device::Cpu;
        let x0 = Tensor::from_vec(
            (0..24).map(|i| 1.0 + i as f32 / 24.0).collect(),
            &[3, 8],
            &device,
        )
        .unwrap();
        for diffusion in [Diffusion::Gbm, Diffusion::Additive] {
            let settings = ObjectiveSettings {
                levels: Some(5),
                target: LossTarget::ReleasedOffset,
                ..ObjectiveSettings::new(diffusion)
            };
            let objective = settings.objective().unwrap();
            let drawn = objective.noise(&x0, 7, 3).unwrap();
            let given = objective.noise_given(&x0, &drawn.levels, &drawn.z).unwrap();
            let (a, b) = (drawn.x.to_vec().unwrap(), given.x.to_vec().unwrap());
            assert!(a
                .iter()
                .zip(&b)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * a.abs()));
            let s = |t: &Tensor| t.to_vec().unwrap();
            assert_eq!(s(&drawn.per_sample), s(&given.per_sample));
            assert_eq!(
                drawn.loss_level.map(|t| s(&t)),
                given.loss_level.map(|t| s(&t))
            );
            assert!(objective.noise_given(&x0, &[1, 2], &drawn.z).is_err());
            assert!(objective.noise_given(&x0, &[1, 2, 5], &drawn.z).is_err());
        }
        let gbm = ObjectiveSettings::new(Diffusion::Gbm).objective().unwrap();
        let z = Tensor::zeros(&[3, 8], &device).unwrap();
        let Err(err) = gbm.noise_given(&x0, &[1, 0, 2], &z) else {
            panic!("level 0 was accepted");
        };
        assert!(err.to_string().contains("level 0"), "{err}");
        assert!(gbm.noise_given(&x0, &[1, 2], &z).is_err());
    }

    #[test]
    fn only_gbm_requires_positive_pixels() {
        assert!(Diffusion::Gbm.requires_positive_pixels());
        assert!(!Diffusion::Additive.requires_positive_pixels());
        let zero_based = PixelRange { lo: 0.0, hi: 1.0 };
        let err = Diffusion::Gbm
            .check_range(zero_based)
            .unwrap_err()
            .to_string();
        assert!(err.contains("positive") && err.contains("gbm"), "{err}");
        Diffusion::Additive.check_range(zero_based).unwrap();
        Diffusion::Gbm.check_range(PixelRange::default()).unwrap();
    }

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
