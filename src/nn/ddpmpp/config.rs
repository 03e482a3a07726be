//! DDPM++'s configuration (SPEC section 11): the released CIFAR-10 recipe
//! (`configs/vp/cifar10_ddpmpp_deep_continuous.py`) and a tiny one of the same structure.
use crate::error::{Error, Result};
use crate::nn::Preset;
use crate::ops::ConvPrecision;

/// Everything that fixes DDPM++'s parameter shapes and forward computation. The choices the
/// released configuration fixes and this engine does not vary are constants of the network:
/// BigGAN residual blocks with naive resampling, GroupNorm(min(C/4, 32), eps 1e-6), swish, skip
/// rescaling by 1/sqrt(2), the positional level embedding, centred input, no progressive growing.
#[derive(Clone, Debug, PartialEq)]
pub struct DdpmppConfig {
    pub preset: Preset,
    /// Image channels C (1 or 3).
    pub channels: usize,
    /// H = W.
    pub image_size: usize,
    /// Number of noise levels N; the level index k in [0, N) is embedded.
    pub n_levels: usize,
    /// Base width (`nf`); the level embedding has nf entries, its MLP 4 nf.
    pub nf: usize,
    /// Width of each resolution in units of nf; one resolution per entry, halving the size.
    pub ch_mult: Vec<usize>,
    /// Residual blocks per resolution in the encoder (one more in the decoder).
    pub num_res_blocks: usize,
    /// Image sizes at which the residual blocks are followed by self-attention.
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability inside each residual block while training.
    pub dropout: f32,
    /// The forward arithmetic of every convolution and matrix product (not the parameters).
    pub precision: ConvPrecision,
}

impl DdpmppConfig {
    /// `ddpmpp`: the released deep configuration (nf 128, widths 1, 2, 2, 2, eight blocks per
    /// resolution, attention at 16x16, dropout 0.1; 106.6M parameters at 3x32x32).
    /// `ddpmpp_tiny`: nf 8, widths 1, 2, one block, attention at half the image size, no
    /// dropout: the same structure for tests and CPU runs.
    pub fn new(
        preset: Preset,
        channels: usize,
        image_size: usize,
        n_levels: usize,
    ) -> Result<Self> {
        let (nf, ch_mult, num_res_blocks, attn, dropout) = match preset {
            Preset::Ddpmpp => (128, vec![1, 2, 2, 2], 8, vec![16], 0.1),
            Preset::DdpmppTiny => (8, vec![1, 2], 1, vec![image_size / 2], 0.0),
            other => {
                return Err(Error::invalid(format!(
                    "network preset '{other}' is not a DDPM++ preset"
                )))
            }
        };
        preset.check_channels_and_levels(channels, n_levels)?;
        // Every downsampling halves an even size (score_sde's naive 2x2 mean).
        let halvings = ch_mult.len() - 1;
        if image_size == 0 || !image_size.is_multiple_of(1 << halvings) {
            return Err(Error::invalid(format!(
                "network preset '{preset}': image size {image_size}x{image_size} does not halve \
                 {halvings} time(s) evenly; use a multiple of {}",
                1 << halvings
            )));
        }
        Ok(Self {
            preset,
            channels,
            image_size,
            n_levels,
            nf,
            ch_mult,
            num_res_blocks,
            attn_resolutions: attn,
            dropout,
            precision: ConvPrecision::Fp32,
        })
    }

    /// This network with every convolution and matrix product in `precision`.
    pub fn with_precision(self, precision: ConvPrecision) -> Self {
        Self { precision, ..self }
    }

    /// One line, e.g. "ddpmpp_tiny c1 28x28 L10 nf8".
    pub fn describe(&self) -> String {
        format!(
            "{} c{} {s}x{s} L{} nf{}",
            self.preset,
            self.channels,
            self.n_levels,
            self.nf,
            s = self.image_size
        )
    }

    /// The expected input shape for a batch of `batch` images.
    pub fn input_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.channels, self.image_size, self.image_size]
    }

    /// The image size at each resolution, full size first.
    pub fn resolutions(&self) -> Vec<usize> {
        (0..self.ch_mult.len())
            .map(|i| self.image_size >> i)
            .collect()
    }

    /// Width of the level embedding's MLP and of every residual block's `Dense_0` input.
    pub fn temb_dim(&self) -> usize {
        4 * self.nf
    }
}
