"""DeepLabv3 segmenter: dilated ResNet + ASPP head (+ optional FCN auxiliary head on layer3)."""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from seg.models.aspp import DeepLabHead
from seg.models.backbone import DEPTHS, DilatedResNet
from seg.models.fcn import FCNHead
from seg.models.weights import load_backbone_weights

BACKBONES = {f"resnet{d}": d for d in DEPTHS}


class DeepLabV3(nn.Module):
    """DeepLabv3 from flat keyword arguments (short Hydra overrides); submodule names match torchvision's.

    Eval mode returns logits (B, num_classes, H, W); train mode returns {"out": logits, "aux": aux_logits}
    ("aux" only when `aux`), both upsampled to the input size.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        output_stride: int = 8,
        multi_grid: Sequence[int] | None = None,
        aspp_rates: Sequence[int] = (12, 24, 36),
        aux: bool = True,
        weights: str | None = None,
        dropout: float = 0.5,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}")
        # tuple() also turns Hydra's ListConfig into a plain sequence.
        grid = tuple(multi_grid) if multi_grid is not None else None
        self.backbone = DilatedResNet(BACKBONES[backbone], output_stride, grid)
        if weights:
            load_backbone_weights(self.backbone, weights)
        channels = self.backbone.channels
        self.classifier = DeepLabHead(channels["out"], num_classes, tuple(aspp_rates), dropout=dropout)
        self.aux_classifier = FCNHead(channels["aux"], num_classes) if aux else None

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Logits at input resolution in eval mode; a dict with "out" (and "aux") in train mode."""
        size = x.shape[-2:]
        features = self.backbone(x)
        out = F.interpolate(self.classifier(features["out"]), size=size, mode="bilinear", align_corners=False)
        if not self.training:
            return out
        result = {"out": out}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result
