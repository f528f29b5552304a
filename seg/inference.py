"""Whole-image or sliding-window prediction, optionally multi-scale + flip: shared by validation, evaluate, predict."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from seg.utils.sizes import pair

MODES = ("whole", "slide")
BLENDS = ("flat", "linear", "gaussian")
PRECISIONS = ("32", "bf16", "16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}
# an inference precision as Lightning's Trainer (and provenance.json) names it
TRAINER_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


@dataclass(frozen=True)
class InferenceConfig:
    """How images become class scores: the whole image or a sliding window, each optionally multi-scale + flipped.

    ``precision=None`` leaves autocast as the caller set it (Lightning's precision plugin during validation).
    """

    mode: str = "whole"
    window: tuple[int, int] | None = None  # (H, W) of a sliding window
    stride: tuple[int, int] | None = None  # (H, W) step between windows; None = 2/3 of the window
    window_batch: int = 8  # windows per forward pass
    blend: str = "flat"  # how overlapping windows are weighted: flat | linear | gaussian (window_weights)
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    precision: str | None = None
    channels_last: bool = False
    input_scale: float = 1.0  # resize the input by this factor first (a model trained on downscaled images)
    # seg-evaluate / seg-predict fold BatchNorm into the convolutions when they load the model
    # (seg.models.support.fold_bn); the validation during training never does
    fold_batchnorm: bool = False
    # seg-evaluate / seg-predict compile the net (Inductor with freezing, seg.models.support.compile) when set
    compile: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once (Hydra passes ListConfig and ints)
        set_(self, "precision", None if self.precision is None else str(self.precision))
        set_(self, "window", pair(self.window))
        set_(self, "stride", pair(self.stride))
        set_(self, "scales", tuple(float(s) for s in self.scales))
        set_(self, "channels_last", bool(self.channels_last))
        set_(self, "input_scale", float(self.input_scale))
        set_(self, "fold_batchnorm", bool(self.fold_batchnorm))
        set_(self, "compile", bool(self.compile))
        if self.input_scale <= 0:
            raise ValueError(f"inference.input_scale={self.input_scale}; expected a positive factor")
        if self.mode not in MODES:
            raise ValueError(f"inference.mode={self.mode!r}; expected one of {MODES}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"inference.precision={self.precision!r}; expected one of {PRECISIONS}")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"inference.scales={list(self.scales)}; expected positive factors")
        if self.blend not in BLENDS:
            raise ValueError(f"inference.blend={self.blend!r}; expected one of {BLENDS}")
        if self.window_batch < 1:
            raise ValueError(f"inference.window_batch={self.window_batch}; expected >= 1")
        if self.mode == "slide":
            if self.window is None or min(self.window) < 1:
                raise ValueError(f"inference.mode=slide needs a positive inference.window (H, W), got {self.window}")
            if self.stride is None:
                set_(self, "stride", tuple(max(1, (2 * w + 2) // 3) for w in self.window))
            if min(self.stride) < 1 or any(s > w for s, w in zip(self.stride, self.window, strict=True)):
                raise ValueError(
                    f"inference.stride={list(self.stride)} must be >= 1 and at most the window {list(self.window)} "
                    "(a larger step leaves pixels uncovered)"
                )

    @classmethod
    def from_options(cls, options: Mapping, defaults: Mapping | None = None) -> InferenceConfig:
        """Build from a config node; a value ``"auto"`` takes ``defaults[key]`` (e.g. what the training run used).

        ``precision: null`` in a config means ``auto`` too: an entry point has no caller's autocast to leave it to.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown inference option(s) {unknown}; expected {sorted(known)}")
        defaults = defaults or {}

        def is_auto(key: str, value: object) -> bool:
            return (isinstance(value, str) and value == "auto") or (key == "precision" and value is None)

        # "auto" without a default for that key keeps the field's own default
        values = {
            k: defaults[k] if is_auto(k, v) else v for k, v in options.items() if not is_auto(k, v) or k in defaults
        }
        return cls(**values)

    @property
    def single_view(self) -> bool:
        """One forward view per image: the scores are logits (else averaged probabilities)."""
        return self.scales == (1.0,) and not self.flip

    def describe(self) -> str:
        """A short label such as ``slide 64x64/32x32, scales 0.5-1.75 + flip`` (how images become scores)."""
        text = self.mode
        if self.mode == "slide":
            text += f" {self.window[0]}x{self.window[1]}/{self.stride[0]}x{self.stride[1]}"
            text += f" {self.blend}" if self.blend != "flat" else ""
        if self.input_scale != 1.0:
            text += f" at x{self.input_scale:g}"
        if self.scales != (1.0,):
            text += f", scales {min(self.scales):g}-{max(self.scales):g}"
        return text + (" + flip" if self.flip else "")


def class_map(scores: Tensor, dim: int = 1) -> Tensor:
    """The class of each pixel: the index of the highest score along ``dim`` (the first on ties, as ``argmax``).

    ``max(...).indices`` rather than ``argmax``: on a 2-core CPU, 11 class scores of a 360 x 480 frame in NCHW
    take 2.4 ms against argmax's 14 ms (argmax reduces over the strided class dimension slowly; channels_last
    scores take 2.4 against 3.1 ms), with the same indices (benchmarks/RESULTS.md section 26).
    """
    return scores.max(dim=dim).indices


def runtime_record(cfg: InferenceConfig, folded: int = 0) -> dict:
    """How the net runs, as ``metrics.json`` of seg-evaluate and seg-predict records it: ``precision``,
    ``batchnorm_folded``, ``compiled`` and a ``runtime`` label such as ``compiled bf16 autocast, channels_last,
    BatchNorm folded (55)``."""
    precision = {"32": "fp32", "bf16": "bf16 autocast", "16": "fp16 autocast", None: "caller's precision"}
    parts = [("compiled " if cfg.compile else "eager ") + precision[cfg.precision]]
    parts += ["channels_last"] if cfg.channels_last else []
    parts += [f"BatchNorm folded ({folded})"] if folded else []
    label = ", ".join(parts)
    return {"precision": cfg.precision, "batchnorm_folded": folded, "compiled": cfg.compile, "runtime": label}


def auto_flag(value: object) -> bool | None:
    """A config flag that may be ``"auto"``: None (keep what the training run used) or the flag."""
    return None if isinstance(value, str) and value == "auto" else bool(value)


def windows(height: int, width: int, window: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, ...]]:
    """(y0, y1, x0, x1) of every window; the last row and column sit flush with the border (mmseg's grid).

    A side shorter than the window gives one window as large as that side, so all windows share one size.
    """
    (wh, ww), (sh, sw) = window, stride
    rows = max(height - wh + sh - 1, 0) // sh + 1
    cols = max(width - ww + sw - 1, 0) // sw + 1
    boxes = []
    for r in range(rows):
        y1 = min(r * sh + wh, height)
        y0 = max(y1 - wh, 0)
        for c in range(cols):
            x1 = min(c * sw + ww, width)
            x0 = max(x1 - ww, 0)
            boxes.append((y0, y1, x0, x1))
    return boxes


def window_weights(height: int, width: int, blend: str = "flat") -> Tensor:
    """(height, width) float32 weights of one window's scores where windows overlap, all positive.

    ``flat``: 1 everywhere (a plain average of the overlapping windows, mmsegmentation's rule). ``linear``: a
    pyramid, 1 at the centre falling to 1 / ceil(n / 2) at the border. ``gaussian``: a Gaussian of sigma 1/8 of the side
    (nnU-Net's rule), at least 1e-3: a window's border, where it sees least context, counts least.
    """

    def ramp(n: int) -> Tensor:
        i = torch.arange(n, dtype=torch.float32)
        if blend == "linear":
            return torch.minimum(i + 1, n - i) / ((n + 1) // 2)
        sigma = max(n / 8, 1e-6)
        return torch.exp(-((i - (n - 1) / 2) ** 2) / (2 * sigma**2)).clamp_min(1e-3)

    if blend == "flat":
        return torch.ones(height, width)
    if blend not in BLENDS:
        raise ValueError(f"blend={blend!r}; expected one of {BLENDS}")
    return ramp(height)[:, None] * ramp(width)[None, :]


def slide_logits(model: Callable[[Tensor], Tensor], images: Tensor, cfg: InferenceConfig) -> Tensor:
    """Logits from overlapping windows, ``cfg.window_batch`` windows per forward pass, overlaps averaged with the
    weights of ``cfg.blend`` (:func:`window_weights`)."""
    b, _, h, w = images.shape
    boxes = windows(h, w, cfg.window, cfg.stride)
    weight = window_weights(boxes[0][1] - boxes[0][0], boxes[0][3] - boxes[0][2], cfg.blend).to(images.device)
    total = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    for y0, y1, x0, x1 in boxes:
        total[0, 0, y0:y1, x0:x1] += weight
    crops = [(i, box) for i in range(b) for box in boxes]
    logits: Tensor | None = None
    for start in range(0, len(crops), cfg.window_batch):
        chunk = crops[start : start + cfg.window_batch]
        batch = torch.cat([images[i : i + 1, :, y0:y1, x0:x1] for i, (y0, y1, x0, x1) in chunk])
        out = _forward(model, batch, cfg).float()
        if logits is None:
            logits = out.new_zeros((b, out.shape[1], h, w))
        for (i, (y0, y1, x0, x1)), o in zip(chunk, out, strict=True):
            logits[i, :, y0:y1, x0:x1] += o * weight  # flat: times 1.0, exactly o
    return logits / total


def _forward(model: Callable[[Tensor], Tensor], x: Tensor, cfg: InferenceConfig) -> Tensor:
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x)


def _view_logits(model: Callable[[Tensor], Tensor], images: Tensor, cfg: InferenceConfig) -> Tensor:
    if cfg.mode == "slide":
        return slide_logits(model, images, cfg)
    return _forward(model, images, cfg).float()


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(height, width)`` times ``scale``, each side rounded half up and at least 1."""
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def rescale(images: Tensor, scale: float) -> Tensor:
    """``images`` resized by ``scale`` (bilinear, :func:`scaled_size`): what ``input_scale`` does to a model's
    input."""
    if scale == 1.0:
        return images
    return _resize(images, scaled_size(*images.shape[-2:], scale))


def _autocast(cfg: InferenceConfig, device: torch.device):
    if cfg.precision is None:
        return nullcontext()
    if cfg.precision == "32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[cfg.precision])


def infer(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    cfg: InferenceConfig | None = None,
    out_size: Sequence[int] | None = None,
) -> Tensor:
    """Float32 class scores (B, C, *out_size) of normalised images (B, 3, H, W); :func:`class_map` (the argmax over
    C) is the prediction.

    A single view returns logits. Multi-scale / flip views average softmax probabilities, each view's logits first
    resized to ``out_size`` (default: the input size), as mmsegmentation's test-time augmentation does.
    ``cfg.input_scale`` resizes the images first (the scale a model was trained at), views and windows then work
    on the resized images, and the scores still come back at ``out_size``: the label is never resized.
    ``model`` must be in eval mode and return logits at its input size.
    """
    cfg = cfg or InferenceConfig()
    size = tuple(int(s) for s in (out_size if out_size is not None else images.shape[-2:]))
    images = rescale(images, cfg.input_scale)
    h, w = images.shape[-2:]
    with torch.no_grad(), _autocast(cfg, images.device):
        if cfg.single_view:
            return _resize(_view_logits(model, images, cfg), size)
        total: Tensor | None = None
        for scale in cfg.scales:
            scaled = _resize(images, scaled_size(h, w, scale))
            for flip in (False, True) if cfg.flip else (False,):
                view = scaled.flip(-1) if flip else scaled
                logits = _view_logits(model, view, cfg)
                if flip:
                    logits = logits.flip(-1)
                probs = _resize(logits, size).softmax(dim=1)
                total = probs if total is None else total + probs
        return total / (len(cfg.scales) * (2 if cfg.flip else 1))
