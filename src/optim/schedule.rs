//! Learning-rate schedule: linear warm-up to the peak rate, then either constant or half a cosine
//! down to a final rate. The rate is a function of the step number alone, so a resumed run takes
//! the same rates as an uninterrupted one.

crate::named::value_names! {
    /// What the rate does after the warm-up.
    #[derive(Default)]
    pub enum LrDecay parsed as "learning-rate decay" {
        #[default]
        Constant = "constant" => "the peak rate until the end",
        Cosine = "cosine" => "half a cosine from the peak (end of the warm-up) to --lr-final at --lr-decay-steps, --lr-final after",
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The peak rate.
    pub base_lr: f32,
    /// Steps over which the rate rises linearly; 0 means no warm-up.
    pub warmup_steps: u64,
    /// The decay after the warm-up; none keeps the peak rate.
    pub cosine: Option<CosineDecay>,
}

/// Half a cosine from the peak rate at the end of the warm-up down to `final_lr` at step `end`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineDecay {
    pub end: u64,
    /// The rate from `end` on.
    pub final_lr: f32,
}

impl LrSchedule {
    /// Warm-up over `warmup_steps`, then `base_lr` throughout.
    pub fn new(base_lr: f32, warmup_steps: u64) -> Self {
        Self {
            base_lr,
            warmup_steps,
            cosine: None,
        }
    }

    /// This schedule with a cosine decay after its warm-up, reaching `final_lr` at step `end`.
    pub fn with_cosine(self, end: u64, final_lr: f32) -> Self {
        Self {
            cosine: Some(CosineDecay { end, final_lr }),
            ..self
        }
    }

    /// The rate of the update numbered `step` (0-based): `base_lr * (step + 1) / warmup_steps`
    /// during the warm-up, so the first update is small but never zero; then the decay. The
    /// cosine is `final + (base - final) (1 + cos(pi p)) / 2` with `p` the fraction of the steps
    /// from the end of the warm-up to its end already taken (0 at the peak).
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return (self.base_lr as f64 * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        match self.cosine {
            None => self.base_lr,
            Some(c) if step >= c.end => c.final_lr,
            Some(c) => {
                let span = (c.end - self.warmup_steps) as f64;
                let p = (step - self.warmup_steps) as f64 / span;
                let (base, last) = (self.base_lr as f64, c.final_lr as f64);
                (last + (base - last) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())) as f32
            }
        }
    }
}
