"""Writes the DDPM++ golden files under tests/data/ (docs/DESIGN.md section 5, item 3), as
reference/make_golden.py does for NCSN:

    /opt/torch-venv/bin/python reference/make_ddpmpp_golden.py

For each case it builds a `ddpmpp_tiny` network from reference/ddpmpp.py, fills every parameter
from a seeded generator with values far from the initialisation (score_sde starts the second
convolution of each residual block, the attention output and the last convolution at 1e-10 scale,
which would hide their gradients' errors), draws inputs x in [1, 2], levels k and an upstream
gradient g, and computes in float64

    out = net(x, k),   L = sum(out * g),   dL/dparam for every parameter,   dL/dx.

Keys and metadata are those of make_golden.py (input.x, input.levels, input.grad_out, output, loss,
input_grad.x, param.<name>, grad.<name>), with the DDPM++ configuration in the metadata and the
parameters whose gradient is zero in exact arithmetic (`zero_gradients`).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddpmpp import GROUP_NORM_EPS, Ddpmpp, parameter_count, preset  # noqa: E402
from make_golden import golden_tensors, max_relative_deviation, uniform, write_golden  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class GoldenCase:
    file_name: str
    preset: str
    channels: int
    image_size: int
    levels: tuple[int, ...]  # one per sample; a repeated level checks nothing is cached per level
    seed: int


CASES = [
    GoldenCase("ddpmpp_tiny_28.safetensors", "ddpmpp_tiny", 1, 28, (0, 9, 0), seed=128),
    GoldenCase("ddpmpp_tiny_32.safetensors", "ddpmpp_tiny", 3, 32, (7, 999), seed=132),
]


def fill_parameters(model: Ddpmpp, gen: torch.Generator) -> None:
    """Deterministic float32 values for every parameter, in state_dict order: weights and biases of
    convolutions, linear and NIN layers U(-b, b) with b = 1/sqrt(fan_in); GroupNorm scale 1 + 0.3 z
    and shift 0.3 z."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".GroupNorm_" in name or name.startswith(f"all_modules.{len(model.all_modules) - 2}."):
                z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                values = 1.0 + 0.3 * z if name.endswith("weight") else 0.3 * z
            else:
                values = uniform(p.shape, 1.0 / math.sqrt(fan_in(model, name)), gen)
            p.copy_(values)


def fan_in(model: Ddpmpp, name: str) -> int:
    """Inputs per output of the layer a parameter belongs to (a bias takes its weight's)."""
    params = dict(model.named_parameters())
    stem, leaf = name.rsplit(".", 1)
    weight = params[f"{stem}.W"] if leaf in ("W", "b") else params[f"{stem}.weight"]
    if leaf in ("W", "b"):
        return weight.shape[0]  # NIN: W [in, out]
    return weight[0].numel()


def run(model: Ddpmpp, x: torch.Tensor, levels: torch.Tensor, g: torch.Tensor, dtype: torch.dtype):
    net = model.to(dtype).eval()
    net.zero_grad(set_to_none=True)
    xin = x.to(dtype).requires_grad_(True)
    out = net(xin, levels)
    loss = (out * g.to(dtype)).sum()
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in net.named_parameters()}
    return out.detach(), loss.detach(), grads, xin.grad.detach()


def make_case(case: GoldenCase, out_dir: Path) -> Path:
    config = preset(case.preset, case.channels, case.image_size)
    gen = torch.Generator().manual_seed(case.seed)
    model = Ddpmpp(config)
    fill_parameters(model, gen)
    params32 = {name: t.detach().clone().float() for name, t in model.state_dict().items()}

    batch, size = len(case.levels), case.image_size
    x = 1.0 + torch.rand(batch, case.channels, size, size, generator=gen, dtype=torch.float32)
    g = torch.randn(batch, case.channels, size, size, generator=gen, dtype=torch.float32)
    levels = torch.tensor(case.levels, dtype=torch.float32)

    out64, loss64, grads64, xgrad64 = run(model, x, levels, g, torch.float64)
    out32, loss32, grads32, xgrad32 = run(model, x, levels, g, torch.float32)
    # The attention key's bias has a zero gradient in exact arithmetic (it adds q_i . b to every
    # logit of row i, which the softmax ignores); float64 leaves ~1e-16 there, so it is listed
    # apart and left out of the relative deviation.
    zero_grads = [n for n in grads64 if grads64[n].abs().max().item() < 1e-10]
    grad_dev = max(max_relative_deviation(grads32[n], grads64[n]) for n in grads64 if n not in zero_grads)

    tensors = golden_tensors(x, levels, g, (out64, loss64, xgrad64, grads64), params32)
    metadata = config.as_metadata()
    metadata.update(
        {
            "preset": case.preset,
            "batch": str(batch),
            "levels": ",".join(str(k) for k in case.levels),
            "seed": str(case.seed),
            "group_norm_eps": repr(GROUP_NORM_EPS),
            "parameter_count": str(parameter_count(model)),
            "parameter_names": ",".join(params32),  # state_dict order
            "reference_dtype": "float64",
            "loss_float64": repr(loss64.item()),
            "f32_output_max_rel_dev": f"{max_relative_deviation(out32, out64):.3e}",
            "f32_grad_max_rel_dev": f"{grad_dev:.3e}",
            "zero_gradients": ",".join(zero_grads),
            "f32_input_grad_max_rel_dev": f"{max_relative_deviation(xgrad32, xgrad64):.3e}",
            "torch_version": torch.__version__,
            "generator": "reference/make_ddpmpp_golden.py",
        }
    )
    return write_golden(out_dir / case.file_name, tensors, metadata, parameter_count(model), loss64, out64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "tests" / "data")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    for case in CASES:
        make_case(case, args.out_dir)


if __name__ == "__main__":
    main()
