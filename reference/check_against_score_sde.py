"""Checks reference/ddpmpp.py against score_sde's own NCSN++ model (the PyTorch release).

    git clone https://github.com/yang-song/score_sde_pytorch /tmp/score_sde_pytorch
    /opt/torch-venv/bin/python reference/check_against_score_sde.py /tmp/score_sde_pytorch [--skip-full]

(yang-song/score_sde is the JAX/Flax release of the same code; its Flax modules have no
state_dict, so the comparison is with score_sde_pytorch, whose parameter names ours use.)

Imports `models/ncsnpp.py` from that checkout (with layers, layerspp, normalization, utils and
up_or_down_sampling) and its released configuration `configs/vp/cifar10_ddpmpp_deep_continuous.py`.
Three modules it imports are stood in for, since nothing this configuration runs uses them:
`op` (StyleGAN2's upfirdn2d, compiled as a CUDA extension at import; fir=False never calls it),
`ml_collections` (its ConfigDict becomes an attribute namespace) and `sde_lib` (used only by
models/utils.py's score-function helpers).

For `ddpmpp_tiny` at 1x28x28 and 3x32x32 (the released configuration with nf, ch_mult,
num_res_blocks, attn_resolutions and dropout replaced by the preset's) and for the full `ddpmpp`
preset at 3x32x32 (the released configuration unchanged) it checks that

  * our preset is that configuration, and the state_dicts have the same keys in the same order
    with the same shapes; the one exception allowed is score_sde's `sigmas` buffer (its noise
    levels, at the head of its state_dict; a constant of the configuration, not a learned
    tensor), which ours does not have;
  * with score_sde's parameters filled as reference/make_ddpmpp_golden.py fills ours (so that no
    layer starts at ~1e-10 scale) and loaded into ours with strict=True, the output and the
    gradients of L = sum(out * g) with respect to every parameter and to x agree in float64
    (max relative deviation per tensor <= 1e-10), for x in [1, 2] and level indices as the time
    condition (score_sde's positional embedding is fed the level index itself);
  * the initialisations agree: biases and GroupNorm affine exactly, every default_init weight
    in distribution (uniform on [-b, b] with the same b: the ratios of our largest |w| and of our
    variance to score_sde's must be 1 within sampling error).

The sinusoidal embedding is checked apart: score_sde's `layers.get_timestep_embedding` always
computes in float32 (its `timesteps.float()`), ours in the network's dtype, so a float64
score_sde network cannot even run (float32 embedding into a float64 Linear). We check that the two
functions are bitwise equal in float32 for every level 0..999, and for the float64 network
comparison both networks get the embedding computed in float32 by their own function and cast to
float64. The full preset's float64 comparison (batch 1) takes about two minutes on a CPU and
6.5 GB of memory; with --skip-full only its keys, shapes and initialisation are checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ddpmpp as ours_module  # noqa: E402
from ddpmpp import Ddpmpp, parameter_count, preset  # noqa: E402
from make_ddpmpp_golden import fill_parameters  # noqa: E402
from make_golden import max_relative_deviation  # noqa: E402

TOLERANCE = 1e-10
LEVELS = (0, 9, 3)


def load_file(name: str, path: Path, package_dir: Path | None = None) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(package_dir)] if package_dir else None
    )
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def stub(name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def unused(*_args, **_kwargs):
    raise AssertionError("a stubbed score_sde dependency was called")


class ConfigDict(types.SimpleNamespace):
    """Stand-in for ml_collections.ConfigDict: attribute access is all the configs use."""


def load_score_sde(checkout: Path):
    """Returns (models.ncsnpp, models.layers, the released config's get_config)."""
    for name in ("op", "ml_collections", "sde_lib", "models", "configs"):
        if name in sys.modules:
            raise SystemExit(f"a module named {name!r} is already imported; cannot stand in for it")
    stub("op", upfirdn2d=unused, FusedLeakyReLU=unused, fused_leaky_relu=unused)
    stub("ml_collections", ConfigDict=ConfigDict)
    stub("sde_lib")
    load_file("models", checkout / "models" / "__init__.py", checkout / "models")
    ncsnpp = importlib.import_module("models.ncsnpp")
    layers = importlib.import_module("models.layers")
    stub("configs", __path__=[])
    load_file("configs.default_cifar10_configs", checkout / "configs" / "default_cifar10_configs.py")
    released = load_file("configs.vp.cifar10_ddpmpp_deep_continuous", checkout / "configs" / "vp" / "cifar10_ddpmpp_deep_continuous.py")
    return ncsnpp, layers, released.get_config


def score_sde_config(get_config, preset_name: str, channels: int, image_size: int) -> ConfigDict:
    """The released configuration, with the preset's sizes; checks the full preset is it."""
    config = get_config()
    ours = preset(preset_name, channels, image_size)
    m = config.model
    assert (m.name, m.resblock_type, m.fir, m.progressive, m.progressive_input, m.attention_type) == (
        "ncsnpp", "biggan", False, "none", "none", "ddpm",
    )
    assert (m.embedding_type, m.skip_rescale, m.init_scale, m.conditional, m.scale_by_sigma) == (
        "positional", True, 0.0, True, False,
    )
    assert (m.nonlinearity, m.normalization, config.data.centered) == ("swish", "GroupNorm", True)
    released = (m.nf, tuple(m.ch_mult), m.num_res_blocks, tuple(m.attn_resolutions), m.dropout)
    wanted = (ours.nf, ours.ch_mult, ours.num_res_blocks, ours.attn_resolutions, ours.dropout)
    if preset_name == "ddpmpp" and (released, config.data.image_size, config.data.num_channels) != (wanted, image_size, channels):
        raise SystemExit(f"preset ddpmpp {wanted} is not the released configuration {released}")
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.dropout = wanted
    config.data.image_size, config.data.num_channels = image_size, channels
    return config


def compare_state_dicts(theirs: torch.nn.Module, ours: torch.nn.Module, label: str) -> None:
    theirs_sd, ours_sd = theirs.state_dict(), ours.state_dict()
    theirs_keys = list(theirs_sd)
    if theirs_keys[0] != "sigmas" or "sigmas" in ours_sd:
        raise SystemExit(f"{label}: expected score_sde's state_dict to start with its 'sigmas' buffer")
    if theirs_keys[1:] != list(ours_sd):
        diff = [(a, b) for a, b in zip(theirs_keys[1:], ours_sd) if a != b][:5]
        raise SystemExit(f"{label}: state_dict keys or their order differ ({len(theirs_sd) - 1} vs {len(ours_sd)}): {diff}")
    for key, value in ours_sd.items():
        if theirs_sd[key].shape != value.shape:
            raise SystemExit(f"{label}: {key} shape {tuple(theirs_sd[key].shape)} != ours {tuple(value.shape)}")
    if [n for n, _ in theirs.named_parameters()] != [n for n, _ in ours.named_parameters()]:
        raise SystemExit(f"{label}: parameter lists differ")
    print(
        f"{label}: {len(ours_sd)} state_dict entries, {parameter_count(ours)} parameters: keys, order and shapes "
        f"equal (score_sde has one more entry, its buffer 'sigmas' {tuple(theirs_sd['sigmas'].shape)}, first)"
    )


def compare_init(theirs: torch.nn.Module, ours: torch.nn.Module, label: str) -> float:
    """Biases and GroupNorm affine exactly; weights: (std ours / std theirs)^2, the init-scale ratio."""
    theirs_p = dict(theirs.named_parameters())
    worst, bad = 0.0, []
    for name, p in ours.named_parameters():
        q = theirs_p[name]
        if p.dim() == 1 and not name.endswith(".W"):
            if not torch.equal(p.detach(), q.detach().to(p.dtype)):
                bad.append(f"{name} (values differ)")
            continue
        n = p.numel()
        # The largest |w| of n draws from U(-b, b) is above b (1 - 20/n) but with probability
        # e^-20, so the ratio of the two maxima bounds the ratio of the two bounds b.
        bound_ratio = (p.abs().max() / q.abs().max()).item()
        slack = min(20 / n, 0.9)
        # The variance of such a sample has a relative standard deviation ~0.9/sqrt(n).
        scale_ratio = (p.std() / q.std()).item() ** 2
        allowed = 8 * 0.9 * (2 / n) ** 0.5
        worst = max(worst, abs(scale_ratio - 1) / allowed)
        if not 1 - slack <= bound_ratio <= 1 / (1 - slack) or abs(scale_ratio - 1) > allowed:
            bad.append(f"{name} (init scale ours/theirs {bound_ratio ** 2:.3g} by max |w|, {scale_ratio:.3g} by variance)")
    if bad:
        raise SystemExit(f"{label}: initialisation differs: " + ", ".join(bad))
    print(f"{label}: initialisation: biases and GroupNorm equal; weights: same bound, same variance (worst {worst * 8:.1f} sd of 8 allowed)")
    return worst


def check_embedding(layers: types.ModuleType, dims: list[int]) -> None:
    levels = torch.arange(1000, dtype=torch.float32)
    worst64 = 0.0
    for dim in dims:
        theirs = layers.get_timestep_embedding(levels, dim)
        if not torch.equal(theirs, ours_module.timestep_embedding(levels, dim, torch.float32)):
            raise SystemExit(f"timestep embedding (dim {dim}) differs from score_sde's in float32")
        ours64 = ours_module.timestep_embedding(levels.double(), dim, torch.float64)
        worst64 = max(worst64, (ours64 - theirs.double()).abs().max().item())
    print(
        f"timestep embedding, dims {dims}, levels 0..999: bitwise equal to score_sde's in float32 "
        f"(ours in float64 differs from score_sde's float32 by up to {worst64:.1e} absolute)"
    )


def float32_embedding_for_both(layers: types.ModuleType):
    """Each network's own embedding, computed in float32 and cast to the network's dtype."""
    their_fn, our_fn = layers.get_timestep_embedding, ours_module.timestep_embedding
    layers.get_timestep_embedding = lambda t, dim, **kw: their_fn(t, dim, **kw).double()
    ours_module.timestep_embedding = lambda levels, dim, dtype: our_fn(levels, dim, torch.float32).to(dtype)

    def restore() -> None:
        layers.get_timestep_embedding, ours_module.timestep_embedding = their_fn, our_fn

    return restore


def forward_backward(net: torch.nn.Module, x: torch.Tensor, levels: torch.Tensor, g: torch.Tensor):
    net.zero_grad(set_to_none=True)
    xin = x.clone().requires_grad_(True)
    out = net(xin, levels)
    (out * g).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in net.named_parameters()}
    grads["<input x>"] = xin.grad.detach().clone()
    return out.detach(), grads


def compare_outputs(theirs: torch.nn.Module, ours: torch.nn.Module, layers, label: str, levels: tuple[int, ...], seed: int) -> float:
    cfg = ours.config
    gen = torch.Generator().manual_seed(seed)
    x = 1.0 + torch.rand(len(levels), cfg.channels, cfg.image_size, cfg.image_size, generator=gen, dtype=torch.float64)
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    k = torch.tensor(levels, dtype=torch.float64)
    theirs.double().eval()
    ours.double().eval()
    restore = float32_embedding_for_both(layers)
    try:
        out_t, grads_t = forward_backward(theirs, x, k, g)
        out_o, grads_o = forward_backward(ours, x, k, g)
    finally:
        restore()
    out_dev = max_relative_deviation(out_o, out_t)
    # Parameters whose gradient is zero in exact arithmetic (the attention key's bias: it adds
    # q_i . b to a whole softmax row) hold rounding noise; they are compared against the largest
    # gradient instead of their own.
    grad_scale = max(t.abs().max().item() for t in grads_t.values())
    zero, grad_dev, worst_name = [], 0.0, ""
    for name, expected in grads_t.items():
        got = grads_o[name]
        if expected.abs().max().item() < TOLERANCE * grad_scale:
            zero.append(name)
            dev = (got - expected).abs().max().item() / grad_scale
        else:
            dev = max_relative_deviation(got, expected)
        if dev >= grad_dev:
            grad_dev, worst_name = dev, name
    print(
        f"{label}: float64, levels {list(levels)}: max relative deviation output {out_dev:.1e}, "
        f"gradients {grad_dev:.1e} (worst {worst_name}; {len(grads_t)} tensors incl. dL/dx; "
        f"zero in exact arithmetic: {describe(zero)})"
    )
    return max(out_dev, grad_dev)


def describe(names: list[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names) or "none"
    leaves = sorted({name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1] for name in names})
    return f"{len(names)} tensors, all_modules.*.{{{', '.join(leaves)}}}"


def compare_float32(theirs: torch.nn.Module, ours: torch.nn.Module, label: str, levels: tuple[int, ...], seed: int) -> float:
    """Informative: the unpatched networks in float32 (forward only)."""
    cfg = ours.config
    gen = torch.Generator().manual_seed(seed)
    x = 1.0 + torch.rand(len(levels), cfg.channels, cfg.image_size, cfg.image_size, generator=gen)
    k = torch.tensor(levels, dtype=torch.float32)
    theirs.float().eval()
    ours.float().eval()
    with torch.no_grad():
        expected = theirs(x, k)
        dev = max_relative_deviation(ours(x, k), expected.double())
    print(f"{label}: float32, levels {list(levels)}: max relative output deviation {dev:.1e}")
    return dev


def check_case(ncsnpp, layers, get_config, preset_name: str, channels: int, size: int, full_numerics: bool) -> float:
    label = f"{preset_name} {channels}x{size}x{size}"
    config = score_sde_config(get_config, preset_name, channels, size)
    torch.manual_seed(0)
    theirs = ncsnpp.NCSNpp(config)
    ours = Ddpmpp(preset(preset_name, channels, size))
    compare_state_dicts(theirs, ours, label)
    compare_init(theirs, ours, label)
    if not full_numerics:
        return 0.0
    fill_parameters(theirs, torch.Generator().manual_seed(size))
    theirs_sd = theirs.state_dict()
    del theirs_sd["sigmas"]
    ours.load_state_dict(theirs_sd, strict=True)
    compare_float32(theirs, ours, label, LEVELS[:1] if preset_name == "ddpmpp" else LEVELS, seed=size + 1)
    levels = LEVELS[1:2] if preset_name == "ddpmpp" else LEVELS
    return compare_outputs(theirs, ours, layers, label, levels, seed=size + 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkout", type=Path, help="a clone of yang-song/score_sde_pytorch")
    parser.add_argument("--skip-full", action="store_true", help="full ddpmpp preset: keys, shapes and init only")
    args = parser.parse_args()
    ncsnpp, layers, get_config = load_score_sde(args.checkout)
    torch.use_deterministic_algorithms(True)
    check_embedding(layers, [8, 9, 128])
    worst = 0.0
    for preset_name, channels, size, numerics in [
        ("ddpmpp_tiny", 1, 28, True),
        ("ddpmpp_tiny", 3, 32, True),
        ("ddpmpp", 3, 32, not args.skip_full),
    ]:
        worst = max(worst, check_case(ncsnpp, layers, get_config, preset_name, channels, size, numerics))
    if worst > TOLERANCE:
        raise SystemExit(f"outputs or gradients differ: {worst:.2e}")
    print("ok")


if __name__ == "__main__":
    main()
