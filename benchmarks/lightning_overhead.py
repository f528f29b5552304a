"""Goal 1: seg's training step through a Lightning Trainer against a plain PyTorch loop, same model/batch/data.

    .venv/bin/python benchmarks/lightning_overhead.py                       # quickstart model and batch
    .venv/bin/python benchmarks/lightning_overhead.py --size 256 --batch 4 --backbone resnet50 --output-stride 8 \\
        --steps 8 --rounds 4                                                # a bigger model

Both sides train the same net (same initial weights) on the same pre-collated batches of the quickstart's
synthetic data, in the configured precision (bf16 autocast + channels_last by default), with the same SGD
parameter groups and per-step poly schedule. The Lightning side is ``python -m seg.train``'s Trainer with the
default callbacks (checkpointing, LR monitor, rich progress bar) and loggers (CSV, TensorBoard); a third variant
strips those ("bare") to show where any overhead goes. Rounds alternate the order of the variants; a step's time is
the interval between consecutive batch starts, so everything between two steps (logging, callbacks, progress bar,
scheduler, zero_grad) is counted; the first ``--skip`` steps of each round are warm-up.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import header  # noqa: E402

from seg.config import compose_config  # noqa: E402


class StepClock(pl.Callback):
    """perf_counter at every training batch start: consecutive differences are whole steps."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


def step_times(starts: list[float], skip: int) -> list[float]:
    return [b - a for a, b in zip(starts[skip:-1], starts[skip + 1 :], strict=True)]


def make_batches(cfg, count: int) -> list:
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    batches: list = []
    while len(batches) < count:
        batches.extend(itertools.islice(dm.train_dataloader(), count - len(batches)))
    return batches


def lightning_steps(cfg, module, batches, workdir: Path, full: bool, skip: int) -> list[float]:
    """Fit ``module`` for len(batches) steps with seg's Trainer config (``full``) or a bare Trainer."""
    clock = StepClock()
    if full:
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None] + [clock]
        loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    else:
        trainer = instantiate(
            cfg.trainer, callbacks=[clock], logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False,
        )  # fmt: skip
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no validation loader", "few workers": intended here
        trainer.fit(module, train_dataloaders=loader)
    return step_times(clock.starts, skip)


def plain_steps(module, batches, precision: str, skip: int) -> list[float]:
    """The same work as seg's training step, written as a plain loop: forward, loss, backward, SGD, poly, zero_grad."""
    hp = module.hparams
    net, criterion = module.net, module.criterion
    backbone_ids = {id(p) for p in net.backbone.parameters()}
    groups = [
        {"params": [p for p in net.parameters() if id(p) in backbone_ids]},
        {"params": [p for p in net.parameters() if id(p) not in backbone_ids], "lr": hp.lr * hp.head_lr_mult},
    ]
    opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=len(batches), power=hp.poly_power)
    bf16 = precision.startswith("bf16")
    net.train()
    starts = []
    for x, y in batches:
        starts.append(time.perf_counter())
        if hp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.long()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
            loss = criterion(out["out"], y) + hp.aux_weight * criterion(out["aux"], y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
    return step_times(starts, skip)  # intervals between batch starts, as StepClock measures Lightning's


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default=None, help="model.net.backbone (default: the quickstart's resnet18)")
    p.add_argument("--output-stride", type=int, default=None)
    p.add_argument("--size", type=int, default=96, help="crop size (the quickstart's 96)")
    p.add_argument("--batch", type=int, default=8, help="batch size (the quickstart's 8)")
    p.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    p.add_argument("--steps", type=int, default=24, help="steps per round and variant")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--skip", type=int, default=3, help="warm-up steps dropped at the start of every round")
    a = p.parse_args()
    header("Lightning overhead: SegModule + Trainer against a plain loop", "python " + " ".join(sys.argv))

    workdir = Path(tempfile.mkdtemp(prefix="seg-bench-"))
    overrides = [
        f"data.train_transform.crop_size={a.size}", f"data.batch_size={a.batch}", f"trainer.precision={a.precision}",
        f"model.channels_last={a.precision.startswith('bf16')}", f"trainer.max_steps={a.steps + 1}",
        "trainer.max_epochs=-1", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
    ]  # fmt: skip
    if a.backbone:
        overrides.append(f"model.net.backbone={a.backbone}")
    if a.output_stride:
        overrides.append(f"model.net.output_stride={a.output_stride}")
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(workdir)
        if a.size > cfg.data.prepare.size:  # larger crops need larger images: a small tree of its own
            cfg.data.root = str(workdir / "data")
            cfg.data.prepare.update(size=a.size, num_train=a.batch * (a.steps + 1), num_val=2)
    torch.manual_seed(0)
    batches = make_batches(cfg, a.steps + 1)
    torch.manual_seed(0)
    lit = instantiate(cfg.model)
    plain = copy.deepcopy(lit)
    bare = copy.deepcopy(lit)
    net = cfg.model.net
    print(
        f"model: {net.backbone} OS {net.output_stride}, batch {a.batch}x3x{a.size}x{a.size}, {a.precision}, "
        f"channels_last={cfg.model.channels_last}; {a.rounds} rounds x {a.steps} steps, first {a.skip} dropped"
    )

    variants = {
        "plain": lambda: plain_steps(plain, batches, a.precision, a.skip),
        "lightning": lambda: lightning_steps(cfg, lit, batches, workdir, True, a.skip),
        "lightning_bare": lambda: lightning_steps(cfg, bare, batches, workdir, False, a.skip),
    }
    means: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            means[name].append(statistics.mean(variants[name]()))
        print(f"round {r + 1}: " + ", ".join(f"{k} {means[k][-1] * 1000:.1f} ms" for k in names), flush=True)

    def ratio(k: str) -> float:
        return statistics.median(x / y for x, y in zip(means[k], means["plain"], strict=True))

    print("\nmean step time per round, median over rounds:")
    for k in names:
        print(f"  {k:15s} {statistics.median(means[k]) * 1000:8.1f} ms/step")
    print(f"Lightning (seg's default Trainer) / plain loop: {ratio('lightning'):.3f}  (median of per-round ratios)")
    print(f"Lightning bare (no loggers/callbacks/bar) / plain loop: {ratio('lightning_bare'):.3f}")
    extra = statistics.median(means["lightning"]) - statistics.median(means["plain"])
    print(f"per-step overhead of seg's Trainer: {extra * 1000:+.1f} ms")


if __name__ == "__main__":
    main()
