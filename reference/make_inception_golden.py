"""Writes tests/data/inception_fid_formula.safetensors: the FID InceptionV3's features, formula weights.

Run from the repository root with the interpreter of reference/README.md:

    /opt/torch-venv/bin/python reference/make_inception_golden.py

The engine computes FID and KID in the features of pytorch-fid's InceptionV3 (reference/inception.py).
Its real weights cannot be committed, so this golden file uses the formula weights of
reference/inception.py, which the Rust test regenerates bit-for-bit from the same integer rule; a
match here plus the converter's key and shape checks means that the real weights, once converted by
convert_inception.py, go through the same computation.

Images are smooth blobs plus a little noise, clipped to [0, 1] (so, like MNIST digits, they hold
exact 0s and 1s and large flat areas), from a seeded numpy generator, stored as float32. Everything
else is computed in float64 from those float32 images and the float32 formula weights:

    gray_images [3, 1, 28, 28] f32     gray_features [3, 2048] f64
    gray_block0_mean [3, 64] f64       per-channel spatial means of pytorch-fid's blocks 0-2
    gray_block1_mean [3, 192] f64      (first max pool, second max pool, Mixed_6e), to localise
    gray_block2_mean [3, 768] f64      a mismatch
    gray_resized0 [3, 299, 299] f32    image 0 after the grey-to-RGB repeat, resize and 2x - 1
    colour_images [2, 3, 32, 32] f32   colour_features [2, 2048] f64

The metadata names the generator and torch version, gives the formula's check values and a bit-sum
over all formula weights (to test the Rust generator on its own), the feature statistics, and how
far a plain float32 PyTorch run is from the float64 features (a guide for the Rust tolerances).

Before writing, it runs convert_inception.py's self-check (formula weights through torch.save and
the converter, bit-exact), so a converter broken by a change to inception.py is noticed here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_inception import self_check  # noqa: E402
from inception import (  # noqa: E402
    BN_EPS,
    FIDInceptionV3,
    features,
    fnv1a64,
    formula_state_dict,
    load_formula,
    preprocess,
)
from make_golden import canonical_safetensors, max_relative_deviation  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
FILE_NAME = "inception_fid_formula.safetensors"
SEED = 2015_12_05
CHECK_TENSORS = ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_var")


def blob_images(rng: np.random.Generator, count: int, channels: int, size: int) -> np.ndarray:
    """[count, channels, size, size] float32 in [0, 1]: Gaussian blobs, a gentle ramp, noise, clipped.

    Blob amplitudes up to 1.4 and a background below 0 make clipping produce exact 1s and 0s. The
    draws are made in a fixed order, so the images depend only on the generator's seed.
    """
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    out = np.empty((count, channels, size, size), dtype=np.float32)
    for n in range(count):
        for c in range(channels):
            img = -0.15 + 0.3 * rng.uniform() * (xx * np.cos(rng.uniform(0, 2 * np.pi)) + yy)
            for _ in range(int(rng.integers(3, 7))):
                cy, cx = rng.uniform(0.15, 0.85, size=2)
                sy, sx = rng.uniform(0.04, 0.2, size=2)
                amp = rng.uniform(0.3, 1.4)
                img = img + amp * np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
            img = img + 0.04 * rng.standard_normal((size, size))
            out[n, c] = np.clip(img, 0.0, 1.0)
    return out


def float32_hex(values: np.ndarray) -> list[str]:
    return [f"0x{int(v):08x}" for v in np.asarray(values, dtype=np.float32).view(np.uint32)]


def check_values(weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """Values a Rust implementation of the formula can be compared with before any forward pass."""
    meta = {}
    for name in CHECK_TENSORS:
        first = weights[name].flatten()[:3].numpy()
        meta[f"check.{name}.fnv1a64"] = f"0x{fnv1a64(name):016x}"
        meta[f"check.{name}.first3_f32_bits"] = ",".join(float32_hex(first))
        meta[f"check.{name}.first3"] = ",".join(repr(float(v)) for v in first)

    def bit_sum(names) -> int:
        return sum(int(weights[n].numpy().view(np.uint32).astype(np.uint64).sum()) for n in names) % 2**64

    engine = [n for n in weights if not n.startswith("fc.")]
    meta["check.bit_sum_engine_tensors"] = str(bit_sum(engine))  # the 470 tensors the converter keeps
    meta["check.bit_sum_all_tensors"] = str(bit_sum(list(weights)))  # including fc.weight, fc.bias
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "tests" / "data")
    parser.add_argument("--skip-self-check", action="store_true", help="skip the converter round trip")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    # One thread: MKL splits the float64 GEMM reductions by thread count, which moves the features'
    # last bits (~1e-14) between machines with different core counts; one thread is no slower here.
    torch.set_num_threads(1)
    if not args.skip_self_check:
        self_check()

    rng = np.random.default_rng(SEED)
    gray = torch.from_numpy(blob_images(rng, 3, 1, 28))
    colour = torch.from_numpy(blob_images(rng, 2, 3, 32))

    weights = formula_state_dict()
    checks = check_values(weights)
    for name in CHECK_TENSORS:
        print(f"{name}: fnv1a64 {checks[f'check.{name}.fnv1a64']}, first 3 = "
              f"{checks[f'check.{name}.first3']} (f32 bits {checks[f'check.{name}.first3_f32_bits']})")

    model64 = load_formula(FIDInceptionV3()).double()
    gray_features, gray_blocks = features(model64, gray, return_blocks=True)
    colour_features = features(model64, colour)
    resized0 = preprocess(gray[:1], torch.float64)[0]

    model32 = load_formula(FIDInceptionV3()).float()
    dev32 = max(
        max_relative_deviation(features(model32, gray), gray_features),
        max_relative_deviation(features(model32, colour), colour_features),
    )

    tensors = {
        "gray_images": gray,
        "gray_features": gray_features,
        "gray_block0_mean": gray_blocks[0].mean(dim=(2, 3)),
        "gray_block1_mean": gray_blocks[1].mean(dim=(2, 3)),
        "gray_block2_mean": gray_blocks[2].mean(dim=(2, 3)),
        "gray_resized0": resized0.float(),
        "colour_images": colour,
        "colour_features": colour_features,
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}

    f = gray_features
    stats = {
        "mean": f.mean().item(),
        "std": f.std().item(),
        "min": f.min().item(),
        "max": f.max().item(),
        "zero_fraction": (f == 0).double().mean().item(),
    }
    metadata = {
        "generator": "reference/make_inception_golden.py",
        "network": "pytorch-fid FID InceptionV3 (reference/inception.py), pool3 features",
        "weights": "formula (reference/inception.py formula_values)",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "seed": str(SEED),
        "bn_eps": repr(BN_EPS),
        "reference_dtype": "float64",
        "f32_features_max_rel_dev": f"{dev32:.3e}",
        **{f"gray_features_{k}": repr(v) for k, v in stats.items()},
        **checks,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / FILE_NAME
    path.write_bytes(canonical_safetensors(save(tensors, metadata=metadata)))
    print(f"{path}: {path.stat().st_size} bytes")
    for k, v in tensors.items():
        print(f"  {k} {list(v.shape)} {str(v.dtype).replace('torch.', '')}")
    print("gray_features: " + ", ".join(f"{k} {v:.6g}" for k, v in stats.items()))
    print(f"colour_features: mean {colour_features.mean().item():.6g}, std {colour_features.std().item():.6g}, "
          f"max {colour_features.max().item():.6g}, zero fraction {(colour_features == 0).double().mean().item():.4f}")
    for i, b in enumerate(gray_blocks[:3]):
        print(f"gray block{i} {list(b.shape[1:])}: mean {b.mean().item():.4g}, std {b.std().item():.4g}, max {b.max().item():.4g}")
    print(f"float32 PyTorch vs float64 features: max relative deviation {dev32:.3e}")
    print(f"bit sums: engine tensors {checks['check.bit_sum_engine_tensors']}, all {checks['check.bit_sum_all_tensors']}")


if __name__ == "__main__":
    main()
