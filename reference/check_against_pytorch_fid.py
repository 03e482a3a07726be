"""Checks reference/inception.py against pytorch-fid's own InceptionV3.

    git clone https://github.com/mseitzer/pytorch-fid /tmp/pytorch-fid
    /opt/torch-venv/bin/pip install torchvision          # pytorch-fid builds on torchvision's Inception3
    /opt/torch-venv/bin/python reference/check_against_pytorch_fid.py /tmp/pytorch-fid [--weights pt_inception-2015-12-05-6726825d.pth]

Imports `src/pytorch_fid/inception.py` from that checkout with its weight download replaced by
our formula weights (or, with --weights, the real weight file, loaded into both networks), and
checks that our state_dict has the same keys in the same order with the same shapes as
pytorch-fid's `fid_inception_v3()`, that pytorch-fid's strict load_state_dict accepts our formula
weights, and that the four block outputs agree in float64 for several input sizes (28x28 grey
repeated to RGB, 32x32, 299x299, and a non-square size). This is how the architecture written out
in inception.py was verified (it matched bit for bit); it needs torchvision, which the engine's
reference scripts otherwise do not.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inception import FIDInceptionV3, features, formula_state_dict  # noqa: E402


def load_pytorch_fid(checkout: Path) -> types.ModuleType:
    path = checkout / "src" / "pytorch_fid" / "inception.py"
    spec = importlib.util.spec_from_file_location("pytorch_fid_inception", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", type=Path, help="a clone of mseitzer/pytorch-fid")
    parser.add_argument("--weights", type=Path, help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    args = parser.parse_args()
    fid = load_pytorch_fid(args.checkout)
    if args.weights is not None:
        weights = torch.load(args.weights, map_location="cpu", weights_only=True)
    else:
        weights = formula_state_dict()
    fid.load_state_dict_from_url = lambda *a, **k: {name: t.clone() for name, t in weights.items()}

    theirs_sd = fid.fid_inception_v3().state_dict()
    ours = FIDInceptionV3()
    ours_sd = ours.state_dict()
    if list(theirs_sd) != list(ours_sd):
        diff = [(a, b) for a, b in zip(theirs_sd, ours_sd) if a != b][:5]
        raise SystemExit(f"state_dict keys or their order differ ({len(theirs_sd)} vs {len(ours_sd)}): {diff}")
    for name, value in theirs_sd.items():
        if value.shape != ours_sd[name].shape:
            raise SystemExit(f"{name}: shape {tuple(value.shape)} != ours {tuple(ours_sd[name].shape)}")
    print(f"{len(ours_sd)} state_dict entries: keys, order and shapes equal")

    theirs = fid.InceptionV3([0, 1, 2, 3]).double().eval()
    ours.load_state_dict(weights, strict=False)
    ours.double()
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in [(2, 1, 28, 28), (2, 3, 32, 32), (1, 3, 299, 299), (1, 3, 40, 57)]:
        x = torch.rand(shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            expected = theirs(x.repeat(1, 3, 1, 1) if shape[1] == 1 else x)
        _, got = features(ours, x, return_blocks=True)
        devs = [((g - e).abs().max() / e.abs().max()).item() for g, e in zip(got, expected)]
        print(f"input {list(shape)}: max relative deviation of blocks 0-3 " + ", ".join(f"{d:.1e}" for d in devs))
        worst = max(worst, *devs)
    if worst > 1e-12:
        raise SystemExit(f"outputs differ: {worst:.2e}")
    print("ok")


if __name__ == "__main__":
    main()
