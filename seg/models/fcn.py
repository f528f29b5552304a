"""FCN segmenter (Long et al. 2015, arXiv:1411.4038) as torchvision builds it on a dilated backbone: an FCN head
on the "out" features (+ an FCN auxiliary head); on a ResNet its keys are torchvision's ``fcn_resnet*``."""

from typing import Any

from torch import Tensor, nn

from seg.models.fcn_head import FCNHead
from seg.models.segmenter import Segmenter


class FCN(Segmenter):
    """A dilated backbone + :class:`FCNHead` (3x3 conv to in/4 channels, BN, ReLU, dropout, 1x1 to classes).

    Eval mode returns logits (B, num_classes, H, W); train mode returns {"out"} (+ "aux" when ``aux``), both
    upsampled to the input size.

    Args:
        num_classes: output channels.
        backbone: as :class:`Segmenter`.
        dropout: inside the head (torchvision's FCNHead: 0.1).
        **kwargs: ``output_stride`` (8, torchvision's), ``multi_grid``, ``aux``, ``weights``: as :class:`Segmenter`.
    """

    def __init__(self, num_classes: int, backbone: str | nn.Module = "resnet18", *, dropout: float = 0.1,
                 **kwargs: Any):  # fmt: skip
        super().__init__(num_classes, backbone, **kwargs)
        self.classifier = FCNHead(self.backbone.channels["out"], num_classes, dropout)

    def logits(self, features: dict[str, Tensor]) -> Tensor:
        return self.classifier(features["out"])
