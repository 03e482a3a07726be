//! The RefineNet decoder block and its parts (reference/NETWORK.md section 4, SPEC section 9):
//! residual conv units (`CondRCUBlock`), multi-resolution fusion (`CondMSFBlock`), chained
//! residual pooling (`CondCRPBlock`) and the `CondRefineBlock` that chains them.
use crate::autograd::{ParamStore, Tape, Var};
use crate::error::{Error, Result};
use crate::nn::layers::{CondInstanceNormPp, Conv2d};
use crate::ops::conv::Conv2dCfg;
use crate::ops::pool::PoolCfg;
use crate::ops::ConvPrecision;

fn conv3x3(
    store: &mut ParamStore,
    prefix: &str,
    c_in: usize,
    c_out: usize,
    bias: bool,
    precision: ConvPrecision,
) -> Result<Conv2d> {
    let cfg = Conv2dCfg::same(3, 1).with_precision(precision);
    Conv2d::new(store, prefix, c_in, c_out, 3, cfg, bias)
}

/// `CondRCUBlock(features, n_blocks, n_stages)`: n_blocks times
/// `x = x + [conv(elu(norm(.)))]^n_stages (x)`, convolutions without bias.
#[derive(Clone, Debug)]
pub struct ResidualConvUnits {
    /// Per block, its stages (norm, conv).
    blocks: Vec<Vec<(CondInstanceNormPp, Conv2d)>>,
}

impl ResidualConvUnits {
    /// Parameters `{prefix}.{i}_{j}_norm`, `{prefix}.{i}_{j}_conv`, 1-based, norm before conv.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        features: usize,
        n_blocks: usize,
        n_stages: usize,
        n_levels: usize,
        precision: ConvPrecision,
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(n_blocks);
        for i in 1..=n_blocks {
            let mut stages = Vec::with_capacity(n_stages);
            for j in 1..=n_stages {
                let norm = CondInstanceNormPp::new(
                    store,
                    &format!("{prefix}.{i}_{j}_norm"),
                    features,
                    n_levels,
                )?;
                let conv = conv3x3(
                    store,
                    &format!("{prefix}.{i}_{j}_conv"),
                    features,
                    features,
                    false,
                    precision,
                )?;
                stages.push((norm, conv));
            }
            blocks.push(stages);
        }
        Ok(Self { blocks })
    }

    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>, k: &Var<'p>) -> Result<Var<'p>> {
        let mut x = x.clone();
        for stages in &self.blocks {
            let residual = x.clone();
            let Some(((last_norm, last_conv), first)) = stages.split_last() else {
                x = tape.add(&x, &residual)?;
                continue;
            };
            for (norm, conv) in first {
                let h = norm.forward_elu(tape, &x, k)?;
                x = conv.forward(tape, &h)?;
            }
            // The last stage's convolution and the block's sum in one op.
            let h = last_norm.forward_elu(tape, &x, k)?;
            x = last_conv.forward_add(tape, &h, &residual)?;
        }
        Ok(x)
    }
}

/// `CondMSFBlock`: `sum_i upsample_bilinear(conv_i(norm_i(x_i)), size)`, no activation.
#[derive(Clone, Debug)]
pub struct MultiResolutionFusion {
    convs: Vec<Conv2d>,
    norms: Vec<CondInstanceNormPp>,
}

impl MultiResolutionFusion {
    /// All `{prefix}.convs.i` (3x3 with bias, p_i -> features) before all `{prefix}.norms.i`.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_planes: &[usize],
        features: usize,
        n_levels: usize,
        precision: ConvPrecision,
    ) -> Result<Self> {
        let convs = in_planes
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let name = format!("{prefix}.convs.{i}");
                conv3x3(store, &name, p, features, true, precision)
            })
            .collect::<Result<Vec<_>>>()?;
        let norms = in_planes
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                CondInstanceNormPp::new(store, &format!("{prefix}.norms.{i}"), p, n_levels)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { convs, norms })
    }

    /// The result has the first input's height and width (ncsn's `output_shape`); resizing to an
    /// input's own size is skipped (the align_corners resize is then exactly the identity,
    /// NETWORK.md section 2).
    pub fn forward<'p>(&self, tape: &mut Tape<'p>, xs: &[Var<'p>], k: &Var<'p>) -> Result<Var<'p>> {
        check_input_count("multi-resolution fusion", self.convs.len(), xs.len())?;
        let first = xs
            .first()
            .ok_or_else(|| Error::invalid("multi-resolution fusion of no inputs"))?;
        let size = (first.shape()[2], first.shape()[3]);
        let mut total: Option<Var<'p>> = None;
        for ((x, conv), norm) in xs.iter().zip(&self.convs).zip(&self.norms) {
            let h = norm.forward(tape, x, k)?;
            let same_size = (x.shape()[2], x.shape()[3]) == size;
            total = Some(match (total, same_size) {
                // An input at the output's size: its convolution and the sum in one op.
                (Some(t), true) => conv.forward_add(tape, &h, &t)?,
                (total, _) => {
                    let h = conv.forward(tape, &h)?;
                    let h = if same_size {
                        h
                    } else {
                        tape.upsample_bilinear(&h, size)?
                    };
                    match total {
                        Some(t) => tape.add(&t, &h)?,
                        None => h,
                    }
                }
            });
        }
        total.ok_or_else(|| Error::invalid("multi-resolution fusion of no inputs"))
    }
}

/// `CondCRPBlock(features, n_stages)`: `x = elu(x); path = x; per stage
/// path = conv(avgpool5(norm(path))); x = x + path`, convolutions without bias.
#[derive(Clone, Debug)]
pub struct ChainedResidualPooling {
    convs: Vec<Conv2d>,
    norms: Vec<CondInstanceNormPp>,
}

impl ChainedResidualPooling {
    /// All `{prefix}.convs.i` before all `{prefix}.norms.i`.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        features: usize,
        n_stages: usize,
        n_levels: usize,
        precision: ConvPrecision,
    ) -> Result<Self> {
        let convs = (0..n_stages)
            .map(|i| {
                conv3x3(
                    store,
                    &format!("{prefix}.convs.{i}"),
                    features,
                    features,
                    false,
                    precision,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let norms = (0..n_stages)
            .map(|i| {
                CondInstanceNormPp::new(store, &format!("{prefix}.norms.{i}"), features, n_levels)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { convs, norms })
    }

    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>, k: &Var<'p>) -> Result<Var<'p>> {
        // The residual carries elu(x), and each stage feeds on the previous stage's path.
        let mut x = tape.elu(x)?;
        let mut path = x.clone();
        for (norm, conv) in self.norms.iter().zip(&self.convs) {
            let h = norm.forward(tape, &path, k)?;
            let h = tape.avg_pool2d(&h, PoolCfg::CRP_5X5)?;
            path = conv.forward(tape, &h)?;
            x = tape.add(&path, &x)?;
        }
        Ok(x)
    }
}

/// `CondRefineBlock`: per input an RCU (2 blocks x 2 stages), fusion when there is more than
/// one input, chained residual pooling (2 stages), output RCU (3 blocks in the last refine block,
/// else 1).
#[derive(Clone, Debug)]
pub struct RefineBlock {
    adapt_convs: Vec<ResidualConvUnits>,
    output_convs: ResidualConvUnits,
    msf: Option<MultiResolutionFusion>,
    crp: ChainedResidualPooling,
}

impl RefineBlock {
    /// State_dict order: adapt_convs.*, output_convs.*, msf.* (if any), crp.*. `in_planes` are
    /// channel counts; the first refine block takes one input of width `features`.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_planes: &[usize],
        features: usize,
        last: bool,
        n_levels: usize,
        precision: ConvPrecision,
    ) -> Result<Self> {
        if in_planes.len() == 1 && in_planes[0] != features {
            return Err(Error::invalid(format!(
                "{prefix}: a single-input refine block must keep its width ({} -> {features}); \
                 it has no fusion convolution to change it",
                in_planes[0]
            )));
        }
        let adapt_convs = in_planes
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                ResidualConvUnits::new(
                    store,
                    &format!("{prefix}.adapt_convs.{i}"),
                    p,
                    2,
                    2,
                    n_levels,
                    precision,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let output_blocks = if last { 3 } else { 1 };
        let output_convs = ResidualConvUnits::new(
            store,
            &format!("{prefix}.output_convs"),
            features,
            output_blocks,
            2,
            n_levels,
            precision,
        )?;
        let msf = if in_planes.len() > 1 {
            Some(MultiResolutionFusion::new(
                store,
                &format!("{prefix}.msf"),
                in_planes,
                features,
                n_levels,
                precision,
            )?)
        } else {
            None
        };
        let crp = ChainedResidualPooling::new(
            store,
            &format!("{prefix}.crp"),
            features,
            2,
            n_levels,
            precision,
        )?;
        Ok(Self {
            adapt_convs,
            output_convs,
            msf,
            crp,
        })
    }

    /// `xs`: the skip input first (it sets the output's height and width), then the previous
    /// block's output.
    pub fn forward<'p>(&self, tape: &mut Tape<'p>, xs: &[Var<'p>], k: &Var<'p>) -> Result<Var<'p>> {
        check_input_count("refine block", self.adapt_convs.len(), xs.len())?;
        let hs = xs
            .iter()
            .zip(&self.adapt_convs)
            .map(|(x, adapt)| adapt.forward(tape, x, k))
            .collect::<Result<Vec<_>>>()?;
        let h = match &self.msf {
            Some(msf) => msf.forward(tape, &hs, k)?,
            None => hs[0].clone(),
        };
        let h = self.crp.forward(tape, &h, k)?;
        self.output_convs.forward(tape, &h, k)
    }
}

fn check_input_count(block: &str, built_for: usize, given: usize) -> Result<()> {
    if built_for != given {
        return Err(Error::invalid(format!(
            "{block} built for {built_for} inputs, given {given}"
        )));
    }
    Ok(())
}
