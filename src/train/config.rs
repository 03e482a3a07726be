//! The training run's settings that are not part of the model: optimiser, batch, steps, seed.
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::optim::{LrDecay, LrSchedule};

crate::named::value_names! {
    /// The optimiser.
    pub enum OptimizerKind parsed as "optimiser" {
        /// AdamW with warm-up and global-norm clipping.
        AdamW = "adamw" => "AdamW with warm-up and gradient clipping",
        /// Exponentiated gradient descent (SPEC 7): sign-preserving, Dale's law.
        Egd = "egd" => "exponentiated gradient descent: weights never change sign (SPEC section 7)",
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub batch_size: usize,
    /// Total optimiser steps of the run (a resumed run continues to this count).
    pub steps: u64,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub warmup_steps: u64,
    /// What the rate does after the warm-up.
    pub lr_decay: LrDecay,
    /// The step a cosine decay ends at (its rate `lr_final` from then on).
    pub lr_decay_steps: u64,
    pub lr_final: f32,
    pub weight_decay: f32,
    /// Global-norm gradient clipping threshold; `None` disables clipping.
    pub clip_norm: Option<f32>,
    pub ema_decay: f32,
    /// Shorter averages for the first updates ([`crate::optim::Ema`]).
    pub ema_warmup: bool,
    /// Seeds the parameter initialisation, the data order, levels and noise (SPEC 5).
    pub seed: u64,
    /// Steps between checkpoints (a checkpoint is also written at the end and on Ctrl-C).
    pub checkpoint_every: u64,
}

impl TrainConfig {
    /// The defaults the command line shows.
    pub fn new(batch_size: usize, steps: u64) -> Self {
        Self {
            batch_size,
            steps,
            optimizer: OptimizerKind::AdamW,
            lr: 1e-3,
            warmup_steps: 100,
            lr_decay: LrDecay::Constant,
            lr_decay_steps: steps,
            lr_final: 0.0,
            weight_decay: 0.0,
            clip_norm: Some(1.0),
            ema_decay: 0.999,
            ema_warmup: false,
            seed: 0,
            checkpoint_every: 500,
        }
    }

    /// Rejects settings that cannot train: zero steps or batch, non-positive or non-finite rates.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::invalid("--steps must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("--batch must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(format!("--lr {} must be positive", self.lr)));
        }
        if self.lr_decay == LrDecay::Cosine {
            if !(self.lr_final.is_finite() && (0.0..=self.lr).contains(&self.lr_final)) {
                return Err(Error::invalid(format!(
                    "--lr-final {} must be in [0, --lr {}]",
                    self.lr_final, self.lr
                )));
            }
            if self.lr_decay_steps <= self.warmup_steps {
                return Err(Error::invalid(format!(
                    "--lr-decay-steps {} must exceed --warmup {}: the cosine runs between them",
                    self.lr_decay_steps, self.warmup_steps
                )));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(format!(
                "--weight-decay {} must be non-negative",
                self.weight_decay
            )));
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::invalid(format!(
                    "--clip {c} must be positive (0 disables clipping)"
                )));
            }
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::invalid(format!(
                "--ema {} must be in [0, 1)",
                self.ema_decay
            )));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::invalid("--checkpoint-every must be at least 1"));
        }
        Ok(())
    }

    /// The learning rate of each step.
    pub fn lr_schedule(&self) -> LrSchedule {
        let warmup = LrSchedule::new(self.lr, self.warmup_steps);
        match self.lr_decay {
            LrDecay::Constant => warmup,
            LrDecay::Cosine => warmup.with_cosine(self.lr_decay_steps, self.lr_final),
        }
    }

    pub fn export_to(&self, ckpt: &mut Checkpoint) {
        ckpt.put_meta("train.batch", self.batch_size);
        ckpt.put_meta("train.steps", self.steps);
        ckpt.put_meta("train.optimizer", self.optimizer.name());
        ckpt.put_meta("train.lr", format!("{:?}", self.lr));
        ckpt.put_meta("train.warmup", self.warmup_steps);
        ckpt.put_meta("train.lr_decay", self.lr_decay.name());
        // A constant rate has no end or final rate; storing them would make two runs of the same
        // rates differ in their checkpoints.
        if self.lr_decay == LrDecay::Cosine {
            ckpt.put_meta("train.lr_decay_steps", self.lr_decay_steps);
            ckpt.put_meta("train.lr_final", format!("{:?}", self.lr_final));
        }
        ckpt.put_meta("train.weight_decay", format!("{:?}", self.weight_decay));
        ckpt.put_meta("train.clip", format!("{:?}", self.clip_norm.unwrap_or(0.0)));
        ckpt.put_meta("train.ema", format!("{:?}", self.ema_decay));
        ckpt.put_meta("train.ema_warmup", self.ema_warmup);
        ckpt.put_meta("train.seed", self.seed);
        ckpt.put_meta("train.checkpoint_every", self.checkpoint_every);
    }

    /// The settings `export_to` wrote. Checkpoints written before the learning-rate decay and the
    /// EMA warm-up existed hold neither: they ran constant rates and plain averages.
    /// A constant rate stores no decay end or final rate; they read as a new run's defaults.
    pub fn import_from(ckpt: &Checkpoint) -> Result<Self> {
        let clip: f32 = ckpt.meta_parse("train.clip")?;
        let steps: u64 = ckpt.meta_parse("train.steps")?;
        let stored = |key: &str| ckpt.metadata.contains_key(key);
        Ok(Self {
            lr_decay: match stored("train.lr_decay") {
                true => LrDecay::parse(ckpt.meta("train.lr_decay")?)?,
                false => LrDecay::Constant,
            },
            lr_decay_steps: match stored("train.lr_decay_steps") {
                true => ckpt.meta_parse("train.lr_decay_steps")?,
                false => steps,
            },
            lr_final: match stored("train.lr_final") {
                true => ckpt.meta_parse("train.lr_final")?,
                false => 0.0,
            },
            ema_warmup: stored("train.ema_warmup") && ckpt.meta_parse("train.ema_warmup")?,
            batch_size: ckpt.meta_parse("train.batch")?,
            steps,
            optimizer: OptimizerKind::parse(ckpt.meta("train.optimizer")?)?,
            lr: ckpt.meta_parse("train.lr")?,
            warmup_steps: ckpt.meta_parse("train.warmup")?,
            weight_decay: ckpt.meta_parse("train.weight_decay")?,
            clip_norm: (clip > 0.0).then_some(clip),
            ema_decay: ckpt.meta_parse("train.ema")?,
            seed: ckpt.meta_parse("train.seed")?,
            checkpoint_every: ckpt.meta_parse("train.checkpoint_every")?,
        })
    }
}
