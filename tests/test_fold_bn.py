"""seg.models.support.fold_bn: BatchNorm folded into the convolution before it gives the same logits with fewer
operators, on every backbone family; a BatchNorm that does not follow a convolution is left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seg.models import DeepLabV3, DeepLabV3Plus
from seg.models.support.fold_bn import fold_batchnorm


def with_statistics(net: nn.Module) -> nn.Module:
    """Running statistics and affine parameters away from their initial 0 / 1, so folding has something to fold."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return net.eval()


def batchnorms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepLabV3(num_classes=5, backbone="resnet18", output_stride=16, aux=False),
        lambda: DeepLabV3Plus(num_classes=5, backbone="vgg16_bn", output_stride=16, aux=False),
        lambda: DeepLabV3(num_classes=5, backbone="tf_efficientnet_lite0", output_stride=16, aux=False),
    ],
    ids=["resnet18", "vgg16_bn", "tf_efficientnet_lite0"],
)
def test_folded_net_gives_the_same_logits_with_fewer_batchnorms(make):
    torch.manual_seed(0)
    net = with_statistics(make())
    x = torch.randn(2, 3, 67, 91, generator=torch.Generator().manual_seed(1))  # odd sizes, another batch size
    folded, count = fold_batchnorm(net, torch.randn(1, 3, 64, 64))
    before, after = batchnorms(net), batchnorms(folded)
    # ASPP's image-pooling BatchNorm follows a 1x1 convolution too; everything that follows a conv is folded
    assert count == before - after and count >= 0.9 * before, (count, before, after)
    with torch.no_grad():
        expected, got = net(x), folded(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), float((got - expected).abs().max())
    assert batchnorms(net) == before  # the original is untouched


def test_timm_batchnorm_keeps_its_activation():
    from timm.layers import BatchNormAct2d

    net = with_statistics(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), BatchNormAct2d(4, act_layer=nn.ReLU6))
    )
    folded, count = fold_batchnorm(net, torch.randn(1, 3, 8, 8))
    assert count == 1 and isinstance(folded[1], nn.Sequential) and isinstance(folded[1][1], nn.ReLU6)
    x = torch.randn(1, 3, 8, 8) * 10
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5) and float(folded(x).max()) <= 6.0


class PreActivation(nn.Module):
    """A BatchNorm on the sum of two convolutions, and one on the input: neither follows a single convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in, self.a, self.b, self.bn_sum = (
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 4, 1),
            nn.Conv2d(3, 4, 1),
            nn.BatchNorm2d(4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_in(x)
        return self.bn_sum(self.a(x) + self.b(x))


def test_batchnorm_after_anything_but_one_convolution_is_left_alone():
    net = with_statistics(PreActivation())
    folded, count = fold_batchnorm(net, torch.randn(1, 3, 8, 8))
    assert count == 0 and batchnorms(folded) == 2


class SharedOutput(nn.Module):
    """A convolution whose output feeds a BatchNorm and, functionally, a skip connection that hooks cannot see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_fold_that_would_change_the_output_is_refused():
    with pytest.raises(ValueError, match="changed the output by"):
        fold_batchnorm(with_statistics(SharedOutput()), torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(SharedOutput().train(), torch.randn(1, 3, 8, 8))
