"""DeepLabv3 segmenter: a dilated backbone + ASPP head (+ optional FCN auxiliary head on the "aux" features)."""

from collections.abc import Sequence

from torch import Tensor, nn

from seg.models.aspp import DeepLabHead
from seg.models.segmenter import Segmenter


class DeepLabV3(Segmenter):
    """DeepLabv3 (Chen et al. 2017, arXiv:1706.05587): a dilated backbone + ASPP head; on a ResNet its
    submodule names match torchvision's ``deeplabv3_resnet*``, so their state_dicts load one to one.

    Eval mode returns logits (B, num_classes, H, W); train mode returns {"out": logits, "aux": aux_logits}
    ("aux" only when ``aux``), both upsampled to the input size.

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
        aspp_rates: the three atrous rates of ASPP; (12, 24, 36) at output stride 8 is the paper's (6, 12, 18)
            at 16, doubled (and torchvision's).
        dropout: before the classifier (torchvision's DeepLabHead: 0.5).
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
        aspp_rates: Sequence[int] = (12, 24, 36),
        dropout: float = 0.5,
    ):
        super().__init__(
            num_classes, backbone, output_stride, multi_grid, aux, weights, in_channels, input_mean, input_std
        )
        self.classifier = DeepLabHead(self.backbone.channels["out"], num_classes, tuple(aspp_rates), dropout=dropout)

    def logits(self, features: dict[str, Tensor]) -> Tensor:
        return self.classifier(features["out"])
