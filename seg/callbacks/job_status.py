"""A Hydra callback that records each job's status in ``job_status.json``, so sweep reports can tell a failed
run from an unfinished one (Hydra itself keeps a failed job's exception only in the launching process).

A job ended by SIGTERM (``scancel``, a time limit, preemption, ``kill``) is recorded as failed at the signal, since
the process may be killed before Hydra's end-of-job hook runs; one stopped by SIGINT (Ctrl-C) as interrupted. Both
records name the signal, the seconds since the job started and the newest resumable checkpoint (its path and
step, as :class:`seg.callbacks.LastCheckpoint` reports them through :func:`record_checkpoint`), and an interrupted
job ends with the command that resumes it. Under SLURM the record carries the job id, which the sweep report uses
to ask the scheduler (``sacct``) for the job's final state.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from seg.utils.atomic import write_json_atomic
from seg.utils.cli import LAST_ERROR

STATUS_FILE = "job_status.json"

_last_checkpoint: dict[str, Any] = {}  # this process's newest resumable checkpoint: {"path": ..., "step": ...}


def record_checkpoint(path: str | Path, step: int) -> None:
    """Note that ``path`` now holds a resumable checkpoint of step ``step`` (called after each save), for the
    record of a job that a signal stops."""
    _last_checkpoint.update(path=str(Path(path).resolve()), step=int(step))


@contextlib.contextmanager
def signals_deferred(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold ``signals`` back while the block runs and deliver them after it, to their own handlers: a checkpoint
    is written and recorded (:func:`record_checkpoint`) before a Ctrl-C or SIGTERM stops the job, so the job's
    record never misses the checkpoint on disk. Outside the main thread (where handlers cannot be set) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    # a handler installed outside Python (getsignal: None) cannot be put back: leave that signal alone
    held = [s for s in signals if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, lambda number, frame: pending.append(number)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for number in dict.fromkeys(pending):
            signal.raise_signal(number)


def resume_command(config_name: str, ckpt_path: str) -> str:
    """The command line that resumes this Hydra job from ``ckpt_path``: its own overrides (any ``ckpt_path``
    replaced), as a single run even when the job was one of a multirun."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    given = list(hydra.overrides.task) if hydra is not None else sys.argv[1:]
    overrides = [o for o in given if not o.startswith(("ckpt_path=", "+ckpt_path="))]
    if hydra is not None and hydra.mode == RunMode.MULTIRUN:
        overrides.append("hydra.mode=RUN")
    return shlex.join([f"seg-{config_name}", *overrides, f"ckpt_path={ckpt_path}"])


def _writes(config: DictConfig) -> bool:
    """Only the job's own process writes: not Lightning's DDP children (output_subdir null), not rank > 0."""
    rank = int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))
    return rank == 0 and config.hydra.output_subdir is not None


def slurm_job_id() -> str | None:
    """The job id as squeue and sacct show it (``123_4`` for an array task), or None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


class JobStatusCallback(Callback):
    """Writes {"status": "running"} at job start and "completed" / "failed" (with the error) at job end, "failed"
    at SIGTERM and "interrupted" at SIGINT (Ctrl-C), each signal record with the newest checkpoint."""

    def __init__(self) -> None:
        self._start = 0.0
        self._path: Path | None = None
        self._job: dict = {}
        self._config_name = "train"
        self._previous_handlers: dict[int, Any] = {}
        self._interrupted = False
        self._ended = False

    def _write(self, record: dict) -> None:
        assert self._path is not None
        write_json_atomic(self._path, {**record, **self._job})

    def _signal_record(self, signum: int) -> dict:
        elapsed = round(time.time() - self._start, 1)
        record: dict[str, Any] = {"signal": signal.Signals(signum).name, "elapsed_s": elapsed}
        if _last_checkpoint:
            record.update(last_checkpoint=_last_checkpoint["path"], last_checkpoint_step=_last_checkpoint["step"])
        return record

    def _chain(self, signum: int, frame: Any) -> None:
        """Hand the signal on: to the handler that was there before (Lightning's and submitit's chain the same
        way; Python's SIGINT handler raises KeyboardInterrupt), or end the process as the signal would have."""
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        record = self._signal_record(signum)
        error = f"SIGTERM after {record['elapsed_s']} s: cancelled (scancel), past its time limit, preempted or killed"
        self._write({"status": "failed", **record, "error": error})
        self._chain(signum, frame)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if not self._interrupted:  # a second Ctrl-C changes nothing in the record
            self._interrupted = True
            record = self._signal_record(signum)
            if "last_checkpoint" in record:
                record["resume"] = resume_command(self._config_name, record["last_checkpoint"])
                line = (
                    f"interrupted after {record['elapsed_s']:.0f} s; to resume from step "
                    f"{record['last_checkpoint_step']} (the last checkpoint): {record['resume']}"
                )
            else:
                line = f"interrupted after {record['elapsed_s']:.0f} s, before the first checkpoint: nothing to resume"
            self._write({"status": "interrupted", **record})
            atexit.register(print, line, file=sys.stderr)  # after Lightning's shutdown messages: the last line
        self._chain(signum, frame)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _writes(config):
            return
        self._start = time.time()
        self._path = Path(config.hydra.runtime.output_dir) / STATUS_FILE
        self._job = {"host": socket.gethostname(), "pid": os.getpid()}
        if (job_id := slurm_job_id()) is not None:
            self._job["slurm_job_id"] = job_id
        if HydraConfig.initialized():
            self._config_name = HydraConfig.get().job.config_name or self._config_name
        _last_checkpoint.clear()  # a multirun's jobs share the process
        self._interrupted = False
        self._ended = False
        LAST_ERROR.clear()
        self._write({"status": "running"})
        atexit.unregister(self._on_exit)  # once per process, however many jobs a multirun runs in it
        atexit.register(self._on_exit)
        try:
            for signum, handler in ((signal.SIGTERM, self._on_sigterm), (signal.SIGINT, self._on_sigint)):
                if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup / `&` in a script: left ignored
                    self._previous_handlers[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous_handlers.clear()

    def _on_exit(self) -> None:
        """A single run that ended with one ``error:`` line exits inside Hydra's job, before ``on_job_end``:
        record it as failed with that error (:data:`seg.utils.cli.LAST_ERROR`)."""
        if not self._ended and LAST_ERROR and self._path is not None:
            elapsed = round(time.time() - self._start, 1)
            self._write({"status": "failed", "elapsed_s": elapsed, "error": LAST_ERROR[0]})

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self._ended = True
        if not _writes(config):
            return
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers.clear()
        record: dict = {"status": job_return.status.name.lower(), "elapsed_s": round(time.time() - self._start, 1)}
        if record["status"] == "failed":
            error = job_return._return_value  # the exception; .return_value would re-raise it
            record["error"] = f"{type(error).__name__}: {error}"
        self._write(record)
