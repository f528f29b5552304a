"""A resume under other settings than the checkpoint's run: trajectory-changing keys named, another network
refused (the subprocess case with another class count is in tests/test_bad_input.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from seg.models.support.weights import CheckpointError
from seg.runs.resume import changed_settings, check_resume_config
from seg.train import train
from tests.helpers import compose_cfg, fake_run


def test_changed_settings_names_what_shapes_training_and_nothing_else():
    # the precision set, not the machine's default: bf16-mixed is already the default on a CPU with AMX
    base = ["data.batch_size=8", "data.root=/data/a", "data.num_workers=2", "trainer.precision=32-true"]
    before = compose_cfg(base)
    now = compose_cfg(
        [
            "data.batch_size=4",
            "data.root=/elsewhere",
            "data.num_workers=0",
            "model.optimizer.lr=0.02",
            "seed=7",
            "trainer.precision=bf16-mixed",
            "data.val_batch_size=1",
        ]
    )
    changes = changed_settings(before, now)
    assert changes == {
        "data.batch_size": (8, 4),
        "model.optimizer.lr": (before.model.optimizer.lr, 0.02),
        "seed": (before.seed, 7),
        "trainer.precision": ("32-true", "bf16-mixed"),
    }
    assert changed_settings(before, compose_cfg(base)) == {}


def test_another_backbone_is_refused_naming_the_file(tmp_path, cfg_train):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    other = cfg_train.copy()
    with open_dict(other):
        other.model.net.backbone = "resnet34"
    with pytest.raises(
        CheckpointError,
        match=r"last\.ckpt: its run trained model\.net\.backbone=resnet18, this run "
        r"resnet34: a resume continues the same network; start a new run .* init_from=",
    ):
        check_resume_config(other, ckpt)


def test_a_resume_with_another_batch_size_warns_naming_it(tmp_path, cfg_train, caplog):
    run = Path(cfg_train.paths.output_dir)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg_train, run / ".hydra" / "config.yaml")  # what Hydra writes into a run folder
    train(cfg_train)
    resumed = cfg_train.copy()
    with open_dict(resumed):
        resumed.ckpt_path = str(run / "checkpoints" / "last.ckpt")
        resumed.paths.output_dir = str(tmp_path / "resumed")
        resumed.data.batch_size = 2
        resumed.trainer.max_epochs = 2
    with caplog.at_level(logging.WARNING, logger="seg.runs.resume"):
        train(resumed)  # goes on: a changed batch size can train, just not exactly as before
    warnings = [r.getMessage() for r in caplog.records if r.name == "seg.runs.resume"]
    assert len(warnings) == 1, warnings
    assert "under changed settings: data.batch_size 4 -> 2, trainer.max_epochs 1 -> 2." in warnings[0]
    assert "not an exact resume" in warnings[0]
