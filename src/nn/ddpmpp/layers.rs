//! DDPM++'s layers with score_sde's initialisation (SPEC section 11), each registering its
//! parameters under score_sde's names and applying itself on a [`Tape`].
use crate::autograd::{ParamStore, Tape, Var};
use crate::error::Result;
use crate::nn::Conv2d;
use crate::ops::{Conv2dCfg, ConvPrecision};

/// GroupNorm's epsilon in every DDPM++ normalisation.
pub const GROUP_NORM_EPS: f32 = 1e-6;

/// score_sde's `default_init(scale)`: variance scaling with fan_avg, uniform, i.e. U(-b, b) with
/// b = sqrt(3 scale / ((fan_in + fan_out) / 2)); scale 0 means 1e-10, so the layers that close a
/// residual branch start almost at zero.
fn default_init_bound(fan_in: usize, fan_out: usize, scale: f32) -> f32 {
    let scale = if scale == 0.0 { 1e-10 } else { scale };
    (3.0 * scale / ((fan_in + fan_out) as f32 / 2.0)).sqrt()
}

/// A `k x k` convolution with padding k / 2 (score_sde's `conv3x3` / `conv1x1`): `{prefix}.weight`
/// [c_out, c_in, k, k] by `default_init(init_scale)`, `{prefix}.bias` [c_out] zero.
pub fn conv(
    store: &mut ParamStore,
    prefix: &str,
    (c_in, c_out, k): (usize, usize, usize),
    init_scale: f32,
    precision: ConvPrecision,
) -> Result<Conv2d> {
    let weight = format!("{prefix}.weight");
    let bias = format!("{prefix}.bias");
    let bound = default_init_bound(c_in * k * k, c_out * k * k, init_scale);
    store.init_uniform(&weight, &[c_out, c_in, k, k], bound)?;
    store.init_constant(&bias, &[c_out], 0.0)?;
    let cfg = Conv2dCfg::same(k, 1).with_precision(precision);
    Ok(Conv2d {
        weight,
        bias: Some(bias),
        cfg,
    })
}

/// `nn.GroupNorm(min(C / 4, 32), C, eps=1e-6)`: `{prefix}.weight` [C] one, `{prefix}.bias` [C]
/// zero.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: String,
    bias: String,
    groups: usize,
}

impl GroupNorm {
    pub fn new(store: &mut ParamStore, prefix: &str, channels: usize) -> Result<Self> {
        let weight = format!("{prefix}.weight");
        let bias = format!("{prefix}.bias");
        store.init_constant(&weight, &[channels], 1.0)?;
        store.init_constant(&bias, &[channels], 0.0)?;
        Ok(Self {
            weight,
            bias,
            groups: (channels / 4).min(32),
        })
    }

    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Var<'p>> {
        let (w, b) = (tape.param(&self.weight)?, tape.param(&self.bias)?);
        tape.group_norm(x, &w, &b, self.groups, GROUP_NORM_EPS)
    }

    /// `swish(forward(x))`, the pairing every residual block and the output use.
    pub fn forward_silu<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Var<'p>> {
        let h = self.forward(tape, x)?;
        tape.silu(&h)
    }
}

/// `nn.Linear(in, out)`: `{prefix}.weight` [out, in] by `default_init()`, `{prefix}.bias` [out]
/// zero.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: String,
    bias: String,
    precision: ConvPrecision,
}

impl Linear {
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        (d_in, d_out): (usize, usize),
        precision: ConvPrecision,
    ) -> Result<Self> {
        let weight = format!("{prefix}.weight");
        let bias = format!("{prefix}.bias");
        store.init_uniform(
            &weight,
            &[d_out, d_in],
            default_init_bound(d_in, d_out, 1.0),
        )?;
        store.init_constant(&bias, &[d_out], 0.0)?;
        Ok(Self {
            weight,
            bias,
            precision,
        })
    }

    /// `x` [B, in] to [B, out]: x W^T + b.
    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Var<'p>> {
        let (w, b) = (tape.param(&self.weight)?, tape.param(&self.bias)?);
        let batch = x.shape()[0];
        let y = tape.matmul(x, &w, false, true, self.precision)?;
        let y = tape.reshape(&y, &[batch, w.shape()[0]])?;
        tape.add_channel_bias(&y, &b)
    }
}

/// score_sde's `NIN`, a 1x1 layer over channels stored the other way round from a convolution:
/// `{prefix}.W` [in, out] by `default_init(init_scale)`, `{prefix}.b` [out] zero.
#[derive(Clone, Debug)]
pub struct Nin {
    weight: String,
    bias: String,
    precision: ConvPrecision,
}

impl Nin {
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        channels: usize,
        init_scale: f32,
        precision: ConvPrecision,
    ) -> Result<Self> {
        let weight = format!("{prefix}.W");
        let bias = format!("{prefix}.b");
        // default_init reads axis 1 as fan-in and axis 0 as fan-out whatever the layout; the
        // layer is square, so the bound is the same either way.
        let bound = default_init_bound(channels, channels, init_scale);
        store.init_uniform(&weight, &[channels, channels], bound)?;
        store.init_constant(&bias, &[channels], 0.0)?;
        Ok(Self {
            weight,
            bias,
            precision,
        })
    }

    /// `x` [B, C_in, P] (P positions) to [B, C_out, P]: W^T x + b.
    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Var<'p>> {
        let (w, b) = (tape.param(&self.weight)?, tape.param(&self.bias)?);
        let y = tape.matmul(&w, x, true, false, self.precision)?;
        tape.add_channel_bias(&y, &b)
    }
}
