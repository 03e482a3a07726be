"""Writes the network golden files under tests/data/ (docs/DESIGN.md section 5, item 3).

Install (once, outside the repository) and run from the repository root:

    python3 -m venv /opt/torch-venv
    /opt/torch-venv/bin/pip install torch safetensors numpy
    /opt/torch-venv/bin/python reference/make_golden.py

For each case it builds a small network from reference/ncsn.py, fills every parameter from a
seeded generator (float32 values, made non-trivial: the norm embeddings are moved far from their
N(1, 0.02) / 0 initialisation so that the test sees gamma, alpha and beta), draws inputs x in [1, 2],
levels k and an upstream gradient g, and computes in float64

    out = net(x, k),   L = sum(out * g),   dL/dparam for every parameter,   dL/dx.

Everything is stored as float32 (the float64 results rounded once), with these keys:

    input.x [B,C,H,W]   input.levels [B] (level indices as float32)   input.grad_out [B,C,H,W]
    output [B,C,H,W]    loss [1]          input_grad.x [B,C,H,W]
    param.<name>        grad.<name>       for every <name> of state_dict(), see NETWORK.md

The safetensors metadata holds the network config, the case, and the largest deviation of a plain
float32 PyTorch run from the float64 reference (a guide for the Rust test's tolerances).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ncsn import NORM_EPS, CondRefineNetDilated, NetworkConfig, preset  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class GoldenCase:
    file_name: str
    preset: str
    channels: int
    image_size: int
    levels: tuple[int, ...]  # one per sample (batch size = len); a repeat checks that embedding grads add up
    seed: int


NUM_CLASSES = 10
CASES = [
    GoldenCase("ncsn_tiny_28.safetensors", "tiny", 1, 28, (0, 9, 0), seed=28),
    GoldenCase("ncsn_tiny_32.safetensors", "tiny", 3, 32, (7, 2), seed=32),
    GoldenCase("ncsn_tiny_deep_28.safetensors", "tiny_deep", 1, 28, (9, 3), seed=2828),
]


def fill_parameters(model: CondRefineNetDilated, gen: torch.Generator) -> None:
    """Deterministic float32 values for every parameter, in state_dict order.

    Convolutions: U(-b, b) with b = 1/sqrt(fan_in), PyTorch's default distribution, for weights and
    biases alike. Norm embeddings [N, 3C] = [gamma | alpha | beta]: gamma ~ 1 + 0.3 z, alpha ~ 1 + 0.5 z,
    beta ~ 0.3 z, far enough from the initialisation that a wrong gamma/alpha/beta shows.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embed.weight"):
                c = p.shape[1] // 3
                z = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                values = torch.cat([1.0 + 0.3 * z[:, :c], 1.0 + 0.5 * z[:, c : 2 * c], 0.3 * z[:, 2 * c :]], dim=1)
            elif name.endswith("weight") and p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                values = uniform(p.shape, 1.0 / math.sqrt(fan_in), gen)
            elif name.endswith("bias"):
                weight = dict(model.named_parameters())[name[: -len("bias")] + "weight"]
                fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
                values = uniform(p.shape, 1.0 / math.sqrt(fan_in), gen)
            else:
                raise ValueError(f"no fill rule for parameter {name} {tuple(p.shape)}")
            p.copy_(values)


def uniform(shape: torch.Size, bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float32) * 2.0 - 1.0) * bound


def run(model: torch.nn.Module, x: torch.Tensor, levels: torch.Tensor, g: torch.Tensor, dtype: torch.dtype):
    """Forward and backward in `dtype`, in eval mode (no dropout); returns output, loss, parameter
    gradients and input gradient."""
    net = model.to(dtype).eval()
    net.zero_grad(set_to_none=True)
    xin = x.to(dtype).requires_grad_(True)
    out = net(xin, levels)
    loss = (out * g.to(dtype)).sum()
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in net.named_parameters()}
    return out.detach(), loss.detach(), grads, xin.grad.detach()


def max_relative_deviation(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """max |approx - exact| / max |exact| (one scale per tensor, as a Rust tolerance would use)."""
    scale = exact.abs().max().item()
    return (approx.double() - exact).abs().max().item() / (scale if scale > 0 else 1.0)


def canonical_safetensors(blob: bytes) -> bytes:
    """The same file with its JSON header keys sorted, so that reruns are byte-identical.

    The safetensors writer emits header (and metadata) keys in hash-map order, which changes from run
    to run. Offsets in the header are relative to the data section, so re-serialising is safe; the
    header stays padded with spaces to a multiple of 8 bytes as the format requires.
    """
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + header_len :]


def make_case(case: GoldenCase, out_dir: Path) -> Path:
    config: NetworkConfig = preset(case.preset, case.channels, case.image_size, num_classes=NUM_CLASSES)
    gen = torch.Generator().manual_seed(case.seed)
    model = CondRefineNetDilated(config)
    fill_parameters(model, gen)
    metadata = {**config.as_metadata(), "norm_eps": repr(NORM_EPS)}
    return write_case(case, model, gen, torch.int64, metadata, "reference/make_golden.py", out_dir)


def write_case(case, model, gen, levels_dtype, metadata, generator: str, out_dir: Path) -> Path:
    """One golden file for `model`, whose parameters were just filled from `gen`: inputs drawn from
    `gen`, the float64 and float32 runs, the tensors and `metadata` with the run's own keys added.

    A parameter whose float64 gradient is below 1e-10 is zero in exact arithmetic (DDPM++'s
    attention key bias: it shifts every logit of a row alike, which the softmax ignores); such
    parameters are listed under `zero_gradients` and left out of the float32 deviation."""
    params32 = {name: t.detach().clone().float() for name, t in model.state_dict().items()}
    batch, size = len(case.levels), case.image_size
    x = 1.0 + torch.rand(batch, case.channels, size, size, generator=gen, dtype=torch.float32)
    g = torch.randn(batch, case.channels, size, size, generator=gen, dtype=torch.float32)
    levels = torch.tensor(case.levels, dtype=levels_dtype)

    out64, loss64, grads64, xgrad64 = run(model, x, levels, g, torch.float64)
    out32, loss32, grads32, xgrad32 = run(model, x, levels, g, torch.float32)
    zero_grads = [n for n in grads64 if grads64[n].abs().max().item() < 1e-10]
    grad_dev = max(max_relative_deviation(grads32[n], grads64[n]) for n in grads64 if n not in zero_grads)

    tensors = golden_tensors(x, levels, g, (out64, loss64, xgrad64, grads64), params32)
    n_params = sum(p.numel() for p in model.parameters())
    metadata = dict(metadata)
    metadata.update(
        {
            "preset": case.preset,
            "batch": str(batch),
            "levels": ",".join(str(k) for k in case.levels),
            "seed": str(case.seed),
            "parameter_count": str(n_params),
            "parameter_names": ",".join(params32),  # state_dict order
            "reference_dtype": "float64",
            "loss_float64": repr(loss64.item()),
            "f32_output_max_rel_dev": f"{max_relative_deviation(out32, out64):.3e}",
            "f32_grad_max_rel_dev": f"{grad_dev:.3e}",
            "f32_input_grad_max_rel_dev": f"{max_relative_deviation(xgrad32, xgrad64):.3e}",
            "torch_version": torch.__version__,
            "generator": generator,
        }
    )
    if zero_grads:
        metadata["zero_gradients"] = ",".join(zero_grads)
    return write_golden(out_dir / case.file_name, tensors, metadata, n_params, loss64, out64)


def golden_tensors(x, levels, g, results64, params32) -> dict[str, torch.Tensor]:
    """The file's tensors: inputs, the float64 results rounded to float32, every parameter and
    every parameter gradient."""
    out64, loss64, xgrad64, grads64 = results64
    tensors = {
        "input.x": x,
        "input.levels": levels.float(),
        "input.grad_out": g,
        "output": out64.float(),
        "loss": loss64.float().reshape(1),
        "input_grad.x": xgrad64.float(),
    }
    for name, value in params32.items():
        tensors[f"param.{name}"] = value
    for name, value in grads64.items():
        tensors[f"grad.{name}"] = value.float()
    return {k: v.contiguous() for k, v in tensors.items()}


def write_golden(path: Path, tensors, metadata, n_params: int, loss64, out64) -> Path:
    """Writes one golden file, byte-reproducibly, and prints a line about it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical_safetensors(save(tensors, metadata=metadata)))
    print(
        f"{path}: {path.stat().st_size / 1e6:.2f} MB, {n_params} params, "
        f"loss {loss64.item():.6f}, |out|max {out64.abs().max().item():.3f}, f32 deviation: output "
        f"{metadata['f32_output_max_rel_dev']}, grads {metadata['f32_grad_max_rel_dev']}"
    )
    return path


def write_cases(cases, make, description: str) -> None:
    """The command line of a golden-file generator: every case into --out-dir (tests/data)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "tests" / "data")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    for case in cases:
        make(case, args.out_dir)


if __name__ == "__main__":
    write_cases(CASES, make_case, __doc__.split("\n")[0])
