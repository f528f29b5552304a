"""FCN head: a light classifier used as the auxiliary head on layer3 features."""

from torch import nn


class FCNHead(nn.Sequential):
    """3x3 conv to in_channels // 4 + BN + ReLU + dropout, then a 1x1 conv to class logits."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        inter_channels = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(inter_channels, num_classes, 1),
        )
