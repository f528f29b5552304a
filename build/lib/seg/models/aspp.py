"""Atrous Spatial Pyramid Pooling and the DeepLabv3 head, laid out like torchvision's for key parity."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seg.models.atrous import AtrousConv2d


class ASPPConv(nn.Sequential):
    """3x3 atrous conv + BN + ReLU; padding equals the rate so the map size is kept."""

    def __init__(self, in_channels: int, out_channels: int, rate: int):
        super().__init__(
            AtrousConv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average pool, 1x1 conv + BN + ReLU, upsampled back to the input size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Parallel 1x1, atrous 3x3 (one per rate) and image-pooling branches, concatenated and projected.

    The pooling branch applies BatchNorm to a 1x1 map, so in train mode a batch of size 1 raises
    (one value per channel); torchvision's ASPP behaves the same. Train with batch size >= 2.
    """

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = 256, dropout: float = 0.5):
        super().__init__()
        rates = tuple(int(r) for r in atrous_rates)
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())
        ]
        branches += [ASPPConv(in_channels, out_channels, rate) for rate in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate all branch outputs along channels and project to `out_channels`."""
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """DeepLabv3 classifier: ASPP, a 3x3 conv + BN + ReLU, then a 1x1 conv to class logits."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        atrous_rates: Sequence[int] = (12, 24, 36),
        channels: int = 256,
        dropout: float = 0.5,
    ):
        super().__init__(
            ASPP(in_channels, atrous_rates, channels, dropout),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, num_classes, 1),
        )
