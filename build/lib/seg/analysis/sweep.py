"""Sweep report: ``python -m seg.analysis.sweep <sweep folder>``.

Collects every run's overrides (``.hydra/overrides.yaml``), ``metrics.json`` and ``job_status.json`` under a
Hydra multirun folder (basic, Optuna or submitit) into ``sweep_report.csv`` and ``sweep_report.md`` (sorted by
mIoU, failed and unfinished runs listed last with their reason) and ``sweep_report.png`` (mIoU against the
swept values, and against training wall time).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from seg.callbacks.job_status import STATUS_FILE

METRICS = ("mIoU", "mIoU_best", "pixel_acc", "mean_acc", "fw_iou", "global_step", "epoch", "train_wall_s")
REPORT = "sweep_report"


@dataclass
class Run:
    """One job folder of a sweep: its overrides, metrics and how it ended."""

    name: str
    path: Path
    overrides: dict[str, str]
    status: str  # "ok", "failed" or "unfinished"
    note: str = ""
    metrics: dict = field(default_factory=dict)

    @property
    def miou(self) -> float:
        value = self.metrics.get("mIoU")
        return float(value) if isinstance(value, int | float) else math.nan


def _parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """ "+a.b=1" -> {"a.b": "1"}; a deletion "~a.b" -> {"a.b": "(deleted)"}."""
    out = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if key.startswith("~"):
            out[key[1:]] = "(deleted)"
        else:
            out[key.lstrip("+")] = value if sep else ""
    return out


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_run(path: Path, name: str) -> Run:
    """Read one run folder; the status comes from job_status.json, else from whether metrics.json exists."""
    overrides = _parse_overrides(yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or [])
    metrics = _read_json(path / "metrics.json")
    status = _read_json(path / STATUS_FILE) or {}
    if status.get("status") == "failed":
        return Run(name, path, overrides, "failed", status.get("error", ""), metrics or {})
    if metrics is not None:
        return Run(name, path, overrides, "ok", "", metrics)
    if status.get("status") == "completed":
        return Run(name, path, overrides, "failed", "completed without metrics.json (no validation ran?)")
    if status.get("status") == "running":
        return Run(name, path, overrides, "unfinished", f"still running or killed (pid {status.get('pid')})")
    return Run(name, path, overrides, "unfinished", "no metrics.json and no job_status.json")


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every folder under `sweep_dir` holding .hydra/overrides.yaml, in natural (job number) order."""
    folders = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")]
    folders = [f for f in folders if ".submitit" not in f.parts]

    def key(folder: Path):
        rel = folder.relative_to(sweep_dir).as_posix()
        return [int(t) if t.isdigit() else t for t in rel.split("/")]

    return [load_run(f, f.relative_to(sweep_dir).as_posix() or ".") for f in sorted(folders, key=key)]


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (all keys when nothing differs)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    return varying or keys


def sort_runs(runs: Sequence[Run]) -> list[Run]:
    """Finished runs by mIoU, best first (NaN last); then failed, then unfinished runs."""
    order = {"ok": 0, "failed": 1, "unfinished": 2}
    return sorted(runs, key=lambda r: (order[r.status], -r.miou if not math.isnan(r.miou) else math.inf))


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def write_csv(runs: Sequence[Run], path: Path) -> None:
    """All overrides, metrics and per-class IoU, one row per run."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    classes = list(dict.fromkeys(c for r in runs for c in (r.metrics.get("per_class_iou") or {})))
    header = ["run", "status", "note", *keys, *METRICS, *(f"iou/{c}" for c in classes)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in runs:
            per_class = r.metrics.get("per_class_iou") or {}
            writer.writerow(
                [r.name, r.status, r.note, *(r.overrides.get(k, "") for k in keys)]
                + [r.metrics.get(m, "") for m in METRICS]
                + [per_class.get(c, "") for c in classes]
            )


def to_markdown(runs: Sequence[Run], keys: Sequence[str]) -> str:
    """The report table: swept values, mIoU (final and best), pixel accuracy, steps, wall time, status."""
    header = ["run", *keys, "mIoU", "best mIoU", "pixel acc", "steps", "train wall (s)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * len(keys) + "---:|" * 5 + "---|"]
    for r in runs:
        m = r.metrics
        status = r.status if not r.note else f"{r.status}: {r.note}".replace("|", "/").replace("\n", " ")
        cells = [r.name, *(r.overrides.get(k, "") for k in keys)]
        cells += [_fmt(m.get(k)) for k in ("mIoU", "mIoU_best", "pixel_acc", "global_step")]
        cells.append(_fmt(m.get("train_wall_s"), digits=1))
        lines.append("| " + " | ".join([*cells, status]) + " |")
    return "\n".join(lines)


def _label(run: Run, keys: Sequence[str]) -> str:
    """The run's swept values: the bare value for one key, "key=value" lines (last key part) for several."""
    if len(keys) == 1:
        return run.overrides.get(keys[0], "")
    return "\n".join(f"{k.rsplit('.', 1)[-1]}={run.overrides.get(k, '')}" for k in keys)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def plot(runs: Sequence[Run], keys: Sequence[str]) -> Figure:
    """mIoU against the swept values (left) and against training wall time (right); failed runs marked."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax, ax_t = fig.subplots(1, 2, width_ratios=[3, 2])
    numeric = len(keys) == 1 and all(_number(r.overrides.get(keys[0])) is not None for r in runs)
    if numeric:
        pts = sorted(((_number(r.overrides[keys[0]]), r) for r in runs if r.status == "ok"), key=lambda t: t[0])
        ax.plot([x for x, _ in pts], [r.miou for _, r in pts], "o-", label="mIoU (final)")
        ax.plot([x for x, _ in pts], [r.metrics.get("mIoU_best", math.nan) for _, r in pts], "s--", label="best")
        for r in runs:
            if r.status != "ok":
                ax.plot(_number(r.overrides[keys[0]]), 0, "rx")
                ax.annotate(r.status, (_number(r.overrides[keys[0]]), 0), color="red", fontsize=8)
        ax.set_xlabel(keys[0])
        ax.legend()
    else:
        xs = range(len(runs))
        best = [r.metrics.get("mIoU_best", math.nan) for r in runs]
        ax.bar(xs, [r.miou if r.status == "ok" else 0 for r in runs], color="tab:blue", label="mIoU (final)")
        ax.plot(xs, best, "k_", ms=20, mew=2, label="best mIoU")
        for x, r, b in zip(xs, runs, best, strict=True):
            if r.status == "ok":
                top = max(r.miou, b) if not math.isnan(b) else r.miou
                ax.annotate(f"{r.miou:.3f}", (x, top + 0.01), ha="center", va="bottom", fontsize=8)
            else:
                ax.annotate(r.status, (x, 0.05), ha="center", va="bottom", color="red", rotation=90)
        ax.set_xticks(list(xs), [_label(r, keys) for r in runs], fontsize=8, rotation=20 if len(keys) > 1 else 0)
        ax.set_xlabel(keys[0] if len(keys) == 1 else "configuration")
        ax.legend(loc="upper right")
    ax.set_ylabel("val mIoU")
    ax.set_ylim(0, 1.1)
    bad = sum(r.status != "ok" for r in runs)
    ax.set_title("mIoU per configuration" + (f" ({bad} failed or unfinished)" if bad else ""))
    timed = [r for r in runs if r.status == "ok" and isinstance(r.metrics.get("train_wall_s"), int | float)]
    for r in timed:
        ax_t.plot(r.metrics["train_wall_s"], r.miou, "o")
        ax_t.annotate(_label(r, keys).replace("\n", ", "), (r.metrics["train_wall_s"], r.miou), fontsize=7,
                      xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax_t.margins(x=0.25, y=0.15)
    ax_t.set_xlabel("training wall time (s)")
    ax_t.set_ylabel("val mIoU")
    ax_t.set_title("mIoU against cost")
    return fig


def report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> list[Run]:
    """Write sweep_report.{csv,md,png} for `sweep_dir` (into `out_dir`, default the sweep folder)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    runs = sort_runs(find_runs(sweep_dir))
    if not runs:
        raise FileNotFoundError(f"no runs (folders with .hydra/overrides.yaml) under {sweep_dir}")
    out = Path(out_dir) if out_dir is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    keys = swept_keys(runs)
    write_csv(runs, out / f"{REPORT}.csv")
    (out / f"{REPORT}.md").write_text(to_markdown(runs, keys) + "\n")
    plot(runs, keys).savefig(out / f"{REPORT}.png", dpi=110)
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: print the Markdown table and where the files went."""
    parser = argparse.ArgumentParser(prog="python -m seg.analysis.sweep", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun folder, e.g. outputs/train/multiruns/<date>")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        runs = report(args.sweep_dir, args.out)
    except FileNotFoundError as exc:
        parser.exit(2, f"error: {exc}\n")
    out = args.out or args.sweep_dir
    print(to_markdown(runs, swept_keys(runs)))
    bad = sum(r.status != "ok" for r in runs)
    print(f"\n{len(runs)} runs ({bad} failed or unfinished); wrote {out}/{REPORT}.csv, .md and .png")


if __name__ == "__main__":
    main()
