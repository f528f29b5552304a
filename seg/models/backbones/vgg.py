"""VGG-16 backbone: torchvision's ``vgg16`` / ``vgg16_bn`` convolutional layers, its last pools removed for
output stride 8 or 16 (DeepLab-LargeFOV, Chen et al. 2015, arXiv:1412.7062; Yu & Koltun 2016).

``model.net.backbone=vgg16|vgg16_bn``. At output stride 8 pool4 and pool5 become identities and conv5 is dilated
2 (DeepLab Sec. 3.1: conv5 then runs at stride 8, so dilating it keeps its field of view); at 16 only pool5 goes.
Layer indices, hence state_dict keys, are torchvision's ``features``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from seg.models.support.weights import check_state_dict, read_state_dict, torchvision_weights_file
from seg.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

NAMES = ("vgg16", "vgg16_bn")
OUTPUT_STRIDES = (8, 16, 32)


class VGGBackbone(nn.Sequential):
    """torchvision's VGG-16 ``features`` at output stride 8, 16 or 32, returning the feature dict.

    "low" is conv3_3 (stride 4, 256 channels), "aux" the output of pool4's slot (conv4_3, 512), "out" the output
    of pool5's slot (conv5_3, 512). It is a Sequential, so its keys are ``features``' (``0.weight``, ...).

    Args:
        batch_norm: torchvision's vgg16_bn layout (trains from scratch) instead of vgg16 (the paper's).
        output_stride: 8 (the DeepLab front end), 16 or 32 (plain VGG-16).
    """

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, batch_norm: bool = False, output_stride: int = 8):
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES} for VGG-16, got {output_stride!r}")
        # torchvision's own builder and init, without the 120M-parameter classifier that vgg16() would allocate
        features = make_layers(cfgs["D"], batch_norm=batch_norm)
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        super().__init__(*features)
        pools = [i for i, m in enumerate(self) if isinstance(m, nn.MaxPool2d)]
        pool3, pool4, pool5 = pools[2], pools[3], pools[4]
        removed = {8: (pool4, pool5), 16: (pool5,), 32: ()}[output_stride]
        for i in removed:
            self[i] = nn.Identity()
        if output_stride == 8:
            for m in list(self)[pool4 + 1 : pool5]:
                if isinstance(m, nn.Conv2d):
                    m.dilation, m.padding = (2, 2), (2, 2)
        self.batch_norm = batch_norm
        self.output_stride = output_stride
        self.arch = "vgg16_bn" if batch_norm else "vgg16"
        self._ends = {"low": pool3, "aux": pool4 + 1, "out": len(self)}  # slice ends (pool3 itself is not in low)
        self.channels = {"low": 256, "aux": 512, "out": 512}

    def load_pretrained(self, weights: str) -> tuple[str, dict[str, Tensor]]:
        """Load torchvision VGG-16 weights (an enum in the torch hub cache, ``imagenet`` = ``IMAGENET1K_V1``, or
        a local file): ``features`` strictly. Returns the file and all its tensors, so that
        :class:`seg.models.VGGDilated` converts fc6/fc7 from them without reading the file again."""
        path = torchvision_weights_file(weights, self.arch)
        state = read_state_dict(path)
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        check_state_dict(self, features, f"{path} ({self.arch} features)")
        self.load_state_dict(features, strict=True)
        return path, state

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Return conv3_3 ("low"), conv4_3 after pool4's slot ("aux") and the last layer's output ("out")."""
        layers, features, start = list(self), {}, 0
        for name, end in self._ends.items():
            for layer in layers[start:end]:
                x = layer(x)
            features[name], start = x, end
        return features
