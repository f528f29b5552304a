"""The machine a run is on: the CPU's model and the flags that change speed or numerics, and the CPU training
precision chosen from them (``${seg.cpu_precision:}`` in ``conf/trainer/default.yaml``).

What the rule rests on (benchmarks/RESULTS.md, "Training precision"): on an Intel Xeon with AMX (bf16 matrix units,
``amx_bf16``), bf16 autocast + channels_last trained the ResNet networks 1.5-2.4x faster than fp32 (the quickstart's
ResNet-18, DeepLabV3-ResNet-50) at equal mIoU, but the EfficientNet-Lite0 of ``camvid_imagenet_cpu`` 2x slower
(6.1 s against 3.1 s a step: depthwise convolutions), so that recipe sets ``32-true`` itself. On CPUs without AMX
bf16 autocast was 4-20x slower than fp32 for every network measured (an AMD EPYC with AVX-512 BF16 included).
``SEG_CPU_PRECISION=32-true|bf16-mixed`` overrides the rule (tests and benchmarks force either path with it).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

PRECISION_ENV = "SEG_CPU_PRECISION"
CPU_PRECISIONS = ("32-true", "bf16-mixed")
# the CPU flags that change a run's speed or its numerics (bf16 / int8 matrix units, vector widths, FMA)
SPEED_FLAGS = ("amx_bf16", "amx_int8", "amx_fp16", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni",
               "avx_vnni", "avx2", "fma")  # fmt: skip


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux
        return ""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The flags of the first processor in ``/proc/cpuinfo`` (or of the text ``cpuinfo``); empty where unknown."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name (``model name`` in ``/proc/cpuinfo``), else what ``platform`` knows."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def forced_cpu_precision() -> str | None:
    """``SEG_CPU_PRECISION`` when set (empty counts as unset); ValueError naming the accepted values otherwise."""
    value = os.environ.get(PRECISION_ENV, "").strip()
    if not value:
        return None
    if value not in CPU_PRECISIONS:
        raise ValueError(f"{PRECISION_ENV}={value}: expected one of {', '.join(CPU_PRECISIONS)} (or unset)")
    return value


def cpu_precision(flags: frozenset[str] | None = None) -> str:
    """The CPU training precision: ``SEG_CPU_PRECISION`` when set, else ``bf16-mixed`` on CPUs with AMX and
    ``32-true`` elsewhere (the measurements are in this module's docstring). ``flags``: the CPU's, by default
    this machine's."""
    forced = forced_cpu_precision()
    if forced is not None:
        return forced
    return "bf16-mixed" if "amx_bf16" in (cpu_flags() if flags is None else flags) else "32-true"


def machine_label(model: str, flags: frozenset[str] | set[str], gpu: str | None = None) -> str:
    """A short name for tables: the GPU when there is one, else the CPU model with ``+AMX`` where it has AMX."""
    if gpu:
        return gpu
    return f"{model} +AMX" if "amx_bf16" in flags else model
