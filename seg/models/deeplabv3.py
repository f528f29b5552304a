"""DeepLabv3 segmenter: dilated ResNet + ASPP head (+ optional FCN auxiliary head on layer3)."""

from collections.abc import Sequence

from torch import Tensor

from seg.models.aspp import DeepLabHead
from seg.models.segmenter import ResNetSegmenter


class DeepLabV3(ResNetSegmenter):
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
        super().__init__(num_classes, backbone, output_stride, multi_grid, aux, weights)
        self.classifier = DeepLabHead(self.backbone.channels["out"], num_classes, tuple(aspp_rates), dropout=dropout)

    def logits(self, features: dict[str, Tensor]) -> Tensor:
        return self.classifier(features["out"])
