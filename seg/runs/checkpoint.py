"""Checkpoint files of a run: written atomically and read safely during training (Lightning's checkpoint I/O),
and the newest one found under a folder. Everything loads with ``torch.load(weights_only=True)``; the model is
rebuilt from a checkpoint by :mod:`seg.runs.loaded`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from seg.models.support.weights import safe_load
from seg.runs.config import RUN_CONFIG
from seg.utils.atomic import atomic_write

__all__ = ["AtomicCheckpointIO", "newest_checkpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints with :func:`seg.utils.atomic.atomic_write` and reads them with ``weights_only=True`` only.

    Lightning's own ``TorchCheckpointIO`` stages the file in the system temporary folder and moves it: a rename
    only when that folder shares the checkpoint's filesystem (otherwise a copy in place, which a kill can cut
    short), and without fsync.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        # a diverging run can poison weights or BatchNorm statistics a step before its loss turns NaN
        bad = [
            k
            for k, v in checkpoint.get("state_dict", {}).items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
        ]
        if bad:
            raise FloatingPointError(
                f"training diverged: the weights at global step {checkpoint.get('global_step')} hold NaN or Inf "
                f"({bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); not writing {path}, the last "
                "checkpoint written is kept"
            )
        with atomic_write(path) as f:
            torch.save(checkpoint, f)

    def __init__(self, preloaded: tuple[str | Path, dict] | None = None) -> None:
        super().__init__()
        # (path, checkpoint) already read by seg.train to check it before the model is built: served once,
        # so a resume reads the file once
        self._preloaded = preloaded

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if self._preloaded is not None and Path(self._preloaded[0]).resolve() == Path(path).resolve():
            checkpoint, self._preloaded = self._preloaded[1], None
            return checkpoint
        # whatever the caller asks, never unpickle arbitrary objects (a checkpoint may come from anywhere)
        return safe_load(path)


def newest_checkpoint(folder: str | Path) -> Path | None:
    """``last.ckpt`` (else the newest ``.ckpt``) of the run folder under ``folder`` whose checkpoint was written
    last; only run folders with ``.hydra/config.yaml`` count. None when there is none."""
    ckpts = [p for p in Path(folder).glob("**/checkpoints/*.ckpt") if (p.parents[1] / RUN_CONFIG).is_file()]
    if not ckpts:
        return None
    newest = max(ckpts, key=lambda p: p.stat().st_mtime)
    last = newest.parent / "last.ckpt"
    return last if last.is_file() else newest
