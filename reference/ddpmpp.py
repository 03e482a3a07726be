"""The DDPM++ score network (score_sde's NCSN++ model in its DDPM++ configuration), written from the
architecture description of docs/SPEC.md section 11, in plain PyTorch, for the golden files of
reference/make_ddpmpp_golden.py and the PyTorch side of the benchmarks.

The configuration is the one the paper's released code trains CIFAR-10 with
(`configs/vp/cifar10_ddpmpp_deep_continuous.py`): BigGAN residual blocks with naive (2x2 mean /
nearest) resampling, GroupNorm(min(C/4, 32), eps 1e-6), swish, skip rescaling by 1/sqrt(2), DDPM
self-attention at the listed resolutions, the sinusoidal (positional) embedding of the level index,
no progressive growing, centred input (no 2x - 1), no scaling by sigma. Parameter names are
score_sde's (`all_modules.<i>.<layer>.<weight|bias|W|b>`) so that its checkpoints' tensors map one
to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

GROUP_NORM_EPS = 1e-6
MAX_POSITIONS = 10000


@dataclass(frozen=True)
class DdpmppConfig:
    channels: int
    image_size: int
    nf: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float

    def as_metadata(self) -> dict[str, str]:
        return {
            "channels": str(self.channels),
            "image_size": str(self.image_size),
            "nf": str(self.nf),
            "ch_mult": ",".join(map(str, self.ch_mult)),
            "num_res_blocks": str(self.num_res_blocks),
            "attn_resolutions": ",".join(map(str, self.attn_resolutions)),
            "dropout": repr(self.dropout),
        }


def preset(name: str, channels: int, image_size: int) -> DdpmppConfig:
    """`ddpmpp`: the released deep CIFAR-10 configuration; `ddpmpp_tiny`: the same structure at
    width 8 with two resolutions, attention at the second, for tests and CPU runs."""
    if name == "ddpmpp":
        return DdpmppConfig(channels, image_size, 128, (1, 2, 2, 2), 8, (16,), 0.1)
    if name == "ddpmpp_tiny":
        return DdpmppConfig(channels, image_size, 8, (1, 2), 1, (image_size // 2,), 0.0)
    raise ValueError(f"unknown DDPM++ preset {name!r}")


def groups_of(channels: int) -> int:
    return min(channels // 4, 32)


def default_init_(weight: torch.Tensor, scale: float = 1.0) -> None:
    """Variance scaling, fan_avg, uniform (score_sde's default_init); scale 0 means 1e-10, so the
    residual branches start almost closed. Fans: axis 1 in, axis 0 out, times the receptive field."""
    scale = 1e-10 if scale == 0 else scale
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def conv(in_ch: int, out_ch: int, kernel: int, init_scale: float = 1.0) -> nn.Conv2d:
    layer = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
    default_init_(layer.weight, init_scale)
    nn.init.zeros_(layer.bias)
    return layer


def linear(in_dim: int, out_dim: int) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    default_init_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Nin(nn.Module):
    """A 1x1 layer over channels with score_sde's parameter layout: W [in, out], b [out]."""

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.empty(in_dim, out_dim))
        default_init_(self.W, init_scale)
        self.b = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bchw,co->bohw", x, self.W)
        return y + self.b[None, :, None, None]


def timestep_embedding(levels: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal embedding of the level index: [sin(k w_j) | cos(k w_j)], w_j = 10000^(-j/(half-1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype, device=levels.device) * -(math.log(MAX_POSITIONS) / (half - 1)))
    args = levels.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 == 1 else emb


class ResnetBlock(nn.Module):
    """BigGAN-style residual block: GN, swish, [resample], conv, + Dense(swish(temb)), GN, swish,
    dropout, conv; shortcut through a 1x1 conv when the shape changes; sum / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, up: bool = False, down: bool = False):
        super().__init__()
        self.up, self.down = up, down
        self.GroupNorm_0 = nn.GroupNorm(groups_of(in_ch), in_ch, eps=GROUP_NORM_EPS)
        self.Conv_0 = conv(in_ch, out_ch, 3)
        self.Dense_0 = linear(temb_dim, out_ch)
        self.GroupNorm_1 = nn.GroupNorm(groups_of(out_ch), out_ch, eps=GROUP_NORM_EPS)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv(out_ch, out_ch, 3, init_scale=0.0)
        self.has_shortcut = in_ch != out_ch or up or down
        if self.has_shortcut:
            self.Conv_2 = conv(in_ch, out_ch, 1)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.GroupNorm_0(x))
        h = self.Conv_0(self.resample(h))
        x = self.resample(x)
        h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.has_shortcut:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual, sum / sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.GroupNorm_0 = nn.GroupNorm(groups_of(channels), channels, eps=GROUP_NORM_EPS)
        # score_sde's NIN defaults to init scale 0.1 (DDPM's nin to 1), and its attention leaves q, k, v at that default.
        self.NIN_0 = Nin(channels, channels, init_scale=0.1)
        self.NIN_1 = Nin(channels, channels, init_scale=0.1)
        self.NIN_2 = Nin(channels, channels, init_scale=0.1)
        self.NIN_3 = Nin(channels, channels, init_scale=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (m(h).reshape(b, c, hh * ww) for m in (self.NIN_0, self.NIN_1, self.NIN_2))
        w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * c ** (-0.5), dim=-1)
        h = torch.einsum("bij,bcj->bci", w, v).reshape(b, c, hh, ww)
        return (x + self.NIN_3(h)) / math.sqrt(2.0)


class Ddpmpp(nn.Module):
    def __init__(self, config: DdpmppConfig):
        super().__init__()
        self.config = cfg = config
        nf, n_res = cfg.nf, len(cfg.ch_mult)
        temb_dim = 4 * nf
        resolutions = [cfg.image_size // 2**i for i in range(n_res)]

        def block(in_ch: int, out_ch: int | None = None, **kw) -> ResnetBlock:
            return ResnetBlock(in_ch, out_ch or in_ch, temb_dim, cfg.dropout, **kw)

        modules: list[nn.Module] = [linear(nf, temb_dim), linear(temb_dim, temb_dim), conv(cfg.channels, nf, 3)]
        # The plan records what forward() does with each module, in module order.
        plan: list[str] = ["dense_0", "dense_1", "conv_in"]
        skips = [nf]
        ch = nf
        for level in range(n_res):
            for _ in range(cfg.num_res_blocks):
                out_ch = nf * cfg.ch_mult[level]
                modules.append(block(ch, out_ch))
                plan.append("down_res")
                ch = out_ch
                if resolutions[level] in cfg.attn_resolutions:
                    modules.append(AttnBlock(ch))
                    plan.append("attn")
                plan.append("push")
                skips.append(ch)
            if level != n_res - 1:
                modules.append(block(ch, down=True))
                plan += ["down_res", "push"]
                skips.append(ch)
        modules += [block(ch), AttnBlock(ch), block(ch)]
        plan += ["mid_res", "attn", "mid_res"]
        for level in reversed(range(n_res)):
            for _ in range(cfg.num_res_blocks + 1):
                out_ch = nf * cfg.ch_mult[level]
                modules.append(block(ch + skips.pop(), out_ch))
                plan.append("up_res")
                ch = out_ch
            if resolutions[level] in cfg.attn_resolutions:
                modules.append(AttnBlock(ch))
                plan.append("attn")
            if level != 0:
                modules.append(block(ch, up=True))
                plan.append("mid_res")
        assert not skips
        modules += [nn.GroupNorm(groups_of(ch), ch, eps=GROUP_NORM_EPS), conv(ch, cfg.channels, 3, init_scale=0.0)]
        plan += ["norm_out", "conv_out"]
        self.all_modules = nn.ModuleList(modules)
        self.plan = plan

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        mods = iter(self.all_modules)
        temb = timestep_embedding(levels, self.config.nf, x.dtype)
        hs: list[torch.Tensor] = []
        h = x
        for step in self.plan:
            if step == "push":
                hs.append(h)
                continue
            m = next(mods)
            if step == "dense_0":
                temb = m(temb)
            elif step == "dense_1":
                temb = m(F.silu(temb))
            elif step == "conv_in":
                h = m(x)
                hs.append(h)
            elif step in ("down_res", "mid_res"):
                h = m(h, temb)
            elif step == "up_res":
                h = m(torch.cat([h, hs.pop()], dim=1), temb)
            elif step == "attn":
                h = m(h)
            elif step == "norm_out":
                h = F.silu(m(h))
            elif step == "conv_out":
                h = m(h)
        assert not hs
        return h


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
