"""glibc malloc settings for PyTorch on the CPU: keep large freed blocks for reuse instead of handing them back to
the kernel.

glibc serves every allocation above its mmap threshold (at most 32 MB, however it adapts) with a fresh ``mmap``
and returns it with ``munmap`` on free. A training step at full CamVid resolution allocates and frees activations
of 40+ MB each, so every step faulted all of them in again: a DeepLabV3 on tf_efficientnet_lite0 (batch 8,
360 x 480) spent 5.6 s of its 8.3 s step in the kernel on a 2-core AMD EPYC (benchmarks/RESULTS.md). With the
thresholds raised the blocks stay in the heap and are reused: 4.4 s, 1.0 s of it in the kernel. jemalloc or
tcmalloc (``LD_PRELOAD``) do the same; this needs nothing installed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_MMAP_THRESHOLD = 1 << 30  # above any activation: large blocks come from the heap and are reused
_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GB of freed memory at the top of the heap


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (and the loader workers it forks). Returns whether
    they were set: False off glibc, or with ``SEG_MALLOC_TUNING=0`` in the environment."""
    if os.environ.get("SEG_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
