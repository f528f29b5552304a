"""Segmentation losses: cross-entropy, OHEM cross-entropy, soft Dice, Lovász-softmax, focal, and their weighted sum.

``build_loss(spec, class_weights=..., ignore_index=...)`` turns ``model.loss`` (``None``, a name, a mapping
``{name, weight, <params>}`` or a list of mappings) into one ``nn.Module`` mapping ``(logits (B,C,H,W),
target (B,H,W))`` to a scalar. Every loss leaves pixels labelled ``ignore_index`` out of both value and gradient,
computes in float32 under autocast, and returns a graph-connected 0 for a batch where every pixel is ignored.

Written here rather than taken from segmentation_models_pytorch: smp would pull timm and huggingface_hub into the
base install, and its semantics do not fit ours: its multiclass FocalLoss sums one-vs-rest sigmoid focal terms
(not the softmax focal loss), its DiceLoss divides by all C classes with absent ones counted as 0, and its
LovaszLoss returns an empty tensor instead of 0 for an all-ignored batch (and syncs the host per class).
Each loss here is a few lines checked against the definition cited in its docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LOSSES",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "OhemCrossEntropyLoss",
    "WeightedSumLoss",
    "build_loss",
]


class SegLoss(nn.Module):
    """Base class: holds ``ignore_index`` and the optional per-class weights (a non-persistent buffer, so a
    checkpoint does not depend on them), checks shapes, and runs ``_loss`` in float32 with autocast off."""

    uses_class_weights = False

    def __init__(self, *, class_weights: Tensor | None = None, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)
        weight = None
        if class_weights is not None and self.uses_class_weights:
            weight = torch.as_tensor(class_weights, dtype=torch.float32).detach().clone()
            if weight.ndim != 1:
                raise ValueError(f"class_weights must be one weight per class (1-D), got shape {tuple(weight.shape)}")
            if not torch.isfinite(weight).all() or (weight < 0).any():
                raise ValueError(f"class_weights must be finite and >= 0, got {weight.tolist()}")
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.ndim < 2 or target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"{type(self).__name__}: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match; "
                "expected logits (B,C,H,W) and target (B,H,W)"
            )
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: class_weights has {self.class_weights.numel()} entries but the logits have "
                f"{logits.shape[1]} classes"
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._loss(logits.float(), target.long())

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def _valid_target(self, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(valid mask, target with ignored pixels set to class 0)``: safe to gather or one-hot."""
        valid = target != self.ignore_index
        return valid, torch.where(valid, target, torch.zeros_like(target))

    def _pixel_weights(self, target0: Tensor, valid: Tensor) -> Tensor:
        """Per-pixel weight: the class weight of the true class (1 without weights), 0 at ignored pixels."""
        w = valid.float() if self.class_weights is None else self.class_weights[target0] * valid
        return w

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.params)
        return f"{params}, ignore_index={self.ignore_index}" if params else f"ignore_index={self.ignore_index}"

    params: tuple[str, ...] = ()


class CrossEntropyLoss(SegLoss):
    """Cross-entropy with optional class weights and label smoothing: exactly ``F.cross_entropy(logits, target,
    weight=class_weights, ignore_index=..., label_smoothing=...)`` (PyTorch's definition, reduction ``mean``): the
    sum over non-ignored pixels of ``w[y] * ((1 - eps) * -log p_y) + (eps / C) * sum_c w[c] * -log p_c``, divided by
    the sum of ``w[y]`` over those pixels. Unlike torch (0/0 = NaN) an all-ignored batch gives 0.
    """

    uses_class_weights = True
    params = ("label_smoothing",)

    def __init__(self, label_smoothing: float = 0.0, **kw) -> None:
        super().__init__(**kw)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"ce: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        # torch's 'sum' reduction divided by torch's 'mean' normaliser (the weight sum), clamped so 0/0 gives 0
        total = F.cross_entropy(
            logits,
            target,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        valid, target0 = self._valid_target(target)
        return total / self._pixel_weights(target0, valid).sum().clamp_min(1e-12)


class OhemCrossEntropyLoss(SegLoss):
    """Online hard example mining cross-entropy (OHEM, Shrivastava et al., CVPR 2016, arXiv:1604.03540, applied to
    pixels as "online bootstrapping" by Wu, Shen, van den Hengel, arXiv:1604.04339), as mmsegmentation's
    ``OHEMPixelSampler`` with ``thresh`` and HRNet-Semantic-Segmentation's ``OhemCrossEntropy`` select pixels.

    Of the non-ignored pixels, keep those whose softmax probability of their true class is below ``thresh`` and,
    in any case, the ``min(min_kept, #valid)`` hardest ones (lowest probability; ties by position). The loss is the
    mean over the kept pixels of the per-pixel cross-entropy ``w[y] * -log p_y`` (``w`` = class weights, 1 without;
    the mean is over the kept pixel count, as in HRNet, not over the weight sum as in ``ce``).

    Differences from mmsegmentation, on purpose: ``min_kept`` is per batch (mmseg multiplies it by the batch size);
    exactly the ``min_kept`` hardest pixels are kept (mmseg keeps ``p < sorted_p[min_kept]``, fewer on ties and one
    fewer than all when ``min_kept`` exceeds the valid count); the mean is over kept pixels (mmseg's CrossEntropyLoss
    with its default ``avg_non_ignore=False`` divides by every pixel of the batch).
    """

    uses_class_weights = True
    params = ("thresh", "min_kept")

    def __init__(self, thresh: float = 0.7, min_kept: int = 100000, **kw) -> None:
        super().__init__(**kw)
        if not 0.0 < float(thresh) <= 1.0:
            raise ValueError(f"ohem: thresh must be in (0, 1], got {thresh}")
        if int(min_kept) != min_kept or int(min_kept) < 0:
            raise ValueError(f"ohem: min_kept must be an integer >= 0, got {min_kept}")
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, target0 = self._valid_target(target)
        logp = F.log_softmax(logits, dim=1).gather(1, target0.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            keep = self.kept_mask(logp.exp(), valid)
        pixel = -logp * self._pixel_weights(target0, valid)
        return (pixel * keep).sum() / keep.sum().clamp_min(1)

    def kept_mask(self, prob: Tensor, valid: Tensor) -> Tensor:
        """Boolean mask of the kept pixels given the true-class probabilities ``prob`` and the ``valid`` mask."""
        flat_p = torch.where(valid, prob, torch.full_like(prob, 2.0)).flatten()  # ignored pixels sort last
        order = flat_p.argsort(stable=True)
        k = valid.sum().clamp_max(self.min_kept)  # a tensor: no host sync
        hardest = torch.zeros_like(flat_p, dtype=torch.bool)
        hardest[order] = torch.arange(flat_p.numel(), device=prob.device) < k
        return (hardest.view_as(prob) | (prob < self.thresh)) & valid


class DiceLoss(SegLoss):
    """Soft multi-class Dice loss (Milletari et al., V-Net, arXiv:1606.04797, with exponent 1; the terms of
    segmentation_models_pytorch's ``DiceLoss(mode="multiclass")``).

    With softmax probabilities ``p`` and one-hot targets ``g``, both zeroed at ignored pixels and summed over the
    whole batch (B, H, W) per class: ``dice_c = (2 * sum p_c g_c + smooth) / max(sum p_c + sum g_c + smooth, eps)``.
    The loss is ``1 - mean(dice_c)`` over the classes present in the target of the batch (the convention of
    Lovász ``classes="present"``); smp multiplies absent classes by 0 but still divides by all C, so its value is
    this one times (#present / C). Class weights are not used (a Dice term is already normalised per class).
    """

    params = ("smooth",)

    def __init__(self, smooth: float = 0.0, eps: float = 1e-7, **kw) -> None:
        super().__init__(**kw)
        if float(smooth) < 0:
            raise ValueError(f"dice: smooth must be >= 0, got {smooth}")
        self.smooth = float(smooth)
        self.eps = float(eps)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, target0 = self._valid_target(target)
        num_classes = logits.shape[1]
        v = valid.unsqueeze(1).float()
        prob = logits.softmax(dim=1) * v
        onehot = F.one_hot(target0, num_classes).movedim(-1, 1).float() * v
        dims = (0, *range(2, logits.ndim))
        inter = (prob * onehot).sum(dims)
        card = prob.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (card + self.smooth).clamp_min(self.eps)
        present = (onehot.sum(dims) > 0).float()
        return ((1 - dice) * present).sum() / present.sum().clamp_min(1)


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in decreasing order (Berman et
    al. 2018, Alg. 1), along dim 0 (one column per class)."""
    gts = gt_sorted.sum(0)
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)


class LovaszSoftmaxLoss(SegLoss):
    """Lovász-softmax loss (Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss: a tractable surrogate for
    the optimization of the intersection-over-union measure in neural networks", CVPR 2018, arXiv:1705.08790),
    as the authors' reference ``lovasz_softmax(softmax(logits), labels, classes, per_image=False, ignore)``.

    Per class ``c``: errors ``m_i = |[y_i = c] - p_i(c)|`` over the non-ignored pixels of the whole batch, sorted in
    decreasing order, dotted with the Lovász gradient of the Jaccard loss. The loss is the mean over the classes
    present in the target (``classes="present"``) or over all classes (``"all"``). Class weights are not used.
    Computed for all classes at once (one sort of a (pixels, C) tensor); ignored pixels get error 0 and no
    foreground, which sorts them last and leaves every other term unchanged (no host sync for masking).
    """

    params = ("classes",)

    def __init__(self, classes: str = "present", **kw) -> None:
        super().__init__(**kw)
        if classes not in ("present", "all"):
            raise ValueError(f"lovasz: classes must be 'present' or 'all', got {classes!r}")
        self.classes = classes

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, target0 = self._valid_target(target)
        num_classes = logits.shape[1]
        prob = logits.softmax(dim=1).movedim(1, -1).reshape(-1, num_classes)  # (P, C)
        v = valid.reshape(-1, 1)
        fg = F.one_hot(target0.reshape(-1), num_classes).float() * v
        errors = torch.where(v, (fg - prob).abs(), torch.zeros_like(prob))
        errors_sorted, perm = errors.sort(dim=0, descending=True)
        grad = lovasz_grad(fg.gather(0, perm))
        per_class = (errors_sorted * grad).sum(0)
        if self.classes == "present":
            use = (fg.sum(0) > 0).float()
        else:
            use = torch.ones_like(per_class)
        return (per_class * use).sum() / use.sum().clamp_min(1)


class FocalLoss(SegLoss):
    """Softmax focal loss (Lin, Goyal, Girshick, He, Dollár, "Focal loss for dense object detection", ICCV 2017,
    arXiv:1708.02002, eq. 5 in its multi-class form): the mean over non-ignored pixels of
    ``-alpha[y] * (1 - p_y)^gamma * log p_y``, with ``alpha`` = the class weights (1 without). ``gamma = 0``
    without weights is plain cross-entropy. The mean is over the pixel count, not the alpha sum.
    """

    uses_class_weights = True
    params = ("gamma",)

    def __init__(self, gamma: float = 2.0, **kw) -> None:
        super().__init__(**kw)
        if float(gamma) < 0:
            raise ValueError(f"focal: gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, target0 = self._valid_target(target)
        logp = F.log_softmax(logits, dim=1).gather(1, target0.unsqueeze(1)).squeeze(1)
        focal = (1 - logp.exp()).clamp_min(0).pow(self.gamma)
        pixel = -focal * logp * self._pixel_weights(target0, valid)
        return pixel.sum() / valid.sum().clamp_min(1)


class WeightedSumLoss(nn.Module):
    """``sum_k weight_k * loss_k(logits, target)``; ``terms(logits, target)`` gives each unweighted term by name
    (for logging)."""

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.losses = nn.ModuleDict(losses)
        self.weights = dict(weights)

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {name: loss(logits, target) for name, loss in self.losses.items()}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        terms = self.terms(logits, target)
        return sum(self.weights[name] * value for name, value in terms.items())

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{k}: {v:g}" for k, v in self.weights.items())


LOSSES: dict[str, type[SegLoss]] = {
    "ce": CrossEntropyLoss,
    "ohem": OhemCrossEntropyLoss,
    "dice": DiceLoss,
    "lovasz": LovaszSoftmaxLoss,
    "focal": FocalLoss,
}


def _known(keys) -> str:
    return ", ".join(keys)


def _parse_one(item, where: str) -> tuple[str, float, dict]:
    """``(name, weight, params)`` of one spec entry (a name or a mapping); ValueError naming the bad key."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping):
        raise ValueError(
            f"{where}: expected a loss name or a mapping {{name: ..., weight: ...}}, got {type(item).__name__} "
            f"{item!r}; known losses: {_known(LOSSES)}"
        )
    item = dict(item)
    if "name" not in item:
        raise ValueError(f"{where}: missing key 'name' in {item!r}; known losses: {_known(LOSSES)}")
    name = str(item.pop("name")).strip().lower()
    if name not in LOSSES:
        raise ValueError(f"{where}: unknown loss name '{name}'; known losses: {_known(LOSSES)}")
    weight = item.pop("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ValueError(f"{where}: loss '{name}' weight must be a number, got {weight!r}")
    known = LOSSES[name].params
    for key in item:
        if key not in known:
            raise ValueError(
                f"{where}: unknown parameter '{key}' for loss '{name}'; known: {_known(('name', 'weight', *known))}"
            )
    return name, float(weight), item


def build_loss(spec=None, *, class_weights: Tensor | None = None, ignore_index: int = 255) -> nn.Module:
    """The loss module for ``spec`` (``model.loss``):

    - ``None`` or ``"ce"``: cross-entropy; any name in ``LOSSES``: that loss with its defaults;
    - a mapping ``{name: ohem, thresh: 0.9, weight: 1.0}``: that loss with those parameters (a weight other
      than 1 wraps it in a ``WeightedSumLoss``);
    - a list of mappings or names: their weighted sum, e.g. ``[{name: ce, weight: 1.0}, {name: lovasz,
      weight: 0.5}]``.

    Hydra's ``DictConfig``/``ListConfig`` are accepted (any Mapping/Sequence). ``class_weights`` (C,) go to the
    losses that use them (ce, ohem, focal); dice and lovasz ignore them. Unknown names or parameters raise a
    one-line ValueError naming the key and the known ones.
    """
    if spec is None:
        spec = "ce"
    where = "loss spec"

    def make(name: str, params: dict) -> SegLoss:
        try:
            return LOSSES[name](**params, class_weights=class_weights, ignore_index=ignore_index)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e

    if isinstance(spec, str | Mapping):
        name, weight, params = _parse_one(spec, where)
        loss = make(name, params)
        return loss if weight == 1.0 else WeightedSumLoss({name: loss}, {name: weight})
    if isinstance(spec, Sequence):
        if len(spec) == 0:
            raise ValueError(f"{where}: empty list; give at least one loss out of {_known(LOSSES)}")
        losses, weights = {}, {}
        for i, item in enumerate(spec):
            name, weight, params = _parse_one(item, f"{where}[{i}]")
            key, n = name, 1
            while key in losses:  # the same loss twice (e.g. two ohem thresholds): ohem, ohem_1
                key, n = f"{name}_{n}", n + 1
            losses[key], weights[key] = make(name, params), weight
        return WeightedSumLoss(losses, weights)
    raise ValueError(
        f"{where}: expected a loss name, a mapping or a list of mappings, got {type(spec).__name__} {spec!r}; "
        f"known losses: {_known(LOSSES)}"
    )
