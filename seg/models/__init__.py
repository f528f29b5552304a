"""Segmentation models: dilated ResNet backbones, ASPP / FCN heads and the DeepLabv3 segmenter."""

from seg.models.aspp import ASPP, DeepLabHead
from seg.models.backbone import DilatedResNet
from seg.models.deeplabv3 import DeepLabV3
from seg.models.fcn import FCNHead
from seg.models.segmenter import ResNetSegmenter
from seg.models.weights import load_backbone_weights

__all__ = ["ASPP", "DeepLabHead", "DeepLabV3", "DilatedResNet", "FCNHead", "ResNetSegmenter", "load_backbone_weights"]
