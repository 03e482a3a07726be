//! The score network s_theta(x, k) a model trains, whichever architecture its preset names: NCSN
//! (SPEC section 9) or DDPM++ (section 11). One configuration and one network type, so that the
//! trainer, the samplers and checkpoints do not care which.
use super::ddpmpp::{Ddpmpp, DdpmppConfig};
use super::ncsn::{Ncsn, NcsnConfig};
use super::preset::{Family, Preset};
use crate::autograd::{ParamStore, Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::{ConvPrecision, PhiloxDraw};

/// What fixes a score network's parameters and forward computation.
#[derive(Clone, Debug, PartialEq)]
pub enum ScoreNetConfig {
    Ncsn(NcsnConfig),
    Ddpmpp(DdpmppConfig),
}

impl ScoreNetConfig {
    /// The network `preset` names, sized for `channels` x `image_size`^2 images and `n_levels`
    /// levels; an error names what the preset does not support.
    pub fn new(
        preset: Preset,
        channels: usize,
        image_size: usize,
        n_levels: usize,
    ) -> Result<Self> {
        Ok(match preset.family() {
            Family::Ncsn => Self::Ncsn(NcsnConfig::new(preset, channels, image_size, n_levels)?),
            Family::Ddpmpp => {
                Self::Ddpmpp(DdpmppConfig::new(preset, channels, image_size, n_levels)?)
            }
        })
    }

    pub fn preset(&self) -> Preset {
        match self {
            Self::Ncsn(c) => c.preset,
            Self::Ddpmpp(c) => c.preset,
        }
    }

    pub fn channels(&self) -> usize {
        match self {
            Self::Ncsn(c) => c.channels,
            Self::Ddpmpp(c) => c.channels,
        }
    }

    pub fn image_size(&self) -> usize {
        match self {
            Self::Ncsn(c) => c.image_size,
            Self::Ddpmpp(c) => c.image_size,
        }
    }

    pub fn n_levels(&self) -> usize {
        match self {
            Self::Ncsn(c) => c.n_levels,
            Self::Ddpmpp(c) => c.n_levels,
        }
    }

    pub fn precision(&self) -> ConvPrecision {
        match self {
            Self::Ncsn(c) => c.precision,
            Self::Ddpmpp(c) => c.precision,
        }
    }

    /// This network with its convolutions (and DDPM++'s matrix products) in `precision`.
    pub fn with_precision(self, precision: ConvPrecision) -> Self {
        match self {
            Self::Ncsn(c) => Self::Ncsn(c.with_precision(precision)),
            Self::Ddpmpp(c) => Self::Ddpmpp(c.with_precision(precision)),
        }
    }

    /// One line, e.g. "tiny c1 28x28 L10 ngf8" or "ddpmpp_tiny c3 32x32 L10 nf8".
    pub fn describe(&self) -> String {
        match self {
            Self::Ncsn(c) => c.describe(),
            Self::Ddpmpp(c) => c.describe(),
        }
    }

    /// The expected input shape for a batch of `batch` images.
    pub fn input_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.channels(), self.image_size(), self.image_size()]
    }

    /// Checks a forward pass's inputs: the shape always; the level values where they can be read
    /// without a device round trip (on the kernel devices an invalid level makes that sample's
    /// output NaN, see nn::norm, or embeds a level the network never saw).
    pub fn check_inputs(&self, op: &'static str, x: &Var<'_>, levels: &Var<'_>) -> Result<()> {
        let batch = x.shape().first().copied().unwrap_or(0);
        if batch == 0 || x.shape() != self.input_shape(batch) {
            return Err(Error::shape(
                op,
                format!(
                    "input {:?} does not fit the network '{}' (want [B, {}, {s}, {s}] with B >= 1)",
                    x.shape(),
                    self.describe(),
                    self.channels(),
                    s = self.image_size()
                ),
            ));
        }
        if levels.shape() != [batch] {
            return Err(Error::shape(
                op,
                format!(
                    "levels {:?} for a batch of {batch} (want [{batch}])",
                    levels.shape()
                ),
            ));
        }
        if let Device::Cpu = levels.value().device() {
            let n = self.n_levels();
            if let Some(bad) = levels
                .value()
                .host()?
                .iter()
                .find(|&&k| !(k >= 0.0 && k.fract() == 0.0 && (k as usize) < n))
            {
                return Err(Error::invalid(format!(
                    "{op}: level {bad} is not an integer in [0, {n}) for '{}'",
                    self.describe()
                )));
            }
        }
        Ok(())
    }
}

/// A score network with its parameters registered in a [`ParamStore`].
pub enum ScoreNet {
    Ncsn(Ncsn),
    Ddpmpp(Ddpmpp),
}

impl ScoreNet {
    /// Registers and initialises the network's parameters in `store` under PyTorch's names (the
    /// reference implementation's for NCSN, score_sde's for DDPM++).
    pub fn new(store: &mut ParamStore, cfg: &ScoreNetConfig) -> Result<Self> {
        Ok(match cfg {
            ScoreNetConfig::Ncsn(c) => Self::Ncsn(Ncsn::new(store, c)?),
            ScoreNetConfig::Ddpmpp(c) => Self::Ddpmpp(Ddpmpp::new(store, c)?),
        })
    }

    /// The score [B, C, H, W] of `x` at the level indices `k` [B] (a constant), in inference.
    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>, k: &Var<'p>) -> Result<Var<'p>> {
        match self {
            Self::Ncsn(net) => net.forward(tape, x, k),
            Self::Ddpmpp(net) => net.forward(tape, x, k),
        }
    }

    /// [`Self::forward`] in a training step: DDPM++'s dropout draws its masks from `draw` (the
    /// DROPOUT stream at the training step); NCSN has no dropout.
    pub fn forward_train<'p>(
        &self,
        tape: &mut Tape<'p>,
        x: &Var<'p>,
        k: &Var<'p>,
        draw: PhiloxDraw,
    ) -> Result<Var<'p>> {
        match self {
            Self::Ncsn(net) => net.forward(tape, x, k),
            Self::Ddpmpp(net) => net.forward_train(tape, x, k, draw),
        }
    }
}
