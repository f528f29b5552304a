"""Fine-tuning controls: head-only epochs, frozen BatchNorm statistics, an unbroken poly schedule, early stopping."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from pytorch_lightning.callbacks import EarlyStopping
from torch.nn.modules.batchnorm import _BatchNorm

from seg.callbacks.finetune import BackboneFreeze
from seg.train import train
from tests.helpers import compose_cfg


class Recorder(pl.Callback):
    """Snapshots of the backbone, head and BN statistics after each epoch; learning rates at each step."""

    def __init__(self):
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.lrs: list[tuple[int, list[float]]] = []
        self.groups: list[int] = []

    def on_fit_start(self, trainer, pl_module):
        self.snapshots.append(self._snap(pl_module))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        opt = trainer.optimizers[0]
        self.lrs.append((trainer.global_step, [g["lr"] for g in opt.param_groups]))
        self.groups.append(len(opt.param_groups))

    def on_train_epoch_end(self, trainer, pl_module):
        self.snapshots.append(self._snap(pl_module))

    @staticmethod
    def _snap(pl_module) -> dict[str, torch.Tensor]:
        bb = pl_module.net.backbone
        bns = [m for m in bb.modules() if isinstance(m, _BatchNorm)]
        return {
            "backbone": torch.cat([p.detach().flatten() for p in bb.parameters()]).clone(),
            "head": torch.cat([p.detach().flatten() for p in pl_module.net.classifier.parameters()]).clone(),
            "bn_mean": torch.cat([m.running_mean for m in bns]).clone(),
        }


def _fit(cfg, callbacks, epochs=2, batches=3):
    torch.manual_seed(0)
    # the fine-tuning setting: head at 10x the backbone rate, no warm-up (the quickstart trains from scratch at 1x)
    model = instantiate(cfg.model, head_lr_mult=10.0, scheduler={"warmup_steps": 0})
    dm = instantiate(cfg.data)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=batches,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=dm)
    return trainer, model


@pytest.mark.parametrize("backbone", ["resnet18", "tf_efficientnet_lite0"])
def test_head_only_then_unfreeze_keeps_the_poly_schedule(cfg_train, backbone):
    if backbone != "resnet18":  # a timm encoder with its real ImageNet weights (the dev extra installs them)
        with open_dict(cfg_train):
            cfg_train.model.net.update(backbone=backbone, output_stride=16, weights="imagenet")
    rec = Recorder()
    _fit(cfg_train, [BackboneFreeze(unfreeze_at_epoch=1, freeze_bn=True), rec])
    start, after0, after1 = rec.snapshots
    assert torch.equal(after0["backbone"], start["backbone"])  # epoch 0: backbone untouched
    assert not torch.equal(after0["head"], start["head"])  # ... while the head trains
    assert not torch.equal(after1["backbone"], after0["backbone"])  # epoch 1: backbone trains
    assert torch.equal(after1["bn_mean"], start["bn_mean"])  # freeze_bn: statistics never move
    # both groups live in the optimizer from step 0 and follow lr * (1 - t/T)^0.9 throughout, unfreezing or not
    lr, mult, total = cfg_train.model.optimizer.lr, 10.0, 6
    assert rec.groups == [2] * total
    for step, (backbone_lr, head_lr) in rec.lrs:
        expected = lr * (1 - step / total) ** 0.9
        assert math.isclose(backbone_lr, expected, rel_tol=1e-6), (step, backbone_lr, expected)
        assert math.isclose(head_lr, mult * expected, rel_tol=1e-6)


def test_bn_statistics_move_without_freeze_bn(cfg_train):
    """The control for the test above: with freeze_bn off and no freezing, running statistics do change."""
    rec = Recorder()
    _fit(cfg_train, [BackboneFreeze(unfreeze_at_epoch=0, freeze_bn=False), rec], epochs=1, batches=1)
    assert not torch.equal(rec.snapshots[-1]["bn_mean"], rec.snapshots[0]["bn_mean"])
    assert not torch.equal(rec.snapshots[-1]["backbone"], rec.snapshots[0]["backbone"])


def test_never_unfreeze_trains_the_head_only():
    cb = BackboneFreeze(unfreeze_at_epoch=None)
    assert cb.frozen_at(0) and cb.frozen_at(1000)
    assert [BackboneFreeze(unfreeze_at_epoch=2).frozen_at(e) for e in range(4)] == [True, True, False, False]
    with pytest.raises(ValueError, match="unfreeze_at_epoch"):
        BackboneFreeze(unfreeze_at_epoch=-1)


def test_parameters_left_out_of_the_optimizer_are_an_error(cfg_train):
    model = instantiate(cfg_train.model)
    model.net.backbone.layer1.requires_grad_(False)  # configure_optimizers will drop these
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        logger=False,
        callbacks=[BackboneFreeze(unfreeze_at_epoch=1)],
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    with pytest.raises(ValueError, match="missing from the optimizer"):
        trainer.fit(model, datamodule=instantiate(cfg_train.data))


def test_finetune_callbacks_from_config(cfg_train, tmp_path):
    """callbacks=finetune: freeze + early stopping on val/mIoU, through seg.train end to end."""
    cfg = compose_cfg(["callbacks=finetune"])
    assert {"model_checkpoint", "lr_monitor"} <= set(cfg.callbacks)  # the defaults stay
    callbacks = {k: instantiate(cfg.callbacks[k]) for k in ("early_stopping", "backbone_freeze")}
    stop = callbacks["early_stopping"]
    assert isinstance(stop, EarlyStopping) and stop.monitor == "val/mIoU" and stop.mode == "max"
    assert isinstance(callbacks["backbone_freeze"], BackboneFreeze) and callbacks["backbone_freeze"].freeze_bn
    with open_dict(cfg_train):
        cfg_train.callbacks.backbone_freeze = cfg.callbacks.backbone_freeze
        cfg_train.callbacks.early_stopping = cfg.callbacks.early_stopping
    cfg_train.callbacks.early_stopping.patience = 0
    cfg_train.callbacks.early_stopping.min_delta = 1.0  # nothing improves by 1.0 mIoU: stops after epoch 1
    cfg_train.trainer.max_epochs = 4
    cfg_train.trainer.limit_train_batches = 1
    train(cfg_train)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["global_step"] == 2 and report["epoch"] == 2  # stopped by EarlyStopping, not max_epochs


def test_weight_averaging_from_lightning_validates_and_checkpoints_the_average(cfg_train, tmp_path):
    """Issue 34's EMA lever through seg.train: '+callbacks.ema={_target_: ...EMAWeightAveraging, decay: ...}'.
    The final validation and last.ckpt's state_dict hold the averaged weights (seg-evaluate scores those), the raw
    weights ride along in the checkpoint; a moving average of a changing model differs from it."""
    from seg.evaluate import evaluate
    from tests.test_evaluate import eval_cfg

    with open_dict(cfg_train):
        cfg_train.callbacks.ema = {"_target_": "pytorch_lightning.callbacks.EMAWeightAveraging", "decay": 0.5}
    cfg_train.trainer.max_epochs = 1
    cfg_train.trainer.limit_train_batches = 4
    train(cfg_train)
    report = json.loads((tmp_path / "metrics.json").read_text())
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    averaged, current = ckpt["state_dict"], ckpt["current_model_state"]
    name = next(k for k in averaged if k.endswith("weight") and averaged[k].dim() == 4)
    assert not torch.equal(averaged[name], current[name])
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg_train, tmp_path / ".hydra" / "config.yaml")  # what Hydra writes for a seg-train run
    scored = evaluate(eval_cfg(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "eval", "inference.precision=32"))
    assert scored["mIoU"] == pytest.approx(report["mIoU"], abs=2e-3)
    assert scored["mIoU"] > 0
