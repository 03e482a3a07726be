"""Writes tests/data/train_tiny_20_steps.safetensors: 20 training steps of the tiny network in PyTorch
(docs/DESIGN.md section 5, item 3), the multi-step parity check of llm.c's test_gpt2.

Run from the repository root with the interpreter of reference/README.md:

    /opt/torch-venv/bin/python reference/make_training_golden.py

The run is the engine's training step (docs/SPEC.md sections 2, 3 and 7), written out here in
PyTorch from the SPEC, not from the engine's code:

    x_k  = x_0 exp(m_k + s_k z)                      constant sigma, mu = sigma^2/2, so m_k = 0
    L    = (1/B) sum_b s_k^2 / 2 ||h - target||^2    target = -(1 + z / s_k), h the network output
    g   <- g * min(1, c / ||g||)                     one global norm over every gradient
    AdamW(lr_t, beta1, beta2, eps, weight_decay)     lr_t = lr (t + 1) / W for the first W updates
    ema <- d ema + (1 - d) w                         the EMA starts as the weights after update 1

The parameters start from reference/make_golden.py's fill rule (seeded), the batches x_0 are
uniform in the default pixel range [1, 2], the levels uniform in 1..N-1 and z standard normal, all
from a seeded torch generator and stored, so the engine is fed exactly what PyTorch saw. Keys:

    batch.x0 [S,B,C,H,W]   batch.levels [S,B] (as float32)   batch.z [S,B,C,H,W]
    loss [S]   grad_norm [S] (before clipping)   lr [S]
    param.<name> (initial)   final.<name> (after S updates)   ema.<name> (after S updates)

Everything is computed in float64 and stored as float32; the metadata holds the settings, the
losses in full precision, and how far a plain float32 PyTorch run ends from the float64 one (a guide
for the Rust test's tolerances).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import canonical_safetensors, fill_parameters, max_relative_deviation  # noqa: E402
from ncsn import CondRefineNetDilated, preset  # noqa: E402
from safetensors.torch import save  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
FILE_NAME = "train_tiny_20_steps.safetensors"

SEED = 2020
STEPS = 20
BATCH = 4
CHANNELS, SIZE = 1, 28
LEVELS = 10
SIGMA = 0.8
PIXEL_LO, PIXEL_HI = 1.0, 2.0
LR = 2e-3
WARMUP = 5
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
WEIGHT_DECAY = 0.01
# Chosen between the gradient norms this run sees (about 200 to 2800), so that some steps clip and
# some do not: both paths of the clipping are compared.
CLIP_NORM = 1000.0
EMA_DECAY = 0.9


def s_levels() -> torch.Tensor:
    """s_k = sqrt(sum_{i<k} sigma^2 delta), accumulated in float64 as SPEC section 2 defines it."""
    delta = 1.0 / LEVELS
    values, var = [], 0.0
    for _ in range(LEVELS):
        values.append(math.sqrt(var))
        var += SIGMA * SIGMA * delta
    return torch.tensor(values, dtype=torch.float64)


def draw_batches(gen: torch.Generator) -> dict[str, torch.Tensor]:
    shape = (STEPS, BATCH, CHANNELS, SIZE, SIZE)
    x0 = PIXEL_LO + (PIXEL_HI - PIXEL_LO) * torch.rand(shape, generator=gen, dtype=torch.float32)
    levels = torch.randint(1, LEVELS, (STEPS, BATCH), generator=gen)
    z = torch.randn(shape, generator=gen, dtype=torch.float32)
    return {"x0": x0, "levels": levels, "z": z}


def lr_at(update: int) -> float:
    """The rate of the update numbered `update` (0-based): linear warm-up, then constant."""
    return LR * (update + 1) / WARMUP if update < WARMUP else LR


def train(model: CondRefineNetDilated, batches: dict[str, torch.Tensor], dtype: torch.dtype):
    """STEPS updates in `dtype`; returns losses, gradient norms, final weights and EMA weights."""
    net = model.to(dtype)
    params = dict(net.named_parameters())
    opt = torch.optim.AdamW(
        params.values(), lr=LR, betas=BETAS, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY, foreach=False
    )
    s = s_levels().to(dtype)
    ema: dict[str, torch.Tensor] = {}
    losses, norms = [], []
    for step in range(STEPS):
        x0 = batches["x0"][step].to(dtype)
        k = batches["levels"][step]
        z = batches["z"][step].to(dtype)
        s_k = s[k].view(-1, 1, 1, 1)
        x_k = x0 * torch.exp(s_k * z)
        h = net(x_k, k)
        target = -(1.0 + z / s_k)
        per_sample = (h - target).pow(2).flatten(1).sum(1)
        loss = (0.5 * s[k] ** 2 * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params.values()]
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        if norm > CLIP_NORM:
            for g in grads:
                g.mul_(CLIP_NORM / norm)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        with torch.no_grad():
            for name, p in params.items():
                if name in ema:
                    ema[name].mul_(EMA_DECAY).add_((1.0 - EMA_DECAY) * p)
                else:
                    ema[name] = p.detach().clone()
        losses.append(loss.item())
        norms.append(norm.item())
    final = {name: p.detach().clone() for name, p in params.items()}
    return losses, norms, final, ema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "tests" / "data")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)

    gen = torch.Generator().manual_seed(SEED)
    config = preset("tiny", CHANNELS, SIZE, num_classes=LEVELS)
    model = CondRefineNetDilated(config)
    fill_parameters(model, gen)
    initial = {name: t.detach().clone().float() for name, t in model.state_dict().items()}
    batches = draw_batches(gen)

    def fresh() -> CondRefineNetDilated:
        net = CondRefineNetDilated(config)
        net.load_state_dict(initial)
        return net

    losses64, norms64, final64, ema64 = train(fresh(), batches, torch.float64)
    losses32, _, final32, ema32 = train(fresh(), batches, torch.float32)
    weight_dev = max(max_relative_deviation(final32[n] - initial[n], final64[n] - initial[n]) for n in final64)
    loss_dev = max(abs(a - b) / abs(b) for a, b in zip(losses32, losses64))

    tensors = {
        "batch.x0": batches["x0"],
        "batch.levels": batches["levels"].float(),
        "batch.z": batches["z"],
        "loss": torch.tensor(losses64, dtype=torch.float32),
        "grad_norm": torch.tensor(norms64, dtype=torch.float32),
        "lr": torch.tensor([lr_at(t) for t in range(STEPS)], dtype=torch.float32),
    }
    for name in initial:
        tensors[f"param.{name}"] = initial[name]
        tensors[f"final.{name}"] = final64[name].float()
        tensors[f"ema.{name}"] = ema64[name].float()
    tensors = {k: v.contiguous() for k, v in tensors.items()}

    clipped = sum(n > CLIP_NORM for n in norms64)
    metadata = {
        "preset": "tiny",
        "channels": str(CHANNELS),
        "image_size": str(SIZE),
        "levels": str(LEVELS),
        "sigma": repr(SIGMA),
        "pixel_range": f"{PIXEL_LO},{PIXEL_HI}",
        "steps": str(STEPS),
        "batch": str(BATCH),
        "lr": repr(LR),
        "warmup_steps": str(WARMUP),
        "beta1": repr(BETAS[0]),
        "beta2": repr(BETAS[1]),
        "adam_eps": repr(ADAM_EPS),
        "weight_decay": repr(WEIGHT_DECAY),
        "clip_norm": repr(CLIP_NORM),
        "ema_decay": repr(EMA_DECAY),
        "weighting": "sk2",
        "parameterisation": "h",
        "seed": str(SEED),
        "losses_float64": ",".join(repr(v) for v in losses64),
        "steps_clipped": str(clipped),
        "f32_loss_max_rel_dev": f"{loss_dev:.3e}",
        "f32_weight_change_max_rel_dev": f"{weight_dev:.3e}",
        "reference_dtype": "float64",
        "torch_version": torch.__version__,
        "generator": "reference/make_training_golden.py",
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / FILE_NAME
    path.write_bytes(canonical_safetensors(save(tensors, metadata=metadata)))
    print(
        f"{path}: {path.stat().st_size / 1e6:.2f} MB; loss {losses64[0]:.4f} -> {losses64[-1]:.4f}; "
        f"gradient norms {min(norms64):.2f}..{max(norms64):.2f}, {clipped} of {STEPS} steps clipped; "
        f"float32 PyTorch vs float64: losses {loss_dev:.2e}, weight changes {weight_dev:.2e}"
    )


if __name__ == "__main__":
    main()
