//! The loss log: one CSV row per step (`step,loss,grad_norm,lr,seconds`), for plotting.
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::trainer::StepReport;
use crate::error::{Error, Result};

const HEADER: &str = "step,loss,grad_norm,lr,seconds";

pub struct LossLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl LossLog {
    /// Opens the log of a run that has taken `steps_done` steps. A fresh run (0) starts a new
    /// file; a resumed run keeps the rows up to its checkpoint and drops later ones, which the
    /// run is about to redo (they were written after the checkpoint it resumes from). The kept
    /// rows are written to a temporary file that replaces the log by an atomic rename, so a run
    /// killed at any moment leaves either the old log or the trimmed one, never an empty one.
    pub fn open(path: &Path, steps_done: u64) -> Result<Self> {
        let io = |what: &str, e: std::io::Error| Error::Io {
            context: format!("{what} loss log {}", path.display()),
            source: e,
        };
        let mut kept = vec![HEADER.to_string()];
        if steps_done > 0 && path.exists() {
            let text = fs::read_to_string(path).map_err(|e| io("reading", e))?;
            kept.extend(
                text.lines()
                    .skip(1)
                    .filter(|line| row_step(line).is_some_and(|s| s <= steps_done))
                    .map(str::to_string),
            );
        }
        let temp = temp_path(path);
        let mut rows = kept.join("\n");
        rows.push('\n');
        fs::write(&temp, rows).map_err(|e| io("writing", e))?;
        fs::rename(&temp, path).map_err(|e| io("replacing", e))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io("opening", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    pub fn append(&mut self, r: &StepReport, seconds: f64) -> Result<()> {
        writeln!(
            self.out,
            "{},{},{},{},{:.3}",
            r.step, r.loss, r.grad_norm, r.lr, seconds
        )
        .map_err(|e| self.io_error(e))
    }

    /// Pushes buffered rows to the file (at every checkpoint, so the log keeps up with it).
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        Error::Io {
            context: format!("writing loss log {}", self.path.display()),
            source: e,
        }
    }
}

/// `.loss.csv.tmp` beside the log: the same file system, so the rename is atomic.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "loss.csv".as_ref()));
    name.push(".tmp");
    path.with_file_name(name)
}

fn row_step(line: &str) -> Option<u64> {
    line.split(',').next()?.parse().ok()
}

/// The (step, loss) pairs of a loss log, for tests and summaries.
pub fn read_losses(path: &Path) -> Result<Vec<(u64, f32)>> {
    let text = fs::read_to_string(path).map_err(|e| Error::Io {
        context: format!("reading loss log {}", path.display()),
        source: e,
    })?;
    text.lines()
        .skip(1)
        .map(|line| {
            let mut fields = line.split(',');
            let parsed = fields
                .next()
                .and_then(|s| s.parse().ok())
                .zip(fields.next().and_then(|l| l.parse().ok()));
            parsed.ok_or_else(|| Error::file(path, format!("malformed loss log row '{line}'")))
        })
        .collect()
}
