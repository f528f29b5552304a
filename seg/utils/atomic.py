"""Files written whole or not at all: write a temporary file next to the target, fsync it, then rename it over.

``os.replace`` within one folder is atomic on POSIX: a crash or a kill at any moment leaves either the previous
file or the new one, never a mix, and the temporary file of an interrupted write is removed when Python can.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``, on an error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden, and never matched by *.ckpt globs
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON with :func:`atomic_write` (NaN allowed, as in ``metrics.json``)."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2, allow_nan=True) + "\n")
