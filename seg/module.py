"""The LightningModule: the configured loss (cross-entropy, OHEM, Dice, Lovasz, focal or a weighted sum; plus the
auxiliary head's), an optimiser with warm-up + poly decay, and confusion-matrix metrics."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from pytorch_lightning import LightningModule
from torch import nn
from torchmetrics.aggregation import MaxMetric

from seg.data.base import IGNORE_INDEX
from seg.inference import InferenceConfig, class_map, infer
from seg.losses import build_loss
from seg.metrics import ConfusionMatrix, metrics_from_confmat


def warmup_poly(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, power: float = 0.9
) -> torch.optim.lr_scheduler.LRScheduler:
    """DeepLab's "poly" policy, ``lr * (1 - step / total) ** power`` stepped every optimizer step, after
    ``warmup_steps`` of linear warm-up from ``lr / 1000`` (none when 0).

    Args:
        optimizer: the optimizer whose groups' learning rates are scheduled.
        total_steps: optimizer steps of the whole run (warm-up included).
        warmup_steps: linear warm-up steps; capped at ``total_steps - 1``.
        power: the poly exponent (0.9 in DeepLab v2/v3).
    """
    warmup = max(0, min(int(warmup_steps), total_steps - 1))
    poly = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total_steps - warmup, power=power)
    if warmup == 0:
        return poly
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, poly], milestones=[warmup])


# the class defaults are conf/model/deeplabv3.yaml's (tests/test_configs.py)
DEFAULT_OPTIMIZER = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=1e-4)
DEFAULT_SCHEDULER = functools.partial(warmup_poly, warmup_steps=0, power=0.9)


class SegModule(LightningModule):
    """Trains ``net`` (any module mapping (B,3,H,W) to logits, or to {"out", ...} in train mode).

    Args:
        net: the segmenter. In train mode it returns {"out": logits} plus optional auxiliary logits under other
            keys (e.g. "aux"), each weighted by ``aux_weight`` in the loss; in eval mode the logits.
        num_classes: classes scored by the validation metrics.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_`` node); default SGD lr 0.01, momentum 0.9,
            weight decay 1e-4. Its ``lr`` applies to the backbone, ``lr * head_lr_mult`` to everything else.
        scheduler: ``(optimizer, total_steps) -> LRScheduler`` stepped every optimizer step (a ``_partial_``
            node); default :func:`warmup_poly` without warm-up.
        head_lr_mult: learning-rate factor of the non-backbone parameters (10 is usual when fine-tuning a
            pretrained backbone; 1 from scratch).
        aux_weight: weight of each auxiliary loss (0 turns them off).
        loss: ``model.loss``: one loss or a weighted sum, see :func:`seg.losses.build_loss` (None: cross-entropy);
            the auxiliary outputs are trained with the same loss.
        class_weights: per-class weights for the losses that take them (ce, ohem, focal), a list of C numbers;
            ``median_freq`` / ``inverse_log`` in a config are computed from the train split by ``seg.train``.
        ignore_index: the label never scored nor trained on.
        channels_last: run the net in channels-last memory format (faster convolutions on CPU bf16 and GPUs).
        input_scale: validation resizes each image by this factor before the net and scores at the label's full
            resolution (``inference.input_scale``): for a model trained on downscaled images.
    """

    # how validation predicts: whole image (training); seg.evaluate sets sliding window / multi-scale + flip
    inference: InferenceConfig

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[[Iterable], torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        head_lr_mult: float = 1.0,
        aux_weight: float = 0.4,
        loss: str | Sequence | Mapping | None = None,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
        channels_last: bool = True,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        # only plain numbers go into the checkpoint: it must load with weights_only=True (the run folder's
        # .hydra/config.yaml keeps the optimizer, scheduler and loss settings; class_weights.json the weights)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "loss", "class_weights"])
        self.net = net
        self.inference = InferenceConfig(input_scale=input_scale)  # seg.evaluate replaces it
        self.optimizer_factory = optimizer or DEFAULT_OPTIMIZER
        self.scheduler_factory = scheduler or DEFAULT_SCHEDULER
        if isinstance(class_weights, str):
            raise ValueError(
                f"model.class_weights={class_weights!r} is computed from the train split by seg.train; "
                "give SegModule a list of per-class weights"
            )
        weights = torch.tensor([float(w) for w in class_weights]) if class_weights is not None else None
        if weights is not None and len(weights) != num_classes:
            raise ValueError(f"model.class_weights has {len(weights)} values for {num_classes} classes")
        self.criterion = build_loss(loss, class_weights=weights, ignore_index=ignore_index)
        # torchmetrics' confusion matrix with a one-pass bincount update (benchmarks/confmat.py)
        self.val_confmat = ConfusionMatrix(num_classes, ignore_index=ignore_index)
        self.val_miou_best = MaxMetric()
        self.last_val_metrics: dict | None = None
        self.last_val_confmat: torch.Tensor | None = None  # the last validation's summed matrix (seg.evaluate)
        # data.extra_val_splits: {split: metrics} of the last validation, one confusion matrix per split
        self.last_extra_val_metrics: dict[str, dict] = {}
        self._extra_confmats: list[ConfusionMatrix] = []
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: torch.Tensor):
        return self.net(self._prep(x))

    def on_train_start(self) -> None:
        self.val_miou_best.reset()  # forget the sanity-check validation
        self._train_start = time.perf_counter()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        y = y.long()
        out = self(x)
        out = out if isinstance(out, dict) else {"out": out}
        loss = self.criterion(out["out"], y)
        self.log("train/loss_main", loss)
        for key in sorted(k for k in out if k != "out"):  # auxiliary outputs: "aux", ...
            if self.hparams.aux_weight > 0:
                aux = self.criterion(out[key], y)
                self.log(f"train/loss_{key}", aux)
                loss = loss + self.hparams.aux_weight * aux
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at global step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # a net with a schedule in optimizer steps (ContextNet's front_end_steps) counts them here, once per step
        # whatever trainer.accumulate_grad_batches is; it keeps the count in its state_dict for resumed runs
        stepped = getattr(self.net, "optimizer_stepped", None)
        if stepped is not None:
            stepped()

    def _datamodule(self) -> object | None:
        """The trainer's datamodule; None without a trainer or when fit was given plain dataloaders."""
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _extra_val_splits(self) -> list[str]:
        """The extra validation splits whose loaders follow the val split's (set up for fitting only)."""
        return [ds.split for ds in getattr(self._datamodule(), "extra_val_sets", None) or []]

    def on_validation_epoch_start(self) -> None:
        splits = self._extra_val_splits()
        if len(self._extra_confmats) != len(splits):
            self._extra_confmats = [
                ConfusionMatrix(self.hparams.num_classes, ignore_index=self.hparams.ignore_index).to(self.device)
                for _ in splits
            ]

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        y = y.long()
        # scores at the label's resolution: the label is never resized
        scores = infer(self, x, self.inference, out_size=y.shape[-2:])
        if dataloader_idx > 0:  # an extra split (data.extra_val_splits): its own confusion matrix only
            self._extra_confmats[dataloader_idx - 1].update(class_map(scores), y)
            return
        if self.inference.single_view:  # multi-view scores are averaged probabilities, not logits
            self.log("val/loss", self.criterion(scores, y), batch_size=x.shape[0], add_dataloader_idx=False)
        self.val_confmat.update(class_map(scores), y)

    def on_validation_epoch_end(self) -> None:
        confmat = self.val_confmat.compute()  # summed over all processes under DDP
        self.val_confmat.reset()
        metrics = metrics_from_confmat(confmat)
        self.val_miou_best.update(torch.tensor(metrics["mIoU"]))
        for key in ("mIoU", "pixel_acc", "mean_acc", "fw_iou"):
            self.log(f"val/{key}", metrics[key], prog_bar=key == "mIoU")
        self.log("val/mIoU_best", self.val_miou_best.compute())
        self._log_per_class_iou("val/IoU", metrics["per_class_iou"])
        if getattr(self, "_train_start", None) is not None:  # learning curves against wall time (metrics.csv)
            self.log("time/train_s", time.perf_counter() - self._train_start)
        self.last_val_metrics = metrics
        self.last_val_confmat = confmat.cpu()
        self.last_extra_val_metrics = {}
        for split, extra in zip(self._extra_val_splits(), self._extra_confmats, strict=True):
            found = metrics_from_confmat(extra.compute())
            extra.reset()
            self.log(f"val/{split}/mIoU", found["mIoU"])
            self._log_per_class_iou(f"val/{split}/IoU", found["per_class_iou"])
            self.last_extra_val_metrics[split] = found

    def _log_per_class_iou(self, prefix: str, per_class_iou: torch.Tensor) -> None:
        """``<prefix>/<class name>`` for every class; NaN for a class absent from labels and predictions."""
        for name, iou in zip(self._class_names(), per_class_iou.tolist(), strict=True):
            self.log(f"{prefix}/{name}", iou)

    def _class_names(self) -> list[str]:
        try:
            return list(self._datamodule().class_names)
        except AttributeError:  # no datamodule (a plain dataloader) or not set up
            return [str(i) for i in range(self.hparams.num_classes)]

    def configure_optimizers(self):
        backbone = getattr(self.net, "backbone", None)
        backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
        params = [p for p in self.net.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if id(p) in backbone_ids]},
            {"params": [p for p in params if id(p) not in backbone_ids], "head": True},
        ]
        optimizer = self.optimizer_factory([g for g in groups if g["params"]])
        for group in optimizer.param_groups:  # the head's rate: the optimizer's own lr times head_lr_mult
            if group.pop("head", False):
                group["lr"] *= self.hparams.head_lr_mult
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
