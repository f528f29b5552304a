"""Goal 1: seg's training step through a Lightning Trainer against a plain PyTorch loop, same model/batch/data.

    .venv/bin/python benchmarks/lightning_overhead.py                       # quickstart model and batch
    .venv/bin/python benchmarks/lightning_overhead.py --size 256 --batch 4 --backbone resnet50 --steps 10 --fits 1
                                                                            # a bigger model

Both sides train copies of the same net (same initial weights) on the same pre-collated batches of the quickstart's
synthetic data, in the machine's precision by default (bf16 autocast with AMX, else fp32; channels_last), with the
same SGD parameter groups and per-step poly schedule. The Lightning side is ``python -m seg.train``'s Trainer with
the default callbacks (checkpointing, LR monitor, rich progress bar) and loggers (CSV, TensorBoard), and variants
without the progress bar, without TensorBoard, and bare, to show where any overhead goes.

The two sides alternate *step by step* (drift on a shared machine cancels within each pair): a callback runs one
plain-loop step right after every Lightning step. A Lightning step is the interval between consecutive batch starts
(everything between two steps counts: logging, callbacks, progress bar, scheduler, zero_grad) minus the time of the
plain step run inside it. Work in background threads (a progress bar refreshing, a logger flushing) slows the plain
steps run during that fit as well: the last column compares them with the plain steps inside bare fits. The first
``--skip`` steps of every fit are warm-up. Ratios: summed step times (periodic costs such as writing logs every 10
steps count) and the median of the per-step ratios.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import itertools
import shutil
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

from seg.utils.compose import compose_config  # noqa: E402
from seg.utils.machine import cpu_precision  # noqa: E402


class PlainLoop:
    """seg's training step written by hand: forward + loss, zero_grad, backward, SGD, poly scheduler step."""

    def __init__(self, module, batches: list, total_steps: int, bf16: bool) -> None:
        hp = module.hparams
        self.net, self.criterion, self.hp = module.net.train(), module.criterion, hp
        self.batches, self.bf16 = batches, bf16
        backbone_ids = {id(p) for p in self.net.backbone.parameters()}
        opt = module.optimizer_factory  # the config's SGD settings (a functools.partial)
        lr = opt.keywords["lr"]
        groups = [
            {"params": [p for p in self.net.parameters() if id(p) in backbone_ids]},
            {"params": [p for p in self.net.parameters() if id(p) not in backbone_ids], "lr": lr * hp.head_lr_mult},
        ]
        self.opt = torch.optim.SGD(
            groups, lr=lr, momentum=opt.keywords["momentum"], weight_decay=opt.keywords["weight_decay"]
        )
        power = module.scheduler_factory.keywords["power"]
        self.sched = torch.optim.lr_scheduler.PolynomialLR(self.opt, total_iters=total_steps, power=power)

    def step(self, index: int) -> float:
        """Seconds for one step on batch ``index``."""
        start = time.perf_counter()
        x, y = self.batches[index]
        if self.hp.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.long()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.net(x)
            loss = self.criterion(out["out"], y) + self.hp.aux_weight * self.criterion(out["aux"], y)
        self.opt.zero_grad(set_to_none=True)  # where Lightning zeroes them: between forward and backward
        loss.backward()
        self.opt.step()
        self.sched.step()
        return time.perf_counter() - start


class Interleave(pl.Callback):
    """Clocks every Lightning batch start and runs each plain loop's step after every Lightning step."""

    def __init__(self, loops: dict[str, PlainLoop]) -> None:
        self.loops = loops
        self.starts: list[float] = []
        self.inside: list[float] = []  # seconds of plain steps run within each Lightning interval
        self.plain: dict[str, list[float]] = {name: [] for name in loops}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        names = list(self.loops) if batch_idx % 2 == 0 else list(self.loops)[::-1]
        spent = 0.0
        for name in names:
            t = self.loops[name].step(batch_idx)
            self.plain[name].append(t)
            spent += t
        self.inside.append(spent)

    def lightning_steps(self) -> list[float]:
        """Interval between consecutive batch starts minus the plain steps run inside it."""
        return [b - a - s for a, b, s in zip(self.starts, self.starts[1:], self.inside, strict=False)]


def make_batches(cfg, count: int) -> list:
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    batches: list = []
    while len(batches) < count:
        batches.extend(itertools.islice(dm.train_dataloader(), count - len(batches)))
    return batches


KINDS = {  # Trainer variants: what each one leaves out of seg's default Trainer
    "full": "seg's default Trainer (checkpointing, LR monitor, rich progress bar, CSV + TensorBoard)",
    "no_bar": "without the rich progress bar",
    "no_tensorboard": "without the TensorBoard logger",
    "bare": "bare (no loggers, callbacks or progress bar)",
}


def make_trainer(cfg, kind: str, clock: pl.Callback) -> pl.Trainer:
    if kind == "bare":
        return instantiate(
            cfg.trainer,
            callbacks=[clock],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    callbacks = [
        instantiate(c) for k, c in cfg.callbacks.items() if c is not None and (kind, k) != ("no_bar", "progress_bar")
    ]
    loggers = [
        instantiate(c)
        for k, c in cfg.logger.items()
        if c is not None and (kind, k) != ("no_tensorboard", "tensorboard")
    ]
    extra = {"enable_progress_bar": False} if kind == "no_bar" else {}
    return instantiate(cfg.trainer, callbacks=[*callbacks, clock], logger=loggers, **extra)


def fit(cfg, module, batches: list, loops: dict[str, PlainLoop], kind: str, skip: int) -> dict[str, list[float]]:
    """One Lightning fit over ``batches`` with the Trainer ``kind``, a plain step interleaved after every step."""
    clock = Interleave(loops)
    trainer = make_trainer(cfg, kind, clock)
    loader = DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no validation loader", "few workers": intended here
        trainer.fit(module, train_dataloaders=loader)
    steps = clock.lightning_steps()  # the last step has no following start: its plain steps are dropped
    return {"lightning": steps[skip:], **{k: v[skip : len(steps)] for k, v in clock.plain.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default=None, help="model.net.backbone (default: the quickstart's)")
    p.add_argument("--output-stride", type=int, default=None, help="default: the quickstart's")
    p.add_argument("--size", type=int, default=96, help="crop size (the quickstart's 96)")
    p.add_argument("--batch", type=int, default=8, help="batch size (the quickstart's 8)")
    p.add_argument(
        "--precision",
        default=cpu_precision(),
        choices=["bf16-mixed", "32-true"],
        help="default: the machine's (bf16-mixed where the CPU has AMX, else 32-true)",
    )
    p.add_argument("--steps", type=int, default=25, help="Lightning steps per fit")
    p.add_argument("--fits", type=int, default=2, help="fits of each Trainer kind, their order alternated")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS), help="Trainer variants")
    p.add_argument("--skip", type=int, default=3, help="warm-up steps dropped at the start of every fit")
    a = p.parse_args()
    header("Lightning overhead: SegModule + Trainer against a plain loop", "python " + " ".join(sys.argv))

    workdir = Path(tempfile.mkdtemp(prefix="seg-bench-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # data and checkpoints: GBs
    overrides = [
        f"data.train_transform.crop_size={a.size}",
        f"data.batch_size={a.batch}",
        f"trainer.precision={a.precision}",
        f"model.channels_last={a.precision.startswith('bf16')}",
        f"trainer.max_steps={a.steps}",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
    ]
    if a.backbone:
        overrides.append(f"model.net.backbone={a.backbone}")
    if a.output_stride:
        overrides.append(f"model.net.output_stride={a.output_stride}")
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(workdir)
        if a.size > cfg.data.prepare.size:  # larger crops need larger images: a small tree of its own
            cfg.data.root = str(workdir / "data")
            cfg.data.prepare.update(size=a.size, num_train=a.batch * a.steps, num_val=2)
    torch.manual_seed(0)
    batches = make_batches(cfg, a.steps)
    torch.manual_seed(0)
    first = instantiate(cfg.model)
    modules = {kind: copy.deepcopy(first) for kind in a.kinds}
    loops = {
        "plain": PlainLoop(
            copy.deepcopy(first), batches, a.steps * len(a.kinds) * a.fits, bf16=a.precision != "32-true"
        )
    }
    net = cfg.model.net
    print(
        f"model: {net.backbone} OS {net.output_stride}, batch {a.batch}x3x{a.size}x{a.size}, {a.precision}, "
        f"channels_last={cfg.model.channels_last}; {a.fits} x {len(a.kinds)} fits of {a.steps} steps "
        f"(first {a.skip} dropped)"
    )
    times: dict[str, dict[str, list[float]]] = {kind: {"lightning": [], "plain": []} for kind in a.kinds}
    for r in range(a.fits):
        for kind in a.kinds if r % 2 == 0 else a.kinds[::-1]:
            res = fit(cfg, modules[kind], batches, loops, kind, a.skip)
            for name, values in res.items():
                times[kind][name].extend(values)
            print(
                f"fit {r + 1} ({kind}): lightning {statistics.mean(res['lightning']) * 1000:.1f} ms, "
                f"plain {statistics.mean(res['plain']) * 1000:.1f} ms",
                flush=True,
            )

    print()
    bare_plain = statistics.mean(times["bare"]["plain"]) if "bare" in times else float("nan")
    for kind in a.kinds:
        lit, plain = times[kind]["lightning"], times[kind]["plain"]
        print(
            f"{kind}: {KINDS[kind]}; {len(lit)} paired steps, mean lightning {statistics.mean(lit) * 1000:.1f} ms, "
            f"plain {statistics.mean(plain) * 1000:.1f} ms"
        )
        print(
            f"  Lightning / plain loop = {sum(lit) / sum(plain):.3f} (summed), "
            f"{statistics.median(x / y for x, y in zip(lit, plain, strict=True)):.3f} (median per-step ratio); "
            f"plain steps in these fits / in bare fits = {statistics.mean(plain) / bare_plain:.3f}"
        )


if __name__ == "__main__":
    main()
