"""Fine-tuning controls: freeze the backbone for the first N epochs and/or freeze its BatchNorm statistics."""

from __future__ import annotations

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _backbone(pl_module: LightningModule) -> nn.Module:
    backbone = getattr(getattr(pl_module, "net", None), "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"BackboneFreeze needs pl_module.net.backbone; {type(pl_module.net).__name__} has none")
    return backbone


class BackboneFreeze(Callback):
    """Train the head only until epoch `unfreeze_at_epoch` (None: never unfreeze); optionally freeze BN stats.

    Lightning's BackboneFinetuning adds the backbone's parameter group to the optimizer when it unfreezes, after
    the LR schedulers were built for the initial groups, so the new group starts at its base learning rate in
    the middle of the poly decay (and a chained scheduler's ``base_lrs`` no longer match the groups). Here every
    parameter is in the optimizer from the start (the module's backbone and head groups); freezing only turns
    ``requires_grad`` off, so the frozen weights get no gradient and SGD leaves them (and their momentum and
    weight decay) untouched while the scheduler keeps stepping every group. On unfreezing, the backbone trains
    at exactly the rate the schedule gives that step. While frozen, the backbone's BatchNorm layers run in
    eval mode (fixed statistics); ``freeze_bn`` keeps them so for the whole run (small-batch fine-tuning of a
    pretrained backbone, DeepLabv3 Sec. 4.1). Under DDP use ``trainer.strategy=ddp_find_unused_parameters_true``.
    """

    def __init__(self, unfreeze_at_epoch: int | None = 0, freeze_bn: bool = False):
        if unfreeze_at_epoch is not None and unfreeze_at_epoch < 0:
            raise ValueError(f"unfreeze_at_epoch must be >= 0 or null (never), got {unfreeze_at_epoch}")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.freeze_bn = freeze_bn
        self._frozen: bool | None = None

    def frozen_at(self, epoch: int) -> bool:
        """Whether the backbone is frozen during `epoch`."""
        return self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # runs after configure_optimizers: check nothing was left out, then freeze (resume-safe: by epoch)
        in_optimizer = {id(p) for opt in trainer.optimizers for g in opt.param_groups for p in g["params"]}
        missing = [n for n, p in _backbone(pl_module).named_parameters() if id(p) not in in_optimizer]
        if missing:
            raise ValueError(
                f"backbone parameters missing from the optimizer (e.g. {missing[:3]}): BackboneFreeze needs every "
                "parameter in the optimizer from the start; do not set requires_grad=False before fitting"
            )
        self._apply(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._apply(trainer, pl_module)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        # Lightning puts the whole module back in train mode (epoch start, after validation): re-freeze BN here
        if self.freeze_bn or self._frozen:
            for m in _backbone(pl_module).modules():
                if isinstance(m, _BatchNorm):
                    m.eval()

    def _apply(self, trainer: Trainer, pl_module: LightningModule) -> None:
        frozen = self.frozen_at(trainer.current_epoch)
        if frozen == self._frozen:
            return
        for p in _backbone(pl_module).parameters():
            p.requires_grad_(not frozen)
        if self._frozen is not None or frozen:
            state = "frozen" if frozen else "unfrozen"
            rank_zero_info(f"BackboneFreeze: backbone {state} at epoch {trainer.current_epoch}")
        self._frozen = frozen
