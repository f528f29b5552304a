"""FCN segmenter (Long et al. 2015, arXiv:1411.4038) as torchvision builds it on a dilated backbone: an FCN head
on the "out" features (+ an FCN auxiliary head); on a ResNet its keys are torchvision's ``fcn_resnet*``."""

from collections.abc import Sequence

from torch import Tensor, nn

from seg.models.fcn_head import FCNHead
from seg.models.segmenter import Segmenter


class FCN(Segmenter):
    """A dilated backbone + :class:`FCNHead` (3x3 conv to in/4 channels, BN, ReLU, dropout, 1x1 to classes).

    Eval mode returns logits (B, num_classes, H, W); train mode returns {"out"} (+ "aux" when ``aux``), both
    upsampled to the input size.

    Args:
        num_classes: output channels.
        backbone: a backbone name or a built backbone, as :class:`Segmenter`.
        output_stride: 8, 16 or 32: input size over feature size (8: torchvision's).
        multi_grid: ResNet only: layer4's unit rates, times its dilation (DeepLabv3 Sec. 3.2); None: all 1.
        aux: an FCN auxiliary head on the "aux" features (a ResNet's layer3), weighted by ``SegModule.aux_weight``.
        weights: the backbone's ImageNet weights (``imagenet``, a local file, a torchvision enum name, an installed
            weights package); None: random init. Loaded strictly.
        in_channels: input bands (3: RGB); others rebuild the first convolution, its RGB kernels adapted.
        input_mean: per-band mean of the 0-1 scaled inputs, needed when ``in_channels`` is not 3 (then
            ``input_std`` too); None: what the backbone's weights expect.
        input_std: per-band standard deviation, as ``input_mean``.
        dropout: inside the head (torchvision's FCNHead: 0.1).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | nn.Module = "resnet18",
        *,
        output_stride: int = 8,
        multi_grid: Sequence[int] | None = None,
        aux: bool = True,
        weights: str | None = None,
        in_channels: int = 3,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        dropout: float = 0.1,
    ):
        super().__init__(
            num_classes, backbone, output_stride, multi_grid, aux, weights, in_channels, input_mean, input_std
        )
        self.classifier = FCNHead(self.backbone.channels["out"], num_classes, dropout)

    def logits(self, features: dict[str, Tensor]) -> Tensor:
        return self.classifier(features["out"])
