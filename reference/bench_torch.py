"""PyTorch side of the side-by-side benchmark: what a framework does with the same work.

Times, in float32 on `--device cpu|cuda`, the items `dml bench` times on our engine, under the same
keys and with the same byte and FLOP counts (reference/BENCH.md states the conventions), and writes
them as JSON so that `dml bench` can print ours/theirs ratios:

  ceilings                a large device copy (bytes read + written per second), a large matmul (FLOP/s)
  conv_fwd / conv_bwd_data / conv_bwd_weight
                          every distinct convolution of the `paper` network (found by hooking its Conv2d
                          modules), through aten's convolution / convolution_backward (cuDNN on a GPU)
  cin_pp_fwd / cin_pp_bwd conditional instance norm++ (SPEC 9) at every width and size the network uses
  gbm_dale_step           the Dale-Langevin sampler update (SPEC 4) as element-wise PyTorch code
  mdsm_loss               the M-DSM loss and its gradient w.r.t. the network output (SPEC 3)
  sampler_step            network forward (no grad) + Dale step, presets `paper` and `tiny` (1x28x28)
  train_step              noising, forward, M-DSM loss, backward, AdamW step, presets `paper` and `tiny`
  ddpmpp                  the same two steps for DDPM++ (reference/ddpmpp.py, dropout active in training),
                          presets `ddpmpp_tiny` and `ddpmpp` on 3x32x32 images
  inception_features      the FID InceptionV3's 2048 features of a batch of grey 28x28 images in [0, 1]
                          (reference/inception.py on its formula weights), also reported in images/s

Each item: warm-up, then repeats until --budget-ms has passed (at least 3), the device synchronised
around every repeat (CUDA events on a GPU), median reported. Inputs are fresh random non-zero draws,
rotated among enough copies that they do not all fit in the last-level cache. TF32 is off (fp32
against fp32); cudnn.benchmark is on. Eager and, where enabled, torch.compile (default mode) timings.
`--bf16 on` (against `dml bench --precision bf16`) runs the convolution items on bfloat16 tensors
and the network steps under torch.autocast(bfloat16), what a PyTorch user does for bf16 tensor
cores; the byte counts stay those of the fp32 tensors, as `dml bench` counts them.

Run from the repository root, e.g.
    /opt/torch-venv/bin/python reference/bench_torch.py --device cpu --json benches/torch_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch._functorch.config
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddpmpp  # noqa: E402  (the DDPM++ reference network, next to this file)
import inception  # noqa: E402  (the FID InceptionV3, next to this file)
import ncsn  # noqa: E402  (the reference network, next to this file)

F32 = 4  # bytes per element
IMAGE = (1, 28, 28)  # the benchmark image: 28x28 greyscale (C, H, W)
DDPMPP_IMAGE = (3, 32, 32)  # DDPM++'s: CIFAR-10's colour 32x32
DDPMPP_PRESETS = ("ddpmpp_tiny", "ddpmpp")

# Schedule constants of the paper's sampler (SPEC 2 and 4): sigma = 0.8, mu = sigma^2/2, delta_s = 2e-4.
SIGMA = 0.8
MU = SIGMA**2 / 2
DELTA_S = 2e-4
KAPPA = 1.0

# Bytes of inputs that rotation must exceed so repeats do not just re-read the cache (H100/H200 L2 is
# 50 MiB; a server CPU's last-level cache is of the same order).
CACHE_BYTES = 64 << 20
MAX_INPUT_SETS = 32
MAX_REPEATS = 500


# ---------------------------------------------------------------------------------------------
# Timing


# Warm-up time on a GPU (BENCH.md "Timing"), as `dml bench` does.
GPU_WARM_UP_S = 0.2


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def input_set_count(bytes_per_set: float) -> int:
    """Enough copies of the inputs to exceed the cache, at least 2 (so no repeat sees the last one's data)."""
    return max(2, min(MAX_INPUT_SETS, math.ceil(2 * CACHE_BYTES / max(bytes_per_set, 1.0))))


def time_median(run: Callable[[int], object], device: torch.device, budget_s: float, warmup: int = 2) -> float:
    """Median seconds of run(i) (i = repeat index, used to rotate input sets), synchronised each repeat."""
    warm_up_start = time.perf_counter()
    for i in range(warmup):
        run(i)
    synchronize(device)
    # On a GPU, at least GPU_WARM_UP_S of calls: an idle GPU's clocks take that long to rise.
    while device.type == "cuda" and time.perf_counter() - warm_up_start < GPU_WARM_UP_S:
        run(0)
        synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    i = 0
    while len(times) < 3 or (time.perf_counter() - start < budget_s and len(times) < MAX_REPEATS):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            run(i)
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            run(i)
            times.append(time.perf_counter() - t)
        i += 1
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Item:
    key: str
    bytes: float
    flops: float
    eager_s: Optional[float] = None
    compile_s: Optional[float] = None
    compile_note: Optional[str] = None
    images: Optional[int] = None  # images per call, for items also read in images/s

    def as_json(self) -> dict:
        out = {"eager_s": self.eager_s, "compile_s": self.compile_s, "bytes": self.bytes, "flops": self.flops}
        if self.compile_note:
            out["compile_note"] = self.compile_note
        if self.images is not None:
            out["images"] = self.images
        return out


@dataclass
class Bench:
    args: argparse.Namespace
    device: torch.device
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Called after each item: the results so far reach --json even when a time limit stops the run.
    save: Callable[[], None] = lambda: None

    @property
    def budget_s(self) -> float:
        return self.args.budget_ms / 1e3

    @property
    def bf16(self) -> bool:
        return self.args.bf16 == "on"

    def network_precision(self):
        """The context the network steps run their forward passes in: autocast to bfloat16 with
        --bf16 on, else nothing."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def compile_enabled(self, small: bool) -> Optional[str]:
        """None when compiling this item is enabled, else the reason it is skipped."""
        if self.args.compile == "all" or (self.args.compile == "small" and small):
            return None
        return f"skipped (--compile {self.args.compile})"

    def measure(
        self,
        key: str,
        bytes_: float,
        flops: float,
        make_run: Callable[[Callable], Callable[[int], object]],
        eager_fn: Callable,
        small: bool,
        images: Optional[int] = None,
    ) -> Item:
        """Times make_run(eager_fn) and, when enabled, make_run(torch.compile(eager_fn))."""
        item = Item(key, bytes_, flops, images=images)
        item.eager_s = time_median(make_run(eager_fn), self.device, self.budget_s)
        skip = self.compile_enabled(small)
        if skip is None:
            try:
                compiled = torch.compile(eager_fn, mode=self.args.compile_mode)
                # Warm-up of 2 inside time_median absorbs the compilation (and a recompile, if any).
                item.compile_s = time_median(make_run(compiled), self.device, self.budget_s)
            except Exception as e:  # compile support varies by platform; report, do not abort
                item.compile_note = f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        else:
            item.compile_note = skip
        self.items.append(item)
        rate = f"  ({images / item.eager_s:.1f} images/s eager)" if images else ""
        print(f"  {key}: eager {fmt_s(item.eager_s)}  compile {fmt_s(item.compile_s)}{rate}", flush=True)
        self.save()
        return item


def fmt_s(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


# ---------------------------------------------------------------------------------------------
# Random inputs


def positive(shape, device) -> torch.Tensor:
    """Values in [0.5, 1.5): GBM states are positive (SPEC 2)."""
    return torch.rand(shape, device=device) + 0.5


def normal(shape, device) -> torch.Tensor:
    return torch.randn(shape, device=device)


# ---------------------------------------------------------------------------------------------
# 1. Ceilings


def copy_seconds(n: int, dev: torch.device, budget_s: float) -> float:
    src, dst = normal((n,), dev), normal((n,), dev)  # copy into an existing buffer: no first-touch faults
    return time_median(lambda i: dst.copy_(src), dev, budget_s)


def gemm_seconds(m: int, dev: torch.device, budget_s: float) -> float:
    a, b, c = normal((m, m), dev), normal((m, m), dev), torch.empty((m, m), device=dev)
    return time_median(lambda i: torch.mm(a, b, out=c), dev, budget_s)


def measure_ceilings(bench: Bench) -> dict:
    n = 64 << 20  # 64 Mi floats, as `dml bench`
    m = 8192 if bench.device.type == "cuda" else 1024  # 1024^3 on a host, as `dml bench`
    copy_s = copy_seconds(n, bench.device, bench.budget_s)
    gemm_s = gemm_seconds(m, bench.device, bench.budget_s)
    return {"copy_bytes_per_s": 2 * F32 * n / copy_s, "gemm_flops_per_s": 2 * m**3 / gemm_s}


# ---------------------------------------------------------------------------------------------
# The network's own shapes, found by hooking its modules


@dataclass(frozen=True)
class ConvShape:
    cin: int
    h: int
    w: int
    cout: int
    k: int
    d: int
    p: int

    def suffix(self, batch: int) -> str:
        return f"{self.cin}x{self.h}x{self.w}->{self.cout}/k{self.k}d{self.d}/b{batch}"

    def flops(self, batch: int) -> float:
        return 2.0 * batch * self.cout * self.h * self.w * self.cin * self.k * self.k


@dataclass
class NetworkTrace:
    """Every Conv2d and CIN++ call of one forward pass at batch 1."""

    convs: list[ConvShape]  # one entry per call, in call order (duplicates kept)
    norms: list[tuple[int, int, int]]  # (c, h, w) per CIN++ call
    conv_params: int  # parameters outside the norm embeddings
    embedding_row_floats: int  # sum over norm layers of 3w: one embedding row per sample
    parameters: int  # all parameters

    def conv_flops(self, batch: int) -> float:
        return sum(s.flops(batch) for s in self.convs)


def trace_network(net: nn.Module, image: tuple[int, int, int] = IMAGE) -> NetworkTrace:
    convs: list[ConvShape] = []
    norms: list[tuple[int, int, int]] = []

    def conv_hook(module: nn.Conv2d, inputs):
        _, c, h, w = inputs[0].shape
        k, d, p = module.kernel_size[0], module.dilation[0], module.padding[0]
        if module.kernel_size[0] != module.kernel_size[1] or module.stride != (1, 1):
            raise ValueError(f"unexpected convolution {module}")
        convs.append(ConvShape(c, h, w, module.out_channels, k, d, p))

    def norm_hook(module, inputs):
        _, c, h, w = inputs[0].shape
        norms.append((c, h, w))

    handles = []
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_pre_hook(conv_hook))
        elif isinstance(module, ncsn.ConditionalInstanceNorm2dPlus):
            handles.append(module.register_forward_pre_hook(norm_hook))
    c, h, w = image
    with torch.no_grad():
        net(positive((1, c, h, w), "cpu"), torch.zeros(1, dtype=torch.long))
    for handle in handles:
        handle.remove()
    embed = [m for m in net.modules() if isinstance(m, ncsn.ConditionalInstanceNorm2dPlus)]
    embedding_params = sum(m.embed.weight.numel() for m in embed)
    total = ncsn.parameter_count(net)
    return NetworkTrace(convs, norms, total - embedding_params, sum(3 * m.features for m in embed), total)


def distinct(values):
    return list(dict.fromkeys(values))


# ---------------------------------------------------------------------------------------------
# 2. Convolutions: forward, backward-data, backward-weight (cuDNN on a GPU)


def bench_convs(bench: Bench, shapes: list[ConvShape], batch: int) -> None:
    dev = bench.device
    for s in shapes:
        x_n, y_n, w_n = batch * s.cin * s.h * s.w, batch * s.cout * s.h * s.w, s.cout * s.cin * s.k * s.k
        sets = input_set_count(F32 * (x_n + y_n + w_n))
        dtype = torch.bfloat16 if bench.bf16 else torch.float32
        xs = [normal((batch, s.cin, s.h, s.w), dev).to(dtype) for _ in range(sets)]
        dys = [normal((batch, s.cout, s.h, s.w), dev).to(dtype) for _ in range(sets)]
        ws = [(normal((s.cout, s.cin, s.k, s.k), dev) / math.sqrt(s.cin * s.k * s.k)).to(dtype) for _ in range(sets)]
        conv_args = dict(stride=[1, 1], padding=[s.p, s.p], dilation=[s.d, s.d], transposed=False,
                         output_padding=[0, 0], groups=1)

        def fwd(x, w):
            return torch.ops.aten.convolution(x, w, None, **conv_args)

        def bwd(dy, x, w, mask):
            return torch.ops.aten.convolution_backward(dy, x, w, None, output_mask=mask, **conv_args)

        flops = s.flops(batch)
        cases = [
            ("conv_fwd", F32 * (x_n + w_n + y_n), lambda i: fwd(xs[i % sets], ws[i % sets])),
            ("conv_bwd_data", F32 * (y_n + w_n + x_n),
             lambda i: bwd(dys[i % sets], xs[i % sets], ws[i % sets], [True, False, False])),
            ("conv_bwd_weight", F32 * (x_n + y_n + w_n),
             lambda i: bwd(dys[i % sets], xs[i % sets], ws[i % sets], [False, True, False])),
        ]
        for name, bytes_, run in cases:
            key = f"{name}/{s.suffix(batch)}"
            # A convolution is one library call; torch.compile would call the same kernel.
            item = Item(key, float(bytes_), flops, compile_note="n/a (one library call)")
            item.eager_s = time_median(run, dev, bench.budget_s)
            bench.items.append(item)
            print(f"  {key}: {fmt_s(item.eager_s)}", flush=True)


# ---------------------------------------------------------------------------------------------
# 3. Conditional instance norm++


def bench_norms(bench: Bench, shapes: list[tuple[int, int, int]], batch: int, levels_n: int) -> None:
    dev = bench.device
    for c, h, w in shapes:
        norm = ncsn.ConditionalInstanceNorm2dPlus(c, levels_n).to(dev)
        with torch.no_grad():  # every term of the norm matters (as in the golden files)
            norm.embed.weight.copy_(normal(norm.embed.weight.shape, dev) * 0.3 + 1.0)
        n = batch * c * h * w
        rows = batch * 3 * c  # one embedding row read (and its gradient written) per sample
        sets = input_set_count(F32 * 3 * n)
        xs = [normal((batch, c, h, w), dev) for _ in range(sets)]
        dys = [normal((batch, c, h, w), dev) for _ in range(sets)]
        levels = [torch.randint(0, levels_n, (batch,), device=dev) for _ in range(sets)]
        suffix = f"{c}x{h}x{w}/b{batch}"

        def fwd_run(fn):
            def run(i):
                with torch.no_grad():
                    return fn(xs[i % sets], levels[i % sets])
            return run

        bench.measure(f"cin_pp_fwd/{suffix}", F32 * (2 * n + rows), 8.0 * n, fwd_run, norm, small=True)

        def bwd_run(fn):
            # Forward graphs built once outside the timed region; each repeat times the backward alone.
            graphs = []
            for j in range(sets):
                x = xs[j].clone().requires_grad_(True)
                graphs.append((x, fn(x, levels[j])))

            def run(i):
                x, y = graphs[i % sets]
                return torch.autograd.grad(y, (x, norm.embed.weight), dys[i % sets], retain_graph=True)
            return run

        # Each repeat re-runs the backward of a retained graph, which AOTAutograd's donated buffers forbid.
        with torch._functorch.config.patch(donated_buffer=False):
            bench.measure(f"cin_pp_bwd/{suffix}", F32 * (3 * n + 2 * rows), 12.0 * n, bwd_run, norm, small=True)


# ---------------------------------------------------------------------------------------------
# 4. The fused element-wise steps: Dale-Langevin update and M-DSM loss


def dale_step(x: torch.Tensor, h: torch.Tensor, sigma: float, mu: float, delta_s: float, kappa: float) -> torch.Tensor:
    """SPEC 4: x <- x * exp(-delta_s (mu - 3 sigma^2 / 2) + delta_s sigma^2 h + kappa sigma sqrt(delta_s) z)."""
    z = torch.randn_like(x)
    drift = -delta_s * (mu - 1.5 * sigma**2)
    return x.mul_(torch.exp(drift + (delta_s * sigma**2) * h + (kappa * sigma * math.sqrt(delta_s)) * z))


def mdsm_loss(h: torch.Tensor, z: torch.Tensor, s_k: torch.Tensor, w_k: torch.Tensor) -> torch.Tensor:
    """SPEC 3: L = (1/B) sum_b w_k / 2 ||h - target||^2 with target = -(1 + z / s_k); h, z are [B, ...]."""
    target = -(1.0 + z / s_k.view(-1, *([1] * (z.dim() - 1))))
    per_sample = (h - target).pow(2).flatten(1).sum(1)
    return (0.5 * w_k * per_sample).mean()


def bench_elementwise(bench: Bench, batch: int) -> None:
    dev = bench.device
    c, hh, ww = IMAGE
    n = batch * c * hh * ww
    sets = input_set_count(F32 * 3 * n)
    xs = [positive((batch, c, hh, ww), dev) for _ in range(sets)]
    hs = [normal((batch, c, hh, ww), dev) for _ in range(sets)]

    def dale_run(fn):
        return lambda i: fn(xs[i % sets], hs[i % sets], SIGMA, MU, DELTA_S, KAPPA)

    bench.measure(f"gbm_dale_step/{n}", F32 * 3 * n, 6.0 * n, dale_run, dale_step, small=True)

    zs = [normal((batch, c, hh, ww), dev) for _ in range(sets)]
    s_ks = [SIGMA * torch.sqrt(torch.randint(1, 1000, (batch,), device=dev) / 1000.0) for _ in range(sets)]
    w_k = torch.ones(batch, device=dev)
    h_leaves = [h.clone().requires_grad_(True) for h in hs]

    def loss_run(fn):
        def run(i):
            h = h_leaves[i % sets]
            loss = fn(h, zs[i % sets], s_ks[i % sets], w_k)
            return torch.autograd.grad(loss, h)
        return run

    bench.measure(f"mdsm_loss/{n}", F32 * 3 * n, 8.0 * n, loss_run, mdsm_loss, small=True)


# ---------------------------------------------------------------------------------------------
# 5-7. Whole steps: sampler step and training step


def image_of(preset: str) -> tuple[int, int, int]:
    return DDPMPP_IMAGE if preset in DDPMPP_PRESETS else IMAGE


def levels_of(preset: str) -> int:
    """N, the levels the preset is trained with (dml's Preset::default_levels)."""
    if preset in DDPMPP_PRESETS:
        return 1000 if preset == "ddpmpp" else 10
    c, h, _ = IMAGE
    return ncsn.preset(preset, c, h).num_classes


def image_suffix(preset: str, batch: int) -> str:
    c, h, w = image_of(preset)
    return f"{preset}/{c}x{h}x{w}/b{batch}"


def make_network(preset: str, dev: torch.device) -> nn.Module:
    torch.manual_seed(0)
    c, h, _ = image_of(preset)
    if preset in DDPMPP_PRESETS:
        return ddpmpp.Ddpmpp(ddpmpp.preset(preset, c, h)).to(dev)
    return ncsn.CondRefineNetDilated(ncsn.preset(preset, c, h)).to(dev)


def trace_of(preset: str) -> NetworkTrace:
    return trace_network(make_network(preset, torch.device("cpu")), image_of(preset))


def bench_sampler_step(bench: Bench, preset: str, batch: int) -> None:
    dev = bench.device
    net = make_network(preset, dev).eval()
    trace = trace_of(preset)
    n_levels = levels_of(preset)
    c, h, w = image_of(preset)
    levels = torch.full((batch,), n_levels // 2, dtype=torch.long, device=dev)  # one level per sampler step
    sets = 2
    xs = [positive((batch, c, h, w), dev) for _ in range(sets)]

    def step(x, levels):
        return dale_step(x, net(x, levels).float(), SIGMA, MU, DELTA_S, KAPPA)

    def run_of(fn):
        def run(i):
            with torch.no_grad(), bench.network_precision():
                return fn(xs[i % sets], levels)
        return run

    bytes_ = F32 * (trace.conv_params + batch * trace.embedding_row_floats + 2 * batch * c * h * w)
    bench.measure(f"sampler_step/{image_suffix(preset, batch)}", float(bytes_), trace.conv_flops(batch),
                  run_of, step, small=False)


def bench_train_step(bench: Bench, preset: str, batch: int) -> None:
    dev = bench.device
    trace = trace_of(preset)
    c, h, w = image_of(preset)
    n_levels = levels_of(preset)
    sets = 2
    x0s = [positive((batch, c, h, w), dev) for _ in range(sets)]
    bytes_ = F32 * (8 * trace.parameters + batch * c * h * w)
    flops = 3 * trace.conv_flops(batch)
    key = f"train_step/{image_suffix(preset, batch)}"

    def run_of(loss_fn):
        # A fresh network and optimiser per variant, so eager and compiled runs do the same work.
        net = make_network(preset, dev).train()
        try:
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
        except (RuntimeError, TypeError):  # fused AdamW not supported on this device / version
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4, foreach=True)

        def run(i):
            x0 = x0s[i % sets]
            # Levels uniform in 1..N-1 (SPEC 3); constant schedule with mu = sigma^2/2: m_k = 0, s_k = sigma sqrt(k/N).
            k = torch.randint(1, n_levels, (batch,), device=dev)
            s_k = SIGMA * torch.sqrt(k / n_levels)
            z = torch.randn_like(x0)
            loss = loss_fn(net, x0, k, s_k, z)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        return run

    def loss_fn(net, x0, k, s_k, z):
        x_k = x0 * torch.exp(s_k.view(-1, 1, 1, 1) * z)  # SPEC 2 closed form
        with bench.network_precision():
            h = net(x_k, k)
        return mdsm_loss(h.float(), z, s_k, torch.ones_like(s_k))

    bench.measure(key, float(bytes_), flops, run_of, loss_fn, small=False)


# ---------------------------------------------------------------------------------------------
# 8. FID InceptionV3 features


def inception_counts(model: inception.FIDInceptionV3, batch: int) -> tuple[float, float]:
    """(bytes, flops) of one call at `batch` (BENCH.md): the folded parameters (every conv weight and
    one bias per output channel, fc unused) read, the images read and the features written; the
    FLOPs of every Conv2d call of a 1-image forward, found by hooking them, times the batch."""
    conv_flops = []

    def hook(module: nn.Conv2d, inputs, output):
        kh, kw = module.kernel_size
        conv_flops.append(2.0 * output[0].numel() * module.in_channels * kh * kw)

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    inception.features(model, torch.rand((1, *IMAGE)))
    for handle in handles:
        handle.remove()
    if len(conv_flops) != len(convs):
        raise ValueError(f"{len(conv_flops)} conv calls for {len(convs)} Conv2d modules")
    params = sum(m.weight.numel() + m.out_channels for m in convs)
    c, h, w = IMAGE
    return float(F32 * (params + batch * (c * h * w + inception.FEATURE_DIM))), batch * sum(conv_flops)


def bench_inception(bench: Bench, batch: int) -> None:
    dev = bench.device
    # Built (and its FLOPs counted) outside the timed region, float32 on the formula weights.
    model = inception.load_formula(inception.FIDInceptionV3()).eval()
    bytes_, flops = inception_counts(model, batch)
    model = model.to(dev)
    c, h, w = IMAGE
    sets = 2
    xs = [torch.rand((batch, c, h, w), device=dev) for _ in range(sets)]

    def extract(x):
        return inception.features(model, x)

    def run_of(fn):
        def run(i):
            with torch.no_grad():
                return fn(xs[i % sets])
        return run

    bench.measure(f"inception_features/{c}x{h}x{w}/b{batch}", bytes_, flops, run_of, extract, small=False,
                  images=batch)


# ---------------------------------------------------------------------------------------------
# Report


def print_table(bench: Bench, ceilings: dict) -> None:
    copy, gemm = ceilings["copy_bytes_per_s"], ceilings["gemm_flops_per_s"]
    print(f"\nceilings: copy {copy / 1e9:.1f} GB/s (read + write), GEMM {gemm / 1e12:.3f} TFLOP/s")
    print("| item | eager | compile | GB/s | GFLOP/s | eager / floor |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for it in bench.items:
        floor = max(it.bytes / copy, it.flops / gemm)
        s = it.eager_s
        print(f"| {it.key} | {fmt_s(s)} | {fmt_s(it.compile_s)} | {it.bytes / s / 1e9:.2f} | "
              f"{it.flops / s / 1e9:.2f} | {s / floor:.2f} |")
    per_image = [it for it in bench.items if it.images]
    if per_image:
        print("\n| item | images per call | eager images/s | compile images/s |")
        print("| --- | ---: | ---: | ---: |")
        for it in per_image:
            compiled = f"{it.images / it.compile_s:.1f}" if it.compile_s else "-"
            print(f"| {it.key} | {it.images} | {it.images / it.eager_s:.1f} | {compiled} |")
    for note in bench.notes:
        print(f"note: {note}")


def write_json(path: str, bench: Bench, name: str, cudnn: Optional[int], ceilings: dict) -> None:
    """The results so far, written whole to a temporary file and renamed over `path`."""
    args = bench.args
    out = {
        "device": name,
        "torch": torch.__version__,
        "cudnn": cudnn,
        "threads": torch.get_num_threads(),
        "settings": {
            "tf32": args.tf32 == "on",
            "bf16": args.bf16 == "on",
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "compile": args.compile,
            "compile_mode": args.compile_mode,
            "batch": args.batch,
            "sampler_batch": args.sampler_batch,
            "elementwise_batch": args.elementwise_batch,
            "inception_batch": args.inception_batch,
            "budget_ms": args.budget_ms,
        },
        "notes": bench.notes,
        "ceilings": ceilings,
        "items": {it.key: it.as_json() for it in bench.items},
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(partial, path)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, default=8, help="batch of the convolution, norm and training items")
    p.add_argument("--sampler-batch", type=int, default=None,
                   help="batch of the sampler steps (default 1000 on cuda, 16 on cpu)")
    p.add_argument("--elementwise-batch", type=int, default=1000,
                   help="images of 28x28 for gbm_dale_step and mdsm_loss (n = this x 784)")
    p.add_argument("--inception-batch", type=int, default=16,
                   help="grey 28x28 images per call of inception_features")
    p.add_argument("--budget-ms", type=float, default=500.0, help="timing budget per item (at least 3 repeats)")
    p.add_argument("--compile", choices=["all", "small", "none"], default=None,
                   help="which items also run under torch.compile: all, only the small element-wise/norm "
                        "ones, or none (default all on cuda, none on cpu: compiling the network takes minutes there)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode")
    p.add_argument("--presets", default=None,
                   help="comma-separated presets for the sampler/train steps (default paper,tiny)")
    p.add_argument("--only", default=None,
                   help="only item groups, comma-separated: conv,norm,elementwise,sampler,train,ddpmpp,inception")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--tf32", choices=["off", "on"], default="off",
                   help="off (default): exact fp32, as dml's default; on: TF32 in convolutions and matmuls "
                        "(PyTorch's default for cuDNN convolutions)")
    p.add_argument("--bf16", choices=["off", "on"], default="off",
                   help="on: the convolution items on bfloat16 tensors and the network steps under "
                        "torch.autocast(bfloat16), beside `dml bench --precision bf16`")
    args = p.parse_args()
    if args.sampler_batch is None:
        args.sampler_batch = 1000 if args.device == "cuda" else 16
    if args.compile is None:
        args.compile = "all" if args.device == "cuda" else "none"
    return args


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible to PyTorch")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # fp32 against fp32 by default: no TF32 in matmul or convolution. --tf32 on measures what PyTorch
    # users get out of the box (cuDNN convolutions in TF32), matmuls included. cuDNN picks its fastest
    # algorithm per shape either way.
    tf32 = args.tf32 == "on"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.manual_seed(1234)
    groups = set((args.only or "conv,norm,elementwise,sampler,train,ddpmpp,inception").split(","))
    presets = (args.presets or "paper,tiny").split(",")

    bench = Bench(args, device)
    if device.type == "cpu":
        bench.notes.append(f"load average at start {os.getloadavg()[0]:.2f} (other processes slow PyTorch's threads)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    cudnn = torch.backends.cudnn.version() if device.type == "cuda" else None
    print(f"device {name}, torch {torch.__version__}, cudnn {cudnn}, threads {torch.get_num_threads()}, "
          f"tf32 {args.tf32}, bf16 {args.bf16}, cudnn.benchmark {torch.backends.cudnn.benchmark}, compile {args.compile}", flush=True)

    ceilings = measure_ceilings(bench)
    print(f"ceilings: {ceilings}", flush=True)
    if args.json:
        bench.save = lambda: write_json(args.json, bench, name, cudnn, ceilings)

    paper = trace_network(make_network("paper", torch.device("cpu")))
    if "conv" in groups:
        bench_convs(bench, distinct(paper.convs), args.batch)
    if "norm" in groups:
        bench_norms(bench, distinct(paper.norms), args.batch, ncsn.preset("paper", *IMAGE[:2]).num_classes)
    if "elementwise" in groups:
        bench_elementwise(bench, args.elementwise_batch)
    if "sampler" in groups:
        for preset in presets:
            bench_sampler_step(bench, preset, args.sampler_batch)
    if "train" in groups:
        for preset in presets:
            bench_train_step(bench, preset, args.batch)
    if "ddpmpp" in groups:
        for preset in DDPMPP_PRESETS:
            bench_train_step(bench, preset, args.batch)
        for preset in DDPMPP_PRESETS:
            bench_sampler_step(bench, preset, args.sampler_batch)
    if "inception" in groups:
        bench_inception(bench, args.inception_batch)

    if device.type == "cpu":
        bench.notes.append(f"load average at end {os.getloadavg()[0]:.2f}")
        bench.notes.append(f"cpu run: sampler steps at batch {args.sampler_batch} (1000 on a GPU) to stay cheap; "
                           f"torch.compile '{args.compile}' (inductor needs minutes per network graph on a small CPU)")
    print_table(bench, ceilings)
    if args.json:
        bench.save()
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
