"""DeepLab-LargeFOV (Chen et al. 2015, arXiv:1412.7062) / Yu & Koltun 2016's front end: VGG-16 at output stride 8
(``seg.models.backbones.vgg``) with fc6 as a dilated convolution and fc7 as a 1x1 convolution. LargeFOV: fc6 3x3,
dilation 12, 1024 channels; Yu & Koltun's front end: fc6 7x7, dilation 4, 4096 channels (optionally followed by
the context module). ASPP, DeepLabV3+ and the other heads run on the same backbone: ``backbone: vgg16``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from seg.models.context_net import BASIC_DILATIONS, ContextModule
from seg.models.segmenter import Segmenter


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
        n_in * s * s == n_flat
        and n_in % conv.in_channels == 0
        and n_out % conv.out_channels == 0
        and k <= s
        and (k == 1 or (s - 1) % (k - 1) == 0)
    )
    if not ok:
        return None
    step_k = (s - 1) // (k - 1) if k > 1 else 1
    first = 0 if k > 1 else s // 2
    taps = slice(first, first + (k - 1) * step_k + 1, step_k)
    w = weight.view(n_out, n_in, s, s)[:: n_out // conv.out_channels, :: n_in // conv.in_channels, taps, taps]
    return w.contiguous(), bias[:: n_out // conv.out_channels].contiguous()


class VGGDilated(Segmenter):
    """VGG-16 front end at output stride 8 (+ optional context module); the call contract of DeepLabV3.

    Eval mode returns logits (B, num_classes, H, W); train mode returns {"out": logits} (+ "aux" when ``aux``),
    upsampled to the input size. ``backbone`` is torchvision's ``features``, so the module's backbone / head
    learning rates apply.

    Args:
        num_classes: output channels.
        batch_norm: torchvision's vgg16_bn layout (trains from scratch) instead of vgg16 (the paper's).
        fc6_kernel, fc6_dilation, fc6_channels: fc6 as a dilated convolution (LargeFOV: 3, 12, 1024; Yu &
            Koltun's front end: 7, 4, 4096).
        fc7_channels: fc7 as a 1x1 convolution (LargeFOV 1024, Yu & Koltun 4096).
        dropout: after fc6 and fc7 (0.5, as in VGG).
        context: append Yu & Koltun's context module to the class scores.
        context_dilations: its 3x3 layers' dilations.
        aux: an FCN auxiliary head on conv4_3 (the papers have none).
        weights: torchvision VGG-16 weights (``imagenet``, an enum in the torch hub cache or a local file);
            fc6/fc7 are decimated to the conv shapes (DeepLab Sec. 4.1) where the sizes allow. A missing enum
            file is fetched into the cache.
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
        aux: bool = False,
        weights: str | None = None,
    ):
        super().__init__(num_classes, "vgg16_bn" if batch_norm else "vgg16", output_stride=8, aux=aux)
        self.batch_norm = batch_norm
        pad = fc6_dilation * (fc6_kernel - 1) // 2
        self.fc6 = nn.Sequential(
            nn.Conv2d(512, fc6_channels, fc6_kernel, padding=pad, dilation=fc6_dilation), nn.ReLU(), nn.Dropout(dropout)
        )
        self.fc7 = nn.Sequential(nn.Conv2d(fc6_channels, fc7_channels, 1), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Conv2d(fc7_channels, num_classes, 1)
        self.context = ContextModule(num_classes, tuple(context_dilations)) if context else None
        if weights:
            load_fc_weights(self, *self.backbone.load_pretrained(weights))

    def logits(self, features: dict[str, Tensor]) -> Tensor:
        logits = self.classifier(self.fc7(self.fc6(features["out"])))
        return self.context(logits) if self.context is not None else logits


def load_fc_weights(net: VGGDilated, path: str, state: Mapping[str, Tensor]) -> None:
    """fc6/fc7 of torchvision VGG-16 weights (``state``, read from ``path``) converted to ``net``'s convolutions
    when the sizes allow (the backbone's ``features`` are loaded, strictly, by the backbone itself)."""
    fc6, fc7 = net.fc6[0], net.fc7[0]
    converted = [
        fc_to_conv(state[f"classifier.{i}.weight"], state[f"classifier.{i}.bias"], conv, side)
        if f"classifier.{i}.weight" in state
        else None
        for i, conv, side in ((0, fc6, 7), (3, fc7, 1))
    ]
    if any(c is None for c in converted):
        warnings.warn(f"{path}: fc6/fc7 do not decimate to this geometry; they keep their random init", stacklevel=2)
        return
    with torch.no_grad():
        for conv, (w, b) in zip((fc6, fc7), converted, strict=True):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
