"""Segmentation models: dilated ResNet and VGG backbones, ASPP / FCN / context-module heads and the segmenters that
join them. Every segmenter maps (B, 3, H, W) to logits (B, num_classes, H, W) in eval mode."""

from seg.models.aspp import ASPP, DeepLabHead
from seg.models.backbone import DilatedResNet
from seg.models.context_module import ContextModule, ContextNet
from seg.models.deeplabv3 import DeepLabV3
from seg.models.deeplabv3plus import DeepLabV3Plus
from seg.models.fcn import FCNHead
from seg.models.segmenter import ResNetSegmenter
from seg.models.vgg import VGGDilated
from seg.models.weights import load_backbone_weights

__all__ = [
    "ASPP", "ContextModule", "ContextNet", "DeepLabHead", "DeepLabV3", "DeepLabV3Plus", "DilatedResNet", "FCNHead",
    "ResNetSegmenter", "VGGDilated", "load_backbone_weights",
]  # fmt: skip
