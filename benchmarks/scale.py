"""Goal 7: time per epoch against dataset size (1x / 2x / 4x), resident memory during training and validation.

    .venv/bin/python benchmarks/scale.py [--train 96] [--val 50] [--epochs 2] [--factors 1 2 4]

Generates synthetic VOC-layout trees of ``factor x --train`` training and ``factor x --val`` validation images
(seg.data.synthetic.generate, 96 px, into a temporary folder), then trains the quickstart configuration
(seg.train.train: Lightning, loggers, checkpoints, validation every epoch) on each in a fresh process, in the order
1 2 4 4 2 1 so that drift cancels. A callback records every epoch's time (the last epoch is reported: the first
includes one-off set-up), the process's resident memory (RSS) after every training batch, and its peak during each
validation relative to the RSS before it.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import header  # noqa: E402

MB = 2**20


class Probe(pl.Callback):
    """Records epoch times and resident memory; writes them as JSON to ``out`` when training ends."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.proc = psutil.Process()
        self.epoch_s: list[float] = []
        self.train_rss: list[float] = []
        self.val_growth: list[float] = []
        self.val_base = self.val_peak = 0.0

    def rss(self) -> float:
        return self.proc.memory_info().rss / MB

    def on_train_epoch_start(self, trainer, module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:  # Lightning 2 runs it after the epoch's validation
        self.epoch_s.append(time.perf_counter() - self.t0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.train_rss.append(self.rss())

    def on_validation_start(self, trainer, module) -> None:
        self.val_base = self.val_peak = self.rss()

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.val_peak = max(self.val_peak, self.rss())

    def on_validation_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self.val_growth.append(self.val_peak - self.val_base)

    def on_train_end(self, trainer, module) -> None:
        Path(self.out).write_text(
            json.dumps(
                {
                    "epoch_s": self.epoch_s,
                    "steps": trainer.num_training_batches,
                    "train_rss_first": self.train_rss[0],
                    "train_rss_last": self.train_rss[-1],
                    "train_rss_max": max(self.train_rss),
                    "val_growth": self.val_growth,
                }
            )
        )


def child(root: str, out_dir: str, epochs: int, train: int, val: int) -> None:
    """Train the quickstart configuration on ``root`` through seg.train.train, with the probe as a callback."""
    from omegaconf import open_dict

    from seg.train import train as run_training
    from seg.utils.compose import compose_config

    cfg = compose_config(
        [
            f"data.root={root}",
            f"data.prepare.num_train={train}",
            f"data.prepare.num_val={val}",
            f"trainer.max_epochs={epochs}",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
        ]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = out_dir
        cfg.callbacks.probe = {"_target_": "scale.Probe", "out": f"{out_dir}/probe.json"}
        del cfg.hydra
    run_training(cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=96, help="training images at 1x (batch 8: 12 steps)")
    p.add_argument("--val", type=int, default=50, help="validation images at 1x")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--child", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--sizes", nargs=2, type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child[0], a.child[1], a.epochs, *a.sizes)
        return
    header("Scale: epoch time and memory against dataset size", "python " + " ".join(sys.argv))
    from seg.data.synthetic import generate

    tmp = Path(tempfile.mkdtemp(prefix="seg-bench-scale-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # data and checkpoints: GBs
    for f in a.factors:
        generate(tmp / f"x{f}", num_train=f * a.train, num_val=f * a.val, size=96, max_objects=2, seed=0)
    order = a.factors + a.factors[::-1]
    runs: dict[int, list[dict]] = {f: [] for f in a.factors}
    for i, f in enumerate(order):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(tmp / f"x{f}"),
            str(tmp / f"run{i}"),
            "--sizes",
            str(f * a.train),
            str(f * a.val),
            "--epochs",
            str(a.epochs),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"child failed:\n{res.stderr[-3000:]}")
        runs[f].append(json.loads((tmp / f"run{i}" / "probe.json").read_text()))
        r = runs[f][-1]
        print(
            f"  {f}x: epochs {', '.join(f'{s:.1f}' for s in r['epoch_s'])} s; train RSS {r['train_rss_first']:.0f} "
            f"-> {r['train_rss_last']:.0f} MB (max {r['train_rss_max']:.0f}); validation RSS growth "
            f"{', '.join(f'{g:.0f}' for g in r['val_growth'])} MB",
            flush=True,
        )
    epochs = {f: statistics.mean(r["epoch_s"][-1] for r in runs[f]) for f in a.factors}
    # least-squares line through (factor, epoch time): linear growth means small residuals
    mf, me = statistics.mean(a.factors), statistics.mean(epochs.values())
    slope = sum((f - mf) * (epochs[f] - me) for f in a.factors) / sum((f - mf) ** 2 for f in a.factors)
    intercept = me - slope * mf
    print(
        f"\n{'size':>5} {'train/val images':>17} {'last epoch s':>13} {'vs 1x':>6} {'s per step':>11} "
        f"{'off the line':>13} {'train RSS growth MB':>20} {'val RSS growth MB':>18}"
    )
    for f in a.factors:
        epoch = epochs[f]
        fit = intercept + slope * f
        growth = max(r["train_rss_last"] - r["train_rss_first"] for r in runs[f])
        val = max(g for r in runs[f] for g in r["val_growth"])
        rel, per_step, off = epoch / epochs[a.factors[0]], epoch / runs[f][0]["steps"], 100 * (epoch - fit) / fit
        print(
            f"{f:>4}x {f * a.train:>8}/{f * a.val:<8} {epoch:13.1f} {rel:6.2f} {per_step:11.3f} {off:+12.1f}% "
            f"{growth:20.0f} {val:18.0f}"
        )
    print(f"line: epoch time = {intercept:.2f} s + {slope:.2f} s x factor (fixed per-epoch cost + per-image cost)")


if __name__ == "__main__":
    main()
