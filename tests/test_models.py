"""Fast CPU tests for seg.models: shapes, strides/dilations, torchvision parity and weight loading."""

import os
import re
from collections.abc import Iterator

import pytest
import torch
import torchvision
from omegaconf import ListConfig
from torch import nn

from seg.models import ASPP, DeepLabV3, DilatedResNet

DEPTHS = (18, 34, 50, 101)
STRIDES = (8, 16, 32)
GRID = [(d, s) for d in DEPTHS for s in STRIDES]
LAYER4_BLOCKS = {18: 2, 34: 3, 50: 3, 101: 3}


def meta(factory, *args, **kwargs):
    """Build a module on the meta device: no memory, no init cost; enough for structure checks."""
    with torch.device("meta"):
        return factory(*args, **kwargs)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def convs3x3(block: nn.Module) -> list[nn.Conv2d]:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


@pytest.fixture(scope="module", params=GRID, ids=[f"resnet{d}-os{s}" for d, s in GRID])
def eval_model(request) -> Iterator[tuple[int, int, DeepLabV3]]:
    """One eval-mode DeepLabV3 per (depth, output stride), shared by the tests that only run forward."""
    depth, os_ = request.param
    torch.manual_seed(0)
    yield depth, os_, DeepLabV3(num_classes=5, backbone=f"resnet{depth}", output_stride=os_).eval()


# --------------------------------------------------------------------------------------------- shapes


def test_eval_logits_shape(eval_model):
    _, _, model = eval_model
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 5, 64, 64)


def test_feature_sizes_follow_output_stride(eval_model):
    depth, os_, model = eval_model
    h, w = 64, 96
    with torch.no_grad():
        feats = model.backbone(torch.randn(1, 3, h, w))
    aux_stride = 8 if os_ == 8 else 16
    assert feats["out"].shape == (1, model.backbone.channels["out"], h // os_, w // os_)
    assert feats["aux"].shape == (1, model.backbone.channels["aux"], h // aux_stride, w // aux_stride)
    assert feats["low"].shape == (1, model.backbone.channels["low"], h // 4, w // 4)
    expansion = 4 if depth >= 50 else 1
    assert model.backbone.channels == {"low": 64 * expansion, "aux": 256 * expansion, "out": 512 * expansion}


@pytest.mark.parametrize("aux", [True, False])
def test_train_mode_returns_dict(aux):
    torch.manual_seed(0)
    model = DeepLabV3(num_classes=4, backbone="resnet18", output_stride=16, aux=aux).train()
    out = model(torch.randn(2, 3, 64, 48))
    assert set(out) == ({"out", "aux"} if aux else {"out"})
    for value in out.values():
        assert value.shape == (2, 4, 64, 48)
    assert (model.aux_classifier is None) != aux


def test_aspp_batch_of_one_fails_in_train_mode():
    """Documented trap shared with torchvision: BatchNorm on the 1x1 image-pooling map needs batch > 1."""
    aspp = ASPP(8, (1, 2), out_channels=4).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        aspp(torch.randn(1, 8, 5, 5))
    assert aspp(torch.randn(2, 8, 5, 5)).shape == (2, 4, 5, 5)


# ----------------------------------------------------------------------------- strides and dilations


def expected_layout(depth: int, output_stride: int) -> dict[str, list[tuple[int, int]]]:
    """Per stage, (stride, dilation) of each block, from the rule: dilated stages trade stride 2 for
    dilation, and the first block of a dilated stage keeps the previous dilation (torchvision)."""
    dilate = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[output_stride]
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    layout, dilation = {"layer1": [(1, 1)] * blocks[0]}, 1
    for i, flag in enumerate(dilate, start=2):
        previous = dilation
        stride = 2
        if flag:
            dilation, stride = dilation * 2, 1
        layout[f"layer{i}"] = [(stride, previous)] + [(1, dilation)] * (blocks[i - 1] - 1)
    return layout


@pytest.mark.parametrize(("depth", "output_stride"), GRID)
def test_conv_strides_dilations_padding(depth, output_stride):
    net = meta(DilatedResNet, depth, output_stride)
    for stage_name, layout in expected_layout(depth, output_stride).items():
        stage = getattr(net, stage_name)
        assert len(stage) == len(layout)
        for b, (block, (stride, dilation)) in enumerate(zip(stage, layout, strict=True)):
            where = f"resnet{depth} OS{output_stride} {stage_name}[{b}]"
            convs = convs3x3(block)
            assert len(convs) == (1 if depth >= 50 else 2), where
            # The stride sits on the first 3x3 conv (Bottleneck has only conv2; BasicBlock's conv1).
            strides = [stride] + [1] * (len(convs) - 1)
            for conv, s in zip(convs, strides, strict=True):
                assert conv.stride == (s, s), where
                assert conv.dilation == (dilation, dilation), where
                assert conv.padding == (dilation, dilation), where
            if block.downsample is not None:
                assert block.downsample[0].stride == (stride, stride), where
            else:
                assert b > 0 or (stage_name == "layer1" and depth < 50), where


@pytest.mark.parametrize(
    ("depth", "output_stride", "grid", "rates"),
    [
        (50, 16, (1, 2, 4), (2, 4, 8)),
        (50, 8, (1, 2, 4), (4, 8, 16)),
        (101, 32, (1, 2, 4), (1, 2, 4)),
        (34, 16, (1, 2, 4), (2, 4, 8)),
        (18, 8, (1, 2), (4, 8)),
    ],
)
def test_multi_grid_rates(depth, output_stride, grid, rates):
    net = meta(DilatedResNet, depth, output_stride, multi_grid=grid)
    for block, rate in zip(net.layer4, rates, strict=True):
        for conv in convs3x3(block):
            assert conv.dilation == (rate, rate)
            assert conv.padding == (rate, rate)
    # layer3 is untouched by multi-grid.
    plain = meta(DilatedResNet, depth, output_stride)
    assert [c.dilation for c in convs3x3(net.layer3)] == [c.dilation for c in convs3x3(plain.layer3)]


@pytest.mark.parametrize("depth", DEPTHS)
def test_multi_grid_wrong_length(depth):
    grid = [1, 2] if LAYER4_BLOCKS[depth] == 3 else [1, 2, 4]
    with pytest.raises(ValueError, match=rf"resnet{depth}.*{LAYER4_BLOCKS[depth]}.*\[1, 2"):
        meta(DilatedResNet, depth, 16, multi_grid=grid)


def test_deeplab_accepts_listconfig():
    grid, rates = ListConfig([1, 2, 4]), ListConfig([6, 12])
    model = meta(DeepLabV3, 3, "resnet50", output_stride=16, multi_grid=grid, aspp_rates=rates)
    assert [convs3x3(b)[0].dilation[0] for b in model.backbone.layer4] == [2, 4, 8]
    assert [m[0].dilation[0] for m in model.classifier[0].convs[1:-1]] == [6, 12]


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match="12"):
        meta(DeepLabV3, 3, "resnet18", output_stride=12)
    with pytest.raises(ValueError, match="resnet19"):
        meta(DeepLabV3, 3, "resnet19")
    with pytest.raises(ValueError, match="77"):
        meta(DilatedResNet, 77)


# ------------------------------------------------------------------------------- torchvision parity


@pytest.mark.parametrize(
    ("depth", "aux", "expected"),
    [(50, True, 42_004_074), (101, True, 60_996_202), (50, False, 39_638_869), (101, False, 58_630_997)],
)
def test_parameter_count_matches_torchvision(depth, aux, expected):
    builder = getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")
    tv = meta(builder, weights=None, weights_backbone=None, num_classes=21, aux_loss=aux)
    ours = meta(DeepLabV3, 21, f"resnet{depth}", output_stride=8, aspp_rates=(12, 24, 36), aux=aux)
    assert n_params(ours) == n_params(tv) == expected


def test_torchvision_state_dict_loads_and_logits_match():
    torch.manual_seed(0)
    tv = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    ).eval()
    # Non-trivial BN statistics so that a mis-mapped BN layer would show in the logits.
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    ours = DeepLabV3(21, "resnet50", output_stride=8, aux=True).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        expected = tv(x)["out"]
        got = ours(x)
    assert got.shape == expected.shape == (1, 21, 65, 65)
    assert torch.allclose(got, expected, atol=1e-5)


# ----------------------------------------------------------------------------------- weight loading


@pytest.fixture
def resnet18_file(tmp_path) -> tuple[str, dict[str, torch.Tensor]]:
    """A torchvision resnet18 state_dict (random init, fc included) saved to a local file."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18_random.pth"
    torch.save(state, path)
    return str(path), state


def test_local_file_loads(resnet18_file):
    path, state = resnet18_file
    net = DilatedResNet(18, 8)
    net.load_pretrained(path)
    assert torch.equal(net.conv1.weight, state["conv1.weight"])
    assert torch.equal(net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_wrapped_state_dict_via_deeplab_kwarg(resnet18_file, tmp_path, key):
    path, state = resnet18_file
    wrapped = tmp_path / "wrapped.pt"
    torch.save({key: state, "epoch": torch.tensor(3)}, wrapped)
    model = DeepLabV3(3, "resnet18", output_stride=16, weights=str(wrapped))
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def test_missing_local_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        meta(DilatedResNet, 18, 8).load_pretrained(str(missing))


def test_mismatched_file_names_file_and_keys(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(ValueError, match=r"resnet18_random\.pth.*missing keys.*conv3"):
        meta(DilatedResNet, 50, 8).load_pretrained(path)


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _NotATensor()}, path)
    with pytest.raises(ValueError, match=r"evil\.pth.*weights_only"):
        meta(DilatedResNet, 18, 8).load_pretrained(str(path))


@pytest.mark.parametrize("name", ["ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1", "DEFAULT", "imagenet"])
def test_enum_uses_hub_cache_only(name, resnet18_file, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    expected = os.path.join(str(hub), "checkpoints", os.path.basename(url))
    net = DilatedResNet(18, 16)
    with pytest.raises(FileNotFoundError, match="checkpoints") as info:
        net.load_pretrained(name)
    message = str(info.value)
    assert expected in message and url in message and "model.net.weights=" in message

    path, state = resnet18_file
    os.makedirs(os.path.dirname(expected))
    os.replace(path, expected)
    net.load_pretrained(name)
    assert torch.equal(net.conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize("name", ["IMAGENET9K_V7", "ResNet50_Weights.IMAGENET1K_V1", "Bogus_Weights.DEFAULT"])
def test_unknown_or_foreign_enum(name, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError, match=name.split(".")[0]):
        meta(DilatedResNet, 18, 8).load_pretrained(name)


def test_importing_the_models_does_not_import_the_data_stack():
    """A model import costs a model import: OpenCV, albumentations and torchdata come with seg.data only."""
    import subprocess
    import sys

    heavy = "('cv2', 'albumentations', 'torchdata')"
    code = f"import sys, seg.models; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
