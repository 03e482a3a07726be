//! The FID InceptionV3 (docs/SPEC.md section 10.1): pytorch-fid's network, torchvision's
//! inception_v3 with the blocks pytorch-fid replaces (`FIDInceptionA`, `FIDInceptionC`,
//! `FIDInceptionE_1`, whose average pools leave the padding out of the divisor, and
//! `FIDInceptionE_2`, whose pool is a max), forward only. Images in [0, 1] (one channel repeated
//! to three) are resized to 299x299 bilinearly (align_corners=False), mapped to [-1, 1], and
//! reduced to the 2048 features of the global average pool after Mixed_7c.
//!
//! The weights are the user's copy of pytorch-fid's `pt_inception-2015-12-05` file, converted to
//! safetensors by reference/convert_inception.py under the same names. Each BasicConv2d (a
//! convolution without bias, a batch norm of eps 0.001 in inference form, a ReLU) is held with its
//! batch norm folded into the convolution, in f64 before rounding to f32: with
//! `s = gamma / sqrt(running_var + eps)`, `bn(conv(x, w)) = conv(x, w s) + (beta - running_mean s)`.
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::checkpoint::{Checkpoint, HostTensor};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::conv::conv2d;
use crate::ops::pool::{avg_pool2d, max_pool2d, resize_bilinear};
use crate::ops::{self, Conv2dCfg, PoolCfg};
use crate::tensor::Tensor;

/// The length of a feature vector: the channels of Mixed_7c.
pub const FEATURES: usize = 2048;
/// The side every image is resized to.
pub const INPUT_SIZE: usize = 299;
/// torchvision's BasicConv2d batch norm.
const BN_EPS: f64 = 1e-3;
/// The batch-norm tensors of every BasicConv2d, after `{name}.conv.weight`.
const BN_PARTS: [&str; 4] = ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"];
/// The 3x3 stride-2 max pool of the stem and of Mixed_6a / Mixed_7a.
const MAX_POOL_3X3_S2: PoolCfg = PoolCfg::new(3, 2, 0);

/// One BasicConv2d: its state-dict prefix and geometry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ConvSpec {
    name: String,
    c_in: usize,
    c_out: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: [usize; 2],
    /// The side of its square input grid at the network's 299x299 input.
    input_side: usize,
}

impl ConvSpec {
    /// The side of its output grid along axis 0 (rows) or 1 (columns), as the convolution
    /// computes it (0 for a kernel longer than the padded grid, which the table never holds).
    fn output_side(&self, axis: usize) -> usize {
        self.cfg()
            .output_size(axis, self.input_side, self.kernel[axis])
            .unwrap_or(0)
    }

    /// Its multiply-adds for one image, times 2.
    fn flops_per_image(&self) -> f64 {
        let [kh, kw] = self.kernel;
        let outputs = self.c_out * self.output_side(0) * self.output_side(1);
        2.0 * (outputs * self.c_in * kh * kw) as f64
    }

    fn weight_shape(&self) -> Vec<usize> {
        vec![self.c_out, self.c_in, self.kernel[0], self.kernel[1]]
    }

    fn cfg(&self) -> Conv2dCfg {
        Conv2dCfg::padded(self.padding[0], self.padding[1]).with_stride(self.stride)
    }
}

/// The network's layers in state-dict order, each block adding its branches; `side` is the input
/// grid of the layers added next (every convolution of a block reads the block's input grid: a
/// block's stride-2 convolutions end their branch).
struct Layers {
    specs: Vec<ConvSpec>,
    side: usize,
}

impl Layers {
    /// The layers added next read a `side` x `side` grid.
    fn at(&mut self, side: usize) -> &mut Self {
        self.side = side;
        self
    }

    /// A square `k` x `k` convolution.
    fn conv(&mut self, name: &str, c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize) {
        self.conv_hw(name, c_in, c_out, [k, k], stride, [pad, pad]);
    }

    fn conv_hw(
        &mut self,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
    ) {
        let name = name.to_string();
        let spec = ConvSpec {
            name,
            c_in,
            c_out,
            kernel,
            stride,
            padding,
            input_side: self.side,
        };
        self.specs.push(spec);
    }

    /// FIDInceptionA: 1x1; 1x1 then 5x5; 1x1 then two 3x3; 3x3 average pool then 1x1.
    fn block_a(&mut self, b: &str, c_in: usize, pool_features: usize) {
        self.conv(&format!("{b}.branch1x1"), c_in, 64, 1, 1, 0);
        self.conv(&format!("{b}.branch5x5_1"), c_in, 48, 1, 1, 0);
        self.conv(&format!("{b}.branch5x5_2"), 48, 64, 5, 1, 2);
        self.conv(&format!("{b}.branch3x3dbl_1"), c_in, 64, 1, 1, 0);
        self.conv(&format!("{b}.branch3x3dbl_2"), 64, 96, 3, 1, 1);
        self.conv(&format!("{b}.branch3x3dbl_3"), 96, 96, 3, 1, 1);
        self.conv(&format!("{b}.branch_pool"), c_in, pool_features, 1, 1, 0);
    }

    /// InceptionB (Mixed_6a), which halves the grid: 3x3 stride 2; 1x1, 3x3, 3x3 stride 2; max pool.
    fn block_b(&mut self, b: &str, c_in: usize) {
        self.conv(&format!("{b}.branch3x3"), c_in, 384, 3, 2, 0);
        self.conv(&format!("{b}.branch3x3dbl_1"), c_in, 64, 1, 1, 0);
        self.conv(&format!("{b}.branch3x3dbl_2"), 64, 96, 3, 1, 1);
        self.conv(&format!("{b}.branch3x3dbl_3"), 96, 96, 3, 2, 0);
    }

    /// FIDInceptionC: factorised 7x7 convolutions (1x7 and 7x1) of `c7` channels.
    fn block_c(&mut self, b: &str, c7: usize) {
        let (row, col) = ([1, 7], [7, 1]);
        let (pad_row, pad_col) = ([0, 3], [3, 0]);
        self.conv(&format!("{b}.branch1x1"), 768, 192, 1, 1, 0);
        self.conv(&format!("{b}.branch7x7_1"), 768, c7, 1, 1, 0);
        self.conv_hw(&format!("{b}.branch7x7_2"), c7, c7, row, 1, pad_row);
        self.conv_hw(&format!("{b}.branch7x7_3"), c7, 192, col, 1, pad_col);
        self.conv(&format!("{b}.branch7x7dbl_1"), 768, c7, 1, 1, 0);
        self.conv_hw(&format!("{b}.branch7x7dbl_2"), c7, c7, col, 1, pad_col);
        self.conv_hw(&format!("{b}.branch7x7dbl_3"), c7, c7, row, 1, pad_row);
        self.conv_hw(&format!("{b}.branch7x7dbl_4"), c7, c7, col, 1, pad_col);
        self.conv_hw(&format!("{b}.branch7x7dbl_5"), c7, 192, row, 1, pad_row);
        self.conv(&format!("{b}.branch_pool"), 768, 192, 1, 1, 0);
    }

    /// InceptionD (Mixed_7a), which halves the grid again.
    fn block_d(&mut self, b: &str) {
        self.conv(&format!("{b}.branch3x3_1"), 768, 192, 1, 1, 0);
        self.conv(&format!("{b}.branch3x3_2"), 192, 320, 3, 2, 0);
        self.conv(&format!("{b}.branch7x7x3_1"), 768, 192, 1, 1, 0);
        self.conv_hw(&format!("{b}.branch7x7x3_2"), 192, 192, [1, 7], 1, [0, 3]);
        self.conv_hw(&format!("{b}.branch7x7x3_3"), 192, 192, [7, 1], 1, [3, 0]);
        self.conv(&format!("{b}.branch7x7x3_4"), 192, 192, 3, 2, 0);
    }

    /// FIDInceptionE_1 / E_2: the 3x3 branches split into parallel 1x3 and 3x1.
    fn block_e(&mut self, b: &str, c_in: usize) {
        self.conv(&format!("{b}.branch1x1"), c_in, 320, 1, 1, 0);
        self.conv(&format!("{b}.branch3x3_1"), c_in, 384, 1, 1, 0);
        self.conv_hw(&format!("{b}.branch3x3_2a"), 384, 384, [1, 3], 1, [0, 1]);
        self.conv_hw(&format!("{b}.branch3x3_2b"), 384, 384, [3, 1], 1, [1, 0]);
        self.conv(&format!("{b}.branch3x3dbl_1"), c_in, 448, 1, 1, 0);
        self.conv(&format!("{b}.branch3x3dbl_2"), 448, 384, 3, 1, 1);
        self.conv_hw(&format!("{b}.branch3x3dbl_3a"), 384, 384, [1, 3], 1, [0, 1]);
        self.conv_hw(&format!("{b}.branch3x3dbl_3b"), 384, 384, [3, 1], 1, [1, 0]);
        self.conv(&format!("{b}.branch_pool"), c_in, 192, 1, 1, 0);
    }
}

/// Every BasicConv2d of the network, in pytorch-fid's state-dict order.
fn layer_specs() -> Vec<ConvSpec> {
    let mut l = Layers {
        specs: Vec::new(),
        side: INPUT_SIZE,
    };
    l.at(INPUT_SIZE).conv("Conv2d_1a_3x3", 3, 32, 3, 2, 0);
    l.at(149).conv("Conv2d_2a_3x3", 32, 32, 3, 1, 0);
    l.at(147).conv("Conv2d_2b_3x3", 32, 64, 3, 1, 1);
    // The stem's max pool: 147 -> 73.
    l.at(73).conv("Conv2d_3b_1x1", 64, 80, 1, 1, 0);
    l.conv("Conv2d_4a_3x3", 80, 192, 3, 1, 0);
    // The second max pool: 71 -> 35.
    l.at(35).block_a("Mixed_5b", 192, 32);
    l.block_a("Mixed_5c", 256, 64);
    l.block_a("Mixed_5d", 288, 64);
    l.block_b("Mixed_6a", 288);
    l.at(17);
    for (b, c7) in [
        ("Mixed_6b", 128),
        ("Mixed_6c", 160),
        ("Mixed_6d", 160),
        ("Mixed_6e", 192),
    ] {
        l.block_c(b, c7);
    }
    l.block_d("Mixed_7a");
    l.at(8).block_e("Mixed_7b", 1280);
    l.block_e("Mixed_7c", 2048);
    l.specs
}

/// The FLOPs of one image's convolutions (2 per multiply-add) at the 299x299 input, every
/// BasicConv2d counted once: the convention of the `inception_features` bench item
/// (reference/BENCH.md), which counts nothing else (resize, bias, ReLU and pools are about 0.1%).
pub fn conv_flops_per_image() -> f64 {
    layer_specs().iter().map(ConvSpec::flops_per_image).sum()
}

/// The parameters the forward pass reads: every convolution's weight and its folded bias (one
/// per output channel); pytorch-fid's unused classifier `fc` is not among them.
pub fn folded_parameter_count() -> usize {
    layer_specs()
        .iter()
        .map(|s| s.weight_shape().iter().product::<usize>() + s.c_out)
        .sum()
}

/// The names and shapes of the tensors a weights file must hold, in state-dict order.
pub fn expected_tensors() -> Vec<(String, Vec<usize>)> {
    layer_specs()
        .into_iter()
        .flat_map(|s| {
            let bn = BN_PARTS.map(|p| (format!("{}.{p}", s.name), vec![s.c_out]));
            std::iter::once((format!("{}.conv.weight", s.name), s.weight_shape())).chain(bn)
        })
        .collect()
}

/// A BasicConv2d with its batch norm folded in (module doc): `relu(conv(x, weight) + bias)`.
struct FoldedConv {
    weight: Tensor,
    bias: Tensor,
    cfg: Conv2dCfg,
    /// The grid side the layer table says it reads (checked in debug builds: the FLOP count of
    /// [`conv_flops_per_image`] rests on it).
    input_side: usize,
}

/// The FID InceptionV3 with its weights on one device.
pub struct FidInception {
    convs: BTreeMap<String, FoldedConv>,
    device: Device,
    /// 8 hex digits identifying the weights (see [`FidInception::weights_id`]).
    weights_id: String,
}

/// The outputs of pytorch-fid's four blocks for one batch: after the first max pool (64
/// channels), the second (192), Mixed_6e (768), and the pooled features [N, 2048].
pub struct BlockOutputs {
    pub blocks: [Tensor; 4],
}

impl FidInception {
    /// The network from a weights file converted by reference/convert_inception.py.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let file = Checkpoint::load(path).map_err(|e| {
            Error::invalid(format!(
                "{e}\n  the FID Inception weights are the safetensors file that \
                 reference/convert_inception.py writes from pytorch-fid's .pth"
            ))
        })?;
        Self::from_state_dict(&file.tensors, device).map_err(|e| match e {
            Error::Invalid(msg) => Error::file(path, msg),
            other => other,
        })
    }

    /// The network from pytorch-fid state-dict tensors: every expected name with its shape and
    /// finite values; nothing else but pytorch-fid's unused classifier (`fc.*`).
    pub fn from_state_dict(
        tensors: &BTreeMap<String, HostTensor>,
        device: &Device,
    ) -> Result<Self> {
        check_names_and_shapes(tensors)?;
        let mut id = crc32fast::Hasher::new();
        let mut convs = BTreeMap::new();
        for spec in layer_specs() {
            let get = |part: &str| &tensors[&format!("{}.{part}", spec.name)].1;
            for part in std::iter::once("conv.weight").chain(BN_PARTS) {
                id.update(bytemuck::cast_slice(get(part)));
            }
            let (weight, bias) = fold_batch_norm(
                get("conv.weight"),
                [
                    get("bn.weight"),
                    get("bn.bias"),
                    get("bn.running_mean"),
                    get("bn.running_var"),
                ],
            )
            .map_err(|why| Error::invalid(format!("layer {}: {why}", spec.name)))?;
            let folded = FoldedConv {
                weight: Tensor::from_vec(weight, &spec.weight_shape(), device)?,
                bias: Tensor::from_vec(bias, &[spec.c_out], device)?,
                cfg: spec.cfg(),
                input_side: spec.input_side,
            };
            convs.insert(spec.name, folded);
        }
        let weights_id = format!("{:08x}", id.finalize());
        Ok(Self {
            convs,
            device: device.clone(),
            weights_id,
        })
    }

    /// Deterministic stand-in weights (docs/SPEC.md section 10.1), for tests and benchmarks
    /// without the real file: never for a score.
    pub fn with_formula_weights(device: &Device) -> Result<Self> {
        Self::from_state_dict(&formula_state_dict(), device)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The CRC-32 of the weights as loaded (every tensor the network uses, in layer order), so
    /// caches of features keyed by it never mix networks.
    pub fn weights_id(&self) -> &str {
        &self.weights_id
    }

    /// The 2048 features [N, 2048] of `images` [N, 1 or 3, H, W] in [0, 1].
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let [.., pooled] = self.blocks(images)?.blocks;
        Ok(pooled)
    }

    /// The outputs of each of pytorch-fid's blocks for `images` (see [`BlockOutputs`]).
    pub fn blocks(&self, images: &Tensor) -> Result<BlockOutputs> {
        let x = self.preprocess(images)?;
        let x = self.chain(&["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"], &x)?;
        let block0 = max_pool2d(&x, MAX_POOL_3X3_S2)?;
        let x = self.chain(&["Conv2d_3b_1x1", "Conv2d_4a_3x3"], &block0)?;
        let block1 = max_pool2d(&x, MAX_POOL_3X3_S2)?;
        let mut x = self.block_a("Mixed_5b", &block1)?;
        for b in ["Mixed_5c", "Mixed_5d"] {
            x = self.block_a(b, &x)?;
        }
        x = self.block_b("Mixed_6a", &x)?;
        for b in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"] {
            x = self.block_c(b, &x)?;
        }
        let block2 = x;
        let x = self.block_d("Mixed_7a", &block2)?;
        let x = self.block_e("Mixed_7b", &x, false)?;
        let x = self.block_e("Mixed_7c", &x, true)?;
        let (n, c, side) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        // Adaptive average pooling to 1x1: the grid is square (8x8 from 299x299), one window.
        let pooled = avg_pool2d(&x, PoolCfg::new(side, 1, 0))?.reshape(&[n, c])?;
        Ok(BlockOutputs {
            blocks: [block0, block1, block2, pooled],
        })
    }

    /// Grey images repeated to three channels, resized to 299x299, mapped from [0, 1] to [-1, 1].
    fn preprocess(&self, images: &Tensor) -> Result<Tensor> {
        let images = images.to_device(&self.device)?;
        let rgb = match images.shape() {
            [_, 3, h, w] if *h > 0 && *w > 0 => images,
            [_, 1, h, w] if *h > 0 && *w > 0 => ops::concat_channels(&[&images, &images, &images])?,
            other => {
                return Err(Error::shape(
                    "FidInception::features",
                    format!("images {other:?} must be [N, 1 or 3, H, W]"),
                ))
            }
        };
        let resized = resize_bilinear(&rgb, (INPUT_SIZE, INPUT_SIZE))?;
        ops::scale(&resized, 2.0, -1.0)
    }

    /// One BasicConv2d: convolution with the folded batch norm, then ReLU.
    fn conv(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let c = self.convs.get(name).ok_or_else(|| {
            Error::invalid(format!(
                "FID Inception: no layer {name} (the layer table and the forward pass disagree)"
            ))
        })?;
        debug_assert!(
            matches!(x.shape(), [_, _, h, w] if *h == c.input_side && *w == c.input_side),
            "{name}: input {:?}, the layer table says {} x {}",
            x.shape(),
            c.input_side,
            c.input_side
        );
        ops::relu(&conv2d(x, &c.weight, Some(&c.bias), c.cfg)?)
    }

    /// BasicConv2d layers applied one after the other.
    fn chain(&self, names: &[&str], x: &Tensor) -> Result<Tensor> {
        let mut h: Option<Tensor> = None;
        for name in names {
            h = Some(self.conv(name, h.as_ref().unwrap_or(x))?);
        }
        h.ok_or_else(|| Error::invalid("FID Inception: a branch without layers"))
    }

    fn branch(&self, block: &str, branches: &[&str], x: &Tensor) -> Result<Tensor> {
        let names: Vec<String> = branches.iter().map(|b| format!("{block}.{b}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.chain(&refs, x)
    }

    fn block_a(&self, b: &str, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch(b, &["branch1x1"], x)?;
        let b5 = self.branch(b, &["branch5x5_1", "branch5x5_2"], x)?;
        let b3 = self.branch(
            b,
            &["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
            x,
        )?;
        let pool = avg_pool2d(x, PoolCfg::new(3, 1, 1).excluding_pad())?;
        let bp = self.branch(b, &["branch_pool"], &pool)?;
        ops::concat_channels(&[&b1, &b5, &b3, &bp])
    }

    fn block_b(&self, b: &str, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch(b, &["branch3x3"], x)?;
        let b3dbl = self.branch(
            b,
            &["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
            x,
        )?;
        let pool = max_pool2d(x, MAX_POOL_3X3_S2)?;
        ops::concat_channels(&[&b3, &b3dbl, &pool])
    }

    fn block_c(&self, b: &str, x: &Tensor) -> Result<Tensor> {
        let b1 = self.branch(b, &["branch1x1"], x)?;
        let b7 = self.branch(b, &["branch7x7_1", "branch7x7_2", "branch7x7_3"], x)?;
        let b7dbl = self.branch(
            b,
            &[
                "branch7x7dbl_1",
                "branch7x7dbl_2",
                "branch7x7dbl_3",
                "branch7x7dbl_4",
                "branch7x7dbl_5",
            ],
            x,
        )?;
        let pool = avg_pool2d(x, PoolCfg::new(3, 1, 1).excluding_pad())?;
        let bp = self.branch(b, &["branch_pool"], &pool)?;
        ops::concat_channels(&[&b1, &b7, &b7dbl, &bp])
    }

    fn block_d(&self, b: &str, x: &Tensor) -> Result<Tensor> {
        let b3 = self.branch(b, &["branch3x3_1", "branch3x3_2"], x)?;
        let b7 = self.branch(
            b,
            &[
                "branch7x7x3_1",
                "branch7x7x3_2",
                "branch7x7x3_3",
                "branch7x7x3_4",
            ],
            x,
        )?;
        let pool = max_pool2d(x, MAX_POOL_3X3_S2)?;
        ops::concat_channels(&[&b3, &b7, &pool])
    }

    /// FIDInceptionE_1 (`max_pool` false: a 3x3 average pool without the padding) or E_2 (a 3x3
    /// max pool).
    fn block_e(&self, b: &str, x: &Tensor, max_pool: bool) -> Result<Tensor> {
        let b1 = self.branch(b, &["branch1x1"], x)?;
        let s = self.branch(b, &["branch3x3_1"], x)?;
        let b3a = self.branch(b, &["branch3x3_2a"], &s)?;
        let b3b = self.branch(b, &["branch3x3_2b"], &s)?;
        let d = self.branch(b, &["branch3x3dbl_1", "branch3x3dbl_2"], x)?;
        let d3a = self.branch(b, &["branch3x3dbl_3a"], &d)?;
        let d3b = self.branch(b, &["branch3x3dbl_3b"], &d)?;
        let window = PoolCfg::new(3, 1, 1);
        let pool = if max_pool {
            max_pool2d(x, window)?
        } else {
            avg_pool2d(x, window.excluding_pad())?
        };
        let bp = self.branch(b, &["branch_pool"], &pool)?;
        ops::concat_channels(&[&b1, &b3a, &b3b, &d3a, &d3b, &bp])
    }
}

/// Refuses a state dict that is not the FID Inception's, naming what is missing, misshapen or
/// unexpected (a few of each).
fn check_names_and_shapes(tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    const SHOWN: usize = 5;
    let expected = expected_tensors();
    let mut missing = Vec::new();
    let mut misshapen = Vec::new();
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => missing.push(name.clone()),
            Some((s, _)) if s != shape => {
                misshapen.push(format!("{name} is {s:?}, expected {shape:?}"))
            }
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<&String> = tensors
        .keys()
        .filter(|n| !known.contains(n.as_str()) && !n.starts_with("fc."))
        .collect();
    if missing.is_empty() && misshapen.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    let list = |what: &str, items: Vec<String>| {
        (!items.is_empty()).then(|| {
            let more = items.len().saturating_sub(SHOWN);
            let shown = items.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{what}: {shown}{more}")
        })
    };
    let problems: Vec<String> = [
        list("missing", missing),
        list("wrong shape", misshapen),
        list("unexpected", unexpected.into_iter().cloned().collect()),
    ]
    .into_iter()
    .flatten()
    .collect();
    Err(Error::invalid(format!(
        "not the FID InceptionV3 weights ({}); convert pytorch-fid's \
         pt_inception-2015-12-05-6726825d.pth with reference/convert_inception.py",
        problems.join("; ")
    )))
}

/// The folded weight and bias of one BasicConv2d (module doc), computed in f64; refuses
/// non-finite values and a variance that makes the scale infinite.
fn fold_batch_norm(
    w: &[f32],
    [gamma, beta, mean, var]: [&[f32]; 4],
) -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
    if [w, gamma, beta, mean, var]
        .iter()
        .any(|t| t.iter().any(|v| !v.is_finite()))
    {
        return Err("holds a NaN or an infinity".into());
    }
    let scale: Vec<f64> = gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| g as f64 / (v as f64 + BN_EPS).sqrt())
        .collect();
    if scale.iter().any(|s| !s.is_finite()) {
        return Err(format!("a running variance of -{BN_EPS} or less"));
    }
    let per_out = w.len() / scale.len();
    let weight = w
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * scale[i / per_out]) as f32)
        .collect();
    let bias = (0..scale.len())
        .map(|c| (beta[c] as f64 - mean[c] as f64 * scale[c]) as f32)
        .collect();
    Ok((weight, bias))
}

/// The stand-in weights of [`FidInception::with_formula_weights`] under pytorch-fid's names, as
/// reference/inception.py makes them (docs/SPEC.md section 10.1): a hash of each tensor's name and
/// element index mapped to He-uniform convolution weights and batch-norm statistics near 1.
pub fn formula_state_dict() -> BTreeMap<String, HostTensor> {
    expected_tensors()
        .into_iter()
        .map(|(name, shape)| {
            let key = fnv1a64(name.as_bytes());
            let fan_in: usize = shape[1..].iter().product();
            let value = |u: f64| -> f64 {
                if name.ends_with("conv.weight") {
                    (2.0 * u - 1.0) * (6.0 / fan_in as f64).sqrt()
                } else if name.ends_with("bn.weight") || name.ends_with("bn.running_var") {
                    0.5 + u
                } else {
                    0.2 * (2.0 * u - 1.0)
                }
            };
            let n: usize = shape.iter().product();
            let data = (0..n as u64)
                .map(|i| value(unit_hash(key, i)) as f32)
                .collect();
            (name, (shape, data))
        })
        .collect()
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Element `i` of the stream keyed `key`, uniform in [0, 1): the SplitMix64 finaliser of
/// `key + (i + 1) golden-ratio`, top 53 bits.
fn unit_hash(key: u64, i: u64) -> f64 {
    let mut z = key.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
