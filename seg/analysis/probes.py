"""Lever probes: ``python -m seg.analysis.probes --baseline NAME --split SPLIT --out probes.png NAME=RUN,RUN ...``.

A probe is one lever (a decoder, an augmentation, a schedule) run with some seeds; each ``NAME=RUN,RUN`` argument
names a probe and its run folders (globs allowed). Every probe is compared with the baseline seed by seed (the
paired difference and its 95% interval, seg/analysis/paired.py) on ``--split`` (an extra validation split, such as
a held-out sequence) and on val. Prints a Markdown table (probe, seeds, mean and paired difference on the split,
val, training minutes, steps) and draws the split's mIoU of every run against its training minutes, one colour
and marker per probe, its mean as a larger marker.
"""

from __future__ import annotations

import argparse
import glob
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from seg.analysis.paired import PairedDifference, paired_difference
from seg.analysis.sweep import SEED, Run, load_run, nan_mean, run_value

LOG_TICKS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 60, 90, 120, 180, 240)  # minutes on a logarithmic axis
MARKERS = "osD^v<>ph*"  # a probe's marker: the next shape after every ten colours


@dataclass
class Probe:
    """One lever's runs."""

    name: str
    runs: list[Run]

    @property
    def finished(self) -> list[Run]:
        """The runs that wrote their metrics."""
        return [r for r in self.runs if r.status == "ok"]

    def by_seed(self, split: str) -> dict[str, float]:
        """Seed -> mIoU on ``split`` ("val" or an extra validation split) of the finished runs."""
        return {_seed(r): r.miou if split == "val" else r.split_miou(split) for r in self.finished}

    def timed(self, split: str) -> list[tuple[float, float]]:
        """(training minutes, mIoU on ``split``) of each finished run that logged its wall time (``train_wall_s``)."""
        timed = [r for r in self.finished if "train_wall_s" in r.metrics]
        return [
            (float(r.metrics["train_wall_s"]) / 60, r.miou if split == "val" else r.split_miou(split)) for r in timed
        ]

    def steps(self) -> list[int]:
        return [int(r.metrics["global_step"]) for r in self.finished if "global_step" in r.metrics]


def _seed(run: Run) -> str:
    """The run's seed: its override, else the composed config's."""
    return run.overrides.get(SEED) or run_value(run.path, SEED) or "?"


def parse_probe(text: str) -> Probe:
    """``NAME=RUN,RUN`` -> a Probe; each RUN a run folder or a glob of them."""
    name, sep, folders = text.partition("=")
    if not sep or not name or not folders:
        raise SystemExit(f"error: a probe is NAME=RUN[,RUN...], got {text!r}")
    paths: list[Path] = []
    for pattern in folders.split(","):
        matches = sorted(glob.glob(pattern)) or [pattern]
        paths.extend(Path(m) for m in matches)
    runs = []
    for path in paths:
        if not (path / ".hydra" / "overrides.yaml").is_file():
            raise SystemExit(f"error: {path} is not a run folder (no .hydra/overrides.yaml); probe {name!r}")
        runs.append(load_run(path, path.name))
    return Probe(name, runs)


def _diff(d: PairedDifference) -> str:
    if d.n == 0:
        return "-"
    if d.n == 1:
        return f"{d.mean:+.4f} (one pair)"
    verdict = "shown" if d.shown else "not shown"
    return f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], ahead in {d.positive}/{d.n}: {verdict}"


def to_markdown(probes: Sequence[Probe], baseline: Probe, split: str) -> str:
    """One row per probe: seeds, mean on ``split`` and its paired difference with the baseline, the same on val,
    mean training minutes and steps."""
    lines = [
        f"baseline: {baseline.name}; differences paired by seed, with their 95% interval (seg/analysis/paired.py)",
        "",
        f"| probe | seeds | {split} mIoU | {split} - baseline | val mIoU | val - baseline | minutes | steps |",
        "|---|---|---:|---|---:|---|---:|---:|",
    ]
    for probe in probes:
        held, val = probe.by_seed(split), probe.by_seed("val")
        seeds = ", ".join(sorted(held, key=lambda s: (len(s), s)))
        if probe is baseline:
            d_held = d_val = "-"
        else:
            d_held = _diff(paired_difference(held, baseline.by_seed(split)))
            d_val = _diff(paired_difference(val, baseline.by_seed("val")))
        steps = sorted(set(probe.steps()))
        lines.append(
            f"| {probe.name} | {seeds} | {nan_mean(list(held.values())):.4f} | {d_held} | "
            f"{nan_mean(list(val.values())):.4f} | {d_val} | {nan_mean([m for m, _ in probe.timed(split)]):.1f} | "
            f"{'/'.join(map(str, steps))} |"
        )
    return "\n".join(lines)


def probe_style(i: int) -> dict:
    """The i-th probe's colour and marker: ten colours, then the next marker shape, so that no two of up to 90
    probes look alike."""
    return {"color": colormaps["tab10"](i % 10), "marker": MARKERS[(i // 10) % len(MARKERS)]}


def plot(probes: Sequence[Probe], split: str, title: str = "") -> Figure:
    """The split's mIoU of every run against its training minutes; a probe's mean as a larger marker. The minutes
    axis is logarithmic where they span more than 4x (half- and full-resolution probes in one figure)."""
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    ax = fig.subplots()
    spans = []
    for i, probe in enumerate(probes):
        style = probe_style(i)
        points = probe.timed(split)
        xs, ys = [m for m, _ in points], [v for _, v in points]
        spans += xs
        ax.scatter(xs, ys, alpha=0.45, s=22, **style)
        if xs:
            ax.scatter([nan_mean(xs)], [nan_mean(ys)], s=90, edgecolor="black", label=probe.name, **style)
    if spans and min(spans) > 0 and max(spans) / min(spans) > 4:
        ax.set_xscale("log")
        ticks = [t for t in LOG_TICKS if min(spans) / 1.2 <= t <= max(spans) * 1.2]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training minutes (the fit with its validations)")
    ax.set_ylabel(f"{split} mIoU")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    title = title or f"{split} mIoU per probe (small: one seed, large: the mean)"
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=10)  # over the figure: a wide legend cannot push it out
    return fig


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m seg.analysis.probes", description=__doc__.split("\n\n")[0])
    parser.add_argument("probes", nargs="+", help="NAME=RUN[,RUN...] (run folders or globs)")
    parser.add_argument("--baseline", required=True, help="the probe the others are paired with")
    parser.add_argument("--split", required=True, help="the extra validation split to judge on, e.g. train@0006R0")
    parser.add_argument("--out", type=Path, default=None, help="write the figure here (PNG)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    probes = [parse_probe(text) for text in args.probes]
    named = {p.name: p for p in probes}
    if args.baseline not in named:
        parser.error(f"--baseline {args.baseline!r} is none of the probes: {', '.join(named)}")
    print(to_markdown(probes, named[args.baseline], args.split))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        plot(probes, args.split, args.title).savefig(args.out, dpi=120)
        print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
