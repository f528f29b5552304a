"""The backbone contract: what every backbone family gives the segmenters (``seg.models.segmenter.Segmenter``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

FEATURES = ("low", "aux", "out")  # stride 4; the second-to-last stage; the last stage (at the output stride)


@runtime_checkable
class Backbone(Protocol):
    """A feature extractor at an output stride, as :func:`seg.models.backbones.build_backbone` returns it.

    Attributes:
        channels: channels of each feature, ``{"low": ..., "aux": ..., "out": ...}``.
        mean: per-channel mean of (0-1 scaled) inputs that its weights expect; ``std`` likewise.
        std: per-channel standard deviation of the inputs.
    """

    channels: dict[str, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        """``{"low", "aux", "out"}`` features of a normalised batch ``(B, C, H, W)``: "low" at stride 4, "out" at
        the output stride, "aux" from the stage before it (a ResNet's layer1, layer3, layer4)."""
        ...

    def load_pretrained(self, weights: str) -> None:
        """Load ImageNet weights strictly (every tensor used, none missing) from a local file or a name the family
        knows (``imagenet``, a torchvision enum, an installed weights package)."""
        ...
