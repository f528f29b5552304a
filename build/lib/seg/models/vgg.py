"""VGG-16 dilated front end: DeepLab-LargeFOV (Chen et al. 2015, arXiv:1412.7062) / Yu & Koltun 2016.

torchvision's vgg16 (or vgg16_bn) ``features`` with pool4 and pool5 removed (output stride 8), conv5 dilated 2,
fc6 as a dilated convolution and fc7 as a 1x1 convolution. LargeFOV: fc6 3x3, dilation 12, 1024 channels;
Yu & Koltun's front end: fc6 7x7, dilation 4, 4096 channels (optionally followed by the context module).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from seg.models.context_module import BASIC_DILATIONS, ContextModule
from seg.models.weights import check_state_dict, read_state_dict, weights_file


def _dilated_features(batch_norm: bool) -> nn.Sequential:
    """vgg16(_bn).features with pool4/pool5 replaced by Identity (indices, hence state_dict keys, kept)."""
    # torchvision's own builder and init, without the 120M-parameter classifier that vgg16() would allocate
    features = make_layers(cfgs["D"], batch_norm=batch_norm)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    pool4, pool5 = pools[3], pools[4]
    for i in (pool4, pool5):
        features[i] = nn.Identity()
    # Yu & Koltun Sec. 4 / DeepLab Sec. 3.1: conv5 runs at stride 8, so dilate it 2 to keep its field
    for m in features[pool4 + 1 : pool5]:
        if isinstance(m, nn.Conv2d):
            m.dilation, m.padding = (2, 2), (2, 2)
    return features


def fc_to_conv(weight: Tensor, bias: Tensor, conv: nn.Conv2d, fc_input_size: int) -> tuple[Tensor, Tensor] | None:
    """A fully connected layer's (out, in * s * s) weight as `conv`'s kernel, decimated as DeepLab-LargeFOV does.

    DeepLab (arXiv:1412.7062, Sec. 4.1) subsamples fc6's 4096 x 7 x 7 filters to 1024 x 3 x 3 (every 4th
    filter, every 3rd tap) and fc7 to 1024 x 1024. `fc_input_size` is the FC layer's input side s (7 for fc6,
    1 for fc7). Returns (weight, bias) shaped for `conv`, or None when the sizes do not decimate evenly.
    """
    n_out, n_flat = weight.shape
    s, k = fc_input_size, conv.kernel_size[0]
    n_in = n_flat // (s * s)
    ok = (
        n_in * s * s == n_flat and n_in % conv.in_channels == 0 and n_out % conv.out_channels == 0 and k <= s
        and (k == 1 or (s - 1) % (k - 1) == 0)
    )  # fmt: skip
    if not ok:
        return None
    step_k = (s - 1) // (k - 1) if k > 1 else 1
    first = 0 if k > 1 else s // 2
    taps = slice(first, first + (k - 1) * step_k + 1, step_k)
    w = weight.view(n_out, n_in, s, s)[:: n_out // conv.out_channels, :: n_in // conv.in_channels, taps, taps]
    return w.contiguous(), bias[:: n_out // conv.out_channels].contiguous()


class VGGDilated(nn.Module):
    """VGG-16 front end at output stride 8 (+ optional context module); the call contract of DeepLabV3.

    Eval mode returns logits (B, num_classes, H, W); train mode returns {"out": logits}, upsampled to the
    input size. ``backbone`` is torchvision's ``features``, so the module's backbone / head learning rates apply.

    Args:
        num_classes: output channels.
        batch_norm: torchvision's vgg16_bn layout (trains from scratch) instead of vgg16 (the paper's).
        fc6_kernel, fc6_dilation, fc6_channels: fc6 as a dilated convolution (LargeFOV: 3, 12, 1024; Yu &
            Koltun's front end: 7, 4, 4096).
        fc7_channels: fc7 as a 1x1 convolution (LargeFOV 1024, Yu & Koltun 4096).
        dropout: after fc6 and fc7 (0.5, as in VGG).
        context: append Yu & Koltun's context module to the class scores.
        context_dilations: its 3x3 layers' dilations.
        weights: torchvision VGG-16 weights (an enum in the torch hub cache or a local file); fc6/fc7 are
            decimated to the conv shapes (DeepLab Sec. 4.1) where the sizes allow. Never downloads.
    """

    def __init__(
        self,
        num_classes: int,
        batch_norm: bool = False,
        fc6_kernel: int = 3,
        fc6_dilation: int = 12,
        fc6_channels: int = 1024,
        fc7_channels: int = 1024,
        dropout: float = 0.5,
        context: bool = False,
        context_dilations: Sequence[int] = BASIC_DILATIONS,
        weights: str | None = None,
    ):
        super().__init__()
        self.batch_norm = batch_norm
        self.backbone = _dilated_features(batch_norm)
        pad = fc6_dilation * (fc6_kernel - 1) // 2
        self.fc6 = nn.Sequential(
            nn.Conv2d(512, fc6_channels, fc6_kernel, padding=pad, dilation=fc6_dilation), nn.ReLU(), nn.Dropout(dropout)
        )
        self.fc7 = nn.Sequential(nn.Conv2d(fc6_channels, fc7_channels, 1), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Conv2d(fc7_channels, num_classes, 1)
        self.context = ContextModule(num_classes, tuple(context_dilations)) if context else None
        if weights:
            load_vgg_weights(self, weights)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Logits at input resolution in eval mode; {"out": logits} in train mode."""
        size = x.shape[-2:]
        logits = self.classifier(self.fc7(self.fc6(self.backbone(x))))
        if self.context is not None:
            logits = self.context(logits)
        out = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return out if not self.training else {"out": out}


def load_vgg_weights(net: VGGDilated, weights: str) -> None:
    """Load torchvision VGG-16 weights: ``features`` strictly; fc6/fc7 converted to convs when the sizes allow."""
    arch = "vgg16_bn" if net.batch_norm else "vgg16"
    path = weights_file(weights, arch)
    state = read_state_dict(path)
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    check_state_dict(net.backbone, features, f"{path} ({arch} features)")
    net.backbone.load_state_dict(features, strict=True)
    fc6, fc7 = net.fc6[0], net.fc7[0]
    converted = [
        fc_to_conv(state[f"classifier.{i}.weight"], state[f"classifier.{i}.bias"], conv, side)
        if f"classifier.{i}.weight" in state else None
        for i, conv, side in ((0, fc6, 7), (3, fc7, 1))
    ]  # fmt: skip
    if any(c is None for c in converted):
        warnings.warn(f"{path}: fc6/fc7 do not decimate to this geometry; they keep their random init", stacklevel=2)
        return
    with torch.no_grad():
        for conv, (w, b) in zip((fc6, fc7), converted, strict=True):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
