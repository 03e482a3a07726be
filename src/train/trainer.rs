//! The training loop's state and one optimiser step: batch, noise (SPEC 2), network forward, fused
//! loss (SPEC 3 / 8), backward, global-norm clipping, AdamW or EGD (SPEC 7), EMA.
//!
//! Every random draw is a Philox value keyed by (seed, step) (SPEC 5) and every kernel is
//! deterministic, so the state after step `n` is a function of the configuration alone: a run
//! resumed from a checkpoint continues exactly as the uninterrupted run would have.
use std::path::Path;

use super::config::{OptimizerKind, TrainConfig};
use super::model::{ModelSpec, ScoreModel, PARAM_PREFIX};
use super::objective::NoisedInput;
use crate::autograd::Tape;
use crate::checkpoint::Checkpoint;
use crate::data::{Batcher, Dataset};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::{self, ConvPrecision, PhiloxDraw};
use crate::optim::{
    clip_factor, global_norm, pair_with_store, AdamW, AdamWConfig, Egd, Ema, ParamGrad,
};
use crate::rng;
use crate::tensor::Tensor;

enum Optimizer {
    AdamW(AdamW),
    Egd(Egd),
}

impl Optimizer {
    fn new(config: &TrainConfig) -> Self {
        let schedule = config.lr_schedule();
        match config.optimizer {
            OptimizerKind::AdamW => Self::AdamW(AdamW::new(AdamWConfig {
                schedule,
                weight_decay: config.weight_decay,
                ..AdamWConfig::new(config.lr)
            })),
            OptimizerKind::Egd => Self::Egd(Egd::new(schedule)),
        }
    }

    fn lr(&self) -> f32 {
        match self {
            Self::AdamW(o) => o.current_lr(),
            Self::Egd(o) => o.current_lr(),
        }
    }

    fn step(&mut self, params: &mut [ParamGrad<'_>], grad_scale: f32) -> Result<()> {
        match self {
            Self::AdamW(o) => o.step(params, grad_scale),
            Self::Egd(o) => o.step(params, grad_scale),
        }
    }

    fn export_to(&self, ckpt: &mut Checkpoint) -> Result<()> {
        match self {
            Self::AdamW(o) => o.export_to(ckpt),
            Self::Egd(o) => {
                o.export_to(ckpt);
                Ok(())
            }
        }
    }

    fn import_from(&mut self, ckpt: &Checkpoint, device: &Device) -> Result<()> {
        match self {
            Self::AdamW(o) => o.import_from(ckpt, device),
            Self::Egd(o) => o.import_from(ckpt),
        }
    }
}

/// The settings a resumed run may change; the rest are the checkpoint's. Changing the learning
/// rate, its warm-up or the end of its decay makes the run differ from an uninterrupted one from
/// then on; the step count and checkpoint interval do not change any result.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResumeChanges {
    /// The run's new total step count.
    pub steps: Option<u64>,
    pub checkpoint_every: Option<u64>,
    pub lr: Option<f32>,
    pub warmup_steps: Option<u64>,
    pub lr_decay_steps: Option<u64>,
    /// Must equal the run's own (checked by [`Trainer::resume_from`]).
    pub precision: Option<ConvPrecision>,
}

impl ResumeChanges {
    fn apply(&self, mut config: TrainConfig) -> TrainConfig {
        config.steps = self.steps.unwrap_or(config.steps);
        config.checkpoint_every = self.checkpoint_every.unwrap_or(config.checkpoint_every);
        config.lr = self.lr.unwrap_or(config.lr);
        config.warmup_steps = self.warmup_steps.unwrap_or(config.warmup_steps);
        config.lr_decay_steps = self.lr_decay_steps.unwrap_or(config.lr_decay_steps);
        config
    }
}

/// What one step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step just taken, counting from 1.
    pub step: u64,
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    pub lr: f32,
}

pub struct Trainer {
    pub config: TrainConfig,
    pub model: ScoreModel,
    optimizer: Optimizer,
    ema: Ema,
    batcher: Batcher,
    /// Steps taken so far.
    step: u64,
    /// Size of the training set the batcher draws from (checked on resume).
    train_len: usize,
}

impl Trainer {
    /// A fresh run of `config` for `spec` on a training set of `data.n` images.
    pub fn new(
        config: TrainConfig,
        spec: ModelSpec,
        data: &Dataset,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let model = ScoreModel::new(spec, device, config.seed)?;
        let batcher = Batcher::new(data.n, config.batch_size, config.seed, model.spec.range)?;
        Ok(Self {
            optimizer: Optimizer::new(&config),
            ema: Ema::new(config.ema_decay, config.ema_warmup),
            config,
            model,
            batcher,
            step: 0,
            train_len: data.n,
        })
    }

    /// The run a checkpoint file holds, continued on `device` over `data` (which must be the
    /// training set it was made with), with `changes` applied.
    pub fn resume(
        path: &Path,
        data: &Dataset,
        device: &Device,
        changes: &ResumeChanges,
    ) -> Result<Self> {
        Self::resume_from(&Checkpoint::load(path)?, path, data, device, changes)
    }

    /// [`Trainer::resume`] from a checkpoint already read from `path` (named in errors).
    /// The run keeps the convolution precision it was trained with (another precision would
    /// break exact resume, SPEC section 5): a precision in `changes` that differs from it is an
    /// error.
    pub fn resume_from(
        ckpt: &Checkpoint,
        path: &Path,
        data: &Dataset,
        device: &Device,
        changes: &ResumeChanges,
    ) -> Result<Self> {
        let in_file = |e: Error| e.in_file(path);
        let spec = ModelSpec::import_from(ckpt).map_err(in_file)?;
        if let Some(wanted) = changes.precision.filter(|&p| p != spec.net.precision()) {
            return Err(Error::file(
                path,
                format!(
                    "the run was trained with --precision {}; it cannot resume with --precision \
                     {wanted} (the result would not equal an uninterrupted run). Omit --precision, \
                     or start a new run in another --out",
                    spec.net.precision()
                ),
            ));
        }
        let config = changes.apply(TrainConfig::import_from(ckpt).map_err(in_file)?);
        let train_len: usize = ckpt.meta_parse("train.examples")?;
        let same_data = match &spec.fingerprint {
            Some(trained_on) => *trained_on == data.fingerprint(),
            // Checkpoints saved before fingerprints were stored: the name is all there is.
            None => spec.dataset == data.name,
        };
        if !same_data || train_len != data.n {
            return Err(Error::file(
                path,
                format!(
                    "checkpoint was trained on '{}' ({} images, content {}), not '{}' ({} images, \
                     content {})",
                    spec.dataset,
                    train_len,
                    spec.fingerprint.as_deref().unwrap_or("not recorded"),
                    data.name,
                    data.n,
                    data.fingerprint()
                ),
            ));
        }
        let mut trainer = Self::new(config, spec, data, device)?;
        trainer
            .model
            .read_weights(ckpt, PARAM_PREFIX, device)
            .map_err(in_file)?;
        trainer
            .optimizer
            .import_from(ckpt, device)
            .map_err(in_file)?;
        trainer.ema.import_from(ckpt, device).map_err(in_file)?;
        trainer.step = ckpt.meta_parse("train.step")?;
        Ok(trainer)
    }

    /// An error unless a training step at the configured batch fits in the memory of the
    /// model's device: one image's forward and backward peak times the batch (see
    /// [`ScoreModel::peak_bytes_per_image`]), plus the parameters, their gradients and the
    /// optimiser and EMA state. A batch beyond memory would otherwise abort the process (or wake
    /// the OOM killer) at the first step.
    pub fn check_step_memory(&self) -> Result<()> {
        let per_image = self.model.peak_bytes_per_image(true)?;
        let state = 5 * 4 * self.model.store.num_elements() as u64;
        let bytes = per_image
            .checked_mul(self.config.batch_size as u64)
            .and_then(|b| b.checked_add(state));
        let what = format!("train: --batch {}", self.config.batch_size);
        crate::memory_budget::ensure_fits(self.model.store.device(), &what, bytes)
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    pub fn finished(&self) -> bool {
        self.step >= self.config.steps
    }

    /// One optimiser step on batch number `steps_done()` of `data`, noised with the Philox draws
    /// of that step (SPEC 5).
    pub fn step(&mut self, data: &Dataset) -> Result<StepReport> {
        let device = self.model.store.device().clone();
        let batch = self.batcher.batch(data, self.step, &device)?;
        let objective = &self.model.spec.objective;
        let input = objective.noise(&batch.images, self.config.seed, self.step as u32)?;
        self.step_on(&input)
    }

    /// One optimiser step on a batch noised by the caller with its own levels and normals
    /// ([`super::objective::Objective::noise_given`]), as the PyTorch parity test feeds it; the
    /// run's batcher and Philox streams are not used.
    pub fn step_on(&mut self, input: &NoisedInput) -> Result<StepReport> {
        let device = self.model.store.device().clone();
        let objective = &self.model.spec.objective;
        let (loss, grads) = {
            let mut tape = Tape::new(&self.model.store);
            let lv: Vec<f32> = input.levels.iter().map(|&k| k as f32).collect();
            let levels = tape.constant(Tensor::from_vec(lv, &[input.levels.len()], &device)?);
            let x = tape.constant(ops::copy(&input.x)?);
            // Dropout masks (DDPM++) at this step of the DROPOUT stream (SPEC 5), so a resumed
            // run draws what the uninterrupted one would have.
            let dropout = PhiloxDraw::new(self.config.seed, rng::stream::DROPOUT, self.step as u32);
            let out = self
                .model
                .net
                .forward_train(&mut tape, &x, &levels, dropout)?;
            let lg = objective.loss(out.value(), input)?;
            (lg.loss.item()?, tape.backward(&out, lg.grad)?)
        };
        let step = self.step + 1;
        let mut pairs = pair_with_store(&mut self.model.store, &grads)?;
        let grad_refs: Vec<&Tensor> = pairs.iter().map(|p| p.grad).collect();
        let grad_norm = global_norm(&grad_refs)?;
        if !(loss.is_finite() && grad_norm.is_finite()) {
            return Err(Error::invalid(format!(
                "training diverged at step {step}: loss {loss}, gradient norm {grad_norm} \
                 (lower --lr, or check the noise schedule; resume from the last checkpoint with other \
                 settings)"
            )));
        }
        let scale = self
            .config
            .clip_norm
            .map_or(1.0, |c| clip_factor(grad_norm, c));
        let lr = self.optimizer.lr();
        self.optimizer.step(&mut pairs, scale)?;
        self.ema.update(self.model.store.iter(), step)?;
        self.step = step;
        Ok(StepReport {
            step,
            loss,
            grad_norm,
            lr,
        })
    }

    /// Everything needed to continue the run or sample from it.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut ckpt = Checkpoint::new();
        self.model.spec.export_to(&mut ckpt)?;
        self.config.export_to(&mut ckpt);
        ckpt.put_meta("train.step", self.step);
        ckpt.put_meta("train.examples", self.train_len);
        self.model.write_weights(&mut ckpt, PARAM_PREFIX)?;
        self.optimizer.export_to(&mut ckpt)?;
        self.ema.export_to(&mut ckpt)?;
        Ok(ckpt)
    }

    /// Writes [`Trainer::checkpoint`] to `path` atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.checkpoint()?.save(path)
    }
}
