"""Where a run came from: ``provenance.json`` in every train and evaluate run folder, written when the run starts
and completed when it ends.

The record holds the code (git commit and whether the tree had changes, when seg runs from a checkout; the
installed version otherwise), the versions of the libraries that shape the numbers, the machine (CPU model, the
flags that change speed or numerics, GPU), the precision actually used and the thread count, the command line, and
the start and end times with the run's status. ``seg-sweep-report`` reads it for its commit and machine columns.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from seg.utils.atomic import write_json_atomic
from seg.utils.machine import PRECISION_ENV, SPEED_FLAGS, cpu_flags, cpu_model, has_bf16_units, machine_label

PROVENANCE_FILE = "provenance.json"
# distribution names: the libraries whose versions change what a run computes
LIBRARIES = ("seg", "torch", "torchvision", "timm", "pytorch-lightning", "hydra-core", "torchmetrics", "numpy")
_SOURCE = Path(__file__).resolve().parents[2]  # the checkout's root when seg runs from one (seg/runs/..)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(_SOURCE), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return res.stdout.rstrip() if res.returncode == 0 else None  # porcelain lines start with a space: keep it


def code_record() -> dict[str, Any]:
    """The code that runs: the git commit and whether tracked files differ from it (``dirty``) when seg is imported
    from a checkout, else only the installed version."""
    record: dict[str, Any] = {"seg_version": _version("seg")}
    # seg's own files must be tracked there: an installed seg inside some other repository is no checkout of seg
    if _git("ls-files", "--error-unmatch", "seg/__init__.py") is not None:
        commit = _git("rev-parse", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no")
        record.update(source=str(_SOURCE), commit=commit, dirty=bool(changed) if changed is not None else None)
        if changed:
            record["changed_files"] = [line[3:] for line in changed.splitlines()]
    else:
        record.update(source="installed", commit=None, dirty=None)
    return record


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_record() -> dict[str, Any]:
    """The host, CPU model, its speed-relevant flags, logical CPUs and the GPU (name) when CUDA sees one."""
    import torch

    flags = cpu_flags()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    model = cpu_model()
    return {
        "label": machine_label(model, flags, gpu),
        "host": socket.gethostname(),
        "cpu_model": model,
        "cpu_flags": sorted(f for f in SPEED_FLAGS if f in flags),
        "amx": "amx_bf16" in flags,
        "bf16_instructions": has_bf16_units(flags),
        "cpus": os.cpu_count(),
        "gpu": gpu,
        "gpus": torch.cuda.device_count() if gpu else 0,
        "platform": platform.platform(),
    }


def command_line() -> str:
    """This process's command line as a user would type it: ``python -m seg.train ...`` or ``seg-train ...``."""
    prog = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if prog.suffix == ".py" and prog.resolve().parent == _SOURCE / "seg":
        head = ["python", "-m", f"seg.{prog.stem}"]  # python -m seg.X sets argv[0] to seg/X.py
    else:
        head = [prog.name]
    return shlex.join([*head, *sys.argv[1:]])


def start_record(command: str) -> dict[str, Any]:
    """The record at the start of a run of ``command`` (``train``, ``evaluate``)."""
    import torch

    return {
        "command": command,
        "argv": command_line(),
        "cwd": os.getcwd(),
        "status": "running",
        "started": _now(),
        "ended": None,
        "code": code_record(),
        "versions": {"python": platform.python_version(), **{lib: _version(lib) for lib in LIBRARIES}},
        "machine": machine_record(),
        "threads": torch.get_num_threads(),
        PRECISION_ENV: os.environ.get(PRECISION_ENV) or None,
        "precision": None,  # the precision actually used, set once the trainer holds it
    }


class Provenance:
    """``provenance.json`` of one run folder: :meth:`update` adds what is known later (the precision actually used),
    the ``with`` block of :func:`provenance` ends it. ``write=False`` (ranks other than 0) keeps it in memory."""

    def __init__(self, out_dir: str | Path, command: str, write: bool = True, **fields: Any) -> None:
        self.path = Path(out_dir) / PROVENANCE_FILE
        self.write = write
        self.record = {**start_record(command), **fields}
        self._start = time.monotonic()
        self._save()

    def _save(self) -> None:
        if self.write:
            write_json_atomic(self.path, self.record)

    def update(self, **fields: Any) -> None:
        self.record.update(fields)
        self._save()

    def end(self, status: str, error: BaseException | None = None) -> None:
        self.record.update(status=status, ended=_now(), elapsed_s=round(time.monotonic() - self._start, 1))
        if error is not None:
            self.record["error"] = f"{type(error).__name__}: {error}"
        self._save()


@contextlib.contextmanager
def provenance(out_dir: str | Path, command: str, write: bool = True, **fields: Any) -> Iterator[Provenance]:
    """Write ``out_dir/provenance.json`` now (with ``fields`` added); on leaving, record the end time and
    ``completed``, ``failed`` (with the error) or ``interrupted`` (Ctrl-C)."""
    record = Provenance(out_dir, command, write, **fields)
    try:
        yield record
    except KeyboardInterrupt as e:
        record.end("interrupted", e)
        raise
    except BaseException as e:
        record.end("failed", e)
        raise
    record.end("completed")


def read_provenance(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's record, or None when it has none (runs from before it existed) or it cannot be read."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
