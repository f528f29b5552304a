"""Prediction of images larger than memory: overlapping windows one band of rows at a time, blended, each finished
band of the class map handed on as soon as no later window touches it.

Memory holds one band of the input (window height x image width), the blended scores of that band (classes x
window height x width, float32) and ``window_batch`` windows, not the image: a 20,000 x 20,000 orthophoto runs in a
few GB. The windows, their order and the blending are :func:`seg.inference.windows` and
:func:`seg.inference.window_weights`, so with ``blend: flat`` the class map is the one ``slide_logits`` gives for
the whole image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from seg.data.raster import RowSource
from seg.inference import InferenceConfig, class_map, infer, window_weights, windows


def window_count(height: int, width: int, cfg: InferenceConfig) -> int:
    """How many windows :func:`predict_rows` runs on a ``height`` x ``width`` image (for a progress bar)."""
    return len(windows(height, width, cfg.window, cfg.stride))


def predict_rows(
    model: Callable[[Tensor], Tensor],
    source: RowSource,
    transform: Callable[..., dict],
    cfg: InferenceConfig,
    device: torch.device | str = "cpu",
    advance: Callable[[int], object] | None = None,
) -> Iterator[np.ndarray]:
    """Class-index rows (uint8, (h, W)) of ``source``, top to bottom, band by band.

    Args:
        model: in eval mode, returns logits at its input size.
        source: the image, read a band of rows at a time (:func:`seg.data.raster.open_rows`).
        transform: the run's validation transform (``transform(image=...)["image"]``); it must keep the size
            (normalisation, not resizing).
        cfg: ``mode: slide`` with its window, stride, ``window_batch`` and ``blend``; ``scales`` / ``flip`` are
            applied to each window (their probabilities averaged, then blended). ``input_scale`` must be 1.
        device: where the model runs.
        advance: called with the number of windows after each forward pass (a progress bar).
    """
    if cfg.mode != "slide":
        raise ValueError(f"predict_rows needs inference.mode=slide, got {cfg.mode!r}")
    if cfg.input_scale != 1.0:
        raise ValueError(
            f"inference.input_scale={cfg.input_scale:g}: a large image is predicted window by window at its own "
            "scale; resize it first or predict it with inference.mode=whole"
        )
    height, width = source.height, source.width
    boxes = windows(height, width, cfg.window, cfg.stride)
    rows = sorted({(y0, y1) for y0, y1, _, _ in boxes})
    cols = sorted({(x0, x1) for _, _, x0, x1 in boxes})
    win_h, win_w = rows[0][1] - rows[0][0], cols[0][1] - cols[0][0]
    weight = window_weights(win_h, win_w, cfg.blend).to(device)
    view = dataclasses.replace(cfg, mode="whole")  # each window is one image to infer()
    scores: Tensor | None = None  # (C, win_h, W): the blended scores of rows base .. base + win_h
    total = torch.zeros((win_h, width), device=device)
    base = 0
    for i, (y0, y1) in enumerate(rows):
        band = source.read(y0, y1)
        x = transform(image=band)["image"]
        if tuple(x.shape[-2:]) != (y1 - y0, width):
            raise ValueError(
                f"{source.path}: the validation transform turns a {width}x{y1 - y0} band into "
                f"{x.shape[-1]}x{x.shape[-2]}; window-by-window prediction needs a transform that keeps the size"
            )
        for start in range(0, len(cols), cfg.window_batch):
            chunk = cols[start : start + cfg.window_batch]
            batch = torch.stack([x[:, :, x0:x1] for x0, x1 in chunk]).to(device)
            out = infer(model, batch, view)
            if scores is None:
                scores = out.new_zeros((out.shape[1], win_h, width))
            r0, r1 = y0 - base, y1 - base
            for (x0, x1), o in zip(chunk, out, strict=True):
                scores[:, r0:r1, x0:x1] += o * weight  # flat: times 1.0, exactly o
                total[r0:r1, x0:x1] += weight
            if advance is not None:
                advance(len(chunk))
        done = (rows[i + 1][0] if i + 1 < len(rows) else height) - base  # rows no later window touches
        yield class_map(scores[:, :done] / total[:done], dim=0).to(torch.uint8).cpu().numpy()
        # the rows the next band of windows overlaps move to the top, the rest is cleared
        scores = torch.cat([scores[:, done:], scores.new_zeros((scores.shape[0], done, width))], dim=1)
        total = torch.cat([total[done:], total.new_zeros((done, width))])
        base += done
