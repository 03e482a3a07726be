//! The DDPM++ U-Net (SPEC section 11), module by module in score_sde's order:
//!
//! ```text
//! temb = Dense_1(swish(Dense_0(embed(k))))                 all_modules.0, .1
//! h = conv_in(x); hs = [h]                                 all_modules.2
//! per resolution: num_res_blocks x { h = res(h) [; h = attn(h)]; hs.push(h) }
//!                 then, but at the last, { h = res_down(h); hs.push(h) }
//! h = res(h); h = attn(h); h = res(h)
//! per resolution, deepest first: (num_res_blocks + 1) x { h = res(cat(h, hs.pop())) }
//!                 [h = attn(h)]; then, but at the first, h = res_up(h)
//! out = conv_out(swish(GN(h)))
//! ```
use super::blocks::{AttnBlock, Resample, ResnetBlock};
use super::config::DdpmppConfig;
use super::layers::{conv, GroupNorm, Linear};
use crate::autograd::{ParamStore, Tape, Var};
use crate::error::{Error, Result};
use crate::nn::Conv2d;
use crate::nn::ScoreNetConfig;
use crate::ops::dropout::DropoutMask;
use crate::ops::embedding::timestep_embedding;
use crate::ops::PhiloxDraw;

/// One module of the U-Net, in forward order.
enum Module {
    /// A residual block; `skip` pops the latest saved activation and concatenates it first.
    Res {
        block: ResnetBlock,
        skip: bool,
    },
    Attn(AttnBlock),
    /// Save the current activation for the decoder.
    Push,
}

pub struct Ddpmpp {
    config: DdpmppConfig,
    dense0: Linear,
    dense1: Linear,
    conv_in: Conv2d,
    modules: Vec<Module>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// Builds the modules in score_sde's order, numbering them `all_modules.<i>` as it does.
struct Builder<'s> {
    store: &'s mut ParamStore,
    cfg: &'s DdpmppConfig,
    next_index: usize,
}

impl Builder<'_> {
    fn prefix(&mut self) -> String {
        self.next_index += 1;
        format!("all_modules.{}", self.next_index - 1)
    }

    fn res(&mut self, widths: (usize, usize), resample: Resample, skip: bool) -> Result<Module> {
        let prefix = self.prefix();
        let (temb, precision) = (self.cfg.temb_dim(), self.cfg.precision);
        let block = ResnetBlock::new(self.store, &prefix, widths, temb, resample, precision)?;
        Ok(Module::Res { block, skip })
    }

    fn attn(&mut self, channels: usize) -> Result<Module> {
        let prefix = self.prefix();
        let block = AttnBlock::new(self.store, &prefix, channels, self.cfg.precision)?;
        Ok(Module::Attn(block))
    }
}

impl Ddpmpp {
    /// Registers and initialises every parameter in `store` with score_sde's names and
    /// initialisation, in its state_dict order.
    pub fn new(store: &mut ParamStore, cfg: &DdpmppConfig) -> Result<Self> {
        let (nf, temb_dim, precision) = (cfg.nf, cfg.temb_dim(), cfg.precision);
        let mut b = Builder {
            store,
            cfg,
            next_index: 0,
        };
        let p = b.prefix();
        let dense0 = Linear::new(b.store, &p, (nf, temb_dim), precision)?;
        let p = b.prefix();
        let dense1 = Linear::new(b.store, &p, (temb_dim, temb_dim), precision)?;
        let p = b.prefix();
        let conv_in = conv(b.store, &p, (cfg.channels, nf, 3), 1.0, precision)?;

        let resolutions = cfg.resolutions();
        let with_attn = |level: usize| cfg.attn_resolutions.contains(&resolutions[level]);
        let mut modules = Vec::new();
        let mut skips = vec![nf];
        let mut ch = nf;
        for (level, &mult) in cfg.ch_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                modules.push(b.res((ch, nf * mult), Resample::None, false)?);
                ch = nf * mult;
                if with_attn(level) {
                    modules.push(b.attn(ch)?);
                }
                modules.push(Module::Push);
                skips.push(ch);
            }
            if level + 1 != cfg.ch_mult.len() {
                modules.push(b.res((ch, ch), Resample::Down, false)?);
                modules.push(Module::Push);
                skips.push(ch);
            }
        }
        modules.push(b.res((ch, ch), Resample::None, false)?);
        modules.push(b.attn(ch)?);
        modules.push(b.res((ch, ch), Resample::None, false)?);
        for (level, &mult) in cfg.ch_mult.iter().enumerate().rev() {
            for _ in 0..=cfg.num_res_blocks {
                let skip = skips.pop().expect("one saved activation per decoder block");
                modules.push(b.res((ch + skip, nf * mult), Resample::None, true)?);
                ch = nf * mult;
            }
            if with_attn(level) {
                modules.push(b.attn(ch)?);
            }
            if level != 0 {
                modules.push(b.res((ch, ch), Resample::Up, false)?);
            }
        }
        debug_assert!(skips.is_empty());
        let p = b.prefix();
        let norm_out = GroupNorm::new(b.store, &p, ch)?;
        let p = b.prefix();
        let conv_out = conv(b.store, &p, (ch, cfg.channels, 3), 0.0, precision)?;
        Ok(Self {
            config: cfg.clone(),
            dense0,
            dense1,
            conv_in,
            modules,
            norm_out,
            conv_out,
        })
    }

    pub fn config(&self) -> &DdpmppConfig {
        &self.config
    }

    /// `x` [B, C, H, W] as the caller trains on it (centred: the network does not rescale it),
    /// `k` [B] holding integer level indices in [0, N) (a constant). Returns the score
    /// [B, C, H, W]. Inference: no dropout.
    pub fn forward<'p>(&self, tape: &mut Tape<'p>, x: &Var<'p>, k: &Var<'p>) -> Result<Var<'p>> {
        self.forward_with(tape, x, k, None)
    }

    /// [`Self::forward`] in training: the residual blocks' dropout masks come from `draw`, block
    /// `j` (in forward order) taking Philox elements from `j 2^40` (SPEC section 11).
    pub fn forward_train<'p>(
        &self,
        tape: &mut Tape<'p>,
        x: &Var<'p>,
        k: &Var<'p>,
        draw: PhiloxDraw,
    ) -> Result<Var<'p>> {
        self.forward_with(tape, x, k, Some(draw))
    }

    fn forward_with<'p>(
        &self,
        tape: &mut Tape<'p>,
        x: &Var<'p>,
        k: &Var<'p>,
        draw: Option<PhiloxDraw>,
    ) -> Result<Var<'p>> {
        ScoreNetConfig::Ddpmpp(self.config.clone()).check_inputs("Ddpmpp::forward", x, k)?;
        let temb = tape.constant(timestep_embedding(k.value(), self.config.nf)?);
        let temb = self.dense0.forward(tape, &temb)?;
        let temb = tape.silu(&temb)?;
        let temb = self.dense1.forward(tape, &temb)?;
        // Every residual block reads swish(temb); computed once.
        let act_temb = tape.silu(&temb)?;

        let p = self.config.dropout;
        let mut blocks = 0u64;
        let mut dropout = || {
            blocks += 1;
            draw.filter(|_| p > 0.0).map(|draw| DropoutMask {
                draw,
                first: (blocks - 1) << 40,
                p,
            })
        };
        let mut h = self.conv_in.forward(tape, x)?;
        let mut saved = vec![h.clone()];
        for module in &self.modules {
            h = match module {
                Module::Push => {
                    saved.push(h.clone());
                    continue;
                }
                Module::Res { block, skip: true } => {
                    let skip = saved.pop().ok_or_else(|| {
                        Error::invalid(
                            "Ddpmpp::forward: a decoder block without a saved activation",
                        )
                    })?;
                    let joined = tape.concat_channels(&[&h, &skip])?;
                    block.forward(tape, &joined, &act_temb, dropout())?
                }
                Module::Res { block, skip: false } => {
                    block.forward(tape, &h, &act_temb, dropout())?
                }
                Module::Attn(block) => block.forward(tape, &h)?,
            };
        }
        let h = self.norm_out.forward_silu(tape, &h)?;
        self.conv_out.forward(tape, &h)
    }
}
