//! A trained score model as a checkpoint holds it: the network's configuration, the objective, the
//! data range, the sampler initialisations fitted on the training set (SPEC 4), and the weights.
use std::path::Path;

use super::objective::Objective;
use crate::autograd::{ParamStore, Tape};
use crate::checkpoint::Checkpoint;
use crate::data::{Dataset, PixelRange};
use crate::device::Device;
use crate::diffusion::samplers::LogNormalInit;
use crate::error::{Error, Result};
use crate::nn::{Preset, ScoreNet, ScoreNetConfig};
use crate::ops::{self, ConvPrecision};
use crate::tensor::Tensor;

/// Checkpoint tensor prefix of the trained weights (the EMA weights are under `ema/`).
pub const PARAM_PREFIX: &str = "param/";
pub const EMA_PREFIX: &str = "ema/";
const CLASS_MEANS: &str = "data/class_means";
/// The network's convolution precision; absent in checkpoints written before it was stored,
/// which were trained in fp32.
const CONV_PRECISION_KEY: &str = "net.conv_precision";
/// The training set's [`Dataset::fingerprint`]; absent in checkpoints written before it was.
const FINGERPRINT_KEY: &str = "data.fingerprint";
/// Written into every checkpoint, so a foreign safetensors file is recognised as such.
const FORMAT_KEY: &str = "format";
const FORMAT: &str = "dml-score-model-1";

/// Everything about a model except its weights and training state.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub net: ScoreNetConfig,
    pub objective: Objective,
    pub range: PixelRange,
    /// The training set's name (or path), for messages and evaluation defaults.
    pub dataset: String,
    /// The training set's [`Dataset::fingerprint`], what identifies it on resume; `None` in
    /// checkpoints saved before it was stored.
    pub fingerprint: Option<String>,
    pub n_classes: usize,
    /// The log-normal initialisation of `x_{N-1}` (GBM only).
    pub lognormal: Option<LogNormalInit>,
    /// `[n_classes, C, H, W]`: the mean training image of each class, in the pixel range.
    pub class_means: Vec<f32>,
}

impl ModelSpec {
    /// The spec for training `preset` on `data` with `objective`: the network is sized to the
    /// images (a size the preset does not support is an error naming it), the initialisations
    /// are fitted on the whole training set.
    pub fn for_dataset(
        preset: Preset,
        data: &Dataset,
        objective: Objective,
        range: PixelRange,
    ) -> Result<Self> {
        objective.diffusion().check_range(range)?;
        if data.height != data.width {
            return Err(Error::invalid(format!(
                "dataset '{}' has {}x{} images; the network needs square 28x28 or 32x32 images",
                data.name, data.height, data.width
            )));
        }
        let net = ScoreNetConfig::new(preset, data.channels, data.height, objective.n_levels())
            .map_err(|e| {
                Error::invalid(format!(
                    "dataset '{}' ({} channel(s), {}x{}) does not fit preset '{}': {e}",
                    data.name,
                    data.channels,
                    data.height,
                    data.width,
                    preset.name()
                ))
            })?;
        let lognormal = match &objective {
            Objective::Gbm { schedule, .. } => {
                let stats = data.log_stats(range);
                let means: Vec<f64> = stats.iter().map(|s| s.mean).collect();
                let vars: Vec<f64> = stats.iter().map(|s| s.var).collect();
                Some(LogNormalInit::from_log_moments(&means, &vars, schedule)?)
            }
            Objective::Additive { .. } => None,
        };
        Ok(Self {
            net,
            objective,
            range,
            dataset: data.name.clone(),
            fingerprint: Some(data.fingerprint()),
            n_classes: data.n_classes,
            lognormal,
            class_means: data.class_means(range)?,
        })
    }

    /// This spec with the network's convolutions in `precision`.
    pub fn with_precision(mut self, precision: ConvPrecision) -> Self {
        self.net = self.net.with_precision(precision);
        self
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        let [_, c, h, w] = self.net.input_shape(1);
        [c, h, w]
    }

    pub fn class_means_tensor(&self, device: &Device) -> Result<Tensor> {
        let [c, h, w] = self.image_shape();
        Tensor::from_slice(&self.class_means, &[self.n_classes, c, h, w], device)
    }

    pub fn export_to(&self, ckpt: &mut Checkpoint) -> Result<()> {
        ckpt.put_meta(FORMAT_KEY, FORMAT);
        ckpt.put_meta("net.preset", self.net.preset().name());
        ckpt.put_meta("net.channels", self.net.channels());
        ckpt.put_meta("net.image_size", self.net.image_size());
        ckpt.put_meta("net.levels", self.net.n_levels());
        ckpt.put_meta(CONV_PRECISION_KEY, self.net.precision().name());
        ckpt.put_meta("data.name", &self.dataset);
        if let Some(fingerprint) = &self.fingerprint {
            ckpt.put_meta(FINGERPRINT_KEY, fingerprint);
        }
        ckpt.put_meta("data.classes", self.n_classes);
        ckpt.put_meta("data.range.lo", format!("{:?}", self.range.lo));
        ckpt.put_meta("data.range.hi", format!("{:?}", self.range.hi));
        self.objective.export_to(ckpt);
        if let Some(init) = &self.lognormal {
            for (k, v) in init.describe() {
                ckpt.put_meta(k, v);
            }
        }
        ckpt.put_tensor(CLASS_MEANS, &self.class_means_tensor(&Device::Cpu)?)
    }

    pub fn import_from(ckpt: &Checkpoint) -> Result<Self> {
        if ckpt.meta(FORMAT_KEY).ok() != Some(FORMAT) {
            return Err(Error::invalid(format!(
                "not a dml score-model checkpoint (metadata '{FORMAT_KEY}' is not '{FORMAT}')"
            )));
        }
        let preset = Preset::parse(ckpt.meta("net.preset")?)?;
        let objective = Objective::import_from(ckpt)?;
        let precision = match ckpt.metadata.get(CONV_PRECISION_KEY) {
            Some(name) => ConvPrecision::parse(name)?,
            None => ConvPrecision::Fp32,
        };
        let net = ScoreNetConfig::new(
            preset,
            ckpt.meta_parse("net.channels")?,
            ckpt.meta_parse("net.image_size")?,
            ckpt.meta_parse("net.levels")?,
        )?
        .with_precision(precision);
        if net.n_levels() != objective.n_levels() {
            return Err(Error::invalid(format!(
                "checkpoint is inconsistent: network has {} level classes, the diffusion {} levels",
                net.n_levels(),
                objective.n_levels()
            )));
        }
        let range = PixelRange::new(
            ckpt.meta_parse("data.range.lo")?,
            ckpt.meta_parse("data.range.hi")?,
        )?;
        let pairs = ckpt.metadata_pairs();
        let lognormal = match objective {
            Objective::Gbm { .. } => Some(LogNormalInit::from_describe(&pairs)?),
            Objective::Additive { .. } => None,
        };
        let n_classes: usize = ckpt.meta_parse("data.classes")?;
        let [_, c, h, w] = net.input_shape(n_classes);
        let shape = [n_classes, c, h, w];
        let class_means = ckpt.tensor(CLASS_MEANS, &shape, &Device::Cpu)?.to_vec()?;
        Ok(Self {
            net,
            objective,
            range,
            dataset: ckpt.meta("data.name")?.to_string(),
            fingerprint: ckpt.metadata.get(FINGERPRINT_KEY).cloned(),
            n_classes,
            lognormal,
            class_means,
        })
    }
}

crate::named::value_names! {
    /// Which weights of a checkpoint to use.
    pub enum Weights {
        /// The exponential moving average (what one samples from).
        Ema = "ema" => "the exponential moving average of the weights",
        /// The optimiser's current weights.
        Raw = "raw" => "the optimiser's current weights",
    }
}

impl Weights {
    fn prefix(self) -> &'static str {
        match self {
            Self::Ema => EMA_PREFIX,
            Self::Raw => PARAM_PREFIX,
        }
    }
}

/// A network with its weights, ready to evaluate.
pub struct ScoreModel {
    pub spec: ModelSpec,
    pub net: ScoreNet,
    pub store: ParamStore,
}

impl ScoreModel {
    /// The most bytes of tensors one image's network pass holds at once, measured on one image
    /// at level 1 (nothing of the model changes): the forward pass alone, or with `backward`
    /// the forward and backward passes of a training step. Activations grow linearly with the
    /// batch, so this times the batch estimates what a batch needs.
    pub fn peak_bytes_per_image(&self, backward: bool) -> Result<u64> {
        let device = self.store.device().clone();
        let (pass, bytes) = crate::tensor::memory::high_water(|| -> Result<()> {
            let mut tape = Tape::new(&self.store);
            let shape = self.spec.net.input_shape(1);
            let pixels = vec![self.spec.range.lo; shape.iter().product()];
            let x = tape.constant(Tensor::from_vec(pixels, &shape, &device)?);
            let levels = tape.constant(Tensor::from_vec(vec![1.0], &[1], &device)?);
            let out = self.net.forward(&mut tape, &x, &levels)?;
            if backward {
                let grad = Tensor::from_vec(vec![1.0; out.value().numel()], out.shape(), &device)?;
                drop(tape.backward(&out, grad)?);
            }
            Ok(())
        });
        pass?;
        Ok(bytes as u64)
    }

    /// A freshly initialised model (parameters drawn from `seed`).
    pub fn new(spec: ModelSpec, device: &Device, seed: u64) -> Result<Self> {
        let mut store = ParamStore::new(device, seed);
        let net = ScoreNet::new(&mut store, &spec.net)?;
        Ok(Self { spec, net, store })
    }

    /// The model a checkpoint file holds, with the chosen weights, on `device`. Its convolutions
    /// run in `precision` when given, else in the precision it was trained with.
    pub fn load(
        path: &Path,
        weights: Weights,
        precision: Option<ConvPrecision>,
        device: &Device,
    ) -> Result<Self> {
        let ckpt = Checkpoint::load(path)?;
        Self::from_checkpoint(&ckpt, weights, precision, device).map_err(|e| e.in_file(path))
    }

    /// [`Self::load`] from a checkpoint in memory (a training run's, to evaluate it as it goes).
    pub fn from_checkpoint(
        ckpt: &Checkpoint,
        weights: Weights,
        precision: Option<ConvPrecision>,
        device: &Device,
    ) -> Result<Self> {
        let mut spec = ModelSpec::import_from(ckpt)?;
        if let Some(precision) = precision {
            spec.net = spec.net.with_precision(precision);
        }
        let mut model = Self::new(spec, device, 0)?;
        model.read_weights(ckpt, weights.prefix(), device)?;
        Ok(model)
    }

    /// Replaces every parameter by the checkpoint tensor `{prefix}{name}`; a missing tensor or
    /// a shape that does not match the network is an error naming it.
    pub fn read_weights(&mut self, ckpt: &Checkpoint, prefix: &str, device: &Device) -> Result<()> {
        let names: Vec<String> = self.store.names().map(str::to_string).collect();
        for name in names {
            let shape = self.store.get(&name)?.shape().to_vec();
            let t = ckpt.tensor(&format!("{prefix}{name}"), &shape, device)?;
            self.store.set(&name, t)?;
        }
        Ok(())
    }

    pub fn write_weights(&self, ckpt: &mut Checkpoint, prefix: &str) -> Result<()> {
        for (name, t) in self.store.iter() {
            ckpt.put_tensor(format!("{prefix}{name}"), t)?;
        }
        Ok(())
    }

    /// The network's output at `x` [B, C, H, W] for per-sample level indices (no gradients).
    pub fn output(&self, x: &Tensor, levels: &[usize]) -> Result<Tensor> {
        let lv: Vec<f32> = levels.iter().map(|&k| k as f32).collect();
        self.output_at(x, &Tensor::from_vec(lv, &[levels.len()], x.device())?)
    }

    /// [`Self::output`] with the level indices as a tensor [B] on `x`'s device: device work
    /// only, no copy from the host, so a sampler step may capture it (docs/DESIGN.md section 10).
    pub fn output_at(&self, x: &Tensor, levels: &Tensor) -> Result<Tensor> {
        let mut tape = Tape::inference(&self.store);
        let levels = tape.constant(ops::copy(levels)?);
        let x = tape.constant(ops::copy(x)?);
        let out = self.net.forward(&mut tape, &x, &levels)?;
        ops::copy(out.value())
    }
}
