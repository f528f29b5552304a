"""torchvision's segmentation state_dicts recognised by their keys: seg's DeepLabV3 and FCN keep torchvision's
submodule names, so a ``deeplabv3_resnet*`` / ``fcn_resnet*`` file maps one to one onto the seg model built here."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from seg.models.deeplabv3 import DeepLabV3
from seg.models.fcn import FCN

__all__ = ["torchvision_architecture"]

_TORCHVISION_ASPP_RATES = (12, 24, 36)  # torchvision's DeepLabHead; its dilated ResNets have output stride 8


def torchvision_architecture(state: Mapping[str, Tensor]) -> tuple[type[nn.Module], dict] | None:
    """(seg class, keyword arguments) matching a torchvision deeplabv3_resnet* or fcn_resnet* state_dict (seg's
    DeepLabV3 and FCN keep torchvision's submodule names); None for other layouts."""
    if "backbone.layer3.0.conv1.weight" not in state or "classifier.4.weight" not in state:
        return None
    blocks = len({k.split(".")[2] for k in state if k.startswith("backbone.layer3.")})
    bottleneck = "backbone.layer1.0.conv3.weight" in state
    depth = {(True, 6): 50, (True, 23): 101, (False, 2): 18, (False, 6): 34}.get((bottleneck, blocks))
    if depth is None:
        return None
    common = {
        "num_classes": int(state["classifier.4.weight"].shape[0]),
        "backbone": f"resnet{depth}",
        "output_stride": 8,
        "aux": "aux_classifier.4.weight" in state,
        "weights": None,
    }
    if "classifier.0.convs.0.0.weight" not in state:
        return (FCN, common) if "classifier.0.weight" in state else None
    rates = len({k.split(".")[3] for k in state if k.startswith("classifier.0.convs.")}) - 2
    if rates != len(_TORCHVISION_ASPP_RATES):
        return None
    return DeepLabV3, {**common, "aspp_rates": _TORCHVISION_ASPP_RATES}
