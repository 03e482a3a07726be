//! ncsn's `ConditionalResidualBlock` (reference/NETWORK.md section 4, SPEC section 9): a
//! pre-activation residual block conditioned on the level through two CIN++ layers.
//!
//! ```text
//! h = conv1(elu(normalize1(x)))
//! h = conv2(elu(normalize2(h)))
//! out = shortcut(x) + h
//! ```
use super::config::ResidualSpec;
use crate::autograd::{ParamStore, Tape, Var};
use crate::error::{Error, Result};
use crate::nn::layers::{CondInstanceNormPp, Conv2d};
use crate::ops::conv::Conv2dCfg;
use crate::ops::pool::PoolCfg;
use crate::ops::ConvPrecision;

/// A convolution optionally followed by ncsn's 2x2 mean pool (`ConvMeanPool`, whose convolution
/// is registered as `{prefix}.conv`).
#[derive(Clone, Debug)]
struct MaybePooledConv {
    conv: Conv2d,
    mean_pool: bool,
}

impl MaybePooledConv {
    fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Var<'p>> {
        let h = self.conv.forward(tape, x)?;
        if self.mean_pool {
            tape.avg_pool2d(&h, PoolCfg::MEAN_POOL_2X2)
        } else {
            Ok(h)
        }
    }

    /// `forward(x) + residual`, the convolution and the sum fused when no pool comes between
    /// them ([`Conv2d::forward_add`]).
    fn forward_add<'p>(
        &self,
        tape: &mut Tape<'p>,
        x: &Var<'p>,
        residual: &Var<'p>,
    ) -> Result<Var<'p>> {
        if self.mean_pool {
            let h = self.forward(tape, x)?;
            tape.add(residual, &h)
        } else {
            self.conv.forward_add(tape, x, residual)
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConditionalResidualBlock {
    normalize1: CondInstanceNormPp,
    conv1: Conv2d,
    normalize2: CondInstanceNormPp,
    conv2: MaybePooledConv,
    shortcut: Option<MaybePooledConv>,
}

impl ConditionalResidualBlock {
    /// Registers the block's parameters under `prefix` in ncsn's state_dict order: conv1,
    /// normalize2, conv2, shortcut, normalize1. `f` converts the spec's widths to channels; every
    /// convolution's forward pass runs in `precision`.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        spec: ResidualSpec,
        f: usize,
        n_levels: usize,
        precision: ConvPrecision,
    ) -> Result<Self> {
        let (a, b) = (spec.in_mult * f, spec.out_mult * f);
        let conv = |store: &mut ParamStore, name: &str, c_in, c_out, k, d| {
            Conv2d::new(
                store,
                &format!("{prefix}.{name}"),
                c_in,
                c_out,
                k,
                Conv2dCfg::same(k, d).with_precision(precision),
                true,
            )
        };
        let plain = |conv: Conv2d| MaybePooledConv {
            conv,
            mean_pool: false,
        };
        let pooled = |conv: Conv2d| MaybePooledConv {
            conv,
            mean_pool: true,
        };
        let (conv1, normalize2, conv2, shortcut) = match (spec.down, spec.dilation) {
            // Halves the resolution: both paths end in a 2x2 mean pool.
            (true, None) => {
                let conv1 = conv(store, "conv1", a, a, 3, 1)?;
                let norm2 =
                    CondInstanceNormPp::new(store, &format!("{prefix}.normalize2"), a, n_levels)?;
                let conv2 = pooled(conv(store, "conv2.conv", a, b, 3, 1)?);
                let shortcut = pooled(conv(store, "shortcut.conv", a, b, 1, 1)?);
                (conv1, norm2, conv2, Some(shortcut))
            }
            // ncsn replaces the pooled convolutions by dilated ones: no downsampling.
            (true, Some(d)) => {
                let conv1 = conv(store, "conv1", a, a, 3, d)?;
                let norm2 =
                    CondInstanceNormPp::new(store, &format!("{prefix}.normalize2"), a, n_levels)?;
                let conv2 = plain(conv(store, "conv2", a, b, 3, d)?);
                let shortcut = plain(conv(store, "shortcut", a, b, 3, d)?);
                (conv1, norm2, conv2, Some(shortcut))
            }
            (false, dilation) => {
                if a != b && dilation.is_none() {
                    return Err(Error::invalid(format!(
                        "{prefix}: an undilated block that does not downsample must keep its width \
                         ({a} -> {b})"
                    )));
                }
                let d = dilation.unwrap_or(1);
                let conv1 = conv(store, "conv1", a, b, 3, d)?;
                let norm2 =
                    CondInstanceNormPp::new(store, &format!("{prefix}.normalize2"), b, n_levels)?;
                let conv2 = plain(conv(store, "conv2", b, b, 3, d)?);
                let shortcut = if a != b {
                    Some(plain(conv(store, "shortcut", a, b, 3, d)?))
                } else {
                    None
                };
                (conv1, norm2, conv2, shortcut)
            }
        };
        let normalize1 =
            CondInstanceNormPp::new(store, &format!("{prefix}.normalize1"), a, n_levels)?;
        Ok(Self {
            normalize1,
            conv1,
            normalize2,
            conv2,
            shortcut,
        })
    }

    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>, k: &Var<'p>) -> Result<Var<'p>> {
        let h = self.normalize1.forward_elu(tape, x, k)?;
        let h = self.conv1.forward(tape, &h)?;
        let h = self.normalize2.forward_elu(tape, &h, k)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(tape, x)?,
            None => x.clone(),
        };
        self.conv2.forward_add(tape, &h, &skip)
    }
}
