"""BatchNorm folded into the convolution before it, for inference: one operator less per layer, the same logits.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma + beta``; when
``x`` is a convolution's output, scaling that convolution's weights by ``gamma / sqrt(var + eps)`` and shifting
its bias gives the same ``y`` without the BatchNorm (ONNX Runtime does the same when it loads a model). On a
2-core CPU that is about a tenth of a CamVid frame's time (benchmarks/RESULTS.md, section 15).

Which convolution feeds which BatchNorm is read from one traced forward pass, not from the module order, so a
BatchNorm that normalises anything else (a sum, a concatenation, a pre-activation input) is left alone. timm's
``BatchNormAct2d`` keeps its activation.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["fold_batchnorm"]


def _feeding_convolutions(net: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """(convolution name, BatchNorm name) pairs where the BatchNorm's input is exactly that convolution's output,
    and that output goes nowhere else (seen in one forward pass on ``example``)."""
    names = {m: n for n, m in net.named_modules()}
    produced: dict[int, tuple[str, Tensor]] = {}  # id(output) -> (conv name, output); kept alive for the pass
    consumers: dict[int, list[str]] = {}  # id(conv output) -> the modules that read it
    hooks = []

    def conv_hook(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        produced[id(output)] = (names[module], output)

    def any_pre_hook(module: nn.Module, inputs: tuple) -> None:
        for t in inputs:
            if isinstance(t, Tensor) and id(t) in produced:
                consumers.setdefault(id(t), []).append(names[module])

    for module in names:
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
        # leaves compute; a BatchNorm may have children of its own (timm's BatchNormAct2d: drop, act)
        if not list(module.children()) or isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_pre_hook(any_pre_hook))
    try:
        with torch.no_grad():
            out = net(example)
    finally:
        for h in hooks:
            h.remove()
    del out
    pairs = []
    for key, readers in consumers.items():
        conv = produced[key][0]
        # the conv's output read once, by a BatchNorm: functional reads (a residual add) are not seen by hooks, so
        # the folded net is checked against the original on the same input afterwards
        if len(readers) == 1 and isinstance(net.get_submodule(readers[0]), nn.BatchNorm2d):
            pairs.append((conv, readers[0]))
    return pairs


def _foldable(conv: nn.Conv2d, bn: nn.Module) -> bool:
    """A BatchNorm with running statistics over ``conv``'s channels, plain or timm's ``BatchNormAct2d``."""
    kind = type(bn) is nn.BatchNorm2d or (hasattr(bn, "act") and hasattr(bn, "drop"))
    return kind and bn.running_mean is not None and bn.num_features == conv.out_channels


def _without_norm(bn: nn.Module) -> nn.Module:
    """What stays of a BatchNorm once folded: nothing, or timm's activation (``BatchNormAct2d.drop`` + ``.act``)."""
    return nn.Identity() if type(bn) is nn.BatchNorm2d else nn.Sequential(bn.drop, bn.act)


def _set(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, module)


@torch.no_grad()
def fold_batchnorm(net: nn.Module, example: Tensor, atol: float = 1e-3) -> tuple[nn.Module, int]:
    """A copy of the eval-mode ``net`` with every BatchNorm that follows a convolution folded into it.

    Args:
        net: a network in eval mode (training-mode BatchNorm normalises by batch statistics: nothing to fold).
        example: an input batch; one forward pass on it finds the convolution feeding each BatchNorm.
        atol: the largest absolute logit difference allowed between the folded copy and ``net`` on ``example``.

    Returns:
        (the folded copy, the number of BatchNorms folded). ``net`` itself is not changed.

    Raises:
        ValueError: ``net`` is in training mode, or the folded copy's output differs by more than ``atol``.
    """
    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode (net.eval())")
    folded = copy.deepcopy(net)
    found = ((folded.get_submodule(c), folded.get_submodule(b), b) for c, b in _feeding_convolutions(folded, example))
    pairs = [(conv, bn, name) for conv, bn, name in found if _foldable(conv, bn)]
    for conv, bn, bn_name in pairs:
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + beta)
        _set(folded, bn_name, _without_norm(bn))
    expected, got = net(example), folded(example)
    expected = expected["out"] if isinstance(expected, dict) else expected
    got = got["out"] if isinstance(got, dict) else got
    diff = float((expected - got).abs().max())
    if diff > atol:
        raise ValueError(f"folding BatchNorm changed the output by {diff:.2e} (> {atol:g}): not folded")
    return folded, len(pairs)
