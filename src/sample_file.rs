//! The samples file that `dml sample --tensors` writes and `dml eval --samples` reads: a
//! safetensors file holding
//!
//! - tensor `samples` `[n, C, H, W]`: the images in the model's pixel range, before clamping;
//! - tensor `classes` `[n]` (class indices as f32) when the chains started from class averages;
//! - metadata `format` = `dml-samples-1`, `data.range.lo` and `data.range.hi` (the pixel range),
//!   `checkpoint`, `sampler`, `seed` (where the samples came from) and, for a diffusion whose
//!   pixels stay positive, `sign_changes` and `nonpositive_fraction` (SPEC section 10).
//!
//! Files written before the `format` entry existed are recognised by their `samples` tensor.
use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::data::PixelRange;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "dml-samples-1";
const SAMPLES: &str = "samples";
const CLASSES: &str = "classes";

/// Drawn images with what is known about how they were drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleFile {
    /// `[n, C, H, W]`.
    pub shape: [usize; 4],
    pub images: Vec<f32>,
    /// The class each chain started from (class-average initialisation).
    pub classes: Option<Vec<usize>>,
    /// The pixel range of `images` (absent only in files from other writers).
    pub range: Option<PixelRange>,
    /// The checkpoint the samples were drawn from.
    pub checkpoint: Option<String>,
    /// The sampler's name (`adls`, `asams`, `em`).
    pub sampler: Option<String>,
    pub seed: Option<u64>,
    /// Entries that changed sign during sampling (diffusions with positive pixels).
    pub sign_changes: Option<u64>,
    /// Fraction of the final entries that are not positive (diffusions with positive pixels).
    pub nonpositive_fraction: Option<f64>,
}

impl SampleFile {
    /// `images` `[n, C, H, W]` with nothing else known yet.
    pub fn new(shape: [usize; 4], images: Vec<f32>) -> Result<Self> {
        if shape.iter().product::<usize>() != images.len() {
            return Err(Error::invalid(format!(
                "samples of shape {shape:?} need {} values, got {}",
                shape.iter().product::<usize>(),
                images.len()
            )));
        }
        Ok(Self {
            shape,
            images,
            classes: None,
            range: None,
            checkpoint: None,
            sampler: None,
            seed: None,
            sign_changes: None,
            nonpositive_fraction: None,
        })
    }

    /// The number of images.
    pub fn count(&self) -> usize {
        self.shape[0]
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut out = Checkpoint::new();
        out.put_meta(FORMAT_KEY, FORMAT);
        let images = Tensor::from_vec(self.images.clone(), &self.shape, &Device::Cpu)?;
        out.put_tensor(SAMPLES, &images)?;
        if let Some(classes) = &self.classes {
            let c: Vec<f32> = classes.iter().map(|&k| k as f32).collect();
            out.put_tensor(
                CLASSES,
                &Tensor::from_vec(c, &[classes.len()], &Device::Cpu)?,
            )?;
        }
        if let Some(range) = self.range {
            out.put_meta("data.range.lo", format!("{:?}", range.lo));
            out.put_meta("data.range.hi", format!("{:?}", range.hi));
        }
        if let Some(checkpoint) = &self.checkpoint {
            out.put_meta("checkpoint", checkpoint);
        }
        if let Some(sampler) = &self.sampler {
            out.put_meta("sampler", sampler);
        }
        if let Some(seed) = self.seed {
            out.put_meta("seed", seed);
        }
        if let Some(n) = self.sign_changes {
            out.put_meta("sign_changes", n);
        }
        if let Some(f) = self.nonpositive_fraction {
            out.put_meta("nonpositive_fraction", format!("{f:?}"));
        }
        out.save(path)
    }

    /// Reads a samples file; any other safetensors file is an error saying what it is not.
    pub fn load(path: &Path) -> Result<Self> {
        let ckpt = Checkpoint::load(path)?;
        let bad = |msg: String| Error::file(path, msg);
        match ckpt.metadata.get(FORMAT_KEY) {
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(bad(format!(
                    "not a samples file: its format is '{f}', not '{FORMAT}' (write samples with \
                     `dml sample --tensors FILE`)"
                )))
            }
            None if ckpt.tensors.contains_key(SAMPLES) => {}
            None => {
                return Err(bad(format!(
                    "not a samples file: no tensor '{SAMPLES}' (write one with `dml sample \
                     --tensors FILE`)"
                )))
            }
        }
        let (shape, images) = ckpt
            .tensors
            .get(SAMPLES)
            .ok_or_else(|| bad(format!("no tensor '{SAMPLES}'")))?;
        let shape: [usize; 4] = shape.as_slice().try_into().map_err(|_| {
            bad(format!(
                "tensor '{SAMPLES}' has shape {shape:?}; expected [n, C, H, W]"
            ))
        })?;
        let mut file = Self::new(shape, images.clone()).map_err(|e| bad(e.to_string()))?;
        if let Some((class_shape, classes)) = ckpt.tensors.get(CLASSES) {
            if class_shape[..] != [shape[0]] {
                return Err(bad(format!(
                    "tensor '{CLASSES}' has shape {class_shape:?}, expected [{}]",
                    shape[0]
                )));
            }
            let classes = classes
                .iter()
                .map(|&c| {
                    (c >= 0.0 && c.fract() == 0.0)
                        .then_some(c as usize)
                        .ok_or_else(|| bad(format!("'{CLASSES}' holds {c}, not a class index")))
                })
                .collect::<Result<_>>()?;
            file.classes = Some(classes);
        }
        file.read_metadata(&ckpt).map_err(|e| bad(e.to_string()))?;
        Ok(file)
    }

    /// The metadata entries present in `ckpt` (each optional; one present must parse).
    fn read_metadata(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let has = |key: &str| ckpt.metadata.contains_key(key);
        if has("data.range.lo") || has("data.range.hi") {
            self.range = Some(PixelRange::new(
                ckpt.meta_parse("data.range.lo")?,
                ckpt.meta_parse("data.range.hi")?,
            )?);
        }
        self.checkpoint = ckpt.metadata.get("checkpoint").cloned();
        self.sampler = ckpt.metadata.get("sampler").cloned();
        if has("seed") {
            self.seed = Some(ckpt.meta_parse("seed")?);
        }
        if has("sign_changes") {
            self.sign_changes = Some(ckpt.meta_parse("sign_changes")?);
        }
        if has("nonpositive_fraction") {
            self.nonpositive_fraction = Some(ckpt.meta_parse("nonpositive_fraction")?);
        }
        Ok(())
    }

    /// Checks that these are images a model of `image_shape` `[C, H, W]` in `range` makes.
    pub fn check_fits(&self, image_shape: [usize; 3], range: PixelRange) -> Result<()> {
        let [c, h, w] = image_shape;
        if self.shape[1..] != image_shape {
            return Err(Error::invalid(format!(
                "samples have shape {:?}, but the model makes [n, {c}, {h}, {w}] images",
                self.shape
            )));
        }
        if let Some(own) = self.range {
            if own != range {
                return Err(Error::invalid(format!(
                    "samples are in the pixel range [{own}], the model's is [{range}]"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dml-sample-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn example() -> SampleFile {
        let images: Vec<f32> = (0..2 * 3 * 4 * 4).map(|i| 1.0 + i as f32 / 97.0).collect();
        SampleFile {
            classes: Some(vec![3, 0]),
            range: Some(PixelRange::new(1.0, 2.0).unwrap()),
            checkpoint: Some("runs/x/checkpoint.safetensors".into()),
            sampler: Some("adls".into()),
            seed: Some(42),
            sign_changes: Some(7),
            nonpositive_fraction: Some(0.015625),
            ..SampleFile::new([2, 3, 4, 4], images).unwrap()
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let path = temp("round-trip.safetensors");
        let file = example();
        file.save(&path).unwrap();
        assert_eq!(SampleFile::load(&path).unwrap(), file);

        // Without the optional parts.
        let bare = SampleFile::new([1, 1, 2, 2], vec![1.0, 1.5, 1.25, 2.0]).unwrap();
        bare.save(&path).unwrap();
        assert_eq!(SampleFile::load(&path).unwrap(), bare);
    }

    #[test]
    fn a_file_without_the_format_entry_is_read_by_its_samples_tensor() {
        let path = temp("old-writer.safetensors");
        let mut ckpt = Checkpoint::new();
        let t = Tensor::from_vec(vec![1.5; 2 * 4], &[2, 1, 2, 2], &Device::Cpu).unwrap();
        ckpt.put_tensor("samples", &t).unwrap();
        ckpt.put_meta("data.range.lo", "1.0");
        ckpt.put_meta("data.range.hi", "2.0");
        ckpt.put_meta("sign_changes", 3);
        ckpt.save(&path).unwrap();
        let file = SampleFile::load(&path).unwrap();
        assert_eq!(file.shape, [2, 1, 2, 2]);
        assert_eq!(file.range, Some(PixelRange::new(1.0, 2.0).unwrap()));
        assert_eq!(file.sign_changes, Some(3));
    }

    #[test]
    fn a_foreign_file_is_an_error_naming_it() {
        let path = temp("foreign.safetensors");
        let mut ckpt = Checkpoint::new();
        let t = Tensor::from_vec(vec![0.0; 4], &[4], &Device::Cpu).unwrap();
        ckpt.put_tensor("param/begin_conv.weight", &t).unwrap();
        ckpt.put_meta("format", "dml-score-model-1");
        ckpt.save(&path).unwrap();
        let err = SampleFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("foreign.safetensors")
                && err.contains("not a samples file")
                && err.contains("dml-score-model-1"),
            "{err}"
        );

        let mut ckpt = Checkpoint::new();
        ckpt.put_tensor("images", &t).unwrap();
        ckpt.save(&path).unwrap();
        let err = SampleFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("no tensor 'samples'"), "{err}");

        let mut ckpt = Checkpoint::new();
        ckpt.put_tensor("samples", &t).unwrap();
        ckpt.save(&path).unwrap();
        let err = SampleFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("[n, C, H, W]"), "{err}");
    }

    #[test]
    fn check_fits_compares_shape_and_range() {
        let file = example();
        let range = PixelRange::new(1.0, 2.0).unwrap();
        file.check_fits([3, 4, 4], range).unwrap();
        let err = file.check_fits([1, 4, 4], range).unwrap_err().to_string();
        assert!(err.contains("[n, 1, 4, 4]"), "{err}");
        let other = PixelRange::new(1.0, 3.0).unwrap();
        let err = file.check_fits([3, 4, 4], other).unwrap_err().to_string();
        assert!(err.contains("pixel range"), "{err}");
    }
}
