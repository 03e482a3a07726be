//! A training run in an output directory: steps until done or stopped, the loss log, periodic
//! atomic checkpoints. Work is never lost beyond the checkpoint interval: a kill leaves the last
//! checkpoint intact, and a requested stop (Ctrl-C) writes one before returning.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::divergence::DivergenceGuard;
use super::loss_log::LossLog;
use super::run_lock::RunLock;
use super::trainer::{StepReport, Trainer};
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};

/// The checkpoint file of a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.safetensors")
}

/// The loss log of a run directory.
pub fn loss_log_path(dir: &Path) -> PathBuf {
    dir.join("loss.csv")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    Finished,
    /// Stopped on request; the checkpoint holds every step taken.
    Stopped,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub end: RunEnd,
    pub steps_done: u64,
    /// Steps taken by this invocation, and their wall time.
    pub steps_run: u64,
    pub seconds: f64,
}

/// Trains until the configured step count or until `stop` is set, checkpointing every
/// `checkpoint_every` steps and at the end. A periodic checkpoint is taken at a calm step and
/// written once the next step's loss shows no divergence (see [`DivergenceGuard`]), so a
/// diverged run never replaces the last good checkpoint.
/// The run works in the directory of `lock` (taken before the trainer was built); a diverging
/// run stops with an error before its step is saved. `on_step` sees every step (progress display).
pub fn run(
    trainer: &mut Trainer,
    data: &Dataset,
    lock: &RunLock,
    stop: &AtomicBool,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<RunSummary> {
    run_with(trainer, data, lock, stop, on_step, None)
}

/// Work done with the trainer every `every` steps, the loss log flushed first (so that it can
/// be read): `train --eval-every`'s evaluation.
pub struct Periodic<'a> {
    pub every: u64,
    pub action: &'a mut dyn FnMut(&Trainer) -> Result<()>,
}

/// [`run`], doing `periodic`'s work every so many steps; an error from it ends the run as a
/// failed step does.
pub fn run_with(
    trainer: &mut Trainer,
    data: &Dataset,
    lock: &RunLock,
    stop: &AtomicBool,
    on_step: &mut dyn FnMut(&StepReport),
    mut periodic: Option<Periodic<'_>>,
) -> Result<RunSummary> {
    let dir = lock.dir();
    let ckpt = checkpoint_path(dir);
    let mut log = LossLog::open(&loss_log_path(dir), trainer.steps_done())?;
    let mut guard = DivergenceGuard::new();
    let start = Instant::now();
    let first = trainer.steps_done();
    let mut saved_at = first;
    let mut save_due = false;
    // A checkpoint is written one step late: the loss of step n+1 is the first that shows how
    // step n's update went, so a checkpoint of step n waits here until that loss is judged.
    let mut pending: Option<(u64, Checkpoint)> = None;
    let mut end = RunEnd::Finished;
    while !trainer.finished() {
        if stop.load(Ordering::Relaxed) {
            end = RunEnd::Stopped;
            break;
        }
        let report = match trainer.step(data) {
            Ok(report) => report,
            Err(e) => return Err(stopped_by(e, &mut log, saved_at, &ckpt)),
        };
        log.append(&report, start.elapsed().as_secs_f64())?;
        on_step(&report);
        if let Err(e) = guard.check(report.step, report.loss) {
            return Err(stopped_by(e, &mut log, saved_at, &ckpt));
        }
        if let Some(p) = periodic.as_mut().filter(|p| report.step % p.every == 0) {
            log.flush()?;
            if let Err(e) = (p.action)(trainer) {
                return Err(stopped_by(e, &mut log, saved_at, &ckpt));
            }
        }
        let calm = guard.is_calm(report.loss);
        if let Some((step, checkpoint)) = pending.take_if(|_| calm) {
            checkpoint.save(&ckpt)?;
            log.flush()?;
            saved_at = step;
        }
        save_due |= report.step % trainer.config.checkpoint_every == 0;
        if save_due && calm {
            pending = Some((report.step, trainer.checkpoint()?));
            save_due = false;
        }
    }
    if saved_at != trainer.steps_done() || !ckpt.exists() {
        trainer.save(&ckpt)?;
    }
    log.flush()?;
    Ok(RunSummary {
        end,
        steps_done: trainer.steps_done(),
        steps_run: trainer.steps_done() - first,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The error that ends a run early, with where it can be picked up again; the loss log keeps the
/// rows up to the failure, so a divergence can be read in it.
fn stopped_by(e: Error, log: &mut LossLog, saved_at: u64, ckpt: &Path) -> Error {
    if let Err(flush) = log.flush() {
        eprintln!("warning: {flush}");
    }
    let resume = if ckpt.exists() {
        format!("the checkpoint {} holds step {saved_at}", ckpt.display())
    } else {
        "no checkpoint was written yet".to_string()
    };
    Error::invalid(format!("{e}; {resume}"))
}
