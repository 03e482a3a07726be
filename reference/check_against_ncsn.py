"""Checks reference/ncsn.py against the original ermongroup/ncsn model file.

    git clone https://github.com/ermongroup/ncsn /tmp/ncsn
    /opt/torch-venv/bin/python reference/check_against_ncsn.py /tmp/ncsn

Imports `models/cond_refinenet_dilated.py` from that checkout, builds its CondRefineNetDilated
(with ConditionalInstanceNorm2dPlus) and CondRefineNetDeeperDilated (with plain
ConditionalInstanceNorm2d) at 28x28x1 and 32x32x3, and checks that our network has the same
state_dict keys in the same order with the same shapes, and, after loading the original's weights
(with perturbed norm embeddings), the same output in float64.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ncsn import CondRefineNetDilated, NetworkConfig  # noqa: E402

NGF, NUM_CLASSES = 8, 10


def load_original(checkout: Path) -> types.ModuleType:
    path = checkout / "models" / "cond_refinenet_dilated.py"
    spec = importlib.util.spec_from_file_location("ncsn_original", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def original_config(channels: int, image_size: int) -> types.SimpleNamespace:
    data = types.SimpleNamespace(logit_transform=False, channels=channels, image_size=image_size)
    return types.SimpleNamespace(data=data, model=types.SimpleNamespace(ngf=NGF, num_classes=NUM_CLASSES))


def compare(original_cls, topology: str, norm: str, channels: int, image_size: int) -> float:
    torch.manual_seed(0)
    original = original_cls(original_config(channels, image_size))
    ours = CondRefineNetDilated(NetworkConfig(channels, image_size, NGF, NUM_CLASSES, topology=topology, norm=norm))
    theirs_sd, ours_sd = original.state_dict(), ours.state_dict()
    if list(theirs_sd) != list(ours_sd):
        raise AssertionError(f"{topology}: state_dict keys or their order differ")
    for key in theirs_sd:
        if theirs_sd[key].shape != ours_sd[key].shape:
            raise AssertionError(f"{topology}: {key} shape {theirs_sd[key].shape} != {ours_sd[key].shape}")
    gen = torch.Generator().manual_seed(1)
    for key, value in theirs_sd.items():
        if "embed" in key:
            value += 0.3 * torch.randn(value.shape, generator=gen, dtype=value.dtype)
    original.load_state_dict(theirs_sd)
    ours.load_state_dict(theirs_sd)
    x = 1.0 + torch.rand(3, channels, image_size, image_size, generator=gen, dtype=torch.float64)
    levels = torch.tensor([0, 4, 9])
    expected = original(x, levels)
    return (ours(x, levels) - expected).abs().max().item() / expected.abs().max().item()


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    original = load_original(Path(sys.argv[1]))
    torch.set_default_dtype(torch.float64)
    worst = 0.0
    for cls, topology, norm in [
        (original.CondRefineNetDilated, "standard", "cin++"),
        (original.CondRefineNetDeeperDilated, "deeper", "cin"),
    ]:
        for channels, size in [(1, 28), (3, 32)]:
            deviation = compare(cls, topology, norm, channels, size)
            print(f"{topology} {channels}x{size}x{size}: keys, order, shapes equal; max relative output deviation {deviation:.2e}")
            worst = max(worst, deviation)
    if worst > 1e-12:
        raise SystemExit(f"outputs differ: {worst:.2e}")
    print("ok")


if __name__ == "__main__":
    main()
