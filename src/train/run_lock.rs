//! One run per run directory: a training run holds an exclusive advisory lock (flock) on
//! `<dir>/.lock` while it works. A second run in the same directory fails at once, naming the
//! process that holds it, instead of both writing the same checkpoint, temporary file and loss
//! log. The operating system releases the lock when the process ends in any way, kill -9
//! included, so a crashed run never leaves a stale lock behind.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Held for as long as the run works in its directory; dropping it releases the lock. Take it
/// before reading the run's checkpoint, so that what is read is not replaced meanwhile.
pub struct RunLock {
    dir: PathBuf,
    _file: File,
}

/// The lock file of a run directory.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(".lock")
}

impl RunLock {
    /// Takes the lock of `dir`, creating the directory if need be, or fails naming the holder.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            context: format!("creating run directory {}", dir.display()),
            source: e,
        })?;
        let path = lock_path(dir);
        let io = |what: &str, e: std::io::Error| Error::Io {
            context: format!("{what} run lock {}", path.display()),
            source: e,
        };
        // Opened without truncating: the holder's pid must stay readable to a second run.
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        let mut file = options.open(&path).map_err(|e| io("opening", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::file(
                    dir,
                    format!(
                        "another dml process ({}) is training in this run directory; wait for \
                         it to finish or stop it, or choose another --out",
                        describe_holder(holder.trim())
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(io("locking", e)),
        }
        // The holder's pid, for the message another run prints; the lock itself is the flock.
        file.set_len(0).map_err(|e| io("writing", e))?;
        file.rewind().map_err(|e| io("writing", e))?;
        write!(file, "{}", std::process::id()).map_err(|e| io("writing", e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The run directory this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn describe_holder(pid: &str) -> String {
    if pid.is_empty() {
        "pid unknown".into()
    } else {
        format!("pid {pid}")
    }
}
