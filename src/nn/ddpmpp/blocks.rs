//! DDPM++'s two blocks (SPEC section 11): score_sde's `ResnetBlockBigGANpp` with naive resampling
//! and `AttnBlockpp`, both closing with skip rescaling, (x + h) / sqrt(2).
use super::layers::{conv, GroupNorm, Linear, Nin};
use crate::autograd::{ParamStore, Tape, Var};
use crate::error::Result;
use crate::nn::{Conv2d, PoolCfg};
use crate::ops::dropout::DropoutMask;
use crate::ops::ConvPrecision;

const SKIP_RESCALE: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// How a residual block changes the image size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    None,
    /// Nearest-neighbour x2 (score_sde's `naive_upsample_2d`).
    Up,
    /// 2x2 mean (`naive_downsample_2d`).
    Down,
}

/// `h = conv0(resample(swish(GN0(x)))) + Dense0(swish(temb))`, `h = conv1(dropout(swish(GN1(h))))`,
/// `out = (shortcut(resample(x)) + h) / sqrt(2)`; the shortcut is a 1x1 convolution when the
/// width or the size changes. `conv1` starts at 1e-10 scale, so each block starts near
/// `shortcut(x) / sqrt(2)`.
pub struct ResnetBlock {
    norm0: GroupNorm,
    conv0: Conv2d,
    dense0: Linear,
    norm1: GroupNorm,
    conv1: Conv2d,
    shortcut: Option<Conv2d>,
    resample: Resample,
}

impl ResnetBlock {
    /// Registers `{prefix}.GroupNorm_0`, `Conv_0`, `Dense_0`, `GroupNorm_1`, `Conv_1` and, when
    /// the block changes width or size, `Conv_2`, in score_sde's order.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        (c_in, c_out): (usize, usize),
        temb_dim: usize,
        resample: Resample,
        precision: ConvPrecision,
    ) -> Result<Self> {
        let norm0 = GroupNorm::new(store, &format!("{prefix}.GroupNorm_0"), c_in)?;
        let conv0 = conv(
            store,
            &format!("{prefix}.Conv_0"),
            (c_in, c_out, 3),
            1.0,
            precision,
        )?;
        let dense0 = Linear::new(
            store,
            &format!("{prefix}.Dense_0"),
            (temb_dim, c_out),
            precision,
        )?;
        let norm1 = GroupNorm::new(store, &format!("{prefix}.GroupNorm_1"), c_out)?;
        let conv1 = conv(
            store,
            &format!("{prefix}.Conv_1"),
            (c_out, c_out, 3),
            0.0,
            precision,
        )?;
        let shortcut = (c_in != c_out || resample != Resample::None)
            .then(|| {
                conv(
                    store,
                    &format!("{prefix}.Conv_2"),
                    (c_in, c_out, 1),
                    1.0,
                    precision,
                )
            })
            .transpose()?;
        Ok(Self {
            norm0,
            conv0,
            dense0,
            norm1,
            conv1,
            shortcut,
            resample,
        })
    }

    fn resample<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Var<'p>> {
        match self.resample {
            Resample::None => Ok(x.clone()),
            Resample::Up => tape.upsample_nearest(x, 2),
            Resample::Down => tape.avg_pool2d(x, PoolCfg::MEAN_POOL_2X2),
        }
    }

    /// `x` [B, C_in, H, W]; `act_temb` = swish(temb) [B, temb_dim], shared by every block;
    /// `dropout` while training (None: the identity, as in inference).
    pub fn forward<'p>(
        &self,
        tape: &mut Tape<'p>,
        x: &Var<'p>,
        act_temb: &Var<'p>,
        dropout: Option<DropoutMask>,
    ) -> Result<Var<'p>> {
        let h = self.norm0.forward_silu(tape, x)?;
        let h = self.resample(tape, &h)?;
        let h = self.conv0.forward(tape, &h)?;
        let level_bias = self.dense0.forward(tape, act_temb)?;
        let h = tape.add_plane_bias(&h, &level_bias)?;
        let h = self.norm1.forward_silu(tape, &h)?;
        let h = match dropout {
            Some(mask) => tape.dropout(&h, mask)?,
            None => h,
        };
        let h = self.conv1.forward(tape, &h)?;
        let x = self.resample(tape, x)?;
        let x = match &self.shortcut {
            Some(shortcut) => shortcut.forward(tape, &x)?,
            None => x,
        };
        tape.axpby(SKIP_RESCALE, &x, SKIP_RESCALE, &h)
    }
}

/// Single-head self-attention over the H W positions: `q, k, v = NIN_{0,1,2}(GN(x))` viewed as
/// [B, C, HW], `w = softmax_j(q_i . k_j / sqrt(C))`, `h_i = sum_j w_ij v_j`,
/// `out = (x + NIN_3(h)) / sqrt(2)`. NIN_3 starts at 1e-10 scale, q, k, v at 0.1.
pub struct AttnBlock {
    norm: GroupNorm,
    q: Nin,
    k: Nin,
    v: Nin,
    out: Nin,
    precision: ConvPrecision,
}

impl AttnBlock {
    /// Registers `{prefix}.GroupNorm_0` and `NIN_0` .. `NIN_3`, in score_sde's order.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        channels: usize,
        precision: ConvPrecision,
    ) -> Result<Self> {
        let norm = GroupNorm::new(store, &format!("{prefix}.GroupNorm_0"), channels)?;
        // score_sde's NIN defaults to init scale 0.1; the attention leaves q, k and v there.
        let mut nin = |i: usize, scale: f32| {
            Nin::new(
                store,
                &format!("{prefix}.NIN_{i}"),
                channels,
                scale,
                precision,
            )
        };
        Ok(Self {
            norm,
            q: nin(0, 0.1)?,
            k: nin(1, 0.1)?,
            v: nin(2, 0.1)?,
            out: nin(3, 0.0)?,
            precision,
        })
    }

    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Var<'p>> {
        let shape = x.shape().to_vec();
        let (b, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
        let h = self.norm.forward(tape, x)?;
        let h = tape.reshape(&h, &[b, c, hw])?;
        let (q, k, v) = (
            self.q.forward(tape, &h)?,
            self.k.forward(tape, &h)?,
            self.v.forward(tape, &h)?,
        );
        // [B, HW, HW]: row i holds q_i . k_j over the positions j.
        let logits = tape.matmul(&q, &k, true, false, self.precision)?;
        let logits = tape.scale(&logits, (c as f32).powf(-0.5))?;
        let w = tape.softmax_rows(&logits)?;
        // [B, C, HW]: v w^T, column i the w-weighted mean of v's columns.
        let h = tape.matmul(&v, &w, false, true, self.precision)?;
        let h = self.out.forward(tape, &h)?;
        let h = tape.reshape(&h, &shape)?;
        tape.axpby(SKIP_RESCALE, x, SKIP_RESCALE, &h)
    }
}
