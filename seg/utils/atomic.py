"""Files written whole or not at all: write a temporary file next to the target, fsync it, then rename it over.

``os.replace`` within one folder is atomic on POSIX: a crash or a kill at any moment leaves either the previous
file or the new one, never a mix, and the temporary file of an interrupted write is removed when Python can. A
write that fails for lack of space ends with :class:`DiskFullError`, one line naming the path, the free space and
roughly what the write needed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# below this much free space a failed write is put down to the full disk whatever it raised: torch's zip writer
# reports ENOSPC as "RuntimeError: [enforce fail at inline_container.cc] . unexpected pos ..."
FULL_BELOW = 1 << 20


class DiskFullError(OSError):
    """A write that failed for lack of space (errno ENOSPC); the message names the file, the free space and roughly
    what was needed."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno 28] " prefix


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def disk_full_error(path: Path, exc: BaseException, written: int = 0) -> DiskFullError | None:
    """The :class:`DiskFullError` for a write of ``path`` that failed with ``exc`` after ``written`` bytes, or None
    when the disk is not the cause: ``exc`` is no ENOSPC / EDQUOT and the filesystem has 1 MB or more free."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    no_space = isinstance(exc, OSError) and exc.errno in NO_SPACE
    if not no_space and (free is None or free >= FULL_BELOW):
        return None
    previous = path.stat().st_size if path.is_file() else 0
    needed = max(written, previous)
    if previous:
        kept = f"; the previous {path.name} ({_mb(previous)}) is kept"
    else:
        kept = "; nothing was written"
    space = f"{_mb(free)} free" if free is not None else "free space unknown"
    message = f"no space left to write {path}: {space}, the write needed more than {_mb(needed)}{kept}"
    return DiskFullError(errno.ENOSPC, message)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``, on an error it is deleted (and a
    full disk is named: :class:`DiskFullError`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden, and never matched by *.ckpt globs
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except Exception as e:
        written = tmp.stat().st_size if tmp.is_file() else 0
        tmp.unlink(missing_ok=True)  # before measuring the free space: what the user can use now
        full = disk_full_error(path, e, written)
        if full is not None:
            raise full from e
        raise
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
