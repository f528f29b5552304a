"""Prediction entry point: ``python -m seg.predict ckpt_path=PATH input=IMAGE|FOLDER|GLOB [output=FOLDER]``.

Writes one mask per image under the same relative name (``.png``) at the image's resolution: a palette PNG of
class indices with the dataset's colours (``format=index``), or Cityscapes labelIds for the official test server
(``format=labelIds``); ``overlay=true`` adds ``overlay/<name>.jpg``. An unreadable image is reported and skipped.
An image larger than ``max_whole_pixels`` (or under ``inference.mode=slide`` any image, for a model that does not
rescale its input) is predicted window by window, one band of rows at a time (:mod:`seg.large_image`), with a
progress bar over its windows; its class map is written band by band as a tiled TIFF (``<name>.tif``) when it has
more than ``tiff_above_pixels`` pixels.
``input=clip.mp4`` (any video OpenCV reads) writes ``<output>/<clip>.mp4``: the coloured masks over the frames at the
video's size and frame rate, and reports frames per second. The net runs on the fastest path that keeps the
accuracy on the machine at hand (bf16 autocast on a CPU with bf16 units; compiled for a video of at least
``COMPILE_VIDEO_FRAMES`` frames); ``metrics.json`` in the run folder says which, with the throughput. Pixels are
read as stored (no EXIF rotation), as in training; images that carry a rotation tag are named in a warning.
"""

from __future__ import annotations

import dataclasses
import glob
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from seg.data.base import IGNORE_INDEX
from seg.data.cityscapes import LABELS, CityscapesSegmentation
from seg.data.io import (
    IMAGE_SUFFIXES,
    check_image_options,
    warn_orientation_tags,
    write_image,
    write_index_mask,
)
from seg.data.raster import RowSource, open_rows, write_tiled_mask
from seg.inference import TRAINER_PRECISION, InferenceConfig, auto_flag, class_map, infer, runtime_record
from seg.large_image import predict_rows, window_count
from seg.runs.config import run_inference_defaults
from seg.runs.loaded import LoadedModel, check_num_classes, data_config, load_model
from seg.runs.provenance import provenance
from seg.utils.atomic import write_json_atomic
from seg.utils.cli import entry_point
from seg.utils.progress import progress_bar
from seg.viz import overlay

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
FORMATS = ("index", "labelIds")
# inference.compile=auto compiles the net for a video of at least this many frames: compiling for one frame size
# took 10-30 s on a 2-core CPU and saves about 11 ms a CamVid frame under bf16; a 3,030-frame clip ran 1.2x faster,
# the cold compile included (benchmarks/RESULTS.md section 26)
COMPILE_VIDEO_FRAMES = 2000


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
    frames: int = 0  # video input: frames predicted
    fps: float = 0.0  # video input: frames predicted per second (reading and writing included)
    runtime: dict = field(default_factory=dict)  # how the net ran (metrics.json's keys)


class Predictor:
    """Image (uint8 HxWx3 RGB) -> class-index mask (uint8 HxW) at the image's resolution."""

    def __init__(self, loaded: LoadedModel, transform, inference: InferenceConfig, device: torch.device) -> None:
        self.module = loaded.module.to(device).eval()
        self.transform, self.inference, self.device = transform, inference, device

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = self.transform(image=image)["image"].unsqueeze(0).to(self.device)
        scores = infer(self.module, x, self.inference)
        return class_map(scores)[0].to(torch.uint8).cpu().numpy()

    def windowed(self) -> InferenceConfig:
        """The inference options for window-by-window prediction: ``slide`` with the run's window."""
        if self.inference.mode == "slide":
            return self.inference
        larger = "an image larger than max_whole_pixels is predicted window by window"
        if self.inference.window is None:
            raise ValueError(f"{larger} and the run records no training crop: set inference.window=[H,W]")
        if self.inference.input_scale != 1.0:
            raise ValueError(
                f"{larger} at its own scale, and this model runs at input_scale {self.inference.input_scale:g}: "
                "resize the image first, or raise max_whole_pixels to predict it whole"
            )
        return dataclasses.replace(self.inference, mode="slide", stride=None)

    def rows(self, source: RowSource, advance=None):
        """Class-index rows of ``source``, top to bottom (:func:`seg.large_image.predict_rows`)."""
        return predict_rows(self.module, source, self.transform, self.windowed(), self.device, advance)


def _device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def video_frame_count(path: Path) -> int:
    """The frame count a video's container states (0 when it states none or cannot be opened)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))) if capture.isOpened() else 0
    finally:
        capture.release()


def predict(cfg: DictConfig, console: Console | None = None) -> Predictions:
    """Write a mask (and optionally an overlay) for every input image; report and skip unreadable ones."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # provenance.json: the code, libraries, machine, precision and command of this run, completed at its end
    with provenance(out_dir, "predict") as record:
        result = _predict(cfg, console or Console(stderr=True))
        record.update(precision=TRAINER_PRECISION[result.runtime["precision"]])
    return result


def _predict(cfg: DictConfig, console: Console) -> Predictions:
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}; expected one of {FORMATS}")
    video = Path(str(cfg.input)).suffix.lower() in VIDEO_SUFFIXES
    inputs = [] if video else list_inputs(cfg.input)
    if video and not Path(str(cfg.input)).is_file():
        raise FileNotFoundError(f"input {cfg.input} does not exist (a video file was expected)")
    loaded = load_model(cfg.ckpt_path, cfg.paths.output_dir, channels_last=auto_flag(cfg.inference.channels_last))
    data_cfg = data_config(cfg, loaded)  # the palette and normalisation
    root = "." if OmegaConf.is_missing(data_cfg, "root") else data_cfg.root  # no dataset is read here
    dataset_cls, classes, palette = instantiate(data_cfg, root=root).dataset_meta()
    check_num_classes(loaded, dataset_cls.__name__, len(classes))
    if cfg.format == "labelIds" and not issubclass(dataset_cls, CityscapesSegmentation):
        raise ValueError(f"format=labelIds is Cityscapes' test-server format; the model is for {dataset_cls.__name__}")
    device = _device(cfg.device)
    defaults = run_inference_defaults(loaded.run_cfg, device.type)
    # compile=auto: only a long video of one frame size pays back the compile time
    defaults["compile"] = video and video_frame_count(Path(str(cfg.input))) >= COMPILE_VIDEO_FRAMES
    inference = InferenceConfig.from_options(cfg.inference, defaults)
    folded = loaded.fold_batchnorm() if inference.fold_batchnorm else 0
    if inference.compile:
        loaded.compile()
    predictor = Predictor(loaded, instantiate(data_cfg.val_transform), inference, device)
    runtime = {"device": device.type, "inference": inference.describe(), **runtime_record(inference, folded)}
    console.print(f"predicting on {device.type}: {runtime['runtime']}", markup=False, soft_wrap=True)
    # images deeper than 8 bits or with a fourth band: the training run's rule (data.image_scaling, data.extra_bands)
    extra_bands = data_cfg.get("extra_bands") or "error"
    scaling = check_image_options(data_cfg.get("image_scaling"), extra_bands)
    out = Path(cfg.output)
    if video:
        result = predict_video(Path(str(cfg.input)), out, predictor, palette, cfg.overlay_alpha, console)
        return write_report(result, runtime, cfg)
    start = time.perf_counter()
    warn_orientation_tags([src for src, _ in inputs])
    label_ids = train_to_label_ids() if cfg.format == "labelIds" else None
    result = Predictions()
    with progress_bar(console) as progress:
        for src, rel in progress.track(inputs, description=f"predict ({inference.describe()})"):
            try:
                source = open_rows(src, scaling, extra_bands)
            except (OSError, ValueError) as e:
                result.skipped.append((src, str(e)))
                progress.console.print(f"skipped {e}", markup=False, highlight=False, soft_wrap=True)
                continue
            try:
                result.written.append(predict_image(source, out, rel, predictor, cfg, palette, label_ids, progress))
            finally:
                source.close()
    if not result.written:
        raise ValueError(f"none of the {len(inputs)} input images could be read (first: {result.skipped[0][1]})")
    skipped = f", skipped {len(result.skipped)} unreadable" if result.skipped else ""
    console.print(f"wrote {len(result.written)} masks to {out}{skipped}", markup=False, soft_wrap=True)
    result.fps = len(result.written) / (time.perf_counter() - start)
    return write_report(result, runtime, cfg)


def write_report(result: Predictions, runtime: dict, cfg: DictConfig) -> Predictions:
    """``metrics.json`` in the predict run folder: what was written and skipped, the throughput, how the net ran."""
    result.runtime = runtime
    report = {
        "input": str(cfg.input),
        "output": str(cfg.output),
        "written": len(result.written),
        "skipped": len(result.skipped),
        "frames": result.frames,
        "per_second": round(result.fps, 3),  # images (or video frames) a second, reading and writing included
        **runtime,
    }
    write_json_atomic(Path(cfg.paths.output_dir) / "metrics.json", report)
    return result


def predict_image(
    source: RowSource,
    out: Path,
    rel: Path,
    predictor: Predictor,
    cfg: DictConfig,
    palette: np.ndarray,
    label_ids: np.ndarray | None,
    progress,
) -> Path:
    """Write the mask of one image (``out / rel`` with the mask's suffix) and its overlay; return the mask's path.

    Images up to ``cfg.max_whole_pixels`` go through ``predictor`` in memory (under ``inference.mode=slide`` only
    when the model rescales its input); the others window by window, a band of rows at a time, written as a tiled
    TIFF above ``cfg.tiff_above_pixels`` (no overlay then: it would need the whole image). ``label_ids``: the
    trainId -> labelId table of ``format=labelIds``, else None.
    """
    height, width = source.height, source.width
    tiled = height * width > cfg.tiff_above_pixels
    dst = out / rel.with_suffix(".tif" if tiled else ".png")
    image = None
    inference = predictor.inference
    # in memory: images that fit, under whole-image inference or for a model that rescales its input (windows
    # then slide over the rescaled image, seg.inference.slide_logits); the rest window by window, band by band
    fits = height * width <= cfg.max_whole_pixels
    if fits and (inference.mode == "whole" or inference.input_scale != 1.0):
        image = source.read(0, height)
        mask = predictor(image)
    else:
        windowed = predictor.windowed()
        description = f"  windows of {source.path.name} ({windowed.describe()})"
        task = progress.add_task(description, total=window_count(height, width, windowed))
        rows = predictor.rows(source, advance=lambda n: progress.advance(task, n))
        try:
            if tiled:
                rows = (label_ids[r] for r in rows) if label_ids is not None else rows
                write_tiled_mask(dst, rows, height, width, palette if label_ids is None else None)
                if cfg.overlay:
                    progress.console.print(f"no overlay for {source.path}: its mask is a tiled TIFF", markup=False)
                return dst
            mask = np.concatenate(list(rows))
        finally:
            progress.remove_task(task)
    if label_ids is not None:
        write_image(dst, label_ids[mask])
    else:
        write_index_mask(dst, mask, palette)
    if cfg.overlay:
        image = source.read(0, height) if image is None else image
        write_image(out / "overlay" / rel.with_suffix(".jpg"), overlay(image, mask, palette, cfg.overlay_alpha))
    return dst


def predict_video(
    src: Path, out: Path, predictor: Predictor, palette: np.ndarray, alpha: float, console: Console
) -> Predictions:
    """``out/<src stem>.mp4``: each frame with its coloured mask blended in, same size and frame rate."""
    capture = cv2.VideoCapture(str(src))
    if not capture.isOpened():
        raise ValueError(f"{src}: cannot open the video (corrupt, or a codec OpenCV cannot read)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out.mkdir(parents=True, exist_ok=True)
    dst = out / f"{src.stem}.mp4"
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        capture.release()
        raise OSError(f"{dst}: cannot open an mp4v video writer")
    result, start = Predictions(), time.perf_counter()
    try:
        with progress_bar(console) as progress:
            task = progress.add_task(f"predict {src.name}", total=total)
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                writer.write(overlay(rgb, predictor(rgb), palette, alpha)[..., ::-1].copy())
                result.frames += 1
                progress.advance(task)
    finally:
        capture.release()
        writer.release()
    if result.frames == 0:
        raise ValueError(f"{src}: no frame could be read")
    result.fps = result.frames / (time.perf_counter() - start)
    result.written.append(dst)
    console.print(
        f"wrote {dst}: {result.frames} frames at {fps:g} fps, predicted at {result.fps:.1f} frames/s",
        markup=False,
        soft_wrap=True,
    )
    return result


main = entry_point("predict", predict)

if __name__ == "__main__":
    main()
