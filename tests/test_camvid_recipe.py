"""The CamVid recipes on the real frames: +experiment=camvid_cpu and the camvid_dilation_sweep multirun, each
composed and trained for 2 steps (skipped without ../shared/data/camvid); the full runs are in docs/results.md."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from seg.analysis.curves import read_curve
from seg.analysis.sweep import find_runs
from seg.data.camvid import CAMVID_CLASSES
from tests.helpers import compose_cfg, needs_shared

# two steps of two crops, one validation batch of one frame: the recipe's code path, in seconds
FAST = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "data.batch_size=2"]
FAST += ["data.val_batch_size=1", "trainer.precision=32-true", "data.num_workers=0", "~logger.tensorboard"]


def test_camvid_cpu_recipe_trains_at_half_size_and_validates_at_full_size():
    cfg = compose_cfg(["+experiment=camvid_cpu"])
    assert cfg.model.input_scale == 0.5 and list(cfg.data.train_transform.crop_size) == [180, 240]
    assert cfg.model.net.output_stride == 16 and cfg.model.net.weights is None  # from scratch
    assert cfg.data.val_transform._target_.endswith("val_transforms")  # no resize: labels stay 360x480
    assert cfg.trainer.max_steps == 1200 and cfg.trainer.max_time == "00:00:55:00"  # the hour, also on slow days


def test_camvid_imagenet_recipe_fine_tunes_the_pretrained_lite0_encoder():
    cfg = compose_cfg(["+experiment=camvid_imagenet_cpu"])
    net = cfg.model.net
    assert (net.backbone, net.weights, net.output_stride) == ("tf_efficientnet_lite0", "imagenet", 16)
    assert cfg.model.input_scale == 1.0 and list(cfg.data.train_transform.crop_size) == [360, 480]
    assert cfg.trainer.max_time == "00:00:55:00"


def test_the_train_plus_val_recipe_is_the_imagenet_recipe_with_a_separable_decoder_and_jitter_on_468_frames():
    cfg, base = compose_cfg(["+experiment=camvid_imagenet_trainval"]), compose_cfg(["+experiment=camvid_imagenet_cpu"])
    assert cfg.data.train_split == "train+val" and cfg.task_name == "camvid_imagenet_trainval"
    net = cfg.model.net
    assert net._target_ == "seg.models.deeplabv3plus.DeepLabV3Plus" and net.separable
    assert (net.backbone, net.weights, net.output_stride, list(net.aspp_rates)) == (
        "tf_efficientnet_lite0",
        "imagenet",
        32,
        [3, 6, 9],
    )
    for key in ("trainer", "callbacks"):
        assert cfg[key] == base[key], key
    model, base_model = (OmegaConf.to_container(c.model) for c in (cfg, base))
    assert {k: v for k, v in model.items() if k != "net"} == {k: v for k, v in base_model.items() if k != "net"}
    data, base_data = (OmegaConf.to_container(c.data) for c in (cfg, base))  # data.root stays ??? here
    assert data["train_transform"].pop("color_jitter") == [0.3, 0.3, 0, 0]  # brightness and contrast only
    assert base_data["train_transform"].pop("color_jitter") is None
    assert {**data, "train_split": "train"} == base_data


@pytest.mark.parametrize(
    "experiment, train_split, frames",
    [("camvid_imagenet_cpu", "train-0006R0", 266), ("camvid_imagenet_trainval", "train+val-0006R0", 367)],
)
def test_camvid_imagenet_recipe_validates_on_a_held_out_sequence_too(tmp_path, experiment, train_split, frames):
    from seg.train import train

    root = needs_shared("camvid")
    cfg = compose_cfg(
        [
            f"+experiment={experiment}",
            f"data.root={root}",
            *FAST,
            "callbacks.progress_bar=null",
            f"data.train_split={train_split}",
            "data.extra_val_splits=[train@0006R0]",
        ]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path)
        del cfg.hydra
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    held_out = metrics["extra_val"]["train@0006R0"]
    assert list(held_out["per_class_iou"]) == list(CAMVID_CLASSES) and 0 <= held_out["mIoU"] <= 1
    assert held_out["mIoU"] != metrics["mIoU"]  # another split's confusion matrix, not the val one again
    with (tmp_path / "run" / "csv" / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/train@0006R0/mIoU")]
    assert float(rows[-1]["val/train@0006R0/mIoU"]) == pytest.approx(held_out["mIoU"], abs=1e-6)
    splits = (tmp_path / "run" / "splits" / f"{train_split}.txt").read_text().split()
    assert len(splits) == frames and len(set(splits)) == frames and not any(i.startswith("0006R0") for i in splits)


def test_camvid_dilation_sweep_varies_the_stride_and_the_seed():
    cfg = compose_cfg(["+experiment=camvid_dilation_sweep"])
    params = cfg.hydra.sweeper.params
    assert params["model/dilation"] == "os32,os16,os16_mg,os8" and params.seed == "1,2"
    strides = {}
    for choice in ("os32", "os16", "os16_mg", "os8"):  # each sweep value reaches the network (camvid_cpu's own
        net = compose_cfg(["+experiment=camvid_dilation_sweep", f"model/dilation={choice}"]).model.net  # os16
        strides[choice] = (net.output_stride, list(net.multi_grid or []))  # once overrode the group's choice)
    assert strides == {"os32": (32, []), "os16": (16, []), "os16_mg": (16, [1, 2]), "os8": (8, [])}
    mg = compose_cfg(["+experiment=camvid_dilation_sweep", "model/dilation=os16_mg"])
    assert mg.trainer.max_steps == 300 and mg.model.input_scale == 0.5 and mg.model.net.aspp_rates == [3, 6, 9]


def test_camvid_cpu_trains_two_steps_on_the_real_frames(tmp_path):
    from seg.train import train

    root = needs_shared("camvid")
    cfg = compose_cfg(["+experiment=camvid_cpu", f"data.root={root}", *FAST, "callbacks.progress_bar=null"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path)  # the class-weight cache, if any
        del cfg.hydra
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and list(metrics["per_class_iou"]) == list(CAMVID_CLASSES)
    with (tmp_path / "run" / "csv" / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/mIoU")]
    assert len(rows) == 1 and float(rows[0]["time/train_s"]) > 0  # for the learning curve against wall time
    curve = read_curve(tmp_path / "run")
    assert curve.steps == [2] and curve.miou == pytest.approx([metrics["mIoU"]], abs=1e-6)
    logged = [float(rows[0][f"val/IoU/{c}"]) for c in CAMVID_CLASSES]
    expected = [metrics["per_class_iou"][c] for c in CAMVID_CLASSES]
    np.testing.assert_allclose(logged, expected, atol=1e-6, equal_nan=True)


def test_camvid_dilation_sweep_runs_each_stride_on_the_real_frames(tmp_path):
    root = needs_shared("camvid")
    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "seg.train",
        "+experiment=camvid_dilation_sweep",
        f"data.root={root}",
        *FAST,
        "hydra.sweeper.params.seed=1",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={tmp_path}",
        "print_config=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = find_runs(sweep_dir)
    assert sorted(r.overrides["model/dilation"] for r in runs) == ["os16", "os16_mg", "os32", "os8"]
    for run in runs:  # the network each run built, from its saved config
        net = yaml.safe_load((run.path / ".hydra" / "config.yaml").read_text())["model"]["net"]
        expected = {"os32": 32, "os16": 16, "os16_mg": 16, "os8": 8}[run.overrides["model/dilation"]]
        assert net["output_stride"] == expected, run.name
    assert all(r.status == "ok" and r.metrics["global_step"] == 2 for r in runs), [(r.name, r.note) for r in runs]
