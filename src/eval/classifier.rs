//! The classifier whose penultimate activations are the feature space of the evaluation metrics
//! (SPEC section 10): the engine trains it itself on the dataset, so no outside network weights
//! are needed. Two 3x3 conv + ELU + 2x2 mean-pool stages, a fully connected feature layer with
//! ELU, and a linear head, all built from the existing autograd layers: a fully connected layer
//! is a convolution whose kernel covers the whole input (no padding, a 1x1 output), so no new
//! operation (and no new backward pass) is needed.
use std::path::Path;

use crate::autograd::{ParamStore, Tape, Var};
use crate::checkpoint::Checkpoint;
use crate::data::{Batcher, Dataset, PixelRange};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{Conv2d, Conv2dCfg, PoolCfg};
use crate::ops;
use crate::optim::{pair_with_store, AdamW, AdamWConfig};
use crate::tensor::Tensor;

/// Written into every classifier file, so another safetensors file is recognised as such.
const FORMAT_KEY: &str = "format";
const FORMAT: &str = "dml-classifier-1";
const PARAM_PREFIX: &str = "param/";
/// The training data's [`Dataset::fingerprint`]; absent in classifiers saved before it was.
const FINGERPRINT_KEY: &str = "data.fingerprint";
/// Images per forward pass when computing features (bounds the activation memory).
const INFERENCE_BATCH: usize = 256;

/// What a classifier was made for, and its size: everything but the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierSpec {
    /// The dataset's name (or path) as [`Dataset::load`] takes it, for messages.
    pub dataset: String,
    /// The dataset's [`Dataset::fingerprint`], what identifies it; `None` in classifiers saved
    /// before fingerprints were stored, which are matched by `dataset` instead.
    pub fingerprint: Option<String>,
    /// `[C, H, W]` of one image.
    pub image_shape: [usize; 3],
    pub n_classes: usize,
    /// The pixel range the inputs are in (that of the score model being evaluated, SPEC 1).
    pub range: PixelRange,
    /// Output channels of the two conv stages.
    pub conv_widths: [usize; 2],
    /// Size of the feature layer (the penultimate activations).
    pub feature_dim: usize,
}

impl ClassifierSpec {
    /// The default size for `data` in `range`: 16 and 32 channels, 128 features.
    pub fn for_dataset(data: &Dataset, range: PixelRange) -> Self {
        Self {
            dataset: data.name.clone(),
            fingerprint: Some(data.fingerprint()),
            image_shape: [data.channels, data.height, data.width],
            n_classes: data.n_classes,
            range,
            conv_widths: [16, 32],
            feature_dim: 128,
        }
    }

    fn image_len(&self) -> usize {
        self.image_shape.iter().product()
    }

    /// Height and width after the two 2x2 mean-pools (floor, as PyTorch).
    fn pooled_size(&self) -> (usize, usize) {
        (self.image_shape[1] / 4, self.image_shape[2] / 4)
    }

    fn validate(&self) -> Result<()> {
        let (h, w) = self.pooled_size();
        if h == 0 || w == 0 || self.n_classes < 2 || self.feature_dim == 0 {
            return Err(Error::invalid(format!(
                "classifier for {:?} images and {} classes: needs images of at least 4x4 and two \
                 classes",
                self.image_shape, self.n_classes
            )));
        }
        Ok(())
    }

    /// An error unless this classifier was made for `data` (the same content, however its path
    /// is spelled) in `range`: its features mean nothing for other data.
    pub fn check_matches(&self, data: &Dataset, range: PixelRange) -> Result<()> {
        let fingerprint = data.fingerprint();
        let same_data = match &self.fingerprint {
            Some(trained_on) => *trained_on == fingerprint,
            None => self.dataset == data.name,
        };
        let shape = [data.channels, data.height, data.width];
        if !same_data || self.image_shape != shape || self.range != range {
            return Err(Error::invalid(format!(
                "the classifier was trained on '{}' (content {}, {:?} images in [{}]), but the \
                 data is '{}' (content {fingerprint}, {shape:?} images in [{range}]); train one \
                 for this data with `dml train-classifier`",
                self.dataset,
                self.fingerprint.as_deref().unwrap_or("not recorded"),
                self.image_shape,
                self.range,
                data.name,
            )));
        }
        Ok(())
    }

    fn export_to(&self, ckpt: &mut Checkpoint) {
        let [c, h, w] = self.image_shape;
        ckpt.put_meta(FORMAT_KEY, FORMAT);
        ckpt.put_meta("data.name", &self.dataset);
        if let Some(fingerprint) = &self.fingerprint {
            ckpt.put_meta(FINGERPRINT_KEY, fingerprint);
        }
        ckpt.put_meta("data.channels", c);
        ckpt.put_meta("data.height", h);
        ckpt.put_meta("data.width", w);
        ckpt.put_meta("data.classes", self.n_classes);
        ckpt.put_meta("data.range.lo", format!("{:?}", self.range.lo));
        ckpt.put_meta("data.range.hi", format!("{:?}", self.range.hi));
        ckpt.put_meta(
            "net.conv_widths",
            format!("{},{}", self.conv_widths[0], self.conv_widths[1]),
        );
        ckpt.put_meta("net.feature_dim", self.feature_dim);
    }

    fn import_from(ckpt: &Checkpoint) -> Result<Self> {
        if ckpt.meta(FORMAT_KEY).ok() != Some(FORMAT) {
            return Err(Error::invalid(format!(
                "not a dml classifier (metadata '{FORMAT_KEY}' is not '{FORMAT}')"
            )));
        }
        let widths = ckpt.meta("net.conv_widths")?;
        let parsed: Vec<usize> = widths.split(',').filter_map(|w| w.parse().ok()).collect();
        let &[w0, w1] = parsed.as_slice() else {
            return Err(Error::invalid(format!(
                "metadata 'net.conv_widths' = '{widths}': expected two integers"
            )));
        };
        let spec = Self {
            dataset: ckpt.meta("data.name")?.to_string(),
            fingerprint: ckpt.metadata.get(FINGERPRINT_KEY).cloned(),
            image_shape: [
                ckpt.meta_parse("data.channels")?,
                ckpt.meta_parse("data.height")?,
                ckpt.meta_parse("data.width")?,
            ],
            n_classes: ckpt.meta_parse("data.classes")?,
            range: PixelRange::new(
                ckpt.meta_parse("data.range.lo")?,
                ckpt.meta_parse("data.range.hi")?,
            )?,
            conv_widths: [w0, w1],
            feature_dim: ckpt.meta_parse("net.feature_dim")?,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// How the classifier is trained: AdamW on deterministic batches of the training split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassifierTraining {
    pub steps: u64,
    pub batch: usize,
    pub lr: f32,
    /// Seeds the initialisation and the batch order: same seed, same classifier.
    pub seed: u64,
}

impl Default for ClassifierTraining {
    /// About 300 steps of 64 reach above 80% test accuracy on Fashion-MNIST in well under a
    /// minute on a CPU.
    fn default() -> Self {
        Self {
            steps: 300,
            batch: 64,
            lr: 3e-3,
            seed: 0,
        }
    }
}

/// The layers, by parameter names in a [`ParamStore`].
struct Layers {
    conv1: Conv2d,
    conv2: Conv2d,
    /// Fully connected: a convolution whose kernel is the whole pooled map.
    features: Conv2d,
    /// Fully connected on the [B, F, 1, 1] features: a 1x1 convolution.
    head: Conv2d,
}

impl Layers {
    fn new(store: &mut ParamStore, spec: &ClassifierSpec) -> Result<Self> {
        let [c, _, _] = spec.image_shape;
        let [w1, w2] = spec.conv_widths;
        let (ph, pw) = spec.pooled_size();
        let same3 = Conv2dCfg::same(3, 1);
        let conv1 = Conv2d::new(store, "conv1", c, w1, 3, same3, true)?;
        let conv2 = Conv2d::new(store, "conv2", w1, w2, 3, same3, true)?;
        // A non-square pooled map needs a non-square kernel: register the weight directly, with
        // Conv2d's initialisation bound 1/sqrt(fan_in).
        let bound = 1.0 / ((w2 * ph * pw) as f32).sqrt();
        store.init_uniform("features.weight", &[spec.feature_dim, w2, ph, pw], bound)?;
        store.init_uniform("features.bias", &[spec.feature_dim], bound)?;
        let features = Conv2d {
            weight: "features.weight".into(),
            bias: Some("features.bias".into()),
            cfg: Conv2dCfg::default(),
        };
        let head = Conv2d::new(
            store,
            "head",
            spec.feature_dim,
            spec.n_classes,
            1,
            Conv2dCfg::default(),
            true,
        )?;
        Ok(Self {
            conv1,
            conv2,
            features,
            head,
        })
    }
}

/// The trained network with what it was made for.
pub struct Classifier {
    pub spec: ClassifierSpec,
    /// Accuracy on the test split measured after training, when it was measured.
    pub test_accuracy: Option<f64>,
    /// Optimiser steps it was trained for.
    pub steps: u64,
    layers: Layers,
    store: ParamStore,
}

/// The two outputs of a forward pass: `[B, F, 1, 1]` features and `[B, K, 1, 1]` logits.
struct Forward<'p> {
    features: Var<'p>,
    logits: Var<'p>,
}

impl Classifier {
    /// A freshly initialised classifier (parameters drawn from `seed`).
    pub fn new(spec: ClassifierSpec, device: &Device, seed: u64) -> Result<Self> {
        spec.validate()?;
        let mut store = ParamStore::new(device, seed);
        let layers = Layers::new(&mut store, &spec)?;
        Ok(Self {
            spec,
            test_accuracy: None,
            steps: 0,
            layers,
            store,
        })
    }

    /// Trains a classifier of `spec` on `train` (images mapped into `spec.range`).
    /// `progress(step, loss)` is called after every step.
    pub fn train(
        spec: ClassifierSpec,
        train: &Dataset,
        training: ClassifierTraining,
        device: &Device,
        progress: &mut dyn FnMut(u64, f32),
    ) -> Result<Self> {
        let mut classifier = Self::new(spec, device, training.seed)?;
        classifier.check_dataset(train)?;
        let mut batcher = Batcher::new(
            train.n,
            training.batch,
            training.seed,
            classifier.spec.range,
        )?;
        let mut optimizer = AdamW::new(AdamWConfig::new(training.lr));
        for step in 0..training.steps {
            let batch = batcher.batch(train, step, device)?;
            let labels: Vec<f32> = batch.labels.iter().map(|&l| l as f32).collect();
            let labels = Tensor::from_vec(labels, &[batch.labels.len()], device)?;
            let loss = classifier.optimiser_step(&mut optimizer, batch.images, &labels)?;
            if !loss.is_finite() {
                return Err(Error::invalid(format!(
                    "classifier training diverged at step {}: loss {loss} (lower --lr)",
                    step + 1
                )));
            }
            classifier.steps = step + 1;
            progress(step + 1, loss);
        }
        Ok(classifier)
    }

    /// One AdamW step on `images` [B, C, H, W] with `labels` [B]; returns the batch loss.
    fn optimiser_step(
        &mut self,
        optimizer: &mut AdamW,
        images: Tensor,
        labels: &Tensor,
    ) -> Result<f32> {
        let (loss, grads) = {
            let mut tape = Tape::new(&self.store);
            let x = tape.constant(images);
            let out = self.forward(&mut tape, &x)?;
            let shape = out.logits.shape().to_vec();
            let logits = ops::copy(out.logits.value())?.reshape(&shape[..2])?;
            let (loss, dlogits) = ops::softmax_cross_entropy(&logits, labels)?;
            let grads = tape.backward(&out.logits, dlogits.reshape(&shape)?)?;
            (loss.item()?, grads)
        };
        let mut pairs = pair_with_store(&mut self.store, &grads)?;
        optimizer.step(&mut pairs, 1.0)?;
        Ok(loss)
    }

    fn forward<'p>(&'p self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Forward<'p>> {
        let pool = PoolCfg::MEAN_POOL_2X2;
        // Inputs from [lo, hi] to [-1, 1], whatever range the score model uses.
        let PixelRange { lo, hi } = self.spec.range;
        let scale = 2.0 / (hi - lo);
        let h = tape.affine(x, scale, -1.0 - lo * scale)?;
        let h = self.layers.conv1.forward(tape, &h)?;
        let h = tape.elu(&h)?;
        let h = tape.avg_pool2d(&h, pool)?;
        let h = self.layers.conv2.forward(tape, &h)?;
        let h = tape.elu(&h)?;
        let h = tape.avg_pool2d(&h, pool)?;
        let h = self.layers.features.forward(tape, &h)?;
        let features = tape.elu(&h)?;
        let logits = self.layers.head.forward(tape, &features)?;
        Ok(Forward { features, logits })
    }

    /// Features `[n, F]` (row-major) and logits `[n, K]` of `images`, `n` concatenated CHW
    /// images in the classifier's pixel range.
    pub fn features_and_logits(&self, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let d = self.spec.image_len();
        if images.is_empty() || !images.len().is_multiple_of(d) {
            return Err(Error::shape(
                "classifier features",
                format!(
                    "{} values are not a positive number of {:?} images",
                    images.len(),
                    self.spec.image_shape
                ),
            ));
        }
        let [c, h, w] = self.spec.image_shape;
        let (mut features, mut logits) = (Vec::new(), Vec::new());
        for chunk in images.chunks(INFERENCE_BATCH * d) {
            let mut tape = Tape::inference(&self.store);
            let x = Tensor::from_slice(chunk, &[chunk.len() / d, c, h, w], self.store.device())?;
            let x = tape.constant(x);
            let out = self.forward(&mut tape, &x)?;
            features.extend(out.features.value().to_vec()?);
            logits.extend(out.logits.value().to_vec()?);
        }
        Ok((features, logits))
    }

    /// The feature vectors (penultimate activations) of `images`, `[n, F]` row-major.
    pub fn features(&self, images: &[f32]) -> Result<Vec<f32>> {
        Ok(self.features_and_logits(images)?.0)
    }

    /// The fraction of `data`'s images classified correctly (at most `max_images` of them).
    pub fn accuracy(&self, data: &Dataset, max_images: usize) -> Result<f64> {
        self.check_dataset(data)?;
        let indices: Vec<usize> = (0..data.n.min(max_images)).collect();
        let labels: Vec<u8> = indices.iter().map(|&i| data.labels[i]).collect();
        let (_, logits) =
            self.features_and_logits(&data.images_in_range(&indices, self.spec.range))?;
        Ok(accuracy_of(&logits, &labels, self.spec.n_classes))
    }

    /// An error unless `data` has this classifier's image shape and classes.
    pub fn check_dataset(&self, data: &Dataset) -> Result<()> {
        let shape = [data.channels, data.height, data.width];
        if shape != self.spec.image_shape || data.n_classes != self.spec.n_classes {
            return Err(Error::invalid(format!(
                "classifier for {:?} images of {} classes ('{}') used on '{}' with {:?} images of \
                 {} classes",
                self.spec.image_shape,
                self.spec.n_classes,
                self.spec.dataset,
                data.name,
                shape,
                data.n_classes
            )));
        }
        Ok(())
    }

    /// Writes the weights and the spec (dataset, image shape, classes, range, accuracy) to a
    /// safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut ckpt = Checkpoint::new();
        self.spec.export_to(&mut ckpt);
        ckpt.put_meta("train.steps", self.steps);
        ckpt.put_meta("train.seed", self.store.seed());
        if let Some(acc) = self.test_accuracy {
            ckpt.put_meta("test_accuracy", format!("{acc:?}"));
        }
        for (name, t) in self.store.iter() {
            ckpt.put_tensor(format!("{PARAM_PREFIX}{name}"), t)?;
        }
        ckpt.save(path)
    }

    /// The classifier a file written by [`Classifier::save`] holds, on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let ckpt = Checkpoint::load(path)?;
        let in_file = |e: Error| Error::file(path, e.to_string());
        let spec = ClassifierSpec::import_from(&ckpt).map_err(in_file)?;
        let mut classifier = Self::new(spec, device, ckpt.meta_parse("train.seed")?)?;
        let names: Vec<String> = classifier.store.names().map(str::to_string).collect();
        for name in names {
            let shape = classifier.store.get(&name)?.shape().to_vec();
            let t = ckpt.tensor(&format!("{PARAM_PREFIX}{name}"), &shape, device)?;
            classifier.store.set(&name, t)?;
        }
        classifier.steps = ckpt.meta_parse("train.steps")?;
        classifier.test_accuracy = match ckpt.meta("test_accuracy") {
            Ok(_) => Some(ckpt.meta_parse("test_accuracy")?),
            Err(_) => None,
        };
        Ok(classifier)
    }
}

/// The class of each row of `logits` ([n, classes]): where its largest entry is.
pub(super) fn predicted_classes(
    logits: &[f32],
    classes: usize,
) -> impl Iterator<Item = usize> + '_ {
    logits.chunks_exact(classes).map(|row| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    })
}

/// The fraction of rows of `logits` ([n, classes]) whose largest entry is at the label.
pub fn accuracy_of(logits: &[f32], labels: &[u8], classes: usize) -> f64 {
    let correct = predicted_classes(logits, classes)
        .zip(labels)
        .filter(|&(class, &label)| class == label as usize)
        .count();
    correct as f64 / labels.len().max(1) as f64
}
