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
    pub decay: LrDecay,
    /// The step at which a cosine decay reaches `final_lr` (unused when constant).
    pub decay_end: u64,
    /// The rate from `decay_end` on (cosine).
    pub final_lr: f32,
}

impl LrSchedule {
    /// Warm-up over `warmup_steps`, then `base_lr` throughout.
    pub fn new(base_lr: f32, warmup_steps: u64) -> Self {
        Self {
            base_lr,
            warmup_steps,
            decay: LrDecay::Constant,
            decay_end: 0,
            final_lr: base_lr,
        }
    }

    /// This schedule with a cosine decay after its warm-up, reaching `final_lr` at step
    /// `decay_end`.
    pub fn with_cosine(self, decay_end: u64, final_lr: f32) -> Self {
        Self {
            decay: LrDecay::Cosine,
            decay_end,
            final_lr,
            ..self
        }
    }

    /// The rate of the update numbered `step` (0-based): `base_lr * (step + 1) / warmup_steps`
    /// during the warm-up, so the first update is small but never zero; then the decay. The
    /// cosine is `final + (base - final) (1 + cos(pi p)) / 2` with `p` the fraction of the steps
    /// from the end of the warm-up to `decay_end` already taken (0 at the peak).
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return (self.base_lr as f64 * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        match self.decay {
            LrDecay::Constant => self.base_lr,
            LrDecay::Cosine if step >= self.decay_end => self.final_lr,
            LrDecay::Cosine => {
                let span = (self.decay_end - self.warmup_steps) as f64;
                let p = (step - self.warmup_steps) as f64 / span;
                let (base, last) = (self.base_lr as f64, self.final_lr as f64);
                (last + (base - last) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())) as f32
            }
        }
    }
}
