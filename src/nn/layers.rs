//! Parameterised layers: each registers its parameters under a PyTorch-style prefix, with the
//! initialisation ncsn's PyTorch model gets, and applies itself on a [`Tape`].
use crate::autograd::{ParamStore, Tape, Var};
use crate::error::Result;
use crate::ops::conv::Conv2dCfg;

/// `nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias)`: parameters `{prefix}.weight`
/// [c_out, c_in, k, k] and, with a bias, `{prefix}.bias` [c_out].
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: String,
    pub bias: Option<String>,
    pub cfg: Conv2dCfg,
}

impl Conv2d {
    /// Registers the parameters with PyTorch's default initialisation: kaiming_uniform(a=sqrt(5))
    /// for the weight and the bias alike, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    /// fan_in = c_in k^2.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        cfg: Conv2dCfg,
        bias: bool,
    ) -> Result<Self> {
        let weight = format!("{prefix}.weight");
        let bound = 1.0 / ((c_in * kernel * kernel).max(1) as f32).sqrt();
        store.init_uniform(&weight, &[c_out, c_in, kernel, kernel], bound)?;
        let bias = if bias {
            let name = format!("{prefix}.bias");
            store.init_uniform(&name, &[c_out], bound)?;
            Some(name)
        } else {
            None
        };
        Ok(Self { weight, bias, cfg })
    }

    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>) -> Result<Var<'p>> {
        let (w, b) = self.params(tape)?;
        tape.conv2d(x, &w, b.as_ref(), self.cfg)
    }

    /// `forward(x) + residual` in one op ([`Tape::conv2d_add`]): the residual paths' sums.
    pub fn forward_add<'p>(
        &self,
        tape: &mut Tape<'p>,
        x: &Var<'p>,
        residual: &Var<'p>,
    ) -> Result<Var<'p>> {
        let (w, b) = self.params(tape)?;
        tape.conv2d_add(x, &w, b.as_ref(), residual, self.cfg)
    }

    /// The weight and the bias (if any) on the tape.
    fn params<'p>(&self, tape: &mut Tape<'p>) -> Result<(Var<'p>, Option<Var<'p>>)> {
        let w = tape.param(&self.weight)?;
        let b = self.bias.as_deref().map(|n| tape.param(n)).transpose()?;
        Ok((w, b))
    }
}

/// ncsn's `ConditionalInstanceNorm2dPlus(channels, n_classes, bias=True)`: one parameter
/// `{prefix}.embed.weight` [n_classes, 3 channels] holding gamma | alpha | beta.
#[derive(Clone, Debug)]
pub struct CondInstanceNormPp {
    pub embed: String,
    pub channels: usize,
}

impl CondInstanceNormPp {
    /// Registers the embedding with ncsn's initialisation: gamma and alpha from N(1, 0.02^2),
    /// beta zero.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        channels: usize,
        n_classes: usize,
    ) -> Result<Self> {
        let embed = format!("{prefix}.embed.weight");
        let width = 3 * channels;
        store.init_normal(&embed, &[n_classes, width], 1.0, 0.02)?;
        // Zero the beta block (columns [2C, 3C)) of every row.
        let t = store.get_mut(&embed)?;
        let mut data = t.to_vec()?;
        for row in data.chunks_mut(width) {
            row[2 * channels..].fill(0.0);
        }
        let zeroed = crate::tensor::Tensor::from_vec(data, &[n_classes, width], t.device())?;
        *t = zeroed;
        Ok(Self { embed, channels })
    }

    /// `k` is the constant [N] tensor of level indices (integer values, SPEC section 9).
    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>, k: &Var<'p>) -> Result<Var<'p>> {
        let embed = tape.param(&self.embed)?;
        tape.cond_instance_norm_pp(x, k, &embed)
    }

    /// `elu(forward(x))`, fused into one op (the network's norm-then-ELU pairs).
    pub fn forward_elu<'p>(
        &self,
        tape: &mut Tape<'p>,
        x: &Var<'p>,
        k: &Var<'p>,
    ) -> Result<Var<'p>> {
        let embed = tape.param(&self.embed)?;
        tape.cond_instance_norm_pp_elu(x, k, &embed)
    }
}
