"""The machine a run is on: the CPU's model and the flags that change speed or numerics, and the CPU training
precision chosen from them (``${seg.cpu_precision:}`` in ``conf/trainer/default.yaml``).

The rule follows the training-step times of benchmarks/RESULTS.md, section 19 (fp32 step time / bf16 step time, each
recipe's batch and crop; above 1, bf16 autocast is faster):

| CPU | ResNet networks | EfficientNet-Lite0 (camvid_imagenet_cpu) |
|---|---|---|
| Intel Xeon with AMX (``amx_bf16``) | quickstart 2.25, DeepLabV3-R50 2.39 | 0.51 (6.1 s against 3.1 s a step) |
| AMD EPYC with AVX-512 BF16, no AMX | quickstart 1.67, camvid_cpu 1.19, R101 1.89 | 1.31, but its fine-tune diverged |
| an AMD EPYC without either | quickstart about 0.05 (bf16 emulated) | not measured |

So ``bf16-mixed`` where the CPU has bf16 instructions (AMX or AVX-512 BF16), ``32-true`` elsewhere; the lite0
recipe sets ``32-true`` itself. ``SEG_CPU_PRECISION=32-true|bf16-mixed`` overrides the rule (tests and benchmarks
force either path with it); a precision a config sets explicitly wins over both.

Inference follows the same flags with its own measurements (RESULTS sections 23, 25, 26): bf16 autocast is
1.4-1.5x fp32 on a CamVid frame on the EPYC with AVX-512 BF16 (issue 37: 1.3-1.6x on the Xeon with AMX) for a
change of val mIoU under 0.001, so :func:`inference_precision` picks ``bf16`` on either kind and ``32`` on a CPU
without bf16 instructions (emulated there, many times slower); ``SEG_CPU_PRECISION`` forces it too.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

PRECISION_ENV = "SEG_CPU_PRECISION"
CPU_PRECISIONS = ("32-true", "bf16-mixed")
# the CPU flags that change a run's speed or its numerics (bf16 / int8 matrix units, vector widths, FMA)
SPEED_FLAGS = ("amx_bf16", "amx_int8", "amx_fp16", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni")
SPEED_FLAGS += ("avx_vnni", "avx2", "fma")


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


def has_bf16_units(flags: frozenset[str] | set[str]) -> bool:
    """Whether a CPU with ``flags`` computes bf16 in hardware (AMX or AVX-512 BF16), not emulated."""
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_precision(flags: frozenset[str] | None = None) -> str:
    """The CPU training precision: ``SEG_CPU_PRECISION`` when set, else the measured rule of this module's docstring
    for a CPU with ``flags`` (by default this machine's)."""
    forced = forced_cpu_precision()
    if forced is not None:
        return forced
    return "bf16-mixed" if has_bf16_units(cpu_flags() if flags is None else flags) else "32-true"


def machine_label(model: str, flags: frozenset[str] | set[str], gpu: str | None = None) -> str:
    """A short name for tables: the GPU when there is one, else the CPU model with the bf16 units that decide its
    precision (``+AMX``, ``+AVX512-BF16``): two CPUs of one model name may differ in them."""
    if gpu:
        return gpu
    if "amx_bf16" in flags:
        return f"{model} +AMX"
    return f"{model} +AVX512-BF16" if "avx512_bf16" in flags else model


def inference_precision(flags: frozenset[str] | None = None) -> str:
    """The CPU inference precision (``"bf16"`` or ``"32"``, :class:`seg.inference.InferenceConfig`'s names):
    ``SEG_CPU_PRECISION`` when set, else bf16 where the CPU with ``flags`` (by default this machine's) computes bf16
    in hardware."""
    return "bf16" if cpu_precision(flags) == "bf16-mixed" else "32"
