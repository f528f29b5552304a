"""The segmenter contract shared by every dilated-ResNet model: backbone -> head -> logits at the input size."""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from seg.models.backbone import DEPTHS, DilatedResNet
from seg.models.fcn import FCNHead
from seg.models.weights import load_backbone_weights

BACKBONES = {f"resnet{d}": d for d in DEPTHS}


class ResNetSegmenter(nn.Module):
    """A dilated ResNet, a head (``logits``, defined by subclasses) and an optional FCN aux head on layer3.

    Like torchvision's ``_SimpleSegmentationModel``: eval mode returns logits (B, num_classes, H, W); train mode
    returns {"out": logits} (+ "aux" when ``aux``), both upsampled bilinearly to the input size.

    Args:
        num_classes: output channels (classes, void excluded).
        backbone: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        output_stride: 8, 16 or 32: input size over feature size; below 32 the last stages dilate instead of
            striding (DeepLabv3 Sec. 3.1).
        multi_grid: unit rates of layer4's blocks, multiplied by its dilation (DeepLabv3 Sec. 3.2), e.g.
            ``(1, 2, 4)``; None: all 1.
        aux: add torchvision's auxiliary FCN head on layer3; its loss is weighted by ``SegModule.aux_weight``.
        weights: ImageNet backbone weights: a torchvision enum name found in the torch hub cache (e.g.
            ``ResNet50_Weights.IMAGENET1K_V1``) or a local ``.pth`` file; None: random init. Never downloads.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        output_stride: int = 8,
        multi_grid: Sequence[int] | None = None,
        aux: bool = True,
        weights: str | None = None,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}")
        # tuple() also turns Hydra's ListConfig into a plain sequence.
        grid = tuple(multi_grid) if multi_grid is not None else None
        self.backbone = DilatedResNet(BACKBONES[backbone], output_stride, grid)
        if weights:
            load_backbone_weights(self.backbone, weights)
        self.aux_classifier = FCNHead(self.backbone.channels["aux"], num_classes) if aux else None

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
