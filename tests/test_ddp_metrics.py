"""Exact distributed metrics: 2 CPU processes (gloo) on an odd-sized split give the single-process confusion matrix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed
from omegaconf import open_dict

from seg.evaluate import evaluate
from tests.helpers import compose_cfg, fake_run, labelled_val_pixels


def evaluate_overrides(ckpt, devices: int, strategy: str) -> list[str]:
    """seg-evaluate on ``devices`` processes; batch 1 and fp32: each image's logits do not depend on which process
    or batch it lands in."""
    return [
        f"ckpt_path={ckpt}",
        f"trainer.devices={devices}",
        f"trainer.strategy={strategy}",
        "trainer.enable_progress_bar=false",
        "batch_size=1",
        "inference.precision=32",
    ]


def test_two_processes_count_every_image_exactly_once(cfg_train, tmp_path, tiny_data_dir):
    assert torch.distributed.is_gloo_available()
    ckpt = fake_run(cfg_train, tmp_path / "run")
    reports = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        out = tmp_path / f"devices{devices}"
        cfg = compose_cfg(evaluate_overrides(ckpt, devices, strategy), config_name="evaluate")
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            del cfg.hydra
        evaluate(cfg)  # under ddp_spawn the report is written by the spawned rank 0
        reports[devices] = (out / "metrics.json").read_text()

    single, ddp = (json.loads(reports[d]) for d in (1, 2))
    labelled = labelled_val_pixels(tiny_data_dir)  # 5 images on 2 processes
    assert np.array(ddp["confusion_matrix"]).sum() == labelled == np.array(single["confusion_matrix"]).sum()
    assert ddp["confusion_matrix"] == single["confusion_matrix"]
    for key in ("mIoU", "pixel_acc", "mean_acc", "fw_iou"):
        assert ddp[key] == single[key], key
    assert (np.array(single["confusion_matrix"]).sum(axis=0) > 0).sum() > 1  # not a constant prediction


@pytest.mark.slow
def test_evaluate_with_the_ddp_strategy_as_documented(cfg_train, tmp_path, tiny_data_dir):
    """`seg-evaluate trainer.devices=2 trainer.strategy=ddp` (the README's command: Lightning re-launches the script
    for rank 1) scores every val image once and gives the single-process confusion matrix."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    reports = {}
    for devices, strategy in ((1, "auto"), (2, "ddp")):
        out = tmp_path / f"devices{devices}"
        overrides = [*evaluate_overrides(ckpt, devices, strategy), f"hydra.run.dir={out}"]
        cmd = [sys.executable, "-m", "seg.evaluate", *overrides]
        proc = subprocess.run(cmd, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports[devices] = json.loads((out / "metrics.json").read_text())
    single, ddp = reports[1], reports[2]
    labelled = labelled_val_pixels(tiny_data_dir)
    assert ddp["pixels"] == labelled == single["pixels"]  # 5 images on 2 processes: none scored twice
    assert ddp["confusion_matrix"] == single["confusion_matrix"]
    assert ddp["mIoU"] == single["mIoU"]
