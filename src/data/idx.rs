//! The IDX format of MNIST, Fashion-MNIST and Kuzushiji-MNIST (http://yann.lecun.com/exdb/mnist/):
//! a big-endian header `0x00 0x00 <type> <ndim>`, `ndim` 32-bit sizes, then the data. Files may be
//! gzipped; that is detected from the gzip magic bytes, not from the name.
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::regular_file;

/// The type code of unsigned bytes, the only type these datasets use.
const UNSIGNED_BYTE: u8 = 0x08;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An IDX array of unsigned bytes: its sizes and data.
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads `path` (gzipped or not), which must hold an unsigned-byte array of `ndim` dimensions.
pub fn read_idx(path: &Path, ndim: u8) -> Result<IdxArray> {
    let raw = regular_file::read(path)?;
    let bytes = if raw.starts_with(&GZIP_MAGIC) {
        gunzip(&raw, ndim)
            .map_err(|e| Error::file(path, format!("corrupt or truncated gzip data: {e}")))?
    } else {
        raw
    };
    parse_idx(bytes, ndim).map_err(|message| Error::file(path, message))
}

/// The decompressed header and data, no more than one byte beyond what the header declares: a
/// small file that inflates without end (a "gzip bomb") is stopped there, and the one extra
/// byte is enough for [`parse_idx`] to report trailing data.
fn gunzip(raw: &[u8], ndim: u8) -> std::io::Result<Vec<u8>> {
    let mut decoder = flate2::read::MultiGzDecoder::new(raw);
    let mut out = Vec::new();
    (&mut decoder)
        .take(header_len(ndim) as u64)
        .read_to_end(&mut out)?;
    // A header that does not parse gets no data: parse_idx then reports what is wrong with it.
    let limit = parse_header(&out, ndim).map_or(0, |(_, len)| len.saturating_add(1));
    decoder.take(limit as u64).read_to_end(&mut out)?;
    Ok(out)
}

fn header_len(ndim: u8) -> usize {
    4 + 4 * ndim as usize
}

/// The sizes the header declares and the data length they make, checked: every size positive
/// and their product within `usize`, so no later product of them overflows.
fn parse_header(bytes: &[u8], ndim: u8) -> std::result::Result<(Vec<usize>, usize), String> {
    let expected_magic = [0, 0, UNSIGNED_BYTE, ndim];
    if bytes.len() < 4 || bytes[..4] != expected_magic {
        return Err(format!(
            "wrong magic: expected {} (IDX, unsigned bytes, {ndim} dimensions), found {}",
            hex(&expected_magic),
            hex(&bytes[..bytes.len().min(4)])
        ));
    }
    let header_len = header_len(ndim);
    if bytes.len() < header_len {
        return Err(format!(
            "truncated header: expected {header_len} bytes, found {}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    if dims.contains(&0) {
        return Err(format!(
            "header declares sizes {dims:?}: every size must be positive"
        ));
    }
    let len = dims
        .iter()
        .try_fold(1usize, |len, &d| len.checked_mul(d))
        .ok_or_else(|| {
            format!("header declares sizes {dims:?}, whose product overflows (corrupt header?)")
        })?;
    Ok((dims, len))
}

/// The array in `bytes` (the header is drained off, so the data is not copied).
fn parse_idx(mut bytes: Vec<u8>, ndim: u8) -> std::result::Result<IdxArray, String> {
    let (dims, expected) = parse_header(&bytes, ndim)?;
    bytes.drain(..header_len(ndim));
    let data = bytes;
    if data.len() != expected {
        let what = if data.len() < expected {
            "truncated"
        } else {
            "trailing data"
        };
        return Err(format!(
            "{what}: header declares sizes {dims:?} = {expected} bytes of data, found {}",
            data.len()
        ));
    }
    Ok(IdxArray { dims, data })
}

fn hex(b: &[u8]) -> String {
    let digits: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("0x{digits}")
}

/// The images and labels files of one split in `dir`: `train-*` or `t10k-*`, with the usual
/// spellings (`-idx3-ubyte` or `.idx3-ubyte`, optionally `.gz`).
pub fn split_files(dir: &Path, prefix: &str) -> Result<(PathBuf, PathBuf)> {
    Ok((
        find_file(dir, prefix, "images", 3)?,
        find_file(dir, prefix, "labels", 1)?,
    ))
}

fn find_file(dir: &Path, prefix: &str, kind: &str, ndim: u8) -> Result<PathBuf> {
    let stems = [
        format!("{prefix}-{kind}-idx{ndim}-ubyte"),
        format!("{prefix}-{kind}.idx{ndim}-ubyte"),
    ];
    let candidates: Vec<PathBuf> = stems
        .iter()
        .flat_map(|s| [dir.join(format!("{s}.gz")), dir.join(s)])
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = candidates
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            Error::file(
                &candidates[0],
                format!(
                    "missing: expected one of {} in {}",
                    names.join(", "),
                    dir.display()
                ),
            )
        })
}
