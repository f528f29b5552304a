"""Backbones for images of another band count than RGB (a grey scan, RGB + near-infrared, multispectral): the first
convolution rebuilt for ``in_channels`` bands, its (pretrained) RGB kernels adapted as timm and smp adapt them."""

from __future__ import annotations

from collections.abc import Sequence

from timm.models import adapt_input_conv
from torch import nn


def first_conv(module: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """``(parent, name, conv)`` of the first ``nn.Conv2d`` registered in ``module``: the one that sees the image in
    every backbone seg builds (a ResNet's ``conv1``, VGG's ``features.0``, a timm stem)."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                return parent, name, child
    raise ValueError(f"{type(module).__name__} has no Conv2d to take the input bands")


def adapt_input_channels(
    backbone: nn.Module, in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> None:
    """Rebuild ``backbone``'s first convolution for ``in_channels`` bands, in place: its RGB kernels repeated over
    the bands and scaled by 3 / ``in_channels`` (one band: summed), timm's ``adapt_input_conv``, so that a
    pretrained backbone starts from its ImageNet filters. ``mean`` / ``std`` (one value per band, for 0-1 scaled
    inputs) become the backbone's input normalisation; ValueError naming ``model.net.input_mean`` without them."""
    if in_channels < 1:
        raise ValueError(f"model.net.in_channels={in_channels}; expected a positive number of bands")
    for key, values in (("input_mean", mean), ("input_std", std)):
        if values is None or len(values) != in_channels:
            got = "nothing" if values is None else f"{len(values)} values"
            raise ValueError(
                f"model.net.in_channels={in_channels} needs model.net.{key} with one value per band (0-1 scaled "
                f"inputs), got {got}: the ImageNet normalisation covers RGB only"
            )
    parent, name, conv = first_conv(backbone)
    if conv.groups != 1:
        raise ValueError(f"{type(backbone).__name__}'s first convolution is grouped: its bands cannot be adapted")
    # the same class (timm's "same"-padded Conv2dSame keeps its padding rule), the same geometry
    new = type(conv)(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
    )
    new.weight.data.copy_(adapt_input_conv(in_channels, conv.weight.data))
    if conv.bias is not None:
        new.bias.data.copy_(conv.bias.data)
    setattr(parent, name, new)
    backbone.mean, backbone.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
