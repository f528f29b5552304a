"""Shared by the benchmark scripts: the machine's description and interleaved A/B timing.

Absolute times drift on a shared machine (up to ~1.5x between runs here), so every benchmark compares two or
more variants *within one run*, alternating them (A B B A ...) and taking medians, and reports ratios.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from seg.utils.machine import cpu_flags, cpu_model, cpu_precision, machine_label


def machine() -> str:
    """One line: CPU model (+AMX where it has it) and cores (or the GPU), torch version, threads, date."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    label = machine_label(cpu_model(), cpu_flags())
    return (
        f"{label}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{datetime.date.today().isoformat()}"
    )


def default_precision() -> str:
    """``bf16`` where the CPU has AMX (or a GPU is used), else ``fp32``: a benchmark's default precision is the one
    seg trains in on this machine (bf16 is emulated, many times slower, on CPUs without AMX)."""
    return "bf16" if torch.cuda.is_available() or cpu_precision() == "bf16-mixed" else "fp32"


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes (CUDA work is waited for)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleave(variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each variant ``rounds`` times, alternating their order every round (A B, B A, ...).

    ``warmup`` untimed calls of each variant come first (oneDNN primitive creation, allocator growth).
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(variants[name]))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median of the per-round ratios a[i] / b[i]: drift between rounds cancels within each pair."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def header(title: str, command: str) -> None:
    """Print what RESULTS.md records with every figure: the question, the machine, the command."""
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when the output goes to a file
    print(f"# {title}")
    print(f"machine: {machine()}")
    print(f"command: {command}")


def training_batch(batch: int, size: int, classes: int = 21, void_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random (images, labels) batch of ``size`` x ``size``; the top ``void_rows`` label rows are 255."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, classes, (batch, size, size), generator=g)
    y[:, :void_rows] = 255
    return x, y


def check_training_batch(parser: argparse.ArgumentParser, batch: int, flag: str = "--batch") -> None:
    """A training step needs two samples: BatchNorm on ASPP's 1x1 pooled map has one value per channel per image."""
    if batch < 2:
        parser.error(f"{flag} must be >= 2 (BatchNorm on ASPP's 1x1 pooled map needs two values per channel)")


def sgd_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool, channels_last: bool = False):
    """A closure running one SGD training step of a {"out", "aux"} segmenter on (x, y): forward, CE on out + 0.4
    aux (ignore 255), backward, step, zero_grad; the same code for every model a benchmark compares."""
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
            loss = F.cross_entropy(out["out"], y, ignore_index=255) + 0.4 * F.cross_entropy(
                out["aux"], y, ignore_index=255
            )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def composed_training_step(overrides: list[str], bf16: bool, max_batch: int | None = None):
    """A closure running one training step of the config ``seg.train`` would compose from ``overrides``
    (``SegModule.training_step`` + backward + SGD on a seeded random batch of its batch size and crop, random
    weights, no data loading), and the (batch, height, width) it trains on; ``max_batch`` caps the batch."""
    from hydra.utils import instantiate

    from seg.utils.compose import compose_config

    cfg = compose_config([*overrides, "model.net.weights=null"])
    crop = cfg.data.train_transform.crop_size
    h, w = (crop, crop) if isinstance(crop, int) else tuple(crop)
    batch = cfg.data.batch_size if max_batch is None else min(cfg.data.batch_size, max_batch)
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=1e-4, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, h, w, generator=g)
    y = torch.randint(0, cfg.model.num_classes, (batch, h, w), generator=g, dtype=torch.uint8)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step((x, y), 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, (batch, h, w)
