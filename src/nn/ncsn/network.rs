//! The score network s_theta(x, k) of SPEC section 9: ncsn's conditional RefineNet with dilated
//! convolutions, layer by layer as reference/NETWORK.md section 5.
//!
//! ```text
//! h = begin_conv(2 x - 1)
//! for S in 1..=L: h = resS.1(resS.0(h)); layer_S = h
//! ref = refine1([layer_L]);  for R in 2..=L: ref = refineR([layer_{L-R+1}, ref])
//! out = end_conv(elu(normalizer(ref)))
//! ```
use super::config::NcsnConfig;
use super::refine::RefineBlock;
use super::residual::ConditionalResidualBlock;
use crate::autograd::{ParamStore, Tape, Var};
use crate::error::{Error, Result};
use crate::nn::layers::{CondInstanceNormPp, Conv2d};
use crate::nn::ScoreNetConfig;
use crate::ops::conv::Conv2dCfg;

pub struct Ncsn {
    config: NcsnConfig,
    begin_conv: Conv2d,
    normalizer: CondInstanceNormPp,
    end_conv: Conv2d,
    /// Per encoder stage its residual blocks (`resS.0`, `resS.1`).
    stages: Vec<Vec<ConditionalResidualBlock>>,
    /// refine1 (deepest stage) first.
    refines: Vec<RefineBlock>,
}

impl Ncsn {
    /// Registers and initialises every parameter in `store` with PyTorch's names, in ncsn's
    /// state_dict order: begin_conv, normalizer, end_conv, res1..resL, refine1..refineL.
    pub fn new(store: &mut ParamStore, cfg: &NcsnConfig) -> Result<Self> {
        let (f, n, c) = (cfg.ngf, cfg.n_levels, cfg.channels);
        let same3 = Conv2dCfg::same(3, 1).with_precision(cfg.precision);
        let begin_conv = Conv2d::new(store, "begin_conv", c, f, 3, same3, true)?;
        let normalizer = CondInstanceNormPp::new(store, "normalizer", f, n)?;
        let end_conv = Conv2d::new(store, "end_conv", f, c, 3, same3, true)?;
        let stages = cfg
            .topology
            .stages()
            .iter()
            .enumerate()
            .map(|(s, blocks)| {
                blocks
                    .iter()
                    .enumerate()
                    .map(|(i, &spec)| {
                        ConditionalResidualBlock::new(
                            store,
                            &format!("res{}.{i}", s + 1),
                            spec,
                            f,
                            n,
                            cfg.precision,
                        )
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let specs = cfg.topology.refines();
        let refines = specs
            .iter()
            .enumerate()
            .map(|(r, spec)| {
                let in_planes: Vec<usize> = spec.in_mults.iter().map(|&m| m * f).collect();
                let last = r + 1 == specs.len();
                RefineBlock::new(
                    store,
                    &format!("refine{}", r + 1),
                    &in_planes,
                    spec.out_mult * f,
                    last,
                    n,
                    cfg.precision,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: cfg.clone(),
            begin_conv,
            normalizer,
            end_conv,
            stages,
            refines,
        })
    }

    pub fn config(&self) -> &NcsnConfig {
        &self.config
    }

    /// `x` [B, C, H, W] in the data range the caller trains on (the network applies ncsn's
    /// `2 x - 1` itself), `k` [B] holding integer level indices in [0, N) (a constant).
    /// Returns the score [B, C, H, W].
    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>, k: &Var<'p>) -> Result<Var<'p>> {
        ScoreNetConfig::Ncsn(self.config.clone()).check_inputs("Ncsn::forward", x, k)?;
        let h = tape.affine(x, 2.0, -1.0)?;
        let mut h = self.begin_conv.forward(tape, &h)?;
        let mut layers = Vec::with_capacity(self.stages.len());
        for blocks in &self.stages {
            for block in blocks {
                h = block.forward(tape, &h, k)?;
            }
            layers.push(h.clone());
        }
        // refine1 takes the deepest stage alone; refine R fuses stage L-R+1 with refine R-1's
        // output, at that stage's resolution.
        let mut refined: Option<Var<'p>> = None;
        for (refine, skip) in self.refines.iter().zip(layers.iter().rev()) {
            let xs = match refined.take() {
                Some(prev) => vec![skip.clone(), prev],
                None => vec![skip.clone()],
            };
            refined = Some(refine.forward(tape, &xs, k)?);
        }
        let refined = refined.ok_or_else(|| Error::invalid("network without refine blocks"))?;
        let h = self.normalizer.forward_elu(tape, &refined, k)?;
        self.end_conv.forward(tape, &h)
    }
}
