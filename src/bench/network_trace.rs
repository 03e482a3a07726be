//! The shapes of the score network's layers and the constants of BENCH.md's "Network constants"
//! table, found by recording one forward pass (as reference/bench_torch.py hooks its modules),
//! never written down by hand.
use super::items_gbm::dale_coefficients;
use super::{BenchConfig, Item, Run};
use crate::autograd::{ParamStore, RecordedLayer, Tape};
use crate::device::graph::Replayer;
use crate::device::launch::launches_on_this_thread;
use crate::device::Device;
use crate::diffusion::samplers::PhiloxDraw;
use crate::error::{Error, Result};
use crate::nn::{Family, Preset, ScoreNet, ScoreNetConfig};
use crate::ops::{self, ConvPrecision};
use crate::tensor::Tensor;

/// BENCH.md's image: 1x28x28 (Fashion-MNIST's) for NCSN and the FID Inception.
pub const IMAGE: [usize; 3] = [1, 28, 28];
/// DDPM++'s benchmark image: 3x32x32 (CIFAR-10's, what paper 003 trains it on).
pub const DDPMPP_IMAGE: [usize; 3] = [3, 32, 32];

/// The image a preset's network items run on.
pub fn image_of(preset: Preset) -> [usize; 3] {
    match preset.family() {
        Family::Ncsn => IMAGE,
        Family::Ddpmpp => DDPMPP_IMAGE,
    }
}

/// What a whole-network item's step is made from.
pub(super) struct NetworkStep {
    pub preset: Preset,
    pub image: [usize; 3],
    pub n_levels: usize,
    pub batch: usize,
    pub precision: ConvPrecision,
    pub device: Device,
}

/// One item per traced network, keyed `{root}/{preset}/{c}x{h}x{w}/b{batch}` (BENCH.md), its
/// bytes and FLOPs from `cost`, its step made by `prepare`; each reports its memory.
pub(super) fn network_items(
    cfg: &BenchConfig,
    traces: &[&NetworkTrace],
    root: &str,
    batch: usize,
    cost: fn(&NetworkTrace, usize) -> (f64, f64),
    prepare: fn(&NetworkStep) -> Result<Run>,
) -> Vec<Item> {
    traces
        .iter()
        .map(|trace| {
            let [c, h, w] = trace.image;
            let (bytes, flops) = cost(trace, batch);
            let step = NetworkStep {
                preset: trace.preset,
                image: trace.image,
                n_levels: trace.n_levels,
                batch,
                precision: cfg.precision,
                device: cfg.device.clone(),
            };
            Item::new(
                format!("{root}/{}/{c}x{h}x{w}/b{batch}", step.preset),
                bytes,
                flops,
                move || prepare(&step),
            )
            .with_memory()
        })
        .collect()
}

/// A fresh score network for the step's image: its config, its parameters (seed 0) and itself.
pub(super) fn fresh_network(step: &NetworkStep) -> Result<(ScoreNetConfig, ParamStore, ScoreNet)> {
    let [c, h, _] = step.image;
    let config =
        ScoreNetConfig::new(step.preset, c, h, step.n_levels)?.with_precision(step.precision);
    let mut store = ParamStore::new(&step.device, 0);
    let net = ScoreNet::new(&mut store, &config)?;
    Ok((config, store, net))
}

/// Kernel launches of `preset`'s network (its benchmark image, batch 1) with its convolutions in
/// `precision`, counted on a kernel device (`emu` or `cuda`; the counts do not depend on which,
/// nor on the batch): what launch overhead scales with at the small batches people sample with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchCounts {
    /// One inference forward pass launch by launch, counted after a first step, as a sampler's
    /// later steps run: in tf32 or bf16 the first also reorders the weights of each convolution
    /// whose channel-slice form applies (kernels/conv.cu), once, as they are kept until the
    /// weights change.
    pub forward: u64,
    /// One sampler step (the forward and the fused Dale step) as the sampler runs it from the
    /// third step on: replayed from the graph captured at the second (docs/DESIGN.md section
    /// 10), one launch; the step's launches if the capture was refused.
    pub replayed_step: u64,
}

pub fn launch_counts(
    preset: Preset,
    precision: ConvPrecision,
    device: &Device,
) -> Result<LaunchCounts> {
    if matches!(device, Device::Cpu) {
        return Err(Error::invalid(
            "launches are counted on a kernel device (emu or cuda); the cpu launches none",
        ));
    }
    let [c, h, _] = image_of(preset);
    let cfg = ScoreNetConfig::new(preset, c, h, 2)?.with_precision(precision);
    let mut store = ParamStore::new(device, 0);
    let net = ScoreNet::new(&mut store, &cfg)?;
    let shape = cfg.input_shape(1);
    let image = || Tensor::from_vec(vec![1.5; shape.iter().product()], &shape, device);
    let levels = Tensor::zeros(&[1], device)?;
    let mut x = image()?;
    let scalars = dale_coefficients().scalars(device, PhiloxDraw::sampler(0, 0))?;
    let mut step = || {
        let mut tape = Tape::inference(&store);
        let input = tape.constant(ops::copy(&x)?);
        let k = tape.constant(ops::copy(&levels)?);
        let h = net.forward(&mut tape, &input, &k)?;
        ops::gbm_dale_step(&mut x, h.value(), &scalars)
    };
    let mut replayer = Replayer::new(true);
    // SAFETY: x, the levels, the scalars and the weights outlive the replayer (declared after
    // them), and only the step writes x, in place.
    let mut run = |step: &mut dyn FnMut() -> Result<()>| unsafe { replayer.run(device, step) };
    // The first step runs directly: a forward after it launches what every later one does.
    run(&mut step)?;
    let mut tape = Tape::inference(&store);
    let (input, k) = (tape.constant(image()?), tape.constant(ops::copy(&levels)?));
    let before = launches_on_this_thread();
    net.forward(&mut tape, &input, &k)?;
    let forward = launches_on_this_thread() - before;
    drop(tape);
    run(&mut step)?;
    let before = launches_on_this_thread();
    run(&mut step)?;
    Ok(LaunchCounts {
        forward,
        replayed_step: launches_on_this_thread() - before,
    })
}

/// One stride-1 "same" convolution as BENCH.md keys it: `{cin}x{h}x{w}->{cout}/k{k}d{d}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub d: usize,
}

impl ConvShape {
    /// The key without its family: `{cin}x{h}x{w}->{cout}/k{k}d{d}/b{B}`.
    pub fn key_suffix(&self, batch: usize) -> String {
        format!(
            "{}x{}x{}->{}/k{}d{}/b{batch}",
            self.c_in, self.h, self.w, self.c_out, self.k, self.d
        )
    }

    /// 2 B cout h w cin k k, for the forward and both backward passes alike.
    pub fn flops(&self, batch: usize) -> f64 {
        2.0 * (batch * self.c_out * self.h * self.w * self.c_in * self.k * self.k) as f64
    }

    /// 4 x (activation in + weight + activation out), the same for all three passes.
    pub fn bytes(&self, batch: usize) -> f64 {
        let plane = self.h * self.w;
        let weight = self.c_out * self.c_in * self.k * self.k;
        4.0 * (batch * self.c_in * plane + weight + batch * self.c_out * plane) as f64
    }

    pub fn input_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.c_in, self.h, self.w]
    }

    pub fn output_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.c_out, self.h, self.w]
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in, self.k, self.k]
    }
}

/// The input of one CIN++ call, `{c}x{h}x{w}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormShape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl NormShape {
    pub fn key_suffix(&self, batch: usize) -> String {
        format!("{}x{}x{}/b{batch}", self.c, self.h, self.w)
    }

    /// n = B c h w.
    pub fn elements(&self, batch: usize) -> usize {
        batch * self.c * self.h * self.w
    }
}

/// Every convolution and CIN++ call of one preset's forward pass on its benchmark image, in call
/// order, and the parameter counts.
#[derive(Clone, Debug)]
pub struct NetworkTrace {
    pub preset: Preset,
    pub image: [usize; 3],
    pub n_levels: usize,
    pub convs: Vec<ConvShape>,
    pub norms: Vec<NormShape>,
    /// P0: parameters other than the norm embeddings.
    pub params_without_embeddings: usize,
    /// R: the sum of the embedding widths 3C over the norm layers (one row each per sample).
    pub embedding_row_width: usize,
}

impl NetworkTrace {
    /// Records `preset` (at its usual number of levels) on the host. Shapes and P0 do not depend
    /// on the number of levels, so the recorded network has 2 and P is computed for the real N.
    pub fn of(preset: Preset) -> Result<Self> {
        let device = Device::Cpu;
        let image = image_of(preset);
        let cfg = ScoreNetConfig::new(preset, image[0], image[1], 2)?;
        let mut store = ParamStore::new(&device, 0);
        let net = ScoreNet::new(&mut store, &cfg)?;
        let mut tape = Tape::new(&store);
        let x = tape.constant(Tensor::zeros(&cfg.input_shape(1), &device)?);
        let levels = tape.constant(Tensor::zeros(&[1], &device)?);
        net.forward(&mut tape, &x, &levels)?;
        let mut trace = Self {
            preset,
            image,
            n_levels: preset.default_levels(),
            convs: Vec::new(),
            norms: Vec::new(),
            params_without_embeddings: store.num_elements(),
            embedding_row_width: 0,
        };
        for layer in tape.recorded_layers() {
            trace.add(layer)?;
        }
        for (name, t) in store.iter() {
            // A norm layer's embedding [N, 3C]: N x 3C of P, 3C of R.
            if name.ends_with(".embed.weight") {
                trace.params_without_embeddings -= t.numel();
                trace.embedding_row_width += t.shape()[1];
            }
        }
        Ok(trace)
    }

    fn add(&mut self, layer: RecordedLayer) -> Result<()> {
        match layer {
            RecordedLayer::Conv2d {
                x_shape,
                w_shape,
                cfg,
            } => {
                let (&[_, c_in, h, w], &[c_out, _, k, k2]) = (&x_shape[..], &w_shape[..]) else {
                    return Err(Error::shape(
                        "NetworkTrace",
                        format!("{x_shape:?} {w_shape:?}"),
                    ));
                };
                if k != k2 || cfg != crate::nn::Conv2dCfg::same(k, cfg.dilation) {
                    return Err(Error::invalid(format!(
                        "{}: a convolution that is not square \"same\" ({w_shape:?}, {cfg:?}) has no BENCH.md key",
                        self.preset
                    )));
                }
                self.convs.push(ConvShape {
                    c_in,
                    h,
                    w,
                    c_out,
                    k,
                    d: cfg.dilation,
                });
            }
            RecordedLayer::CondInstanceNormPp { x_shape, .. } => {
                let &[_, c, h, w] = &x_shape[..] else {
                    return Err(Error::shape("NetworkTrace", format!("{x_shape:?}")));
                };
                self.norms.push(NormShape { c, h, w });
            }
        }
        Ok(())
    }

    /// P: all parameters at the preset's N levels (each norm embedding has N rows).
    pub fn params(&self) -> usize {
        self.params_without_embeddings + self.n_levels * self.embedding_row_width
    }

    /// Forward convolution FLOPs for one image.
    pub fn conv_flops_per_image(&self) -> f64 {
        self.convs.iter().map(|c| c.flops(1)).sum()
    }

    /// The distinct convolutions, in the order the network first calls them.
    pub fn distinct_convs(&self) -> Vec<ConvShape> {
        distinct(&self.convs)
    }

    /// The distinct norm inputs, in the order the network first calls them.
    pub fn distinct_norms(&self) -> Vec<NormShape> {
        distinct(&self.norms)
    }
}

fn distinct<T: PartialEq + Copy>(all: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for &s in all {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}
