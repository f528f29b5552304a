"""seg.runs.checkpoint and seg.runs.loaded: torchvision state_dicts load into seg's models with identical logits;
loading is safe and strict."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn
from torchvision.models import segmentation

from seg.models import FCN, DeepLabV3
from seg.models.support.torchvision_layout import torchvision_architecture
from seg.models.support.weights import CheckpointError, read_state_dict
from seg.runs.init_from import load_net_weights
from seg.runs.loaded import load_model
from seg.utils.cli import exit_on_error


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-default BatchNorm statistics and affine terms: a mapping error in any of them changes the logits."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=generator) * 0.2 - 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def tv_deeplab() -> nn.Module:
    torch.manual_seed(0)
    model = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    return _randomise_bn(model)


def test_torchvision_deeplabv3_state_dict_gives_identical_logits(tv_deeplab, tmp_path):
    path = tmp_path / "deeplabv3_resnet50.pth"
    torch.save(tv_deeplab.state_dict(), path)
    loaded = load_model(path)
    assert loaded.run_cfg is None and loaded.num_classes == 21
    assert loaded.net.backbone.depth == 50 and loaded.net.backbone.output_stride == 8
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = tv_deeplab(x)["out"]
        got = loaded.net(x)
    assert got.shape == (2, 21, 64, 48)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_torchvision_reference_checkpoint_with_args_and_ddp_prefix_loads(tv_deeplab, tmp_path):
    """torchvision's references/segmentation/train.py saves {"model", "optimizer", "args": Namespace, ...}."""
    state = {f"module.{k}": v for k, v in tv_deeplab.state_dict().items()}
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": state, "args": argparse.Namespace(lr=0.02, model="deeplabv3_resnet50"), "epoch": 3}, path)
    loaded = read_state_dict(path)
    assert set(loaded) == set(tv_deeplab.state_dict())
    assert torch.equal(loaded["classifier.4.weight"], tv_deeplab.classifier[4].weight)


def test_torchvision_resnet101_layout_is_recognised():
    model = segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=19, aux_loss=False)
    arch = torchvision_architecture(model.state_dict())
    assert arch == (
        DeepLabV3,
        {
            "num_classes": 19,
            "backbone": "resnet101",
            "output_stride": 8,
            "aspp_rates": (12, 24, 36),
            "aux": False,
            "weights": None,
        },
    )


def test_torchvision_fcn_state_dict_loads_into_seg_fcn(tmp_path):
    torch.manual_seed(0)
    tv = _randomise_bn(segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=4, aux_loss=True))
    path = tmp_path / "fcn_resnet50.pth"
    torch.save(tv.state_dict(), path)
    loaded = load_model(path)
    assert type(loaded.net) is FCN and loaded.num_classes == 4 and loaded.net.aux_classifier is not None
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x), tv.eval()(x)["out"], atol=1e-5, rtol=1e-5)


def test_class_count_mismatch_is_an_error_unless_the_classifier_is_reinitialised(tv_deeplab):
    state = tv_deeplab.state_dict()
    net = DeepLabV3(num_classes=5, backbone="resnet50", output_stride=8, aux=True)
    fresh = net.classifier[4].weight.detach().clone()
    with pytest.raises(CheckpointError, match="trained for 21 classes but the model is built for 5"):
        load_net_weights(net, state, "tv.pth")
    load_net_weights(net, state, "tv.pth", reinit_classifier=True)
    assert torch.equal(net.backbone.layer4[2].conv3.weight, state["backbone.layer4.2.conv3.weight"])
    assert torch.equal(net.classifier[0].project[0].weight, state["classifier.0.project.0.weight"])
    assert torch.equal(net.classifier[4].weight, fresh) and net.aux_classifier[4].weight.shape[0] == 5


def test_other_architectures_are_refused_naming_the_keys(tv_deeplab):
    net = DeepLabV3(num_classes=21, backbone="resnet18", output_stride=8)
    with pytest.raises(CheckpointError, match=r"tv.pth does not fit the model .*unexpected keys"):
        load_net_weights(net, tv_deeplab.state_dict(), "tv.pth")


class _Payload:
    """A pickled object: weights_only loading must refuse it."""


def test_unsafe_corrupt_and_missing_files_are_clear_errors(tmp_path):
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": _Payload()}, unsafe)
    with pytest.raises(CheckpointError, match=r"refused by torch.load\(weights_only=True\).*_Payload"):
        read_state_dict(unsafe)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(unsafe.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated.ckpt: not a readable PyTorch checkpoint"):
        read_state_dict(truncated)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="junk.ckpt: not a"):
        read_state_dict(junk)
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.ckpt"):
        read_state_dict(tmp_path / "missing.ckpt")
    no_tensors = tmp_path / "dict.ckpt"
    torch.save({"epoch": 3}, no_tensors)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        read_state_dict(no_tensors)


def test_entry_points_print_one_line_and_exit_1(capsys, monkeypatch):
    @exit_on_error
    def entry() -> None:
        read_state_dict("/nonexistent/last.ckpt")

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: checkpoint not found: /nonexistent/last.ckpt\n"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(FileNotFoundError):
        entry()
