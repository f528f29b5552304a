"""Models for images of another band count (issue 39, section 1): the first convolution rebuilt for
``model.net.in_channels`` bands with its pretrained RGB kernels adapted as timm and smp adapt them (repeated and
scaled by 3/C; one band: summed), per-band normalisation from config, and data=folder training on 4-band images
read whole (``data.extra_bands=keep``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image

from seg.data.io import read_image
from seg.models.backbones import build_backbone
from seg.models.deeplabv3 import DeepLabV3
from seg.predict import predict
from seg.train import train
from tests.helpers import compose_cfg
from tests.test_predict import predict_cfg

MEAN4, STD4 = [0.485, 0.456, 0.406, 0.5], [0.229, 0.224, 0.225, 0.25]


@pytest.fixture
def rgb_weights(tmp_path):
    """A ResNet-18 "ImageNet" state_dict file (random, seeded) and its conv1 kernels."""
    torch.manual_seed(3)
    state = build_backbone("resnet18", output_stride=32).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    return path, state["conv1.weight"]


def test_four_bands_repeat_the_rgb_kernels_scaled_by_three_quarters(rgb_weights):
    path, rgb = rgb_weights
    options = {"weights": str(path), "in_channels": 4, "input_mean": MEAN4, "input_std": STD4}
    backbone = build_backbone("resnet18", output_stride=16, **options)
    w = backbone.conv1.weight
    assert w.shape == (64, 4, 7, 7)
    assert torch.allclose(w[:, :3], rgb * 0.75) and torch.allclose(w[:, 3], rgb[:, 0] * 0.75)  # band 4: R's again
    assert backbone.mean == tuple(MEAN4) and backbone.std == tuple(STD4)
    assert backbone.layer1[0].conv1.weight.shape == (64, 64, 3, 3)  # nothing else changed
    features = backbone(torch.randn(1, 4, 64, 96))
    assert features["out"].shape[-2:] == (4, 6)


def test_one_band_sums_the_rgb_kernels_and_timm_stems_keep_their_padding(rgb_weights):
    path, rgb = rgb_weights
    grey = build_backbone("resnet18", weights=str(path), in_channels=1, input_mean=[0.45], input_std=[0.226])
    assert torch.allclose(grey.conv1.weight, rgb.sum(dim=1, keepdim=True))
    lite = build_backbone("tf_efficientnet_lite0", output_stride=16, in_channels=4, input_mean=MEAN4, input_std=STD4)
    assert type(lite.model.conv_stem).__name__ == "Conv2dSame" and lite.model.conv_stem.in_channels == 4
    assert lite(torch.randn(1, 4, 65, 97))["out"].shape[-2:] == (5, 7)  # "same" padding at odd sizes still


def test_other_bands_need_their_normalisation_from_config():
    with pytest.raises(ValueError, match=r"in_channels=4 needs model\.net\.input_mean with one value per band"):
        DeepLabV3(3, "resnet18", in_channels=4)
    with pytest.raises(ValueError, match=r"input_std with one value per band .* got 3 values"):
        DeepLabV3(3, "resnet18", in_channels=4, input_mean=MEAN4, input_std=STD4[:3])
    net = DeepLabV3(3, "resnet18", in_channels=4, input_mean=MEAN4, input_std=STD4, aux=False).eval()
    assert net.input_mean == tuple(MEAN4) and net(torch.randn(2, 4, 40, 56)).shape == (2, 3, 40, 56)


def test_keep_reads_every_band_rgb_first(tmp_path):
    rgbn = np.random.default_rng(0).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    path = tmp_path / "field.tif"
    cv2.imwrite(str(path), np.dstack([rgbn[..., 2::-1], rgbn[..., 3]]))  # OpenCV stores BGR + the fourth band
    assert (read_image(path, extra_bands="keep") == rgbn).all()
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), rgbn[..., 0])
    assert read_image(grey, extra_bands="keep").shape == (6, 7, 1)


def test_data_folder_trains_and_predicts_on_four_band_images(tmp_path):
    """RGB + a near-infrared band in which only the class shows: a 4-band model learns it from data=folder."""
    root = tmp_path / "fields"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        mask = np.zeros((48, 64), np.uint8)
        x0 = int(rng.integers(0, 32))
        mask[:, x0 : x0 + 24] = 1
        rgb = rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)
        nir = np.where(mask == 1, 220, 30).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"f{i}.tif"), np.dstack([rgb[..., ::-1], nir]))
        cv2.imwrite(str(root / "masks" / f"f{i}.png"), mask)
    overrides = [
        "data=folder",
        f"data.root={root}",
        "data.extra_bands=keep",
        "data.train_transform.crop_size=48",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.val_fraction=0.2",
        "model.net.in_channels=4",
        f"model.net.input_mean={MEAN4}",
        f"model.net.input_std={STD4}",
        "model.net.aux=false",
        "trainer.max_epochs=20",
        "trainer.precision=32-true",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        "~callbacks.val_images",
    ]
    cfg = compose_cfg(overrides)
    with open_dict(cfg):
        cfg.data.classes = [{"name": "soil", "color": [0, 0, 0]}, {"name": "crop", "color": [0, 200, 0]}]
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path)
    metrics = train(cfg)
    # all soil would score (0.625 + 0) / 2 = 0.31 (the crop is 24 of 64 columns): the crop shows in band 4 only
    assert metrics["val/mIoU"] > 0.5, metrics
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with open_dict(cfg):
        del cfg.hydra
    (tmp_path / "run" / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")  # the run folder as Hydra leaves it
    result = predict(predict_cfg(ckpt, root / "images" / "f0.tif", tmp_path / "masks"))
    mask = np.asarray(Image.open(result.written[0]))  # palette PNG: the class indices
    truth = cv2.imread(str(root / "masks" / "f0.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (48, 64) and (mask == truth).mean() > 0.7  # all soil: 0.625
