"""Segmentation models: backbones (dilated ResNet, VGG-16, timm encoders), ASPP / DeepLabV3+ / FCN / context-module
heads and the segmenters that join any backbone to any head. Every segmenter maps (B, C, H, W) to logits
(B, num_classes, H, W) in eval mode; C is its ``in_channels`` (3: RGB)."""

from seg.models.aspp import ASPP, DeepLabHead
from seg.models.backbones import build_backbone, input_normalization
from seg.models.backbones.resnet import DilatedResNet
from seg.models.backbones.vgg import VGGBackbone
from seg.models.context_net import ContextModule, ContextNet
from seg.models.deeplabv3 import DeepLabV3
from seg.models.deeplabv3plus import DeepLabV3Plus
from seg.models.fcn import FCN
from seg.models.fcn_head import FCNHead
from seg.models.segmenter import Segmenter
from seg.models.vgg_dilated import VGGDilated

__all__ = [
    "ASPP",
    "ContextModule",
    "ContextNet",
    "DeepLabHead",
    "DeepLabV3",
    "DeepLabV3Plus",
    "DilatedResNet",
    "FCN",
    "FCNHead",
    "Segmenter",
    "VGGBackbone",
    "VGGDilated",
    "build_backbone",
    "input_normalization",
]
