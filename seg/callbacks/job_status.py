"""A Hydra callback that records each job's status in ``job_status.json``, so sweep reports can tell a failed
run from an unfinished one (Hydra itself keeps a failed job's exception only in the launching process).

A job ended by SIGTERM (``scancel``, a time limit, preemption, ``kill``) is recorded as failed at the signal, since
the process may be killed before Hydra's end-of-job hook runs. Under SLURM the record carries the job id, which
the sweep report uses to ask the scheduler (``sacct``) for the job's final state.
"""

from __future__ import annotations

import os
import signal
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


def slurm_job_id() -> str | None:
    """The job id as squeue and sacct show it (``123_4`` for an array task), or None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


class JobStatusCallback(Callback):
    """Writes {"status": "running"} at job start and "completed" / "failed" (with the error) at job end or at
    SIGTERM."""

    def __init__(self) -> None:
        self._start = 0.0
        self._path: Path | None = None
        self._job: dict = {}
        self._previous_handler: Any = None
        self._installed = False

    def _write(self, record: dict) -> None:
        assert self._path is not None
        write_json_atomic(self._path, {**record, **self._job})

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        elapsed = round(time.time() - self._start, 1)
        error = f"SIGTERM after {elapsed} s: cancelled (scancel), past its time limit, preempted or killed"
        self._write({"status": "failed", "elapsed_s": elapsed, "error": error})
        previous = self._previous_handler
        if callable(previous):  # Lightning's and submitit's handlers chain the same way
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):  # end the process as SIGTERM would have without this hook
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _writes(config):
            return
        self._start = time.time()
        self._path = Path(config.hydra.runtime.output_dir) / STATUS_FILE
        self._job = {"host": socket.gethostname(), "pid": os.getpid()}
        if (job_id := slurm_job_id()) is not None:
            self._job["slurm_job_id"] = job_id
        self._write({"status": "running"})
        try:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        except ValueError:  # not the main thread: signals cannot be caught here
            self._installed = False

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not _writes(config):
            return
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._installed = False
        record: dict = {"status": job_return.status.name.lower(), "elapsed_s": round(time.time() - self._start, 1)}
        if record["status"] == "failed":
            error = job_return._return_value  # the exception; .return_value would re-raise it
            record["error"] = f"{type(error).__name__}: {error}"
        self._write(record)
