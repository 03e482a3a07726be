"""Converts pytorch-fid's FID Inception weight file to the safetensors file the engine loads.

    /opt/torch-venv/bin/python reference/convert_inception.py IN.pth OUT.safetensors
    /opt/torch-venv/bin/python reference/convert_inception.py --formula OUT.safetensors
    /opt/torch-venv/bin/python reference/convert_inception.py --self-check

IN.pth must be pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the TF 2015-12-05 Inception
ported by mseitzer/pytorch-fid, from its GitHub releases, tag fid_weights). The weights cannot be
redistributed with this repository, so the user downloads them once and converts them here; the
engine never reads a pickle, only the safetensors output.

Why the checks are strict: FID is only comparable across papers in exactly this network's
features. torchvision's ImageNet inception_v3 weights, a TF-Slim checkpoint, or a truncated download
all "almost" load into an InceptionV3 and would give plausible but incomparable numbers. So every
key of reference/inception.py's state_dict must be present with its exact shape (including `fc`,
1008 x 2048, which tells this file from torchvision's 1000-class one), and no other key may be
present; `num_batches_tracked` entries may be present or not and are dropped.

The output holds float32 tensors under the weight file's names (`Conv2d_1a_3x3.conv.weight`,
`Mixed_7c.branch_pool.bn.running_var`, ...), every convolution weight and the four BatchNorm tensors
of every layer. `fc.weight` and `fc.bias` are dropped: FID and KID use the 2048-d pool features,
never the classifier. (The safetensors format stores tensors in its own order; the state-dict order
is the order of reference/inception.py.) Metadata: {"format": "dml-fid-inception-v3",
"source_sha256": sha256 of IN.pth}, or {"format": ..., "source": "formula"} for --formula.

--formula writes the deterministic formula weights of reference/inception.py instead (for testing
the engine's loader and forward pass without the real file). --self-check verifies that saving the
formula weights with torch.save and converting them gives back the same bits, and that damaged
files are refused; make_inception_golden.py runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inception import expected_shapes, formula_state_dict, state_dict_shapes  # noqa: E402
from make_golden import canonical_safetensors  # noqa: E402

FORMAT = "dml-fid-inception-v3"
EXPECTED_FILE = (
    "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (https://github.com/mseitzer/pytorch-fid/releases, "
    "tag fid_weights: .../releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth)"
)
SHOWN = 5  # offending keys named per kind of mismatch


class ConversionError(Exception):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def checked_tensors(state: object, source: str) -> dict[str, torch.Tensor]:
    """The engine's float32 tensors (fc dropped, reference order) from a loaded state dict.

    Raises ConversionError naming the first few missing, mis-shaped, non-float and unexpected keys.
    """
    if not isinstance(state, Mapping):
        raise ConversionError(
            f"{source} holds a {type(state).__name__}, not a state dict (a mapping of names to tensors). "
            f"Expected {EXPECTED_FILE}."
        )
    shapes = expected_shapes(include_fc=True)
    batch_counters = {name for name in state_dict_shapes() if name.endswith("num_batches_tracked")}
    missing = [name for name in shapes if name not in state]
    bad_shape, bad_type = [], []
    for name, shape in shapes.items():
        value = state.get(name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            bad_type.append(f"{name} ({type(value).__name__}{'' if not isinstance(value, torch.Tensor) else ' ' + str(value.dtype)})")
        elif tuple(value.shape) != shape:
            bad_shape.append(f"{name} {list(value.shape)} (expected {list(shape)})")
    unexpected = [str(name) for name in state if name not in shapes and name not in batch_counters]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_names(missing)}")
    if bad_shape:
        problems.append(f"{len(bad_shape)} shape mismatch(es): {_names(bad_shape)}")
    if bad_type:
        problems.append(f"{len(bad_type)} non-float value(s): {_names(bad_type)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    if problems:
        raise ConversionError(
            f"{source} is not the FID Inception weight file: " + "; ".join(problems) + f". Expected {EXPECTED_FILE}."
        )
    return {
        name: state[name].detach().to(torch.float32).contiguous()
        for name in shapes
        if not name.startswith("fc.")
    }


def serialise(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Safetensors bytes with a sorted header, so equal inputs give byte-identical files."""
    return canonical_safetensors(save(tensors, metadata=metadata))


def _write(path: Path, blob: bytes) -> None:
    """Writes via a temporary file in the same folder, so a failed run leaves no half file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def convert(in_path: Path, out_path: Path) -> dict[str, torch.Tensor]:
    """Checks IN (a pytorch-fid .pth) and writes OUT; returns the tensors written."""
    if not in_path.is_file():
        raise ConversionError(f"{in_path}: no such file. Expected {EXPECTED_FILE}.")
    if _same_file(in_path, out_path):
        raise ConversionError(f"refusing to write the output over the input file {in_path}")
    try:
        state = torch.load(in_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, disallowed globals: all mean "wrong file"
        raise ConversionError(f"{in_path} cannot be read as a PyTorch state dict ({exc}). Expected {EXPECTED_FILE}.") from exc
    tensors = checked_tensors(state, str(in_path))
    _write(out_path, serialise(tensors, {"format": FORMAT, "source_sha256": sha256_of(in_path)}))
    return tensors


def formula_tensors() -> dict[str, torch.Tensor]:
    """The formula weights as the converter would write them (fc dropped)."""
    return {name: t for name, t in formula_state_dict().items() if not name.startswith("fc.")}


def write_formula(out_path: Path) -> dict[str, torch.Tensor]:
    tensors = formula_tensors()
    _write(out_path, serialise(tensors, {"format": FORMAT, "source": "formula"}))
    return tensors


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _split(blob: bytes) -> tuple[str, bytes]:
    """(JSON header, data section) of safetensors bytes."""
    header_len = int.from_bytes(blob[:8], "little")
    return blob[8 : 8 + header_len].decode(), blob[8 + header_len :]


def _expect_refusal(what: str, action, *needles: str) -> None:
    try:
        action()
    except ConversionError as exc:
        message = str(exc)
        for needle in needles:
            if needle not in message:
                raise AssertionError(f"{what}: message lacks {needle!r}: {message}") from exc
        return
    raise AssertionError(f"{what}: was not refused")


def self_check() -> None:
    """Round trip of the formula weights through torch.save and the converter, and refusals.

    The .pth is written as a real BatchNorm model's state_dict would be: with num_batches_tracked
    entries and fc, so both drops are exercised.
    """
    formula = formula_state_dict()
    full = {
        name: (formula[name].clone() if name in formula else torch.tensor(0, dtype=torch.long))
        for name in state_dict_shapes()
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pth, out, out_formula = tmp / "formula.pth", tmp / "converted.safetensors", tmp / "formula.safetensors"
        torch.save(full, pth)
        convert(pth, out)
        write_formula(out_formula)
        blob = out.read_bytes()
        reloaded = load_safetensors_bytes(blob)
        expected = formula_tensors()
        if list(sorted(reloaded)) != sorted(expected):
            raise AssertionError("converted file has the wrong key set")
        for name, value in expected.items():
            got = reloaded[name]
            if got.dtype != torch.float32 or got.shape != value.shape or not torch.equal(_bits(got), _bits(value)):
                raise AssertionError(f"{name}: converted tensor differs from the formula weights")
        if load_safetensors_bytes(out_formula.read_bytes()).keys() != reloaded.keys():
            raise AssertionError("--formula output and converted output hold different keys")
        header, data = _split(blob)
        if data != _split(out_formula.read_bytes())[1] or f'"source_sha256":"{sha256_of(pth)}"' not in header:
            raise AssertionError("converted data section differs from --formula's, or source_sha256 is absent")

        # Refusals: output over the input, and damaged state dicts.
        _expect_refusal("output = input", lambda: convert(pth, pth), "refusing")
        damaged = dict(full)
        del damaged["Mixed_6c.branch7x7dbl_3.bn.running_var"]
        damaged["Mixed_7b.branch_pool.conv.weight"] = torch.zeros(192, 1280, 3, 3)
        damaged["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
        torch.save(damaged, tmp / "damaged.pth")
        _expect_refusal(
            "damaged",
            lambda: convert(tmp / "damaged.pth", tmp / "damaged.safetensors"),
            "Mixed_6c.branch7x7dbl_3.bn.running_var",
            "Mixed_7b.branch_pool.conv.weight [192, 1280, 3, 3] (expected [192, 1280, 1, 1])",
            "AuxLogits.fc.weight",
            "pt_inception-2015-12-05-6726825d.pth",
        )
        if (tmp / "damaged.safetensors").exists():
            raise AssertionError("a refused conversion left an output file")
        no_bn_counters = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}
        torch.save(no_bn_counters, tmp / "plain.pth")
        plain = convert(tmp / "plain.pth", tmp / "plain.safetensors")
        if not all(torch.equal(_bits(plain[k]), _bits(v)) for k, v in expected.items()):
            raise AssertionError("a file without num_batches_tracked converts differently")
    print(f"convert_inception self-check ok: {len(expected)} tensors round-trip bit-exactly, damaged files refused")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="IN.pth OUT.safetensors")
    parser.add_argument("--formula", type=Path, metavar="OUT.safetensors", help="write the formula weights")
    parser.add_argument("--self-check", action="store_true", help="round-trip and refusal checks")
    args = parser.parse_args()
    try:
        if args.self_check and not args.paths and args.formula is None:
            self_check()
        elif args.formula is not None and not args.paths and not args.self_check:
            tensors = write_formula(args.formula)
            print(f"{args.formula}: formula weights, {len(tensors)} tensors, {args.formula.stat().st_size / 1e6:.1f} MB")
        elif len(args.paths) == 2 and args.formula is None and not args.self_check:
            tensors = convert(args.paths[0], args.paths[1])
            count = sum(t.numel() for t in tensors.values())
            print(f"{args.paths[1]}: {len(tensors)} tensors, {count} values (fc dropped), {args.paths[1].stat().st_size / 1e6:.1f} MB")
        else:
            parser.error("give IN.pth OUT.safetensors, or --formula OUT.safetensors, or --self-check")
    except ConversionError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
