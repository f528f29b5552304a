"""init_from=PATH: fine-tune a trained network on a folder dataset with another class count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from seg.models import DeepLabV3
from seg.models.support.weights import CheckpointError
from seg.runs.init_from import init_weights
from seg.train import train
from tests.helpers import compose_cfg, fake_run

# synthetic shapes -> 3 classes: background, round (disk), angular (square, triangle, cross)
TO_THREE = np.array([0, 1, 2, 2, 2] + [255] * 251, dtype=np.uint8)
THREE = [
    {"name": "background", "color": [0, 0, 0]},
    {"name": "round", "color": [0, 200, 0]},
    {"name": "angular", "color": [200, 0, 0]},
]


def small(cfg, tmp_path: Path, **extra):
    """The tiny config, run folder in tmp_path, no progress bar; ``extra`` keys set with dotted names."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.print_config = False
        for key, value in extra.items():
            node, _, leaf = key.rpartition(".")
            (cfg[node] if node else cfg)[leaf] = value
    return cfg


def folder_copy(tiny_data_dir: Path, root: Path) -> Path:
    """The tiny synthetic tree as a folder dataset of index masks with 3 classes and its own split lists."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    for split in ("train", "val"):
        ids = (tiny_data_dir / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        (root / "splits" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for i in ids:
            shutil.copy(tiny_data_dir / "JPEGImages" / f"{i}.jpg", root / "images" / f"{i}.jpg")
            mask = np.asarray(Image.open(tiny_data_dir / "SegmentationClass" / f"{i}.png"))
            Image.fromarray(TO_THREE[mask]).save(root / "masks" / f"{i}.png")
    return root


def finetune_cfg(root: Path, tmp_path: Path, init_from: Path | None, steps: int):
    cfg = compose_cfg(
        [
            "data=folder",
            f"data.root={root}",
            "data.split_dir=splits",
            "data.train_transform.crop_size=64",
            "data.batch_size=4",
            "data.val_batch_size=5",
            "data.num_workers=0",
            f"trainer.max_steps={steps}",
            "trainer.max_epochs=-1",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            "~logger.tensorboard",
            "callbacks.val_images.num_samples=0",
            "model.scheduler.warmup_steps=0",
            "model.optimizer.lr=0.02",
            f"init_from={init_from}" if init_from else "init_from=null",
        ]
    )
    with open_dict(cfg):
        cfg.data.classes = THREE
        del cfg.hydra
    return small(cfg, tmp_path)


@pytest.mark.slow
def test_init_from_fine_tunes_faster_than_from_scratch_on_another_class_count(cfg_train, tmp_path, tiny_data_dir):
    """Pre-train 60 steps on the 5 synthetic classes; then 12 steps on a 3-class folder copy of the same images,
    from those weights (new classifier) and from scratch, same seed: the fine-tuned run scores clearly higher."""
    pre = small(cfg_train, tmp_path / "pre", **{"trainer.limit_train_batches": 1.0, "trainer.max_epochs": 10})
    train(pre)
    ckpt = tmp_path / "pre" / "checkpoints" / "last.ckpt"
    root = folder_copy(tiny_data_dir, tmp_path / "three")
    scores = {}
    for name, init in (("scratch", None), ("init_from", ckpt)):
        train(finetune_cfg(root, tmp_path / name, init, steps=12))
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())["mIoU"]
    print(f"val mIoU after 12 steps: {scores}")
    assert scores["init_from"] > scores["scratch"] + 0.1, scores
    assert (tmp_path / "init_from" / "splits" / "val.txt").read_text().split() == (
        root / "splits" / "val.txt"
    ).read_text().split()


def test_init_from_loads_what_fits_and_names_what_does_not(tmp_path):
    torch.manual_seed(0)
    trained = DeepLabV3(5, "resnet18", aspp_rates=(1, 2, 3))
    path = tmp_path / "trained.pth"
    torch.save({"state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()}}, path)
    fresh = DeepLabV3(3, "resnet18", aspp_rates=(1, 2, 3))
    line = init_weights(fresh, path)
    assert "re-initialised aux_classifier.4, classifier.4 for 3 classes (the file has 5)" in line
    assert torch.equal(fresh.backbone.conv1.weight, trained.backbone.conv1.weight)
    assert torch.equal(fresh.classifier[0].project[0].weight, trained.classifier[0].project[0].weight)
    assert fresh.classifier[4].weight.shape[0] == 3
    with pytest.raises(CheckpointError, match=r"trained\.pth does not fit the model \(DeepLabV3\); missing keys"):
        init_weights(DeepLabV3(3, "resnet34", aspp_rates=(1, 2, 3)), path)  # another architecture


def test_init_from_and_ckpt_path_together_is_refused(cfg_train, tmp_path):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    cfg = small(cfg_train, tmp_path / "new", init_from=str(ckpt), ckpt_path=str(ckpt))
    with pytest.raises(ValueError, match="init_from and ckpt_path: choose one"):
        train(cfg)
