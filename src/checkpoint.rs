//! Checkpoints: named f32 tensors (weights, EMA weights, optimiser state) and string metadata
//! (preset, schedule, step, seed, data range, fitted log-normal init, ...) in one safetensors file.
//!
//! Saving is atomic: the bytes go to a temporary file in the same directory, which is flushed to
//! disk and then renamed over the target. A crash or kill at any moment leaves either the previous
//! checkpoint or the new one, never a mixture.
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::checksum;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::regular_file;
use crate::tensor::Tensor;

/// The largest safetensors JSON header accepted: 100 MiB. Ours hold a line per tensor and short
/// metadata (kilobytes); the limit stops a corrupt or hostile length field from making a load
/// read and parse gigabytes.
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// A tensor held on the host: its shape and its data in row-major order.
pub type HostTensor = (Vec<usize>, Vec<f32>);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    pub tensors: BTreeMap<String, HostTensor>,
    pub metadata: BTreeMap<String, String>,
    /// The file it was loaded from, named in errors about its contents.
    source: Option<PathBuf>,
}

/// A checkpoint written to its temporary file but not yet renamed over the target.
/// [`StagedCheckpoint::commit`] finishes the save; dropping it instead removes the temporary file
/// and leaves the target as it was.
pub struct StagedCheckpoint {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Checkpoint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a copy of `tensor` (from any device) under `name`.
    pub fn put_tensor(&mut self, name: impl Into<String>, tensor: &Tensor) -> Result<()> {
        self.tensors
            .insert(name.into(), (tensor.shape().to_vec(), tensor.to_vec()?));
        Ok(())
    }

    /// The tensor `name` on `device`; it must exist with exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let (found, data) = self
            .tensors
            .get(name)
            .ok_or_else(|| self.error(format!("no tensor named '{name}'")))?;
        if found != shape {
            return Err(self.error(format!(
                "tensor '{name}' has shape {found:?}, expected {shape:?}"
            )));
        }
        // Weights, EMA and optimiser state are all finite in a sound run; a NaN or infinity
        // would silently turn every sample or step that uses it into NaN.
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(self.error(format!(
                "tensor '{name}' holds {} at index {i} (a diverged run or a damaged file); \
                 it cannot be used",
                data[i]
            )));
        }
        Tensor::from_slice(data, shape, device)
    }

    pub fn put_meta(&mut self, key: impl Into<String>, value: impl ToString) {
        self.metadata.insert(key.into(), value.to_string());
    }

    /// The metadata value of `key`; missing is an error naming the file.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.error(format!("no metadata entry '{key}'")))
    }

    /// All metadata as key/value pairs, in key order (what the `from_describe` readers take).
    pub fn metadata_pairs(&self) -> Vec<(String, String)> {
        self.metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The metadata value of `key` parsed as `T`.
    pub fn meta_parse<T: FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.meta(key)?;
        raw.parse()
            .map_err(|e| self.error(format!("metadata '{key}' = '{raw}': {e}")))
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.stage(path)?.commit()
    }

    /// The first half of [`Checkpoint::save`]: serialises and writes the temporary file, flushed to
    /// disk, next to `path`.
    pub fn stage(&self, path: impl AsRef<Path>) -> Result<StagedCheckpoint> {
        let target = path.as_ref().to_path_buf();
        let bytes = self.serialize(&target)?;
        let temp = temp_path(&target)?;
        let staged = StagedCheckpoint {
            temp,
            target,
            committed: false,
        };
        let io = |e| Error::Io {
            context: format!("writing {}", staged.temp.display()),
            source: e,
        };
        let mut file = File::create(&staged.temp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(staged)
    }

    /// Reads a checkpoint; a missing, truncated or corrupt file, or a tensor whose checksum does
    /// not match, is an error naming it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_bounded(path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::file(
                path,
                format!("not a valid safetensors checkpoint (corrupt or truncated?): {e}"),
            )
        })?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::file(path, format!("unreadable header: {e}")))?;
        let (checksums, metadata): (BTreeMap<String, String>, _) = header
            .metadata()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| k.starts_with(checksum::KEY_PREFIX));
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(Error::file(
                    path,
                    format!("tensor '{name}' has dtype {:?}, expected F32", view.dtype()),
                ));
            }
            // Checkpoints written before checksums existed have none: they load unverified.
            if let Some(stored) = checksums.get(&checksum::key(name)) {
                verify_checksum(path, name, view.data(), stored)?;
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(name.to_string(), (view.shape().to_vec(), data));
        }
        Ok(Self {
            tensors,
            metadata,
            source: Some(path.to_path_buf()),
        })
    }

    fn serialize(&self, target: &Path) -> Result<Vec<u8>> {
        let bytes: BTreeMap<&str, Vec<u8>> = self
            .tensors
            .iter()
            .map(|(name, (_, data))| {
                let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.as_str(), raw)
            })
            .collect();
        let mut views = Vec::with_capacity(self.tensors.len());
        for (name, (shape, _)) in &self.tensors {
            let view = TensorView::new(Dtype::F32, shape.clone(), &bytes[name.as_str()])
                .map_err(|e| Error::file(target, format!("tensor '{name}': {e}")))?;
            views.push((name.as_str(), view));
        }
        let mut metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        for (name, raw) in &bytes {
            metadata.insert(checksum::key(name), checksum::of(raw));
        }
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::file(target, format!("cannot serialise checkpoint: {e}")))
    }

    fn error(&self, message: String) -> Error {
        let path = self
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<checkpoint in memory>"));
        Error::file(path, message)
    }
}

impl StagedCheckpoint {
    /// The temporary file holding the new checkpoint.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Renames the temporary file over the target and flushes the directory entry.
    pub fn commit(mut self) -> Result<()> {
        fs::rename(&self.temp, &self.target).map_err(|e| Error::Io {
            context: format!(
                "renaming {} to {}",
                self.temp.display(),
                self.target.display()
            ),
            source: e,
        })?;
        self.committed = true;
        // Without this the rename itself may not survive a power loss. Directories cannot be
        // opened for syncing on every platform, so a failure here is not an error.
        if let Ok(dir) = File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for StagedCheckpoint {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The bytes of the safetensors file `path`, which must be a regular file whose header length
/// is within [`MAX_HEADER_BYTES`] and within the file, checked before the rest is read.
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let (mut file, len) = regular_file::open(path)?;
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(|_| {
        Error::file(
            path,
            format!("truncated: {len} bytes, too short for a safetensors header"),
        )
    })?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::file(
            path,
            format!(
                "header of {header_len} bytes is over the limit of {} MiB (corrupt, or not a \
                 checkpoint?)",
                MAX_HEADER_BYTES >> 20
            ),
        ));
    }
    // The length is the one it had when opened; the file may have changed since, so the
    // arithmetic saturates instead of trusting that 8 bytes were there then.
    let rest = len.saturating_sub(8);
    if header_len > rest {
        return Err(Error::file(
            path,
            format!("truncated: header of {header_len} bytes, but the file has {len} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    bytes.extend_from_slice(&prefix);
    file.take(rest)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    Ok(bytes)
}

fn verify_checksum(path: &Path, tensor: &str, data: &[u8], stored: &str) -> Result<()> {
    let computed = checksum::of(data);
    if computed != stored {
        return Err(Error::file(
            path,
            format!(
                "tensor '{tensor}' fails its checksum (stored {stored}, computed {computed}): \
                 the file is damaged"
            ),
        ));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.tmp` in the target's directory: the same file system, so the rename is atomic.
fn temp_path(target: &Path) -> Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| Error::file(target, "a checkpoint path must name a file"))?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(".tmp");
    Ok(parent_dir(target).join(temp))
}
