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

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddpmpp import GROUP_NORM_EPS, Ddpmpp, preset  # noqa: E402
from make_golden import GoldenCase, uniform, write_case, write_cases  # noqa: E402


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


def make_case(case: GoldenCase, out_dir: Path) -> Path:
    config = preset(case.preset, case.channels, case.image_size)
    gen = torch.Generator().manual_seed(case.seed)
    model = Ddpmpp(config)
    fill_parameters(model, gen)
    metadata = {**config.as_metadata(), "group_norm_eps": repr(GROUP_NORM_EPS)}
    # Level indices as floats: the embedding multiplies them by its frequencies.
    return write_case(case, model, gen, torch.float32, metadata, "reference/make_ddpmpp_golden.py", out_dir)


if __name__ == "__main__":
    write_cases(CASES, make_case, __doc__.split("\n")[0])
