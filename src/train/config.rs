//! The training run's settings that are not part of the model: optimiser, batch, steps, seed.
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

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
    pub weight_decay: f32,
    /// Global-norm gradient clipping threshold; `None` disables clipping.
    pub clip_norm: Option<f32>,
    pub ema_decay: f32,
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
            weight_decay: 0.0,
            clip_norm: Some(1.0),
            ema_decay: 0.999,
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

    pub fn export_to(&self, ckpt: &mut Checkpoint) {
        ckpt.put_meta("train.batch", self.batch_size);
        ckpt.put_meta("train.steps", self.steps);
        ckpt.put_meta("train.optimizer", self.optimizer.name());
        ckpt.put_meta("train.lr", format!("{:?}", self.lr));
        ckpt.put_meta("train.warmup", self.warmup_steps);
        ckpt.put_meta("train.weight_decay", format!("{:?}", self.weight_decay));
        ckpt.put_meta("train.clip", format!("{:?}", self.clip_norm.unwrap_or(0.0)));
        ckpt.put_meta("train.ema", format!("{:?}", self.ema_decay));
        ckpt.put_meta("train.seed", self.seed);
        ckpt.put_meta("train.checkpoint_every", self.checkpoint_every);
    }

    pub fn import_from(ckpt: &Checkpoint) -> Result<Self> {
        let clip: f32 = ckpt.meta_parse("train.clip")?;
        Ok(Self {
            batch_size: ckpt.meta_parse("train.batch")?,
            steps: ckpt.meta_parse("train.steps")?,
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
