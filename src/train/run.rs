//! A training run in an output directory: steps until done or stopped, the loss log, periodic
//! atomic checkpoints. Work is never lost beyond the checkpoint interval: a kill leaves the last
//! checkpoint intact, and a requested stop (Ctrl-C) writes one before returning.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::loss_log::LossLog;
use super::trainer::{StepReport, Trainer};
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
/// `checkpoint_every` steps and at the end. `on_step` sees every step (progress display).
pub fn run(
    trainer: &mut Trainer,
    data: &Dataset,
    dir: &Path,
    stop: &AtomicBool,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<RunSummary> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        context: format!("creating run directory {}", dir.display()),
        source: e,
    })?;
    let ckpt = checkpoint_path(dir);
    let mut log = LossLog::open(&loss_log_path(dir), trainer.steps_done())?;
    let start = Instant::now();
    let first = trainer.steps_done();
    let mut saved_at = first;
    let mut end = RunEnd::Finished;
    while !trainer.finished() {
        if stop.load(Ordering::Relaxed) {
            end = RunEnd::Stopped;
            break;
        }
        let report = trainer
            .step(data)
            .map_err(|e| lost_since(e, saved_at, &ckpt))?;
        log.append(&report, start.elapsed().as_secs_f64())?;
        on_step(&report);
        if report.step % trainer.config.checkpoint_every == 0 {
            trainer.save(&ckpt)?;
            log.flush()?;
            saved_at = report.step;
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

/// A failed step's error, with where the run can be picked up again.
fn lost_since(e: Error, saved_at: u64, ckpt: &Path) -> Error {
    let resume = if ckpt.exists() {
        format!("the checkpoint {} holds step {saved_at}", ckpt.display())
    } else {
        "no checkpoint was written yet".to_string()
    };
    Error::invalid(format!("{e}; {resume}"))
}
