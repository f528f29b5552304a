"""Dilated ResNet backbones: torchvision ResNets whose last stages trade stride for dilation.

``model.net.backbone=resnet18|resnet34|resnet50|resnet101``; ImageNet weights are torchvision's (an enum name found
in the torch hub cache, ``imagenet`` for IMAGENET1K_V1, or a local file).
"""

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models import resnet

from seg.models.support.weights import check_state_dict, read_state_dict, torchvision_weights_file
from seg.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

DEPTHS = (18, 34, 50, 101)
NAMES = tuple(f"resnet{d}" for d in DEPTHS)
OUTPUT_STRIDES = (8, 16, 32)

# Which of (layer2, layer3, layer4) replace their stride-2 with dilation, per output stride.
_DILATE = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}


def _convs3x3(block: nn.Module) -> list[nn.Conv2d]:
    """The 3x3 convs of a residual block (both for BasicBlock, conv2 for Bottleneck)."""
    return [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Give a 3x3 conv `dilation` with matching padding, so it keeps the spatial size."""
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def _dilate_stage(stage: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Turn a stride-2 stage into a stride-1 dilated one in place, as torchvision does for Bottleneck."""
    first = stage[0]
    for conv in _convs3x3(first):
        conv.stride = (1, 1)
        _set_dilation(conv, previous_dilation)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    for block in stage[1:]:
        for conv in _convs3x3(block):
            _set_dilation(conv, dilation)


class DilatedResNet(nn.Module):
    """ResNet feature extractor with output stride 8, 16 or 32 and optional multi-grid in layer4.

    Submodule names match torchvision's ResNet (minus avgpool/fc) so its state_dicts load by key. Returns the
    feature dict {"low": layer1, "aux": layer3, "out": layer4}; ``channels`` gives their widths and ``mean`` /
    ``std`` the input normalisation of its ImageNet weights.

    Args:
        depth: 18, 34, 50 or 101.
        output_stride: 8, 16 or 32 (32: no dilation).
        multi_grid: unit rates of layer4's blocks, multiplied by its dilation (DeepLabv3 Sec. 3.2); None: all 1.
    """

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, depth: int = 50, output_stride: int = 8, multi_grid: Sequence[int] | None = None):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {DEPTHS}, got {depth!r}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        dilate = _DILATE[output_stride]
        builder = getattr(resnet, f"resnet{depth}")
        if depth >= 50:
            net = builder(weights=None, replace_stride_with_dilation=list(dilate))
        else:
            # torchvision's BasicBlock refuses dilation > 1, so build it plain and re-stride in place.
            net = builder(weights=None)
            dilation = 1
            for stage, flag in zip((net.layer2, net.layer3, net.layer4), dilate, strict=True):
                if flag:
                    _dilate_stage(stage, dilation, dilation * 2)
                    dilation *= 2

        if multi_grid is not None:
            multi_grid = tuple(int(g) for g in multi_grid)
            if len(multi_grid) != len(net.layer4):
                raise ValueError(
                    f"multi_grid for resnet{depth} needs {len(net.layer4)} entries (one per layer4 block), "
                    f"got {list(multi_grid)}"
                )
            base = 32 // output_stride  # layer4's rate: 1, 2 or 4
            # DeepLabv3 Sec. 3.2: unit rates are multiplied by the stage's rate, first block included.
            for block, unit in zip(net.layer4, multi_grid, strict=True):
                for conv in _convs3x3(block):
                    _set_dilation(conv, base * unit)

        self.depth = depth
        self.output_stride = output_stride
        self.multi_grid = multi_grid
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth >= 50 else 1
        self.channels = {"low": 64 * expansion, "aux": 256 * expansion, "out": 512 * expansion}

    def load_pretrained(self, weights: str) -> None:
        """Load a torchvision ResNet enum's cached file (``imagenet`` = ``IMAGENET1K_V1``) or a local state_dict,
        strictly; the ImageNet classifier ``fc`` is dropped. A missing enum file is fetched into the cache."""
        path = torchvision_weights_file(weights, f"resnet{self.depth}")
        state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
        check_state_dict(self, state, path)
        self.load_state_dict(state, strict=True)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Return layer1 ("low"), layer3 ("aux") and layer4 ("out") features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        aux = self.layer3(self.layer2(low))
        return {"low": low, "aux": aux, "out": self.layer4(aux)}
