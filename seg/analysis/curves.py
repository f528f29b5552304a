"""Learning curves: ``python -m seg.analysis.curves RUN [RUN ...] --out curves.png``.

Reads each run folder's ``csv/metrics.csv`` (Lightning's CSV logger) and plots validation mIoU against the training
step and against the training wall time (``time/train_s``, logged at every validation), one line per run (dashed:
its extra validation splits, ``data.extra_val_splits``), and the IoU of each class at the last validation, one bar
per run; prints a Markdown table of every validation: step, wall time, mIoU and the IoU of each class.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

METRICS_CSV = Path("csv") / "metrics.csv"
IOU_PREFIX = "val/IoU/"
EXTRA_MIOU = re.compile(r"val/(.+)/mIoU")  # data.extra_val_splits: val/<split>/mIoU


@dataclass
class Curve:
    """The validations of one run, in step order."""

    label: str
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # NaN where the run did not log time/train_s
    miou: list[float] = field(default_factory=list)
    per_class: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)  # split -> mIoU at each validation


def _float(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_curve(run_dir: str | Path, label: str | None = None) -> Curve:
    """Every row of the run's metrics.csv that holds ``val/mIoU``; the sanity check is not logged there."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_CSV
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a seg run folder trained with the CSV logger?")
    curve = Curve(label or run_dir.name)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            miou = _float(row.get("val/mIoU"))
            if math.isnan(miou):
                continue
            # Lightning logs a validation inside fit at the index of the last finished step: global_step - 1
            curve.steps.append(int(float(row["step"])) + 1)
            curve.seconds.append(_float(row.get("time/train_s")))
            curve.miou.append(miou)
            ious = {k[len(IOU_PREFIX) :]: _float(v) for k, v in row.items() if k.startswith(IOU_PREFIX)}
            curve.per_class.append(ious)
            for key, value in row.items():
                found = EXTRA_MIOU.fullmatch(key or "")
                if found:
                    curve.extra.setdefault(found[1], []).append(_float(value))
    if not curve.steps:
        raise ValueError(f"{path} has no val/mIoU rows: the run stopped before its first validation")
    return curve


def to_markdown(curve: Curve) -> str:
    """One row per validation: step, minutes of training, mIoU and each class's IoU."""
    classes = list(dict.fromkeys(c for row in curve.per_class for c in row))
    header = ["step", "train min", "mIoU", *classes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for step, sec, miou, row in zip(curve.steps, curve.seconds, curve.miou, curve.per_class, strict=True):
        cells = [str(step), f"{sec / 60:.1f}", f"{miou:.4f}", *(f"{row.get(c, math.nan):.3f}" for c in classes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves: Sequence[Curve], title: str = "") -> Figure:
    """val mIoU against step (left) and training minutes (middle), one line per run (dashed: its extra validation
    splits); the IoU of each class at each run's last validation (right)."""
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    ax_s, ax_t, ax_c = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.2]})
    ax_t.sharey(ax_s)
    colours = [f"C{i}" for i in range(len(curves))]
    for c, colour in zip(curves, colours, strict=True):
        lines = [("val", c.miou, "o-")] + [(split, m, "s--") for split, m in c.extra.items()]
        for split, miou, style in lines:
            name = c.label if split == "val" else f"{c.label}, {split}"
            ax_s.plot(c.steps, miou, style, ms=3, color=colour, label=f"{name} ({max(miou):.3f} best)")
            timed = [(s / 60, m) for s, m in zip(c.seconds, miou, strict=True) if not math.isnan(s)]
            if timed:
                ax_t.plot(*zip(*timed, strict=True), style, ms=3, color=colour, label=name)
    classes = list(dict.fromkeys(k for c in curves for k in c.per_class[-1]))
    width = 0.8 / len(curves)
    for i, (c, colour) in enumerate(zip(curves, colours, strict=True)):
        ious = [c.per_class[-1].get(k, math.nan) for k in classes]
        ax_c.barh([j + i * width for j in range(len(classes))], ious, height=width, color=colour, label=c.label)
    ax_c.set_yticks([j + 0.4 - width / 2 for j in range(len(classes))], classes, fontsize=8)
    ax_c.invert_yaxis()
    ax_c.set_xlim(0, 1)
    ax_c.set_xlabel("IoU at the last validation (val)")
    ax_s.set_xlabel("training step")
    ax_s.set_ylabel("mIoU")
    ax_t.set_xlabel("training wall time (min)")
    for ax in (ax_s, ax_t, ax_c):
        ax.grid(alpha=0.3)
    ax_s.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: write the figure, print each run's table."""
    parser = argparse.ArgumentParser(prog="python -m seg.analysis.curves", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with csv/metrics.csv)")
    parser.add_argument("--labels", nargs="+", default=None, help="one legend label per run (default: folder names)")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="the figure (default: curves.png)")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error(f"{len(args.labels)} labels for {len(args.runs)} runs")
    labels = args.labels or [None] * len(args.runs)
    try:
        curves = [read_curve(run, label) for run, label in zip(args.runs, labels, strict=True)]
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    for c in curves:
        print(f"## {c.label}\n\n{to_markdown(c)}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, args.title).savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
