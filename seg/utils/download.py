"""Files fetched on first use, as torchvision and timm fetch their weights: streamed into a hidden file beside the
destination, hashed while written, checked (length, SHA-256 or torch hub's hash prefix), then renamed into place,
so that a partial or corrupt download never lands where a cache lookup would find it. An offline switch
(``SEG_OFFLINE=1``, or Hugging Face's ``HF_HUB_OFFLINE=1``) stops every request before it is made.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

OFFLINE_ENVS = ("SEG_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = ("1", "true", "yes", "on")
CHUNK = 1 << 20
TIMEOUT_S = 60
# torch.hub's convention: "resnet50-0676ba61.pth" names the first hex digits of the file's SHA-256
HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")


class DownloadError(OSError):
    """A download that failed or did not verify; nothing was written to its destination."""


def offline() -> bool:
    """Whether ``SEG_OFFLINE`` or ``HF_HUB_OFFLINE`` is set (1, true, yes, on): then nothing is fetched."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_ENVS)


def offline_reason() -> str:
    """Which switch keeps seg offline, for error messages ("" when none)."""
    on = [name for name in OFFLINE_ENVS if os.environ.get(name, "").strip().lower() in _TRUE]
    return f"{on[0]}={os.environ[on[0]]} is set, so nothing is downloaded" if on else ""


def hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix a torch hub file name carries (``resnet50-0676ba61.pth`` -> ``0676ba61``), or None."""
    found = HASH_PREFIX.search(filename)
    return found.group(1) if found else None


def _progress(console: Console | None) -> Progress:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console or Console(stderr=True))


def _digests(checksum: tuple[str, str] | None) -> tuple:
    """The SHA-256 every download gets, and the checksum's own algorithm (md5) when it is another."""
    sha = hashlib.sha256()
    other = hashlib.new(checksum[0]) if checksum is not None and checksum[0] != "sha256" else None
    return sha, other


def download(
    url: str,
    dest: str | Path,
    *,
    checksum: tuple[str, str] | None = None,
    sha256_prefix: str | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> Path:
    """Fetch ``url`` to ``dest`` with a progress bar and return ``dest``.

    The bytes go to a hidden ``.<name>.part`` beside ``dest`` and are renamed to it only when the whole body
    arrived (the server's ``Content-Length``) and it hashes to ``checksum`` (``("md5" | "sha256", hex)``) or its
    SHA-256 starts with ``sha256_prefix``; otherwise :class:`DownloadError` names the URL, the file and the hashes,
    and ``dest`` is not written. ``resume``: a transfer cut short keeps its ``.part`` and the next call asks the
    server for the rest (an HTTP range); without it nothing is left behind. Offline (:func:`offline`) it raises
    before any request.
    """
    dest = Path(dest)
    if offline():
        raise DownloadError(f"{url} is not downloaded: {offline_reason()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part" if resume else f".{dest.name}.{os.getpid()}.part")
    sha, other = _digests(checksum)
    start = part.stat().st_size if resume and part.is_file() else 0
    headers = {"User-Agent": "seg", **({"Range": f"bytes={start}-"} if start else {})}
    received = 0
    keep_part = resume  # an earlier try's bytes survive a connection that fails again
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
            if start and response.status != 206:  # the server sent the whole file again: start over
                start = 0
            if start:
                with open(part, "rb") as f:  # the bytes of the earlier try count in the hashes
                    while chunk := f.read(CHUNK):
                        sha.update(chunk)
                        if other is not None:
                            other.update(chunk)
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            with open(part, "ab" if start else "wb") as f, _progress(console) as progress:
                task = progress.add_task(f"download {dest.name}", total=total, completed=start)
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    sha.update(chunk)
                    if other is not None:
                        other.update(chunk)
                    received += len(chunk)
                    progress.advance(task, len(chunk))
                f.flush()
                os.fsync(f.fileno())
        if total is not None and start + received != total:
            kept = f"; {part} is kept: run again to resume" if resume else ""
            raise DownloadError(
                f"{url}: the connection closed after {start + received} of {total} bytes; nothing was written to "
                f"{dest}{kept}"
            )
        keep_part = False  # the whole body: a wrong hash starts over next time
        if checksum is not None:
            kind, expected = checksum
            got = (other or sha).hexdigest()
            if got != expected.lower():
                raise DownloadError(
                    f"{url}: the download's {kind} is {got}, expected {expected} (corrupt or altered on the way); "
                    f"{dest} was not written"
                )
        got = sha.hexdigest()
        if sha256_prefix and not got.startswith(sha256_prefix.lower()):
            raise DownloadError(
                f"{url}: the download's SHA-256 is {got}, expected {sha256_prefix}... (corrupt or altered on the "
                f"way); {dest} was not written"
            )
        os.replace(part, dest)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        if isinstance(e, urllib.error.HTTPError) and e.code == 416:  # a range past the end: the part is no good
            keep_part = False
        reason = getattr(e, "reason", None) or e
        kept = f"; {part} is kept: run again to resume" if keep_part else ""
        raise DownloadError(
            f"cannot download {url}: {reason} (after {start + received} bytes); nothing was written to {dest}{kept}"
        ) from e
    finally:
        if not keep_part:
            part.unlink(missing_ok=True)
    return dest
