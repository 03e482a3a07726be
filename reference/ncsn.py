"""PyTorch reference of the NCSN conditional RefineNet with dilated convolutions (SPEC section 9).

This is the network of Song & Ermon (2019), `CondRefineNetDilated` (four encoder stages) and
`CondRefineNetDeeperDilated` (five stages) of the ermongroup/ncsn repository, rewritten from
scratch as a readable reference for the Rust engine. It exists for two reasons:

* the golden-file test (docs/DESIGN.md section 5, item 3): `make_golden.py` runs it in float64 and
  stores inputs, outputs and every parameter gradient for the Rust test to compare against;
* checkpoint comparison: module attribute names and their registration order are chosen so that
  `state_dict()` keys and their order are identical to ncsn's (e.g. `res2.0.conv2.conv.weight`,
  `refine4.adapt_convs.1.2_1_norm.embed.weight`). NETWORK.md lists them all.

Behaviour that is easy to get wrong (each is also stated in NETWORK.md):

* The conditional instance norm++ uses the biased variance over the pixels of one channel, but the
  UNBIASED variance (divisor C - 1) of the per-channel means across channels; eps = 1e-5 in both.
* A residual block marked "down" that also has a dilation does NOT downsample: ncsn replaces the
  mean-pooled convolutions by stride-1 dilated ones there. Only the undilated "down" blocks
  (res2, and res3 of the deeper network) halve the resolution. ncsn's `adjust_padding` for 28x28
  inputs is only passed to dilated blocks, where it is ignored, so it never has any effect; it is
  therefore not modelled here (ConvMeanPool rejects odd sizes instead).
* Bilinear upsampling in the multi-resolution fusion uses align_corners=True.
* The 5x5 average pooling of the chained residual pooling counts the zero padding (divisor 25).
* The input is mapped x -> 2x - 1 before the first convolution (ncsn with logit_transform=false).
* The output is the raw end convolution: no division by a noise level (that is ncsnv2).

Install and run: see reference/README.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# Both variance terms of the conditional instance norm++ use this epsilon (ncsn: 1e-5).
NORM_EPS = 1e-5

TOPOLOGIES = ("standard", "deeper")
NORMS = ("cin++", "cin")


@dataclass(frozen=True)
class NetworkConfig:
    """Everything that determines the network's parameter shapes and its forward computation."""

    channels: int  # image channels C (1 for 28x28 greyscale, 3 for 32x32 colour)
    image_size: int  # H = W
    ngf: int  # base width f; stages use f, 2f (and 4f in the deeper topology)
    num_classes: int  # number of levels N the network is conditioned on (embedding rows)
    topology: str = "standard"  # "standard": 4 stages (CondRefineNetDilated); "deeper": 5 stages
    norm: str = "cin++"  # "cin++" everywhere per SPEC 9; "cin" only to load ncsn's deeper checkpoints
    centre_input: bool = True  # x -> 2x - 1 first (ncsn, logit_transform = false)

    def as_metadata(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}


def preset(name: str, channels: int, image_size: int, num_classes: Optional[int] = None) -> NetworkConfig:
    """Named widths.

    paper:      ncsn's published widths, ngf = 64 for 28x28 (configs/anneal.yml, MNIST) and 128 for
                32x32 (CIFAR-10 / CelebA); N = 1000 levels (paper 001, N = 1000 discretisation steps).
    deep:       the five-stage network (paper 001 App. D.1 names res1-res5 / refine1-refine5; paper 003
                Sec. 6.1 "NCSNDeeper"), same widths as `paper`.
    tiny:       four stages, ngf = 8, N = 10: for CPU runs and tests.
    tiny_deep:  five stages, ngf = 4, N = 10: the deeper topology at test size.
    """
    paper_ngf = 64 if image_size <= 28 else 128
    table = {
        "paper": ("standard", paper_ngf, 1000),
        "deep": ("deeper", paper_ngf, 1000),
        "tiny": ("standard", 8, 10),
        "tiny_deep": ("deeper", 4, 10),
    }
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(table)}")
    topology, ngf, default_classes = table[name]
    return NetworkConfig(
        channels=channels,
        image_size=image_size,
        ngf=ngf,
        num_classes=default_classes if num_classes is None else num_classes,
        topology=topology,
    )


def conv3x3(in_ch: int, out_ch: int, bias: bool, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution, stride 1, 'same' output size (padding = dilation)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=dilation, dilation=dilation, bias=bias)


def elu(x: torch.Tensor) -> torch.Tensor:
    """The only nonlinearity of the network: ELU with alpha = 1."""
    return F.elu(x, alpha=1.0)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """Conditional instance normalisation++ (Song & Ermon 2019, App. A.1).

    For sample b with level k, channel c: mu_c, s2_c = mean and biased variance of x[b, c] over H*W;
    m, v = mean and unbiased variance of mu_1..mu_C across channels;
        out = gamma[k,c] * ((x - mu_c) / sqrt(s2_c + eps) + alpha[k,c] * (mu_c - m) / sqrt(v + eps))
              + beta[k,c]
    with embed.weight[k] = [gamma (C) | alpha (C) | beta (C)].
    """

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        if features < 2:
            raise ValueError("conditional instance norm++ needs at least 2 channels (variance across channels)")
        self.features = features
        self.embed = nn.Embedding(num_classes, 3 * features)
        with torch.no_grad():
            self.embed.weight[:, : 2 * features].normal_(1.0, 0.02)  # gamma and alpha ~ N(1, 0.02)
            self.embed.weight[:, 2 * features :].zero_()  # beta = 0

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=(2, 3))
        s2 = x.var(dim=(2, 3), unbiased=False)
        h = (x - mu[:, :, None, None]) / torch.sqrt(s2[:, :, None, None] + NORM_EPS)
        m = mu.mean(dim=1, keepdim=True)
        v = mu.var(dim=1, unbiased=True, keepdim=True)
        mean_code = (mu - m) / torch.sqrt(v + NORM_EPS)
        gamma, alpha, beta = self.embed(levels).chunk(3, dim=1)
        h = h + alpha[:, :, None, None] * mean_code[:, :, None, None]
        return gamma[:, :, None, None] * h + beta[:, :, None, None]


class ConditionalInstanceNorm2d(nn.Module):
    """Plain conditional instance norm, used by ncsn's CondRefineNetDeeperDilated.

    Only here so that ncsn's deeper checkpoints can be loaded; SPEC 9 uses the ++ version throughout.
    embed.weight[k] = [gamma (C) | beta (C)]; ncsn initialises gamma ~ U(0, 1) (not N(1, 0.02) as its
    comment says) and beta = 0.
    """

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.features = features
        self.embed = nn.Embedding(num_classes, 2 * features)
        with torch.no_grad():
            self.embed.weight[:, :features].uniform_(0.0, 1.0)
            self.embed.weight[:, features:].zero_()

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        h = F.instance_norm(x, eps=NORM_EPS)
        gamma, beta = self.embed(levels).chunk(2, dim=1)
        return gamma[:, :, None, None] * h + beta[:, :, None, None]


def make_norm(kind: str, features: int, num_classes: int) -> nn.Module:
    if kind == "cin++":
        return ConditionalInstanceNorm2dPlus(features, num_classes)
    if kind == "cin":
        return ConditionalInstanceNorm2d(features, num_classes)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


def mean_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """Average of the four pixels of each 2x2 block (ncsn sums the four strided views, then / 4)."""
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"mean pooling needs even spatial sizes, got {tuple(x.shape[2:])}")
    return (x[:, :, ::2, ::2] + x[:, :, 1::2, ::2] + x[:, :, ::2, 1::2] + x[:, :, 1::2, 1::2]) / 4.0


class ConvMeanPool(nn.Module):
    """Convolution ('same' padding, with bias) followed by 2x2 mean pooling: halves H and W."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=1, padding=kernel_size // 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_pool2x2(self.conv(x))


class ConditionalResidualBlock(nn.Module):
    """Pre-activation residual block: norm1, ELU, conv1, norm2, ELU, conv2, plus a shortcut.

    Variants (ncsn's `resample` / `dilation` arguments):
      down, no dilation: conv1 3x3 in->in; conv2 = 3x3 in->out then mean pool; shortcut = 1x1 then
                         mean pool. Output at half resolution.
      down, dilation d:  conv1 3x3/d in->in; conv2 3x3/d in->out; shortcut 3x3/d in->out.
                         NO downsampling despite the name.
      plain, dilation d: conv1 3x3/d in->out; conv2 3x3/d out->out; shortcut 3x3/d only if in != out.
      plain, no dilation: as above with d = 1, identity shortcut (in == out required).
    All convolutions have biases. Attributes are created in ncsn's order (conv1, normalize2, conv2,
    shortcut, normalize1) so that state_dict keys come out in the same order.
    """

    def __init__(self, in_ch: int, out_ch: int, num_classes: int, norm: str, down: bool, dilation: Optional[int]):
        super().__init__()
        self.in_ch, self.out_ch, self.down = in_ch, out_ch, down
        shortcut: Optional[nn.Module] = None
        if down and dilation is None:
            self.conv1 = conv3x3(in_ch, in_ch, bias=True)
            self.normalize2 = make_norm(norm, in_ch, num_classes)
            self.conv2 = ConvMeanPool(in_ch, out_ch, kernel_size=3)
            shortcut = ConvMeanPool(in_ch, out_ch, kernel_size=1)
        elif down:
            self.conv1 = conv3x3(in_ch, in_ch, bias=True, dilation=dilation)
            self.normalize2 = make_norm(norm, in_ch, num_classes)
            self.conv2 = conv3x3(in_ch, out_ch, bias=True, dilation=dilation)
            shortcut = conv3x3(in_ch, out_ch, bias=True, dilation=dilation)
        else:
            d = 1 if dilation is None else dilation
            if in_ch != out_ch and dilation is None:
                raise ValueError("an undilated, non-downsampling block must keep its width (ncsn has no such block)")
            self.conv1 = conv3x3(in_ch, out_ch, bias=True, dilation=d)
            self.normalize2 = make_norm(norm, out_ch, num_classes)
            self.conv2 = conv3x3(out_ch, out_ch, bias=True, dilation=d)
            if in_ch != out_ch:
                shortcut = conv3x3(in_ch, out_ch, bias=True, dilation=d)
        if shortcut is not None:
            self.shortcut = shortcut
        self.normalize1 = make_norm(norm, in_ch, num_classes)

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        h = self.conv1(elu(self.normalize1(x, levels)))
        h = self.conv2(elu(self.normalize2(h, levels)))
        skip = self.shortcut(x) if hasattr(self, "shortcut") else x
        return skip + h


class CondRCUBlock(nn.Module):
    """Residual conv units: n_blocks times [x + (norm, ELU, conv3x3 no bias) repeated n_stages times].

    Parameters are named `{i}_{j}_norm` / `{i}_{j}_conv` (1-based block i, stage j) as in ncsn.
    """

    def __init__(self, features: int, n_blocks: int, n_stages: int, num_classes: int, norm: str):
        super().__init__()
        self.n_blocks, self.n_stages = n_blocks, n_stages
        for i in range(1, n_blocks + 1):
            for j in range(1, n_stages + 1):
                setattr(self, f"{i}_{j}_norm", make_norm(norm, features, num_classes))
                setattr(self, f"{i}_{j}_conv", conv3x3(features, features, bias=False))

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.n_blocks + 1):
            residual = x
            for j in range(1, self.n_stages + 1):
                x = getattr(self, f"{i}_{j}_norm")(x, levels)
                x = elu(x)
                x = getattr(self, f"{i}_{j}_conv")(x)
            x = x + residual
        return x


class CondMSFBlock(nn.Module):
    """Multi-resolution fusion: sum_i upsample(conv3x3_bias(norm_i(x_i))) to the target size.

    Upsampling is bilinear with align_corners=True (identity when the size already matches).
    """

    def __init__(self, in_planes: list[int], features: int, num_classes: int, norm: str):
        super().__init__()
        self.features = features
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for planes in in_planes:
            self.convs.append(conv3x3(planes, features, bias=True))
            self.norms.append(make_norm(norm, planes, num_classes))

    def forward(self, xs: list[torch.Tensor], levels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        total = None
        for x, conv, norm in zip(xs, self.convs, self.norms):
            h = conv(norm(x, levels))
            h = F.interpolate(h, size=size, mode="bilinear", align_corners=True)
            total = h if total is None else total + h
        return total


class CondCRPBlock(nn.Module):
    """Chained residual pooling: x = ELU(x); path = x; per stage: path = conv(avgpool5(norm(path))); x += path.

    The 5x5 average pool has stride 1, zero padding 2 and counts the padding (always divides by 25).
    Convolutions have no bias.
    """

    def __init__(self, features: int, n_stages: int, num_classes: int, norm: str):
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(n_stages):
            self.norms.append(make_norm(norm, features, num_classes))
            self.convs.append(conv3x3(features, features, bias=False))
        self.pool = nn.AvgPool2d(kernel_size=5, stride=1, padding=2, count_include_pad=True)

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        x = elu(x)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = conv(self.pool(norm(path, levels)))
            x = path + x
        return x


class CondRefineBlock(nn.Module):
    """RefineNet block: per input an RCU (2 blocks x 2 stages); fuse (MSF) if more than one input;
    chained residual pooling (2 stages); output RCU (3 blocks if it is the last refine block, else 1)."""

    def __init__(self, in_planes: list[int], features: int, num_classes: int, norm: str, start: bool, end: bool):
        super().__init__()
        if start != (len(in_planes) == 1):
            raise ValueError("exactly the first refine block takes a single input")
        if start and in_planes[0] != features:
            raise ValueError("the first refine block must keep its width (no fusion conv to change it)")
        self.adapt_convs = nn.ModuleList(CondRCUBlock(p, 2, 2, num_classes, norm) for p in in_planes)
        self.output_convs = CondRCUBlock(features, 3 if end else 1, 2, num_classes, norm)
        if not start:
            self.msf = CondMSFBlock(in_planes, features, num_classes, norm)
        self.crp = CondCRPBlock(features, 2, num_classes, norm)

    def forward(self, xs: list[torch.Tensor], levels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        hs = [adapt(x, levels) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, levels, size) if len(hs) > 1 else hs[0]
        h = self.crp(h, levels)
        return self.output_convs(h, levels)


# Encoder stages: per stage a list of residual blocks (in width, out width, down, dilation), widths in
# units of ngf. Decoder: refine blocks (input widths, output width), applied from the deepest stage up.
ENCODER = {
    "standard": [
        [(1, 1, False, None), (1, 1, False, None)],
        [(1, 2, True, None), (2, 2, False, None)],
        [(2, 2, True, 2), (2, 2, False, 2)],
        [(2, 2, True, 4), (2, 2, False, 4)],
    ],
    "deeper": [
        [(1, 1, False, None), (1, 1, False, None)],
        [(1, 2, True, None), (2, 2, False, None)],
        [(2, 2, True, None), (2, 2, False, None)],
        [(2, 4, True, 2), (4, 4, False, 2)],
        [(4, 4, True, 4), (4, 4, False, 4)],
    ],
}
DECODER = {
    "standard": [([2], 2), ([2, 2], 2), ([2, 2], 1), ([1, 1], 1)],
    "deeper": [([4], 4), ([4, 4], 2), ([2, 2], 2), ([2, 2], 1), ([1, 1], 1)],
}


class CondRefineNetDilated(nn.Module):
    """The score network s_theta(x, k): [B, C, H, W] x levels [B] -> [B, C, H, W] (SPEC 9).

    Attribute names and order: begin_conv, normalizer, end_conv, res1..resL, refine1..refineL.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        if config.topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {config.topology!r}; expected one of {TOPOLOGIES}")
        self.config = config
        f, n, norm = config.ngf, config.num_classes, config.norm
        self.begin_conv = conv3x3(config.channels, f, bias=True)
        self.normalizer = make_norm(norm, f, n)
        self.end_conv = conv3x3(f, config.channels, bias=True)
        self.n_stages = len(ENCODER[config.topology])
        for s, blocks in enumerate(ENCODER[config.topology], start=1):
            stage = nn.ModuleList(
                ConditionalResidualBlock(cin * f, cout * f, n, norm, down, dil) for cin, cout, down, dil in blocks
            )
            setattr(self, f"res{s}", stage)
        last = self.n_stages
        for r, (ins, out) in enumerate(DECODER[config.topology], start=1):
            block = CondRefineBlock([p * f for p in ins], out * f, n, norm, start=(r == 1), end=(r == last))
            setattr(self, f"refine{r}", block)

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        h = 2.0 * x - 1.0 if self.config.centre_input else x
        h = self.begin_conv(h)
        layers = []
        for s in range(1, self.n_stages + 1):
            for block in getattr(self, f"res{s}"):
                h = block(h, levels)
            layers.append(h)
        # refine1 takes the deepest stage alone; refine r fuses stage L-r+1 with refine r-1's output,
        # at the resolution of that stage.
        ref = None
        for r in range(1, self.n_stages + 1):
            skip = layers[self.n_stages - r]
            xs = [skip] if ref is None else [skip, ref]
            ref = getattr(self, f"refine{r}")(xs, levels, tuple(skip.shape[2:]))
        out = elu(self.normalizer(ref, levels))
        return self.end_conv(out)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
