"""ImageNet's input normalisation as torchvision's ImageNet weights (ResNet, VGG) expect it: the default of seg's
transforms and the normalisation of seg's own backbones (a timm encoder brings its own)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
