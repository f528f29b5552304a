"""The LightningModule: cross-entropy (+ auxiliary loss), SGD with poly decay, confusion-matrix metrics."""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule
from torch import nn
from torchmetrics.aggregation import MaxMetric

from seg.inference import InferenceConfig, infer
from seg.metrics import ConfusionMatrix, metrics_from_confmat

IGNORE_INDEX = 255


class SegModule(LightningModule):
    """Trains ``net`` (any module mapping (B,3,H,W) to logits, or to {"out", "aux"} in train mode)."""

    # how validation predicts: whole image (training); seg.evaluate sets sliding window / multi-scale + flip
    inference: InferenceConfig = InferenceConfig()

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        head_lr_mult: float = 10.0,
        poly_power: float = 0.9,
        warmup_iters: int = 0,
        aux_weight: float = 0.4,
        ignore_index: int = IGNORE_INDEX,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # only plain numbers go into the checkpoint: it must load with weights_only=True
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.criterion = nn.CrossEntropyLoss(ignore_index=ignore_index)
        # torchmetrics' confusion matrix with a one-pass bincount update (benchmarks/confmat.py)
        self.val_confmat = ConfusionMatrix(num_classes, ignore_index=ignore_index)
        self.val_miou_best = MaxMetric()
        self.last_val_metrics: dict | None = None
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: torch.Tensor):
        return self.net(self._prep(x))

    def on_train_start(self) -> None:
        self.val_miou_best.reset()  # forget the sanity-check validation

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        y = y.long()
        out = self(x)
        out = out if isinstance(out, dict) else {"out": out}
        loss = self.criterion(out["out"], y)
        self.log("train/loss_main", loss)
        if "aux" in out and self.hparams.aux_weight > 0:
            aux = self.criterion(out["aux"], y)
            self.log("train/loss_aux", aux)
            loss = loss + self.hparams.aux_weight * aux
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at global step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        y = y.long()
        # scores at the label's resolution: the label is never resized
        scores = infer(self, x, self.inference, out_size=y.shape[-2:])
        if self.inference.single_view:  # multi-view scores are averaged probabilities, not logits
            self.log("val/loss", self.criterion(scores, y), batch_size=x.shape[0])
        self.val_confmat.update(scores.argmax(dim=1), y)

    def on_validation_epoch_end(self) -> None:
        confmat = self.val_confmat.compute()  # summed over all processes under DDP
        self.val_confmat.reset()
        metrics = metrics_from_confmat(confmat)
        self.val_miou_best.update(torch.tensor(metrics["mIoU"]))
        for key in ("mIoU", "pixel_acc", "mean_acc", "fw_iou"):
            self.log(f"val/{key}", metrics[key], prog_bar=key == "mIoU")
        self.log("val/mIoU_best", self.val_miou_best.compute())
        self.last_val_metrics = metrics
        self.last_val_confmat = confmat.cpu()

    def configure_optimizers(self):
        backbone = getattr(self.net, "backbone", None)
        backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
        head = [p for p in self.net.parameters() if id(p) not in backbone_ids and p.requires_grad]
        groups = [{"params": [p for p in self.net.parameters() if id(p) in backbone_ids and p.requires_grad]}]
        groups.append({"params": head, "lr": self.hparams.lr * self.hparams.head_lr_mult})
        optimizer = torch.optim.SGD(
            [g for g in groups if g["params"]],
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
            weight_decay=self.hparams.weight_decay,
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = min(self.hparams.warmup_iters, total - 1)
        # DeepLab's "poly" policy: lr * (1 - iter / max_iter) ** 0.9, stepped every iteration
        poly = torch.optim.lr_scheduler.PolynomialLR(
            optimizer, total_iters=total - warmup, power=self.hparams.poly_power
        )
        scheduler = poly
        if warmup > 0:
            linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
            scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, poly], milestones=[warmup])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
