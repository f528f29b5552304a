"""The contract every segmenter and every backbone keeps, checked on all of them: a new one is covered by adding
its name to SEGMENTERS or BACKBONES (docs/extending.md).

For each (segmenter, backbone): logits of the input's size and dtype at odd sizes in eval mode, the train dict
with and without the auxiliary head, the same logits in channels_last, a backward pass that reaches every
parameter, and a state_dict round trip. For each backbone: the features at stride 4 ("low") and at the output
stride ("out") for 8, 16 and 32. ONNX export parity for every segmenter (on ResNet-18) and every backbone (under
DeepLabV3).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seg.models import FCN, ContextNet, DeepLabV3, DeepLabV3Plus, VGGDilated, build_backbone
from seg.models.backbones.protocol import FEATURES, Backbone

NUM_CLASSES = 3
BACKBONES = ["resnet18", "vgg16", "tf_efficientnet_lite0"]
RATES = [2, 4, 6]  # small: the feature maps of these inputs are a few pixels wide
SEGMENTERS = {
    "deeplabv3": lambda backbone, aux: DeepLabV3(NUM_CLASSES, backbone, output_stride=16, aspp_rates=RATES, aux=aux),
    "deeplabv3plus": lambda backbone, aux: DeepLabV3Plus(NUM_CLASSES, backbone, aspp_rates=RATES, aux=aux),
    "deeplabv3plus_separable": lambda backbone, aux: DeepLabV3Plus(
        NUM_CLASSES, backbone, aspp_rates=RATES, aux=aux, separable=True
    ),
    "fcn": lambda backbone, aux: FCN(NUM_CLASSES, backbone, output_stride=16, aux=aux),
    "context": lambda backbone, aux: ContextNet(NUM_CLASSES, backbone, output_stride=8, aux=aux),
}
CASES = [(s, b) for s in SEGMENTERS for b in BACKBONES] + [("vgg_largefov", "vgg16")]
ODD_SIZES = [(65, 97), (50, 33)]


def build(segmenter: str, backbone: str, aux: bool = True) -> nn.Module:
    torch.manual_seed(0)
    if segmenter == "vgg_largefov":  # its own VGG-16 front end at output stride 8
        return VGGDilated(NUM_CLASSES, aux=aux)
    return SEGMENTERS[segmenter](backbone, aux)


def batch(h: int, w: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("segmenter", "backbone"), CASES)
def test_segmenter_contract(segmenter, backbone, tmp_path):
    net = build(segmenter, backbone).eval()
    with torch.no_grad():
        for h, w in ODD_SIZES:
            logits = net(batch(h, w))
            assert logits.shape == (2, NUM_CLASSES, h, w) and logits.dtype == torch.float32
            assert torch.isfinite(logits).all()

        # channels_last: the same numbers in the other memory format
        x = batch(*ODD_SIZES[0])
        reference = net(x)
        cl = build(segmenter, backbone).eval().to(memory_format=torch.channels_last)
        cl.load_state_dict(net.state_dict())
        assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), reference, atol=1e-4, rtol=1e-4)

        # state_dict round trip: a fresh instance holding the saved tensors computes the same logits
        torch.save(net.state_dict(), tmp_path / "net.pt")
        fresh = build(segmenter, backbone).eval()
        torch.manual_seed(123)
        for p in fresh.parameters():
            p.data.normal_()  # nothing left of the original init
        fresh.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
        assert torch.equal(fresh(x), reference)

    # train mode: {"out", "aux", ...} at the input size; every parameter receives a gradient
    net.train()
    outputs = net(batch(*ODD_SIZES[0]))
    assert isinstance(outputs, dict) and {"out", "aux"} <= outputs.keys()
    assert all(v.shape == (2, NUM_CLASSES, *ODD_SIZES[0]) for v in outputs.values())
    sum(v.square().mean() for v in outputs.values()).backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == [], missing

    no_aux = build(segmenter, backbone, aux=False).train()
    assert "aux" not in no_aux(batch(*ODD_SIZES[1]))
    assert not any("aux" in name for name, _ in no_aux.named_parameters())


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_backbone_feature_strides(backbone, output_stride):
    """Every family keeps the :class:`Backbone` contract: its attributes, and features of the promised strides and
    channels."""
    net = build_backbone(backbone, output_stride=output_stride).eval()
    assert isinstance(net, Backbone)
    assert len(net.mean) == len(net.std) == 3
    with torch.no_grad():
        features = net(batch(64, 96, n=1))
    assert features.keys() == net.channels.keys() == set(FEATURES)
    for key, f in features.items():
        assert f.shape[1] == net.channels[key], (key, f.shape)
    assert features["low"].shape[-2:] == (16, 24)
    assert features["out"].shape[-2:] == (64 // output_stride, 96 // output_stride)


# lite0's TF "same" padding takes torch.export ~2 minutes to trace with dynamic sizes: that case is slow, and the
# fast suite exports timm encoders with test_export's mobilenetv3_small_100 (test_export has lite0 as slow, too)
ONNX_CASES = [(s, "resnet18") for s in SEGMENTERS] + [("deeplabv3", "vgg16"), ("vgg_largefov", "vgg16")]
ONNX_CASES += [pytest.param("deeplabv3", "tf_efficientnet_lite0", marks=pytest.mark.slow)]


@pytest.mark.parametrize(("segmenter", "backbone"), ONNX_CASES)
def test_onnx_export_parity(segmenter, backbone, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (pip install 'seg[export]')")
    from seg.export import export_onnx, max_abs_diffs, onnx_runner

    net = build(segmenter, backbone).eval()
    path = export_onnx(net, tmp_path / "model.onnx")
    diffs = max_abs_diffs(net, onnx_runner(path), [(1, 3, 65, 97), (2, 3, 48, 64)])
    assert max(diffs) < 1e-3, diffs
