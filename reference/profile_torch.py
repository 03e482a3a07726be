"""Where PyTorch's time goes in one sampler step: torch.profiler's per-operator table for
bench_torch.py's `sampler_step` item (network forward without gradients + Dale step), to set
beside ncu's per-kernel durations of `dml bench`'s same item (scripts/gpu-proof, step `kernels`).

    python3 reference/profile_torch.py --device cuda --preset paper --batch 1000 --tf32 on
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_torch  # noqa: E402  (the benchmark whose item this profiles, next to this file)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--preset", default="paper", help="network preset, as in bench_torch.py")
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--tf32", choices=["off", "on"], default="on")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after as many warm-up steps)")
    p.add_argument("--rows", type=int, default=30, help="table rows, the most expensive first")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    dev = torch.device(args.device)
    tf32 = args.tf32 == "on"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    net = bench_torch.make_network(args.preset, dev).eval()
    c, h, w = bench_torch.image_of(args.preset)
    levels = torch.full((args.batch,), bench_torch.levels_of(args.preset) // 2, dtype=torch.long, device=dev)
    x = bench_torch.positive((args.batch, c, h, w), dev)

    def step() -> None:
        with torch.no_grad():
            bench_torch.dale_step(x, net(x, levels), bench_torch.SIGMA, bench_torch.MU, bench_torch.DELTA_S,
                                  bench_torch.KAPPA)

    for _ in range(args.steps):
        step()
    bench_torch.synchronize(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        bench_torch.synchronize(dev)
    sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(f"{args.preset} sampler step, batch {args.batch}, tf32 {args.tf32}, {args.steps} steps profiled "
          f"(times are totals over them)")
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
