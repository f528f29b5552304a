"""Prediction entry point: ``python -m seg.predict ckpt_path=PATH input=IMAGE|FOLDER|GLOB [output=FOLDER]``.

Writes one mask per image under the same relative name (``.png``) at the image's resolution: a palette PNG of
class indices with the dataset's colours (``format=index``), or Cityscapes labelIds for the official test server
(``format=labelIds``); ``overlay=true`` adds ``overlay/<name>.jpg``. An unreadable image is reported and skipped.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from seg.checkpoint import LoadedModel, check_num_classes, load_model, run_inference_defaults
from seg.data.base import IGNORE_INDEX
from seg.data.cityscapes import LABELS, CityscapesSegmentation
from seg.data.io import read_image, write_index_mask
from seg.hydra_utils import entry_point
from seg.inference import InferenceConfig, auto_flag, infer
from seg.viz import overlay

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
FORMATS = ("index", "labelIds")


def list_inputs(spec: str | Path) -> list[tuple[Path, Path]]:
    """(image, output name relative to the output folder) for one file, a folder (recursively) or a glob."""
    path = Path(spec)
    if path.is_file():
        return [(path, Path(path.name))]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"input folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return [(p, p.relative_to(path)) for p in files]
    if glob.has_magic(str(spec)):
        files = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"input pattern {spec} matches no files")
        base = Path(*[part for part in Path(spec).parts[: _first_magic(Path(spec).parts)]])
        return [(p, p.relative_to(base)) for p in files]
    raise FileNotFoundError(f"input {spec} does not exist (expected an image, a folder or a glob pattern)")


def _first_magic(parts: tuple[str, ...]) -> int:
    return next(i for i, part in enumerate(parts) if glob.has_magic(part))


def train_to_label_ids() -> np.ndarray:
    """256-entry uint8 lookup table Cityscapes trainId -> labelId (the test server's ids); anything else -> 0."""
    lut = np.zeros(256, dtype=np.uint8)
    for _, label_id, train_id, _ in LABELS:
        if train_id != IGNORE_INDEX:
            lut[train_id] = label_id
    return lut


@dataclass
class Predictions:
    """What a predict run wrote and what it skipped (path, reason)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


class Predictor:
    """Image (uint8 HxWx3 RGB) -> class-index mask (uint8 HxW) at the image's resolution."""

    def __init__(self, loaded: LoadedModel, transform, inference: InferenceConfig, device: torch.device) -> None:
        self.module = loaded.module.to(device).eval()
        self.transform, self.inference, self.device = transform, inference, device

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = self.transform(image=image)["image"].unsqueeze(0).to(self.device)
        scores = infer(self.module, x, self.inference)
        return scores.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def predict(cfg: DictConfig, console: Console | None = None) -> Predictions:
    """Write a mask (and optionally an overlay) for every input image; report and skip unreadable ones."""
    console = console or Console(stderr=True)
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}; expected one of {FORMATS}")
    inputs = list_inputs(cfg.input)
    loaded = load_model(cfg.ckpt_path, cfg.paths.output_dir, channels_last=auto_flag(cfg.inference.channels_last))
    data_cfg = cfg.get("data") or (loaded.run_cfg.data if loaded.run_cfg is not None else None)
    if data_cfg is None:
        raise ValueError(f"{cfg.ckpt_path} has no training run folder: name its dataset (data=NAME) for the palette")
    dataset_cls = get_class(data_cfg.dataset._target_)
    check_num_classes(loaded, dataset_cls.__name__, len(dataset_cls.classes))
    if cfg.format == "labelIds" and not issubclass(dataset_cls, CityscapesSegmentation):
        raise ValueError(f"format=labelIds is Cityscapes' test-server format; the model is for {dataset_cls.__name__}")
    inference = InferenceConfig.from_options(cfg.inference, run_inference_defaults(loaded.run_cfg))
    predictor = Predictor(loaded, instantiate(data_cfg.val_transform), inference, _device(cfg.device))
    label_ids = train_to_label_ids()
    out = Path(cfg.output)
    result = Predictions()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        for src, rel in progress.track(inputs, description=f"predict ({inference.describe()})"):
            try:
                image = read_image(src)
            except (OSError, ValueError) as e:
                result.skipped.append((src, str(e)))
                progress.console.print(f"skipped {e}", markup=False, highlight=False, soft_wrap=True)
                continue
            mask = predictor(image)
            dst = out / rel.with_suffix(".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if cfg.format == "labelIds":
                cv2.imwrite(str(dst), label_ids[mask])
            else:
                write_index_mask(dst, mask, dataset_cls.palette)
            if cfg.overlay:
                blend = overlay(image, mask, dataset_cls.palette, cfg.overlay_alpha)
                (out / "overlay" / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out / "overlay" / rel.with_suffix(".jpg")), blend[..., ::-1])
            result.written.append(dst)
    if not result.written:
        raise ValueError(f"none of the {len(inputs)} input images could be read (first: {result.skipped[0][1]})")
    skipped = f", skipped {len(result.skipped)} unreadable" if result.skipped else ""
    console.print(f"wrote {len(result.written)} masks to {out}{skipped}", markup=False, soft_wrap=True)
    return result


main = entry_point("predict", predict)

if __name__ == "__main__":
    main()
