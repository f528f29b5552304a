"""A Hydra callback that records each job's status in ``job_status.json``, so sweep reports can tell a failed
run from an unfinished one (Hydra itself keeps a failed job's exception only in the launching process)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from seg.atomic import write_json_atomic

STATUS_FILE = "job_status.json"


def _writes(config: DictConfig) -> bool:
    """Only the job's own process writes: not Lightning's DDP children (output_subdir null), not rank > 0."""
    rank = int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))
    return rank == 0 and config.hydra.output_subdir is not None


class JobStatusCallback(Callback):
    """Writes {"status": "running"} at job start and "completed" / "failed" (with the error) at job end."""

    def __init__(self) -> None:
        self._start = 0.0

    def _write(self, config: DictConfig, record: dict) -> None:
        write_json_atomic(Path(config.hydra.runtime.output_dir) / STATUS_FILE, record)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _writes(config):
            return
        self._start = time.time()
        self._write(config, {"status": "running", "host": socket.gethostname(), "pid": os.getpid()})

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not _writes(config):
            return
        record: dict = {"status": job_return.status.name.lower(), "elapsed_s": round(time.time() - self._start, 1)}
        if record["status"] == "failed":
            error = job_return._return_value  # the exception; .return_value would re-raise it
            record["error"] = f"{type(error).__name__}: {error}"
        self._write(config, record)
