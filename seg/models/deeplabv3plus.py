"""DeepLabV3+ (Chen et al. 2018, arXiv:1802.02611): DeepLabv3's ASPP plus a decoder on stage-1 features."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seg.models.aspp import ASPP
from seg.models.segmenter import Segmenter


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def _separable_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """A 3x3 depthwise-separable convolution as DeepLab's reference code splits it: depthwise 3x3 + BN + ReLU,
    then pointwise 1x1 + BN + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        _conv_bn_relu(in_channels, out_channels, 1),
    )


class DeepLabV3PlusDecoder(nn.Module):
    """Low-level features -> 1x1 to 48 ch; ASPP output upsampled to their size; concat; two 3x3 convs; 1x1."""

    def __init__(
        self,
        low_channels: int,
        aspp_channels: int,
        num_classes: int,
        low_proj: int = 48,
        channels: int = 256,
        separable: bool = False,
    ):
        super().__init__()
        # Sec. 4.1: 48 channels keep the low-level features from outweighing the encoder's 256
        self.project = _conv_bn_relu(low_channels, low_proj, 1)
        # Sec. 4.1: two 3x3 convs of 256 channels after the concatenation work best; with Xception the paper makes
        # them depthwise separable
        block = _separable_bn_relu if separable else lambda i, o: _conv_bn_relu(i, o, 3)
        self.fuse = nn.Sequential(block(low_proj + aspp_channels, channels), block(channels, channels))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        """Class logits at the resolution of `low` (stride 4: a ResNet's layer1)."""
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([self.project(low), high], dim=1)))


class DeepLabV3Plus(Segmenter):
    """A dilated backbone + ASPP encoder, DeepLabV3+ decoder; same call contract as :class:`DeepLabV3`.

    Eval mode returns logits (B, num_classes, H, W); train mode returns {"out"} (+ "aux" from an FCN head on
    the "aux" features when ``aux``), both upsampled to the input size.

    Args:
        num_classes: output channels.
        backbone: a backbone name or a built backbone, as :class:`Segmenter`.
        output_stride: 16, the paper's training setting (8 costs ~3x the encoder FLOPs).
        multi_grid: ResNet only: layer4's unit rates, times its dilation (DeepLabv3 Sec. 3.2); None: all 1.
        weights: the backbone's ImageNet weights (``imagenet``, a local file, a torchvision enum name, an installed
            weights package); None: random init. Loaded strictly.
        in_channels: input bands (3: RGB); others rebuild the first convolution, its RGB kernels adapted.
        input_mean: per-band mean of the 0-1 scaled inputs, needed when ``in_channels`` is not 3 (then
            ``input_std`` too); None: what the backbone's weights expect.
        input_std: per-band standard deviation, as ``input_mean``.
        aspp_rates: ASPP's atrous rates, (6, 12, 18) at output stride 16 (Sec. 4.1).
        aux: an FCN auxiliary head on the "aux" features (the paper has none).
        dropout: after the ASPP projection (reference code: keep_prob 0.9).
        low_proj: channels of the 1x1 projection of the stage-1 features (Sec. 4.1: 48).
        channels: channels of ASPP and of the decoder's two 3x3 convolutions (256).
        separable: the decoder's 3x3 convolutions depthwise separable (the paper's Xception model; the reference
            code's ``decoder_use_separable_conv``): 0.15 of their arithmetic.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | nn.Module = "resnet18",
        *,
        output_stride: int = 16,
        multi_grid: Sequence[int] | None = None,
        aux: bool = False,
        weights: str | None = None,
        in_channels: int = 3,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        aspp_rates: Sequence[int] = (6, 12, 18),
        dropout: float = 0.1,
        low_proj: int = 48,
        channels: int = 256,
        separable: bool = False,
    ):
        super().__init__(
            num_classes, backbone, output_stride, multi_grid, aux, weights, in_channels, input_mean, input_std
        )
        feats = self.backbone.channels
        self.aspp = ASPP(feats["out"], tuple(aspp_rates), channels, dropout)
        self.decoder = DeepLabV3PlusDecoder(feats["low"], channels, num_classes, low_proj, channels, separable)

    def logits(self, features: dict[str, Tensor]) -> Tensor:
        return self.decoder(features["low"], self.aspp(features["out"]))
