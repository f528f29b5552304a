"""Receptive fields of the real networks: theoretical (from the traced module graph), gridding, effective.

``python -m seg.analysis.receptive_field [--size 96] [--erf erf.png] [hydra overrides]`` prints the theoretical
receptive field of the configured ``model.net`` per stage and at the output, and can draw its effective one.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp


@dataclass(frozen=True)
class RF:
    """Receptive field along one axis, in input pixels, of the units of one feature map."""

    size: float  # extent a unit sees through convolution / pooling paths
    jump: float  # input pixels between neighbouring units (the accumulated stride)
    centre: float  # input coordinate of the centre of unit 0's field
    global_: bool = False  # some path pools over the whole input (e.g. ASPP image pooling)

    def span(self, index: int) -> tuple[float, float]:
        """First and last input pixel seen by unit `index` (may lie outside the image: padding)."""
        c = self.centre + index * self.jump
        return c - (self.size - 1) / 2, c + (self.size - 1) / 2


INPUT_RF = RF(size=1.0, jump=1.0, centre=0.0)


def _along(value: int | tuple[int, ...], axis: int) -> int:
    """One axis of a layer's kernel/stride/padding/dilation, given as an int or a per-axis tuple."""
    return value[axis] if isinstance(value, tuple) else value


def _window(rf: RF, kernel: int, stride: int, padding: int | str, dilation: int) -> RF:
    """A sliding window (conv or pool) applied to maps whose units have field `rf`."""
    if padding == "same":
        padding = dilation * (kernel - 1) // 2
    elif padding == "valid":
        padding = 0
    return RF(
        size=rf.size + (kernel - 1) * dilation * rf.jump,
        jump=rf.jump * stride,
        centre=rf.centre + ((kernel - 1) * dilation / 2 - padding) * rf.jump,
        global_=rf.global_,
    )


def _union(rfs: Sequence[RF]) -> RF:
    """Field of a pointwise op (add, concat, ReLU) on maps of the same grid: the hull of its inputs' fields."""
    jumps = {round(r.jump, 6) for r in rfs}
    if len(jumps) > 1:
        raise ValueError(f"pointwise op joins maps of different strides {sorted(jumps)}: resize them first")
    lo = min(r.centre - (r.size - 1) / 2 for r in rfs)
    hi = max(r.centre + (r.size - 1) / 2 for r in rfs)
    return RF(size=hi - lo + 1, jump=rfs[0].jump, centre=(lo + hi) / 2, global_=any(r.global_ for r in rfs))


def _resize(rf: RF, n_in: int, n_out: int) -> RF:
    """Bilinear resize n_in -> n_out units (align_corners=False): each output unit mixes two neighbours."""
    if n_in == n_out:
        return rf
    scale = n_in / n_out
    return RF(
        size=rf.size + rf.jump,
        jump=rf.jump * scale,
        centre=rf.centre + (0.5 * scale - 0.5) * rf.jump,
        global_=rf.global_,
    )


def _global(rf: RF, n_in: int, n_out: int) -> RF:
    """Adaptive pooling: every output unit sees the whole map; the local field is kept for the other paths."""
    return replace(rf, jump=rf.jump * n_in / n_out, global_=True)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


_RESIZE = {F.interpolate, F.upsample, F.upsample_bilinear, F.upsample_nearest}
_GLOBAL = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d}


def _node_rf(node: fx.Node, gm: fx.GraphModule, rfs: dict[fx.Node, RF], axis: int) -> RF | None:
    """Field of one traced node's output, from its inputs' fields; None for non-tensor values."""
    inputs = [n for n in node.all_input_nodes if n in rfs]
    shape = _shape(node)
    if not inputs or shape is None or len(shape) != 4:
        return None
    dim = -2 + axis
    n_in, n_out = _shape(inputs[0])[dim], shape[dim]
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            if isinstance(mod, nn.Conv2d) and mod.transposed:
                raise ValueError(f"{node.target}: transposed convolutions are not supported")
            dilation = _along(getattr(mod, "dilation", 1), axis)
            return _window(
                rfs[inputs[0]],
                _along(mod.kernel_size, axis),
                _along(mod.stride, axis),
                mod.padding if isinstance(mod.padding, str) else _along(mod.padding, axis),
                dilation,
            )
        if isinstance(mod, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            return _global(rfs[inputs[0]], n_in, n_out)
        if isinstance(mod, nn.Upsample):
            return _resize(rfs[inputs[0]], n_in, n_out)
        what = type(mod).__name__
    else:
        if node.target in _RESIZE:
            return _resize(rfs[inputs[0]], n_in, n_out)
        if node.target in _GLOBAL:
            return _global(rfs[inputs[0]], n_in, n_out)
        what = getattr(node.target, "__name__", str(node.target))
    # anything else must be pointwise in space (BN, ReLU, add, cat, dropout, ...): check it keeps the grid
    if any(_shape(n)[-2:] != shape[-2:] for n in inputs):
        raise ValueError(f"{node.name} ({what}) changes the spatial size but is not a known conv/pool/resize")
    return _union([rfs[n] for n in inputs])


class _LeafConvTracer(fx.Tracer):
    """Keeps every nn.Conv2d subclass (e.g. seg.models.atrous.AtrousConv2d, whose forward branches on the
    device and dtype) one node, as fx does for torch's own modules."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def _stage_names(net: nn.Module) -> list[str]:
    """Default rows: the children of ``net.backbone`` that convolve or pool, then the other children of net."""
    spatial = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    names = []
    backbone = getattr(net, "backbone", None)
    for prefix, parent in (("backbone.", backbone), ("", net)):
        for name, child in parent.named_children() if parent is not None else ():
            if child is backbone:
                continue
            if isinstance(child, spatial) or any(isinstance(m, spatial) for m in child.modules()):
                names.append(prefix + name)
    return names


def receptive_fields(
    net: nn.Module,
    input_size: int | tuple[int, int] = 96,
    modules: Sequence[str] | None = None,
    axis: int = 0,
    in_channels: int = 3,
) -> dict[str, RF]:
    """Theoretical receptive field at each named module's output and at "output", along `axis` (0 = height).

    Walks the torch.fx graph of `net` in eval mode (ShapeProp on a zero input gives the map sizes), so it
    follows the real kernels, strides, paddings and dilations, every branch and every resize. A module that
    does not appear in the eval graph (e.g. an auxiliary head) is left out.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    was_training = net.training
    net.eval()
    try:
        gm = fx.GraphModule(net, _LeafConvTracer().trace(net))
        param = next(net.parameters(), None)
        like = {"device": param.device, "dtype": param.dtype} if param is not None else {}
        ShapeProp(gm).propagate(torch.zeros(1, in_channels, h, w, **like))
    finally:
        net.train(was_training)

    rfs: dict[fx.Node, RF] = {}
    last_in: dict[str, fx.Node] = {}
    wanted = list(modules) if modules is not None else _stage_names(net)
    output: dict[str, RF] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if not rfs:
                rfs[node] = INPUT_RF
            continue
        if node.op == "output":
            result = node.args[0]
            items = result.items() if isinstance(result, dict) else [("", result)]
            output = {f"output.{k}" if k else "output": rfs[n] for k, n in items if isinstance(n, fx.Node) and n in rfs}
            continue
        rf = _node_rf(node, gm, rfs, axis)
        if rf is None:
            continue
        rfs[node] = rf
        for qualname, _ in (node.meta.get("nn_module_stack") or {}).values():
            last_in[qualname] = node
    table = {name: rfs[last_in[name]] for name in wanted if name in last_in}
    table.update(output)
    return table


def format_table(table: dict[str, RF]) -> str:
    """A Markdown table of receptive fields: size (input px), stride (jump) and image pooling."""
    lines = ["| module | RF (px) | stride | image pooling |", "|---|---:|---:|:---:|"]
    for name, rf in table.items():
        lines.append(f"| {name} | {rf.size:g} | {rf.jump:g} | {'yes' if rf.global_ else ''} |")
    return "\n".join(lines)


def conv_dilations(module: nn.Module, kernel_size: int = 3) -> list[int]:
    """Dilations of the k x k convolutions of `module` in registration order (e.g. one ResNet stage)."""
    return [m.dilation[0] for m in module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] == kernel_size]


@dataclass(frozen=True)
class Coverage:
    """Which input offsets a unit sees through a chain of dilated convolutions (Wang et al. 2018, gridding)."""

    rates: tuple[int, ...]
    counts: np.ndarray  # number of paths from each offset -R..R (1-D) to the unit; 0 = a hole

    @property
    def radius(self) -> int:
        return (len(self.counts) - 1) // 2

    @property
    def offsets(self) -> np.ndarray:
        return np.arange(-self.radius, self.radius + 1)

    @property
    def holes(self) -> list[int]:
        """Offsets inside the field that no path reaches."""
        return [int(o) for o, c in zip(self.offsets, self.counts, strict=True) if c == 0]

    @property
    def counts_2d(self) -> np.ndarray:
        """Paths per 2-D offset: separable kernels, so the outer product of the 1-D counts."""
        return np.outer(self.counts, self.counts)


def gridding(rates: Sequence[int], kernel_size: int = 3) -> Coverage:
    """Coverage of stacked k x k convolutions with the given dilation rates (no strides, no nonlinearity)."""
    counts = np.ones(1, dtype=np.int64)
    for rate in rates:
        if rate < 1:
            raise ValueError(f"dilation rates must be >= 1, got {list(rates)}")
        taps = np.zeros((kernel_size - 1) * rate + 1, dtype=np.int64)
        taps[::rate] = 1
        counts = np.convolve(counts, taps)
    return Coverage(tuple(int(r) for r in rates), counts)


def _pick(out: torch.Tensor | dict, key: str | None) -> torch.Tensor:
    if isinstance(out, dict):
        return out[key or "out"]
    return out


def effective_receptive_field(
    net: nn.Module,
    input_size: int | tuple[int, int] = 96,
    in_channels: int = 3,
    n_samples: int = 4,
    output: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Luo et al. 2016: |d centre output unit / d input|, summed over channels, averaged over random inputs.

    `net` runs in eval mode (BatchNorm on its running statistics); a dict output is read at `output`
    (default "out"). Returns an (H, W) float64 array.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    param = next(net.parameters(), None)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, in_channels, h, w, generator=gen)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    x.requires_grad_(True)
    was_training = net.training
    net.eval()
    try:
        y = _pick(net(x), output)
        # the centre unit of every sample: each input only reaches its own sample's output
        y[:, :, y.shape[-2] // 2, y.shape[-1] // 2].sum().backward()
    finally:
        net.train(was_training)
    return x.grad.abs().sum(dim=1).mean(dim=0).double().cpu().numpy()


def centre_span(rf: RF, n_units: int) -> tuple[float, float]:
    """Input pixels seen by the centre unit (index n_units // 2) of a map with `n_units` units."""
    return rf.span(n_units // 2)


def plot_erf(
    erf: np.ndarray,
    rf_h: RF | None = None,
    rf_w: RF | None = None,
    out_hw: tuple[int, int] | None = None,
    title: str = "effective receptive field",
) -> Figure:
    """The ERF as an image (log scale), with the theoretical field of the centre unit drawn as a box."""
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    im = ax.imshow(np.log10(erf + erf.max() * 1e-6), cmap="magma")
    fig.colorbar(im, ax=ax, label="log10 |gradient|")
    if rf_h is not None and rf_w is not None and out_hw is not None:
        (y0, y1), (x0, x1) = centre_span(rf_h, out_hw[0]), centre_span(rf_w, out_hw[1])
        box = Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="cyan", lw=1.5)
        ax.add_patch(box)
        ax.set_xlim(-0.5, erf.shape[1] - 0.5)
        ax.set_ylim(erf.shape[0] - 0.5, -0.5)
        beyond = " exceeds the image" if y0 < 0 or x0 < 0 else " (cyan box)"
        title += f"\ntheoretical RF of the centre unit {rf_h.size:g} x {rf_w.size:g} px{beyond}"
    ax.set_title(title, fontsize=9)
    return fig


def _net_from_config(overrides: Sequence[str]) -> nn.Module:
    """``model.net`` of the composed train config (the same config ``python -m seg.train`` would use)."""
    from hydra.utils import instantiate

    from seg.utils.compose import compose_config

    return instantiate(compose_config(list(overrides)).model.net)


def main(argv: Sequence[str] | None = None, build: Callable[[Sequence[str]], nn.Module] = _net_from_config) -> None:
    """CLI: print the per-stage receptive fields and gridding of a configured net; optionally save its ERF."""
    parser = argparse.ArgumentParser(prog="python -m seg.analysis.receptive_field", description=__doc__)
    parser.add_argument("--size", type=int, default=96, help="input side in px (default 96, the quickstart)")
    parser.add_argument("--erf", type=Path, default=None, help="write the effective receptive field PNG here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.net.output_stride=8")
    args = parser.parse_args(argv)
    net = build(args.overrides)
    table = receptive_fields(net, args.size)
    print(format_table(table))
    backbone = getattr(net, "backbone", None)
    for name, stage in backbone.named_children() if backbone is not None else ():
        rates = conv_dilations(stage)
        if any(r > 1 for r in rates):
            cov = gridding(rates)
            holes = f"holes at offsets {cov.holes}" if cov.holes else "no holes"
            print(f"gridding within backbone.{name}: rates {rates} as a plain chain (skips ignored): {holes}")
    if args.erf is not None:
        erf = effective_receptive_field(net, args.size)
        rf_w = receptive_fields(net, args.size, modules=[], axis=1)["output"]
        fig = plot_erf(erf, table["output"], rf_w, erf.shape, title=f"ERF, input {args.size} px, random init")
        fig.savefig(args.erf, dpi=120, bbox_inches="tight")
        size = math.sqrt(float((erf > erf.max() * 0.01).sum()))
        print(f"ERF written to {args.erf} (area above 1% of peak ~ {size:.0f} px square)")


if __name__ == "__main__":
    main()
