"""Regenerates the tables of reference/NETWORK.md from reference/ncsn.py.

    /opt/torch-venv/bin/python reference/describe.py

Rewrites the text between the `<!-- generated:begin -->` and `<!-- generated:end -->` markers of
NETWORK.md: parameter counts per preset, spatial sizes per stage, and for each topology every
parameter in state_dict order with its shape written in terms of f (ngf), C (image channels) and
N (levels). Shapes are found by building the network on the `meta` device with f = 1000, C = 5,
N = 7, values that cannot be confused with each other or with the kernel sizes 1 and 3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ncsn import CondRefineNetDilated, ConvMeanPool, NetworkConfig, parameter_count, preset  # noqa: E402

NETWORK_MD = Path(__file__).resolve().parent / "NETWORK.md"
BEGIN, END = "<!-- generated:begin -->", "<!-- generated:end -->"
SYMBOLIC_F, SYMBOLIC_C, SYMBOLIC_N = 1000, 5, 7


def symbol(value: int) -> str:
    if value == SYMBOLIC_C:
        return "C"
    if value == SYMBOLIC_N:
        return "N"
    if value % SYMBOLIC_F == 0:
        multiple = value // SYMBOLIC_F
        return "f" if multiple == 1 else f"{multiple}f"
    return str(value)


def describe_module(module: nn.Module, parent: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k, d, p = module.kernel_size[0], module.dilation[0], module.padding[0]
        text = f"conv {k}x{k}, dilation {d}, padding {p}, bias {'yes' if module.bias is not None else 'no'}"
        return text + (", then 2x2 mean pool" if isinstance(parent, ConvMeanPool) else "")
    if isinstance(module, nn.Embedding):
        return "norm embedding, row k = (gamma, alpha, beta)"
    raise TypeError(f"unexpected parameter owner {type(module).__name__}")


def parameter_table(topology: str) -> list[str]:
    config = NetworkConfig(SYMBOLIC_C, 32, SYMBOLIC_F, SYMBOLIC_N, topology=topology)
    with torch.device("meta"):
        net = CondRefineNetDilated(config)
    modules = dict(net.named_modules())
    rows = ["| # | parameter | shape | layer |", "| --- | --- | --- | --- |"]
    for index, (name, param) in enumerate(net.named_parameters()):
        owner_name = name.rsplit(".", 1)[0]
        owner, parent = modules[owner_name], modules[owner_name.rsplit(".", 1)[0]]
        shape = "[" + ", ".join(symbol(s) for s in param.shape) + "]"
        rows.append(f"| {index} | `{name}` | {shape} | {describe_module(owner, parent)} |")
    return rows


def count_rows() -> list[str]:
    rows = [
        "| preset | image | topology | f (ngf) | N | parameters | of which norm embeddings |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ["paper", "deep", "tiny", "tiny_deep"]:
        for channels, size in [(1, 28), (3, 32)]:
            config = preset(name, channels, size)
            with torch.device("meta"):
                net = CondRefineNetDilated(config)
            embed = sum(p.numel() for n, p in net.named_parameters() if n.endswith("embed.weight"))
            rows.append(
                f"| {name} | {channels}x{size}x{size} | {config.topology} | {config.ngf} | {config.num_classes} "
                f"| {parameter_count(net):,} | {embed:,} |"
            )
    return rows


def spatial_rows() -> list[str]:
    rows = ["| topology | image | stage outputs (res1, res2, ...) H=W | width in units of f |", "| --- | --- | --- | --- |"]
    for topology in ["standard", "deeper"]:
        for size in [28, 32]:
            net = CondRefineNetDilated(NetworkConfig(1, size, 2, 2, topology=topology))
            sizes, widths = [], []
            h = net.begin_conv(torch.ones(1, 1, size, size))
            levels = torch.zeros(1, dtype=torch.int64)
            for s in range(1, net.n_stages + 1):
                for block in getattr(net, f"res{s}"):
                    h = block(h, levels)
                sizes.append(str(h.shape[2]))
                widths.append(str(h.shape[1] // 2))
            rows.append(f"| {topology} | {size}x{size} | {', '.join(sizes)} | {', '.join(widths)} |")
    return rows


def generated_text() -> str:
    parts = ["### Parameter counts", "", *count_rows(), "", "### Spatial sizes", "", *spatial_rows(), ""]
    for topology in ["standard", "deeper"]:
        parts += [f"### Parameters of the {topology} topology, in state_dict order", "", *parameter_table(topology), ""]
    return "\n".join(parts)


def main() -> None:
    text = NETWORK_MD.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{NETWORK_MD} lacks the {BEGIN} / {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    NETWORK_MD.write_text(f"{head}{BEGIN}\n{generated_text()}\n{END}{tail}")
    print(f"rewrote the generated part of {NETWORK_MD}")


if __name__ == "__main__":
    main()
