"""AtrousConv2d: nn.Conv2d's parameters and numbers, with the explicitly padded bf16 forward on CPUs."""

from __future__ import annotations

import pytest
import torch

from seg.models import DeepLabV3
from seg.models.atrous import MIN_DILATION, AtrousConv2d


def _pair(rate: int, bias: bool) -> tuple[torch.nn.Conv2d, AtrousConv2d]:
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(16, 8, 3, padding=rate, dilation=rate, bias=bias)
    new = AtrousConv2d(16, 8, 3, padding=rate, dilation=rate, bias=bias)
    new.load_state_dict(ref.state_dict())  # same keys, same shapes
    return ref, new


def _run(conv, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_()
    conv.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = [x.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else [])
    return (out, *grads)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_bf16_padded_forward_gives_identical_outputs_and_gradients(channels_last, bias):
    ref, new = _pair(12, bias)
    x = torch.randn(2, 16, 20, 17, generator=torch.Generator().manual_seed(1))
    if channels_last:
        ref, new = ref.to(memory_format=torch.channels_last), new.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert new._padded_path(x)  # the rate is large enough and autocast is bf16 on the CPU
    expected, got = _run(ref, x), _run(new, x)
    assert got[0].dtype == expected[0].dtype == torch.bfloat16
    for e, g in zip(expected, got, strict=True):
        assert torch.equal(e, g)


def test_standard_path_outside_bf16_and_at_small_rates():
    _, new = _pair(12, False)
    x = torch.randn(1, 16, 9, 9)
    assert not new._padded_path(x)  # fp32: oneDNN's own kernel is the fast one there
    _, small = _pair(MIN_DILATION - 1, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not small._padded_path(x)


def test_deeplab_aspp_uses_it_and_keeps_torchvision_keys():
    net = DeepLabV3(num_classes=3, backbone="resnet18", output_stride=16, aspp_rates=(6, 12, 18), aux=False)
    atrous = [m for m in net.classifier.modules() if isinstance(m, AtrousConv2d)]
    assert [m.dilation[0] for m in atrous] == [6, 12, 18]
    assert "classifier.0.convs.1.0.weight" in net.state_dict()
