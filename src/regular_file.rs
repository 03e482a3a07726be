//! Opening input files (checkpoints, datasets) only when they are regular files. Reading a
//! device never ends (`/dev/zero`) or returns nothing useful, opening a FIFO blocks until some
//! writer appears, and a directory is no file: each is refused at once with an error naming it.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// `path` opened for reading, with its length; an error naming it unless it is a regular file
/// (symbolic links are followed).
pub fn open(path: &Path) -> Result<(File, u64)> {
    // Checked before opening: opening a FIFO would already block.
    check_regular(
        path,
        &std::fs::metadata(path).map_err(|e| cannot_read(path, e))?,
    )?;
    let file = File::open(path).map_err(|e| cannot_read(path, e))?;
    // Checked again on the open file, which may have been replaced in between.
    let metadata = file.metadata().map_err(|e| cannot_read(path, e))?;
    check_regular(path, &metadata)?;
    Ok((file, metadata.len()))
}

/// The whole contents of the regular file `path`.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let (file, len) = open(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // At most the length it had when opened: a file growing while read cannot exhaust memory.
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot_read(path, e))?;
    Ok(bytes)
}

fn check_regular(path: &Path, metadata: &std::fs::Metadata) -> Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    let kind = if metadata.is_dir() {
        "a directory"
    } else {
        "a device, FIFO or socket"
    };
    Err(Error::file(
        path,
        format!("not a regular file ({kind}); expected a file"),
    ))
}

fn cannot_read(path: &Path, e: std::io::Error) -> Error {
    Error::file(path, format!("cannot read: {e}"))
}
