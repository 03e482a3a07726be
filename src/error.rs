//! The crate's error type: every failure says what was being done and with what.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("tensors on different devices in {op}: {a} and {b}")]
    DeviceMismatch {
        op: &'static str,
        a: String,
        b: String,
    },

    #[error("cuda: {0}")]
    Cuda(String),

    #[error("kernel {kernel} failed on the emulator: {message}")]
    Emulator { kernel: String, message: String },

    #[error("unknown kernel {0} (not exported by any kernels/*.cu)")]
    UnknownKernel(String),

    #[error("kernel {kernel} launched with arguments that do not match its signature: {detail}")]
    KernelArguments { kernel: String, detail: String },

    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What [`Error::Invalid`] puts before its message.
const INVALID_PREFIX: &str = "invalid argument: ";

/// `msg` without a leading [`INVALID_PREFIX`]: an error's text wrapped in a new error (with a
/// file or more context) would otherwise read "invalid argument: invalid argument: ...".
fn without_invalid_prefix(msg: impl Into<String>) -> String {
    let msg = msg.into();
    match msg.strip_prefix(INVALID_PREFIX) {
        Some(rest) => rest.to_string(),
        None => msg,
    }
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(without_invalid_prefix(msg))
    }
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: without_invalid_prefix(message),
        }
    }

    /// This error, naming the file `path` unless its message names it already (errors from
    /// the checkpoint reader do).
    pub fn in_file(self, path: &std::path::Path) -> Self {
        let message = self.to_string();
        if message.contains(&path.display().to_string()) {
            self
        } else {
            Error::file(path, message)
        }
    }
}
