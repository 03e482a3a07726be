//! Learning-rate schedule: linear warm-up to the base rate, constant after.

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warmup {
    pub base_lr: f32,
    /// Steps over which the rate rises linearly; 0 means no warm-up.
    pub warmup_steps: u64,
}

impl Warmup {
    pub fn new(base_lr: f32, warmup_steps: u64) -> Self {
        Self {
            base_lr,
            warmup_steps,
        }
    }

    /// The rate of the update numbered `step` (0-based): `base_lr * (step + 1) / warmup_steps`
    /// during the warm-up, so the first update is small but never zero.
    pub fn lr(&self, step: u64) -> f32 {
        if step >= self.warmup_steps {
            return self.base_lr;
        }
        (self.base_lr as f64 * (step + 1) as f64 / self.warmup_steps as f64) as f32
    }
}
