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


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    console: Console | None = None,
) -> Path:
    """Fetch ``url`` to ``dest`` with a progress bar and return ``dest``.

    The bytes go to a hidden ``.<name>.<pid>.part`` beside ``dest`` and are renamed to it only when the whole
    body arrived (the server's ``Content-Length``) and its SHA-256 equals ``sha256`` or starts with
    ``sha256_prefix``; otherwise :class:`DownloadError` names the URL, the file and the hashes, and nothing is
    left behind. Offline (:func:`offline`) it raises before any request.
    """
    dest = Path(dest)
    if offline():
        raise DownloadError(f"{url} is not downloaded: {offline_reason()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    request = urllib.request.Request(url, headers={"User-Agent": "seg"})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(part, "wb") as f:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with _progress(console) as progress:
                task = progress.add_task(f"download {dest.name}", total=total)
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.advance(task, len(chunk))
            f.flush()
            os.fsync(f.fileno())
        if total is not None and received != total:
            raise DownloadError(
                f"{url}: the connection closed after {received} of {total} bytes; nothing was written to {dest}"
            )
        got = digest.hexdigest()
        expected = sha256 or sha256_prefix
        if expected and not got.startswith(expected.lower()):
            raise DownloadError(
                f"{url}: the download's SHA-256 is {got}, expected {expected}{'...' if not sha256 else ''} (corrupt "
                f"or altered on the way); {dest} was not written"
            )
        os.replace(part, dest)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"cannot download {url}: {reason} (after {received} bytes); nothing was written to {dest}"
        ) from e
    finally:
        part.unlink(missing_ok=True)
    return dest
