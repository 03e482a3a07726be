"""PyTorch reference of the FID InceptionV3 (pytorch-fid's feature network), and its formula weights.

FID and KID are only comparable with published numbers when they are computed in the features of
one particular network: the TensorFlow Inception graph of 2015-12-05 that the original FID code
used, as ported to PyTorch by mseitzer/pytorch-fid (`src/pytorch_fid/inception.py`, weights
`pt_inception-2015-12-05-6726825d.pth` from the pytorch-fid GitHub releases). This file rewrites that
network from its architecture, as a readable reference for the Rust engine, for three uses:

* the golden-file test: `make_inception_golden.py` runs it in float64 with the formula weights
  below and stores inputs, block summaries and the 2048-d features for the Rust test;
* the weight converter: `convert_inception.py` checks the user's pytorch-fid weight file against
  `state_dict()` of this module, so module attribute names, their registration order and every
  shape are those of the weight file (torchvision's `Inception3` with `aux_logits=False`,
  `num_classes=1008`: `Conv2d_1a_3x3.conv.weight`, `Conv2d_1a_3x3.bn.running_var`,
  `Mixed_7c.branch_pool.bn.bias`, ..., `fc.weight`, `fc.bias`);
* debugging: `features(..., return_blocks=True)` gives pytorch-fid's four block outputs.

Behaviour that is easy to get wrong:

* Every convolution has no bias and is followed by BatchNorm with eps = 0.001 (not PyTorch's 1e-5),
  always with the running statistics (inference), then ReLU.
* The 3x3 average pools inside Mixed_5b-d, Mixed_6b-e and Mixed_7b do NOT count the zero padding
  (divisor = number of in-image pixels of the window, count_include_pad=False), as TensorFlow's pool
  does; torchvision's own blocks count it, which is one of the differences of the FID network.
* Mixed_7c's pooling branch uses a 3x3 MAX pool (stride 1, padding 1), not an average pool. This is
  a quirk of the TF graph that pytorch-fid reproduces; Mixed_7b uses the average pool.
* The reductions (Mixed_6a, Mixed_7a) and the two stem pools are 3x3 max pools with stride 2 and no
  padding (floor mode): 147 -> 73, 71 -> 35, 35 -> 17, 17 -> 8.
* Input: images in [0, 1] are resized to 299x299 with bilinear interpolation, align_corners=False
  and no antialiasing (F.interpolate's default), then mapped to [-1, 1] by 2x - 1. Resizing is done
  even when the input is already 299x299 (it is the identity then). A 1-channel image is repeated
  to 3 channels before the resize (this is the engine's convention; pytorch-fid takes RGB only).
* The features are the global average pool of Mixed_7c's output (8x8 at 299 input): [N, 2048].
  `fc` (1008 classes) is part of the weight file but is not used for FID.

The formula weights (`formula_state_dict`) are a deterministic, file-free set of float32 weights
defined by an integer hash of each tensor's name and element index, so that the Rust test can
regenerate exactly the same weights without the real (non-redistributable, 95 MB) file. The rule
is in `formula_values`' docstring and in reference/README.md.

Install and run: see reference/README.md.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, kept by the port
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's classifier width (1000 classes + 8 unused); fc only
BLOCK_CHANNELS = (64, 192, 768, 2048)  # pytorch-fid's block indices 0-3 by their channel counts


class ConvBN(nn.Module):
    """Convolution without bias, inference BatchNorm (eps 0.001), ReLU: every layer of the network.

    The submodule names `conv` and `bn` give the weight file's `<layer>.conv.weight`,
    `<layer>.bn.{weight,bias,running_mean,running_var,num_batches_tracked}`.
    """

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        # Running statistics whatever the module's train/eval mode: this network is only ever used
        # for inference, and a forgotten .eval() must not silently switch to batch statistics.
        y = F.batch_norm(y, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias, False, 0.0, BN_EPS)
        return F.relu(y)


def avg_pool_3x3_exclude_pad(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 1, padding 1, divisor = in-image pixels only (TF 'SAME' average pool)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool_3x3_same(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 1, padding 1 max pool (Mixed_7c's pooling branch); padding never wins."""
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def max_pool_3x3_reduce(x: torch.Tensor) -> torch.Tensor:
    """3x3, stride 2, no padding, floor mode: the stem pools and the reductions' pooling branch."""
    return F.max_pool2d(x, kernel_size=3, stride=2)


class MixedA(nn.Module):
    """35x35 block (Mixed_5b/5c/5d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1.

    Output channels 64 + 64 + 96 + pool_features.
    """

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(avg_pool_3x3_exclude_pad(x))
        return torch.cat([a, b, c, d], dim=1)


class MixedB(nn.Module):
    """Reduction 35 -> 17 (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2. Output 384 + 96 + cin."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, max_pool_3x3_reduce(x)], dim=1)


class MixedC(nn.Module):
    """17x17 block (Mixed_6b-6e) with factorised 7x7s; c7 = width of the inner 7-tap convolutions.

    1x1 | 1x1-(1x7)-(7x1) | 1x1-(7x1)-(1x7)-(7x1)-(1x7) | avgpool-1x1, each 192: output 768.
    """

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = (1, 7), (7, 1)  # kernel (kh, kw)
        row_pad, col_pad = (0, 3), (3, 0)
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, row, padding=row_pad)
        self.branch7x7_3 = ConvBN(c7, 192, col, padding=col_pad)
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, col, padding=col_pad)
        self.branch7x7dbl_3 = ConvBN(c7, c7, row, padding=row_pad)
        self.branch7x7dbl_4 = ConvBN(c7, c7, col, padding=col_pad)
        self.branch7x7dbl_5 = ConvBN(c7, 192, row, padding=row_pad)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(avg_pool_3x3_exclude_pad(x))
        return torch.cat([a, b, c, d], dim=1)


class MixedD(nn.Module):
    """Reduction 17 -> 8 (Mixed_7a): 1x1-3x3/2 | 1x1-(1x7)-(7x1)-3x3/2 | maxpool/2.

    Output 320 + 192 + cin.
    """

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        return torch.cat([a, b, max_pool_3x3_reduce(x)], dim=1)


class MixedE(nn.Module):
    """8x8 block (Mixed_7b, Mixed_7c) with split 1x3 / 3x1 outputs.

    1x1 (320) | 1x1-[(1x3) ; (3x1)] (384 + 384) | 1x1-3x3-[(1x3) ; (3x1)] (384 + 384) | pool-1x1 (192):
    output 2048. `pool` is "avg" (exclude-padding average, Mixed_7b) or "max" (Mixed_7c).
    """

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', not {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], dim=1)
        t = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(t), self.branch3x3dbl_3b(t)], dim=1)
        pooled = avg_pool_3x3_exclude_pad(x) if self.pool == "avg" else max_pool_3x3_same(x)
        d = self.branch_pool(pooled)
        return torch.cat([a, b, c, d], dim=1)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3, attribute order = the weight file's key order (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)  # -> 147
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)  # -> 147, then max pool -> 73
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)  # -> 71, then max pool -> 35
        self.Mixed_5b = MixedA(192, 32)  # -> 256
        self.Mixed_5c = MixedA(256, 64)  # -> 288
        self.Mixed_5d = MixedA(288, 64)  # -> 288
        self.Mixed_6a = MixedB(288)  # -> 768 x 17 x 17
        self.Mixed_6b = MixedC(768, 128)
        self.Mixed_6c = MixedC(768, 160)
        self.Mixed_6d = MixedC(768, 160)
        self.Mixed_6e = MixedC(768, 192)
        self.Mixed_7a = MixedD(768)  # -> 1280 x 8 x 8
        self.Mixed_7b = MixedE(1280, "avg")  # -> 2048
        self.Mixed_7c = MixedE(2048, "max")  # -> 2048
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # in the weight file; unused for FID

    def blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """pytorch-fid's four block outputs from a preprocessed [N, 3, 299, 299] input.

        0: after the first max pool [N, 64, 73, 73]; 1: after the second [N, 192, 35, 35];
        2: after Mixed_6e [N, 768, 17, 17]; 3: global average pool of Mixed_7c [N, 2048, 1, 1].
        """
        x = max_pool_3x3_reduce(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        b0 = x
        x = max_pool_3x3_reduce(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        b1 = x
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = getattr(self, name)(x)
        b2 = x
        for name in ("Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        b3 = x.mean(dim=(2, 3), keepdim=True)
        return [b0, b1, b2, b3]


def preprocess(images: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """[N, 1 or 3, H, W] in [0, 1] -> [N, 3, 299, 299] in [-1, 1] (repeat grey, bilinear resize, 2x - 1)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1 or 3, H, W], got {tuple(images.shape)}")
    x = images.to(dtype) if dtype is not None else images
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


@torch.no_grad()
def features(model: FIDInceptionV3, images: torch.Tensor, return_blocks: bool = False):
    """2048-d FID features [N, 2048] of images in [0, 1], computed in the model's dtype.

    With return_blocks=True returns (features, [block0, block1, block2, block3]) as in
    `FIDInceptionV3.blocks`.
    """
    dtype = next(model.parameters()).dtype
    outs = model.blocks(preprocess(images, dtype))
    feats = outs[3].flatten(1)
    return (feats, outs) if return_blocks else feats


# ---------------------------------------------------------------------------------------------
# Formula weights
# ---------------------------------------------------------------------------------------------

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def fnv1a64(name: str) -> int:
    """FNV-1a 64-bit hash of the UTF-8 bytes of name."""
    h = FNV_OFFSET
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def formula_uniforms(name: str, count: int) -> np.ndarray:
    """u_i in [0, 1) for i = 0..count-1: splitmix64's finaliser on key64(name) + (i + 1) * gamma.

    Plain numpy uint64 arithmetic wraps mod 2^64, which is what the rule wants; the top 53 bits of z
    times 2^-53 are exact in float64.
    """
    key = np.uint64(fnv1a64(name))
    i1 = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = key + i1 * np.uint64(GOLDEN_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def formula_values(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The formula's float32 values of the tensor `name` with `shape` (row-major flat index i).

    With u = formula_uniforms(name, numel), all in float64 and then rounded once to float32:

        *.conv.weight [co, ci, kh, kw]   (2u - 1) * sqrt(6 / (ci*kh*kw))   (He-uniform, variance
                                         2 / fan_in: keeps the activation scale through the up to 47
                                         stacked conv-BN-ReLU layers; features come out O(1-10))
        *.bn.weight, *.bn.running_var    0.5 + u
        *.bn.bias, *.bn.running_mean     0.2 * (2u - 1)
        fc.weight, fc.bias               0.01 * (2u - 1)

    Evaluation order for bit-exactness: 2u, then minus 1 (both exact), sqrt(6.0 / fan_in) with
    fan_in as a float64, the product; 0.5 + u; 0.2 * (2u - 1) and 0.01 * (2u - 1) with the float64
    literals 0.2 and 0.01.
    """
    count = math.prod(shape)
    u = formula_uniforms(name, count)
    centred = 2.0 * u - 1.0
    if name.endswith(".conv.weight"):
        if len(shape) != 4:
            raise ValueError(f"{name}: conv weight must be 4-d, got {shape}")
        fan_in = float(shape[1] * shape[2] * shape[3])
        values = centred * math.sqrt(6.0 / fan_in)
    elif name.endswith(".bn.weight") or name.endswith(".bn.running_var"):
        values = 0.5 + u
    elif name.endswith(".bn.bias") or name.endswith(".bn.running_mean"):
        values = 0.2 * centred
    elif name in ("fc.weight", "fc.bias"):
        values = 0.01 * centred
    else:
        raise ValueError(f"no formula rule for {name} {shape}")
    return values.astype(np.float32).reshape(shape)


def formula_state_dict(model: Optional[FIDInceptionV3] = None) -> dict[str, torch.Tensor]:
    """Formula float32 values for every state_dict entry except num_batches_tracked, in order."""
    shapes = state_dict_shapes() if model is None else {n: tuple(t.shape) for n, t in model.state_dict().items()}
    return {
        name: torch.from_numpy(formula_values(name, shape))
        for name, shape in shapes.items()
        if not name.endswith("num_batches_tracked")
    }


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """Every state_dict name -> shape in order, num_batches_tracked included; no weights allocated."""
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in FIDInceptionV3().state_dict().items()}


def expected_shapes(include_fc: bool = True) -> dict[str, tuple[int, ...]]:
    """state_dict names -> shapes of the weight file, in order, without num_batches_tracked."""
    shapes = {
        name: shape
        for name, shape in state_dict_shapes().items()
        if not name.endswith("num_batches_tracked")
    }
    if not include_fc:
        shapes = {name: s for name, s in shapes.items() if not name.startswith("fc.")}
    return shapes


def load_formula(model: FIDInceptionV3) -> FIDInceptionV3:
    """Loads the formula weights (num_batches_tracked keep their value; they are never read)."""
    model.load_state_dict(formula_state_dict(model), strict=False)
    return model
