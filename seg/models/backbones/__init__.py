"""Backbones: feature extractors that keep the :class:`~seg.models.backbones.protocol.Backbone` contract
({"low", "aux", "out"} features, their ``channels``, the ``mean``/``std`` their weights expect, ``load_pretrained``).

One file per family, each checking its own options: ``resnet`` (torchvision's ResNets, dilated), ``vgg`` (the
VGG-16 front end) and ``timm`` (any timm encoder timm can dilate). A backbone is named by one string,
``model.net.backbone``: seg's own names first, anything else is a timm model name.

    model.net.backbone=resnet50                 # seg.models.backbones.resnet (torchvision parity)
    model.net.backbone=vgg16                    # seg.models.backbones.vgg (vgg16_bn: with BatchNorm)
    model.net.backbone=tf_efficientnet_lite0    # seg.models.backbones.timm
"""

from __future__ import annotations

from collections.abc import Sequence

from seg.models.backbones import resnet, vgg
from seg.models.backbones.protocol import Backbone
from seg.models.support.input_channels import adapt_input_channels
from seg.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

SEG_BACKBONES = (*resnet.NAMES, *vgg.NAMES)


def build_backbone(
    name: str,
    *,
    output_stride: int = 8,
    multi_grid: Sequence[int] | None = None,
    weights: str | None = None,
    in_channels: int = 3,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
) -> Backbone:
    """The backbone called ``name`` at ``output_stride``, with ``weights`` loaded strictly (None: random init).

    Args:
        name: ``resnet18|34|50|101``, ``vgg16``, ``vgg16_bn`` or a timm model name.
        output_stride: 8, 16 or 32: input size over the "out" feature size.
        multi_grid: layer4's unit rates (ResNets only; DeepLabv3 Sec. 3.2).
        weights: the family's ImageNet weights: ``imagenet``, a local file, or a family-specific name (a
            torchvision enum, an installed weights package), fetched into the cache on first use when missing.
        in_channels: input bands; other than 3, the first convolution is rebuilt for them after the weights load,
            its RGB kernels adapted (:func:`seg.models.support.input_channels.adapt_input_channels`).
        input_mean: per-band mean of the 0-1 scaled inputs (needed when ``in_channels`` is not 3; for 3 it
            replaces the weights' normalisation); ``input_std`` likewise.
    """
    name = str(name)
    grid = tuple(int(g) for g in multi_grid) if multi_grid is not None else None
    if grid is not None and name not in resnet.NAMES:
        raise ValueError(f"multi_grid is for ResNet backbones (layer4's unit rates); {name!r} has no layer4")
    if name in resnet.NAMES:
        backbone = resnet.DilatedResNet(int(name.removeprefix("resnet")), output_stride, grid)
    elif name in vgg.NAMES:
        backbone = vgg.VGGBackbone(batch_norm=name == "vgg16_bn", output_stride=output_stride)
    else:
        from seg.models.backbones.timm import TimmBackbone  # imports timm only for a timm backbone

        backbone = TimmBackbone(name, output_stride)
    if weights:
        backbone.load_pretrained(str(weights))
    if int(in_channels) != 3:
        adapt_input_channels(backbone, int(in_channels), input_mean, input_std)
    elif input_mean is not None or input_std is not None:
        if input_mean is None or input_std is None or len(input_mean) != 3 or len(input_std) != 3:
            raise ValueError("model.net.input_mean and input_std go together, three values each for RGB")
        backbone.mean, backbone.std = tuple(float(v) for v in input_mean), tuple(float(v) for v in input_std)
    return backbone


def input_normalization(name: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone ``name``'s weights expect, without building it: ImageNet's for seg's own (and
    for None: a net config without a ``backbone`` key, such as VGGDilated's VGG-16), timm's pretrained config
    for a timm model."""
    if name is None or str(name) in SEG_BACKBONES:
        return IMAGENET_MEAN, IMAGENET_STD
    from seg.models.backbones.timm import normalization

    return normalization(str(name))
