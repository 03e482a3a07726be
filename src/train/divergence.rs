//! Telling a diverging run from a noisy one. A non-finite loss is divergence; so is a finite
//! loss far above the run's recent level (with `--lr 1000` the loss climbs 522 -> 3.9e21 ->
//! 1.7e25 while staying finite). The run loop checks every step before anything is saved, so a
//! diverged step never replaces the last good checkpoint.
//!
//! The recent level is the median of the last [`WINDOW`] losses: a median, so a few spikes do not
//! raise it. A loss more than [`FACTOR`] times that level is divergence, judged from the second
//! step on (a run diverging at once must be caught before its history is all divergence).
//! Healthy losses vary by far less than that from step to step (single-batch spikes of a few
//! times the median are common early on; three orders of magnitude are not), so the guard does
//! not stop healthy runs. A resumed run starts a fresh history.
//!
//! A loss that grows a little at every step reaches the factor only after some steps, and a
//! periodic checkpoint could fall among them; so a checkpoint is only written at a calm step, one
//! whose loss is within [`CALM_FACTOR`] of the recent level, and is otherwise put off to the next
//! calm step.
use std::collections::VecDeque;

use crate::error::{Error, Result};

/// Losses the recent level is the median of.
const WINDOW: usize = 50;
/// How far above its recent level a loss may be.
const FACTOR: f32 = 1000.0;
/// How far above its recent level a loss may be for its step to be checkpointed.
const CALM_FACTOR: f32 = 10.0;

#[derive(Default)]
pub struct DivergenceGuard {
    recent: VecDeque<f32>,
}

impl DivergenceGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Judges the loss of `step`; an error says why the run is taken to diverge.
    pub fn check(&mut self, step: u64, loss: f32) -> Result<()> {
        if !loss.is_finite() {
            return Err(diverged(step, format!("loss {loss}")));
        }
        if let Some(level) = self.level() {
            if loss > FACTOR * level {
                return Err(diverged(
                    step,
                    format!("loss {loss:.4e} is over {FACTOR} times its recent median {level:.4e}"),
                ));
            }
        }
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(loss);
        Ok(())
    }

    /// Whether the step of the last checked `loss` may be checkpointed (see the module notes).
    pub fn is_calm(&self, loss: f32) -> bool {
        self.level().is_none_or(|level| loss <= CALM_FACTOR * level)
    }

    /// The median of the recent losses (at least the smallest positive f32), None before any.
    fn level(&self) -> Option<f32> {
        let mut sorted: Vec<f32> = self.recent.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        sorted
            .get(sorted.len() / 2)
            .map(|&m| m.max(f32::MIN_POSITIVE))
    }
}

fn diverged(step: u64, why: String) -> Error {
    Error::invalid(format!(
        "training diverged at step {step}: {why}. Lower --lr (or check the noise schedule, e.g. \
         --sigma-max), then resume from the last checkpoint or start again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finite_loss_far_above_its_level_is_divergence() {
        let mut guard = DivergenceGuard::new();
        for (i, loss) in [5.0, 4.0, 6.0, 3.0, 5.0, 4.5, 5.5, 4.0, 3.5, 5.0]
            .iter()
            .enumerate()
        {
            guard.check(i as u64 + 1, *loss).unwrap();
        }
        // A spike of a few times the level is noise; three orders of magnitude are not.
        guard.check(11, 40.0).unwrap();
        let err = guard.check(12, 3.9e21).unwrap_err().to_string();
        assert!(err.contains("diverged at step 12"), "{err}");
    }

    #[test]
    fn non_finite_is_divergence_from_the_first_step() {
        assert!(DivergenceGuard::new().check(1, f32::NAN).is_err());
        assert!(DivergenceGuard::new().check(1, f32::INFINITY).is_err());
    }

    #[test]
    fn a_run_diverging_at_once_is_caught_at_its_second_step() {
        let mut guard = DivergenceGuard::new();
        guard.check(1, 522.0).unwrap();
        assert!(guard.check(2, 3.9e21).is_err());
    }

    #[test]
    fn a_spike_puts_off_the_checkpoint_but_is_not_divergence() {
        let mut guard = DivergenceGuard::new();
        for step in 1..=20 {
            guard.check(step, 2.0).unwrap();
        }
        assert!(guard.is_calm(2.0));
        guard.check(21, 50.0).unwrap();
        assert!(!guard.is_calm(50.0));
    }
}
