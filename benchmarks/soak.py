"""Soak: resident memory of a long training run on the embedded data, sampled every N steps by a callback.

    .venv/bin/python benchmarks/soak.py [--steps 2000] [--warmup 250] [--every 50] [--batch 4] [--crop 64]

Runs the real ``seg.train.train`` (Lightning loop, stateful loader, validation every epoch, checkpoints, CSV log)
on the embedded synthetic data (generated under data/synthetic on first use), with a smaller batch and crop than
the quickstart so that 2,000 steps take minutes on a CPU. Prints one JSON line: the resident set size (RSS) after
warm-up, its maximum afterwards and the growth in per cent; the goal (issue 8) is at most 5 %.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import psutil
from omegaconf import open_dict
from pytorch_lightning.callbacks import Callback

from seg.train import train
from seg.utils.compose import compose_config

SAMPLES: list[tuple[int, float]] = []  # (global step, RSS in MiB), filled by RSSMonitor


class RSSMonitor(Callback):
    """Appends (global step, RSS in MiB) to ``SAMPLES`` every ``every`` optimizer steps."""

    def __init__(self, every: int) -> None:
        self.every, self.process = every, psutil.Process()

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step % self.every == 0:
            SAMPLES.append((trainer.global_step, self.process.memory_info().rss / 2**20))


def soak(steps: int = 2000, warmup: int = 250, every: int = 50, batch: int = 4, crop: int = 64) -> dict:
    """Train ``steps`` steps; RSS growth from the end of warm-up to the largest later sample."""
    SAMPLES.clear()
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(
            [
                f"trainer.max_steps={steps}",
                "trainer.max_epochs=-1",
                "trainer.enable_progress_bar=false",
                "~callbacks.progress_bar",
                "~logger.tensorboard",
                f"data.batch_size={batch}",
                f"data.train_transform.crop_size={crop}",
                "trainer.limit_val_batches=2",
                f"+callbacks.rss._target_={__name__}.RSSMonitor",
                f"+callbacks.rss.every={every}",
            ]
        )
        with open_dict(cfg):
            cfg.paths.output_dir = out
            del cfg.hydra
        start = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - start
    after = [rss for step, rss in SAMPLES if step >= warmup]
    base = after[0]
    return {
        "steps": steps,
        "warmup_steps": warmup,
        "rss_after_warmup_mib": round(base, 1),
        "rss_max_after_warmup_mib": round(max(after), 1),
        "rss_final_mib": round(after[-1], 1),
        "growth_percent": round(100 * (max(after) - base) / base, 2),
        "wall_s": round(wall, 1),
        "samples": [(step, round(rss, 1)) for step, rss in SAMPLES],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=250)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    args = parser.parse_args()
    result = soak(args.steps, args.warmup, args.every, args.batch, args.crop)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
