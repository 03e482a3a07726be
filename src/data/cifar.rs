//! The CIFAR-10 binary format (https://www.cs.toronto.edu/~kriz/cifar.html): records of one label
//! byte and 3x32x32 pixel bytes, channel-planar (all red, then green, then blue), which is
//! already the NCHW layout. Train is `data_batch_1.bin`..`data_batch_5.bin`, test `test_batch.bin`.
use std::path::{Path, PathBuf};

use super::Split;
use crate::error::{Error, Result};
use crate::regular_file;

pub const CHANNELS: usize = 3;
pub const SIDE: usize = 32;
pub const CLASSES: usize = 10;
const IMAGE_BYTES: usize = CHANNELS * SIDE * SIDE;
const RECORD_BYTES: usize = 1 + IMAGE_BYTES;

/// Whether `dir` looks like a CIFAR-10 binary directory (or contains the official
/// `cifar-10-batches-bin` folder).
pub fn is_cifar_dir(dir: &Path) -> bool {
    let dir = batches_dir(dir);
    dir.join("test_batch.bin").is_file() || dir.join("data_batch_1.bin").is_file()
}

fn batches_dir(dir: &Path) -> PathBuf {
    let nested = dir.join("cifar-10-batches-bin");
    if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// The files of a split, in order.
pub fn split_files(dir: &Path, split: Split) -> Vec<PathBuf> {
    let dir = batches_dir(dir);
    match split {
        Split::Train => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect(),
        Split::Test => vec![dir.join("test_batch.bin")],
    }
}

/// Images (NCHW bytes) and labels of all `files`, validated.
pub fn read_split(files: &[PathBuf]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for path in files {
        let bytes = regular_file::read(path)?;
        if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
            return Err(Error::file(
                path,
                format!(
                    "truncated or not CIFAR-10: expected a positive multiple of {RECORD_BYTES} bytes \
                     (1 label + 3x32x32 pixels per record), found {} bytes",
                    bytes.len()
                ),
            ));
        }
        for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            if record[0] as usize >= CLASSES {
                return Err(Error::file(
                    path,
                    format!(
                        "record {i}: label {} outside 0..{CLASSES} (not a CIFAR-10 file?)",
                        record[0]
                    ),
                ));
            }
            labels.push(record[0]);
            images.extend_from_slice(&record[1..]);
        }
    }
    Ok((images, labels))
}
