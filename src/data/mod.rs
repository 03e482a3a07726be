//! Datasets: IDX (MNIST, Fashion-MNIST, Kuzushiji-MNIST), CIFAR-10 binary, and a
//! built-in procedural dataset; the pixel map of SPEC section 1; deterministic batches; and the
//! statistics the samplers' initialisations need (SPEC section 4).
//!
//! Every reader validates what it reads: a missing, truncated or foreign file is an
//! [`Error::File`] naming the file and what was expected and found.
mod batch;
mod cifar;
mod fingerprint;
mod idx;
mod range;
mod shapes;
mod stats;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use batch::{epoch_permutation, Batch, Batcher};
pub use idx::{read_idx, IdxArray};
pub use range::PixelRange;
pub use shapes::CLASS_NAMES as SHAPE_CLASS_NAMES;
pub use stats::LogStats;

/// Where a named dataset is looked for, in order: `$DML_DATA_DIR/<name>`, then
/// `/usr/share/datasets/<name>`, then `./data/<name>`.
pub const DATA_DIR_ENV: &str = "DML_DATA_DIR";
const SYSTEM_DATA_DIR: &str = "/usr/share/datasets";

/// The named datasets [`Dataset::load`] knows, besides directory paths.
pub const DATASET_NAMES: &[&str] = &["shapes", "fashion-mnist", "mnist", "kmnist", "cifar10"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            other => Err(Error::invalid(format!(
                "unknown split '{other}': expected train or test"
            ))),
        }
    }
}

/// Images as bytes in [0, 255], NCHW, with their class labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub n_classes: usize,
}

impl Dataset {
    /// `shapes` (built in), `fashion-mnist`, `mnist`, `kmnist`, `cifar10` (looked for in the
    /// directories of [`DATA_DIR_ENV`]), or a directory holding IDX or CIFAR-10 binary files.
    pub fn load(name_or_path: &str, split: Split) -> Result<Self> {
        match name_or_path {
            "shapes" => Ok(Self::shapes(split)),
            "fashion-mnist" | "mnist" | "kmnist" => {
                Self::load_idx_dir(&find_named(name_or_path)?, name_or_path, split)
            }
            "cifar10" => Self::load_cifar_dir(&find_named(name_or_path)?, name_or_path, split),
            path => Self::load_dir(Path::new(path), split),
        }
    }

    /// A directory of IDX files (`train-images-idx3-ubyte.gz`, ...) or CIFAR-10 batches.
    pub fn load_dir(dir: &Path, split: Split) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                format!(
                    "not a directory, nor a known dataset name ({})",
                    DATASET_NAMES.join(", ")
                ),
            ));
        }
        let name = dir.display().to_string();
        if cifar::is_cifar_dir(dir) {
            Self::load_cifar_dir(dir, &name, split)
        } else {
            Self::load_idx_dir(dir, &name, split)
        }
    }

    /// The built-in procedural dataset: 28x28 grayscale shapes of [`SHAPE_CLASS_NAMES`].
    pub fn shapes(split: Split) -> Self {
        let (split_id, n) = match split {
            Split::Train => (0, shapes::TRAIN_IMAGES),
            Split::Test => (1, shapes::TEST_IMAGES),
        };
        let (images, labels) = shapes::generate(split_id, n);
        Self {
            name: "shapes".into(),
            images,
            labels,
            n,
            channels: 1,
            height: shapes::SIDE,
            width: shapes::SIDE,
            n_classes: shapes::CLASS_NAMES.len(),
        }
    }

    fn load_idx_dir(dir: &Path, name: &str, split: Split) -> Result<Self> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let (images_path, labels_path) = idx::split_files(dir, prefix)?;
        let images = idx::read_idx(&images_path, 3)?;
        let labels = idx::read_idx(&labels_path, 1)?;
        let n = images.dims[0];
        if labels.dims[0] != n {
            return Err(Error::file(
                &labels_path,
                format!(
                    "{} labels, but {} has {n} images",
                    labels.dims[0],
                    images_path.display()
                ),
            ));
        }
        let n_classes = 10;
        check_labels(&labels.data, n_classes, &labels_path)?;
        Ok(Self {
            name: name.to_string(),
            images: images.data,
            labels: labels.data,
            n,
            channels: 1,
            height: images.dims[1],
            width: images.dims[2],
            n_classes,
        })
    }

    fn load_cifar_dir(dir: &Path, name: &str, split: Split) -> Result<Self> {
        let (images, labels) = cifar::read_split(&cifar::split_files(dir, split))?;
        Ok(Self {
            name: name.to_string(),
            n: labels.len(),
            images,
            labels,
            channels: cifar::CHANNELS,
            height: cifar::SIDE,
            width: cifar::SIDE,
            n_classes: cifar::CLASSES,
        })
    }

    /// Values per image, `C * H * W` (SPEC's `d`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.image_len();
        &self.images[i * d..(i + 1) * d]
    }

    /// Images `indices`, concatenated, mapped into `range` (SPEC section 1).
    pub fn images_in_range(&self, indices: &[usize], range: PixelRange) -> Vec<f32> {
        let table = range.table();
        indices
            .iter()
            .flat_map(|&i| self.image(i).iter().map(|&b| table[b as usize]))
            .collect()
    }

    /// The first `n` images (all when there are fewer), for quick runs.
    pub fn truncated(mut self, n: usize) -> Self {
        self.n = self.n.min(n);
        self.images.truncate(self.n * self.image_len());
        self.labels.truncate(self.n);
        self
    }
}

fn check_labels(labels: &[u8], n_classes: usize, path: &Path) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= n_classes) {
        Some(i) => Err(Error::file(
            path,
            format!("label {} at index {i} outside 0..{n_classes}", labels[i]),
        )),
        None => Ok(()),
    }
}

/// The directory of a named dataset, or an error listing where it was looked for.
fn find_named(name: &str) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Ok(root) = std::env::var(DATA_DIR_ENV) {
        tried.push(Path::new(&root).join(name));
    }
    tried.push(Path::new(SYSTEM_DATA_DIR).join(name));
    tried.push(Path::new("data").join(name));
    tried.iter().find(|d| d.is_dir()).cloned().ok_or_else(|| {
        let places: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        Error::file(
            &tried[0],
            format!(
                "dataset '{name}' not found; looked in {} (set {DATA_DIR_ENV} or pass a directory)",
                places.join(", ")
            ),
        )
    })
}
