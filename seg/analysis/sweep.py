"""Sweep report: ``python -m seg.analysis.sweep <sweep folder>``.

Collects every run's overrides (``.hydra/overrides.yaml``), ``metrics.json`` and ``job_status.json`` under a
Hydra multirun folder (basic, Optuna or submitit) and writes

- ``sweep_report.csv``: every run's overrides, metrics and per-class IoU, one row per run;
- ``sweep_report.md``: a table of the runs sorted by mIoU, failed and unfinished runs listed last with their reason;
- ``sweep_report.png``: mIoU against the swept values (left) and against training wall time (right).

When the sweep repeats configurations with several seeds (the override ``seed`` varies), the finished runs are
also grouped by the other swept keys: ``sweep_report.md`` then starts with a table "per configuration, over seeds"
(number of seeds, mean ± sample std of final and best mIoU and of training wall time, min and max mIoU, and the
number of failed or unfinished runs, best mean mIoU first) above the per-run table, the same numbers go to
``sweep_report_configs.csv``, and the plot shows means with std error bars and each seed's value as a dot. Every
pair of configurations is then compared seed by seed (mean difference with its 95% interval from t over the seeds,
the sign count, "not shown" where the interval spans zero; :mod:`seg.analysis.paired`), on val and on every extra
split, in ``sweep_report.md`` and ``sweep_report_paired.csv``.

Runs validated on extra splits as well (``data.extra_val_splits``, e.g. a held-out CamVid sequence) get a column
``<split> mIoU`` per split in every table and CSV (mean ± std per configuration); the plots show them as hollow
markers.

The per-run CSV has the columns commit, machine and precision from each run's ``provenance.json``, and so has the
per-run table when any run has that record; when one report mixes machines, precisions or commits (or holds runs
without a record beside runs with one), it starts with a warning saying which runs differ, since times and even
mIoU then compare different things."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from seg.analysis.paired import PairedDifference, paired_difference, t95
from seg.callbacks.job_status import STATUS_FILE
from seg.runs.provenance import read_provenance

METRICS = ("mIoU", "mIoU_best", "pixel_acc", "mean_acc", "fw_iou", "global_step", "epoch", "train_wall_s")
REPORT = "sweep_report"
SEED = "seed"  # the override key whose runs are repeats of one configuration


@dataclass
class Run:
    """One job folder of a sweep: its overrides, metrics and how it ended."""

    name: str
    path: Path
    overrides: dict[str, str]
    status: str  # "ok", "failed" or "unfinished"
    note: str = ""
    metrics: dict = field(default_factory=dict)
    provenance: dict | None = None  # provenance.json, None for runs from before it existed

    @property
    def commit(self) -> str:
        """The short commit (``+dirty`` when the tree had changes), ``seg <version>`` when installed, else ``?``."""
        code = (self.provenance or {}).get("code") or {}
        if code.get("commit"):
            return code["commit"][:7] + ("+dirty" if code.get("dirty") else "")
        return f"seg {code['seg_version']}" if code.get("seg_version") else "?"

    @property
    def machine(self) -> str:
        """The machine's label (the CPU model with ``+AMX`` or ``+AVX512-BF16``; the GPU's name), else ``?``."""
        return ((self.provenance or {}).get("machine") or {}).get("label") or "?"

    @property
    def precision(self) -> str:
        """The precision the run used, else ``?``."""
        return (self.provenance or {}).get("precision") or "?"

    @property
    def miou(self) -> float:
        value = self.metrics.get("mIoU")
        return float(value) if isinstance(value, int | float) else math.nan

    def split_miou(self, split: str) -> float:
        """The mIoU on an extra validation split (metrics.json's ``extra_val``), NaN when absent."""
        value = (self.metrics.get("extra_val") or {}).get(split, {}).get("mIoU")
        return float(value) if isinstance(value, int | float) else math.nan


def extra_splits(runs: Sequence[Run]) -> list[str]:
    """The extra validation splits any run reports, in first-seen order."""
    return list(dict.fromkeys(s for r in runs for s in (r.metrics.get("extra_val") or {})))


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


def slurm_state(job_id: str) -> str | None:
    """SLURM's final word on a job (``CANCELLED by 1000``, ``TIMEOUT``, ``RUNNING`` ...) from ``sacct``, or None
    where there is no sacct or no accounting to answer."""
    if shutil.which("sacct") is None:
        return None
    try:
        out = subprocess.run(
            ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def load_run(path: Path, name: str) -> Run:
    """Read one run folder; the status comes from job_status.json, else from whether metrics.json exists. A
    failed or unfinished SLURM job gets the scheduler's state in its note."""
    overrides = _parse_overrides(yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or [])
    metrics = _read_json(path / "metrics.json")
    status = _read_json(path / STATUS_FILE) or {}
    run = _load_run(path, name, overrides, metrics, status)
    run.provenance = read_provenance(path)
    return run


def _load_run(path: Path, name: str, overrides: dict[str, str], metrics: dict | None, status: dict) -> Run:
    state = status.get("status")
    if state not in ("failed", "running") or "slurm_job_id" not in status:
        slurm = ""
    else:
        job = status["slurm_job_id"]
        slurm = f" [SLURM job {job}: {slurm_state(job) or 'no answer from sacct'}]"
    if state == "failed":
        return Run(name, path, overrides, "failed", status.get("error", "") + slurm, metrics or {})
    if metrics is not None:
        return Run(name, path, overrides, "ok", "", metrics)
    if state == "interrupted":  # Ctrl-C: resumable from its last checkpoint, if it had one
        resume = status.get("resume")
        where = f"; resume: {resume}" if resume else "; no checkpoint to resume from"
        note = f"interrupted by {status.get('signal', 'SIGINT')} after {status.get('elapsed_s')} s{where}"
        return Run(name, path, overrides, "unfinished", note)
    if state == "completed":
        return Run(name, path, overrides, "failed", "completed without metrics.json (no validation ran?)")
    if state == "running":
        return Run(name, path, overrides, "unfinished", f"still running or killed (pid {status.get('pid')}){slurm}")
    return Run(name, path, overrides, "unfinished", "no metrics.json and no job_status.json")


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every folder under `sweep_dir` holding .hydra/overrides.yaml, in natural (job number) order; a key that some
    runs set and others did not is filled in from the others' run folders (:func:`fill_unset_keys`)."""
    folders = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")]
    folders = [f for f in folders if ".submitit" not in f.parts]

    def key(folder: Path):
        rel = folder.relative_to(sweep_dir).as_posix()
        return [int(t) if t.isdigit() else t for t in rel.split("/")]

    runs = [load_run(f, f.relative_to(sweep_dir).as_posix() or ".") for f in sorted(folders, key=key)]
    fill_unset_keys(runs)
    return runs


PROVENANCE_COLUMNS = ("commit", "machine", "precision")


def provenance_warnings(runs: Sequence[Run]) -> list[str]:
    """One line per way the runs differ in where they came from: machines, precisions, commits (each value with its
    runs), and runs without a provenance record beside runs with one. Empty when all runs share one machine,
    precision and commit, or when no run has a record (nothing to compare)."""
    lines = []
    unknown = [r.name for r in runs if r.provenance is None]
    if unknown and len(unknown) < len(runs):  # all unknown: nothing to compare (runs from before the record)
        missing = f"{len(unknown)} of {len(runs)} runs have no provenance.json"
        lines.append(f"{missing} (their code and machine are unknown): {', '.join(unknown)}")
    for column in PROVENANCE_COLUMNS:
        groups: dict[str, list[str]] = {}
        for r in runs:
            if r.provenance is not None and getattr(r, column) != "?":  # e.g. failed before its trainer was built
                groups.setdefault(getattr(r, column), []).append(r.name)
        if len(groups) > 1:
            parts = "; ".join(f"{value}: {', '.join(names)}" for value, names in groups.items())
            lines.append(f"the runs mix {len(groups)} {column}s ({parts})")
    return lines


def run_value(path: Path, key: str) -> str | None:
    """What a run had for an override key its command line did not set: a config group's choice
    (``model/net``) from ``.hydra/hydra.yaml``, a config value (``trainer.max_steps``) from ``.hydra/config.yaml``;
    None where the run folder does not say."""
    if "/" in key:
        hydra_cfg = _read_yaml(path / ".hydra" / "hydra.yaml") or {}
        choice = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices", {}).get(key)
        return None if choice is None else str(choice)
    node = _read_yaml(path / ".hydra" / "config.yaml")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, (dict, list)) else str(node)


def _read_yaml(path: Path) -> dict | None:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def fill_unset_keys(runs: Sequence[Run]) -> None:
    """Where some runs set a key on the command line and others left it at their config's value, give those the
    value from their run folder (:func:`run_value`), so that runs from two sweeps line up by what they ran
    (``trainer.max_steps=216`` beside the 300 a sweep's default gave)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    for key in keys:
        for run in runs:
            if key not in run.overrides:
                value = run_value(run.path, key)
                if value is not None:
                    run.overrides[key] = value


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (all keys when nothing differs)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    varying = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    return varying or keys


def sort_runs(runs: Sequence[Run]) -> list[Run]:
    """Finished runs by mIoU, best first (NaN last); then failed, then unfinished runs."""
    order = {"ok": 0, "failed": 1, "unfinished": 2}
    return sorted(runs, key=lambda r: (order[r.status], -r.miou if not math.isnan(r.miou) else math.inf))


@dataclass
class ConfigSummary:
    """One configuration (the swept values but the seed) over its seeds: finished runs averaged, others counted."""

    values: dict[str, str]
    n: int  # finished ("ok") runs
    n_failed: int  # failed or unfinished runs
    miou_mean: float
    miou_std: float  # sample std (ddof=1), NaN for fewer than two seeds
    miou_min: float
    miou_max: float
    miou_best_mean: float
    miou_best_std: float
    train_wall_s_mean: float
    train_wall_s_std: float
    runs: list[Run] = field(default_factory=list, repr=False)
    splits: dict[str, tuple[float, float]] = field(default_factory=dict)  # extra split -> (mean, std) mIoU

    @property
    def seed_mious(self) -> list[float]:
        """Final mIoU of each finished seed."""
        return [r.miou for r in self.runs if r.status == "ok" and not math.isnan(r.miou)]


def seeds_vary(runs: Sequence[Run]) -> bool:
    """Whether the runs differ in their `seed` override, i.e. repeat configurations with several seeds."""
    return len({r.overrides.get(SEED) for r in runs}) > 1


def config_keys(keys: Sequence[str]) -> list[str]:
    """The swept keys that make a configuration: all but the seed."""
    return [k for k in keys if k != SEED]


def _numbers(runs: Sequence[Run], metric: str) -> list[float]:
    values = (r.metrics.get(metric) for r in runs)
    return [float(v) for v in values if isinstance(v, int | float) and not math.isnan(v)]


def nan_mean(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN (a run that did not score a split); NaN when none is left."""
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else math.nan


def _summarize(values: dict[str, str], runs: list[Run]) -> ConfigSummary:
    ok = [r for r in runs if r.status == "ok"]
    miou, best, wall = (_numbers(ok, m) for m in ("mIoU", "mIoU_best", "train_wall_s"))
    splits = {}
    for split in extra_splits(ok):
        values_ = [v for v in (r.split_miou(split) for r in ok) if not math.isnan(v)]
        splits[split] = (nan_mean(values_), _std(values_))
    return ConfigSummary(
        values,
        len(ok),
        len(runs) - len(ok),
        nan_mean(miou),
        _std(miou),
        min(miou, default=math.nan),
        max(miou, default=math.nan),
        nan_mean(best),
        _std(best),
        nan_mean(wall),
        _std(wall),
        runs,
        splits,
    )


def summary_splits(summaries: Sequence[ConfigSummary]) -> list[str]:
    """The extra validation splits of any configuration, in first-seen order."""
    return list(dict.fromkeys(split for s in summaries for split in s.splits))


def aggregate(runs: Sequence[Run], keys: Sequence[str]) -> list[ConfigSummary]:
    """Group `runs` by their values of `keys` (the swept keys but the seed) into configurations, best mean mIoU
    first (configurations without a finished run last); failed and unfinished runs are counted, not averaged."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(r.overrides.get(k, "") for k in keys), []).append(r)
    summaries = [_summarize(dict(zip(keys, values, strict=True)), rs) for values, rs in groups.items()]
    return sorted(summaries, key=lambda s: -s.miou_mean if not math.isnan(s.miou_mean) else math.inf)


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
    splits = extra_splits(runs)
    metrics = [*METRICS, *(f"{s} mIoU" for s in splits)]
    header = ["run", "status", "note", *keys, *metrics, *PROVENANCE_COLUMNS, *(f"iou/{c}" for c in classes)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in runs:
            per_class = r.metrics.get("per_class_iou") or {}
            writer.writerow(
                [r.name, r.status, r.note, *(r.overrides.get(k, "") for k in keys)]
                + [r.metrics.get(m, "") for m in METRICS]
                + ["" if math.isnan(r.split_miou(s)) else r.split_miou(s) for s in splits]
                + [getattr(r, c) for c in PROVENANCE_COLUMNS]
                + [per_class.get(c, "") for c in classes]
            )


def to_markdown(runs: Sequence[Run], keys: Sequence[str]) -> str:
    """The report table: swept values, mIoU (final and best), pixel accuracy, steps, wall time, status."""
    splits = extra_splits(runs)
    # commit, machine, precision: when any run has provenance.json (older sweeps have none)
    origin = list(PROVENANCE_COLUMNS) if any(r.provenance is not None for r in runs) else []
    header = [
        "run",
        *keys,
        "mIoU",
        *(f"{s} mIoU" for s in splits),
        "best mIoU",
        "pixel acc",
        "steps",
        "train wall (s)",
        *origin,
        "status",
    ]
    numbers = "---:|" * (5 + len(splits))
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * len(keys) + numbers + "---|" * (1 + len(origin))]
    for r in runs:
        m = r.metrics
        status = r.status if not r.note else f"{r.status}: {r.note}".replace("|", "/").replace("\n", " ")
        cells = [r.name, *(r.overrides.get(k, "") for k in keys)]
        cells += [_fmt(m.get("mIoU")), *(_fmt(r.split_miou(s)) for s in splits)]
        cells += [_fmt(m.get(k)) for k in ("mIoU_best", "pixel_acc", "global_step")]
        cells.append(_fmt(m.get("train_wall_s"), digits=1))
        cells += [getattr(r, c) for c in origin]
        lines.append("| " + " | ".join([*cells, status]) + " |")
    return "\n".join(lines)


def _fmt_pm(mean: float, std: float, digits: int = 4) -> str:
    """ "mean ± std"; "-" for a missing mean or std (no finished run, a single seed)."""
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} ± " + ("-" if math.isnan(std) else f"{std:.{digits}f}")


def configs_to_markdown(summaries: Sequence[ConfigSummary], keys: Sequence[str]) -> str:
    """The table per configuration, over seeds: seeds, mean ± std of mIoU (final, best) and wall time, min, max."""
    splits = summary_splits(summaries)
    header = [
        *keys,
        "seeds",
        "failed",
        "mIoU",
        *(f"{split} mIoU" for split in splits),
        "best mIoU",
        "min mIoU",
        "max mIoU",
        "train wall (s)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(keys) + "---:|" * (7 + len(splits))]
    for s in summaries:
        cells = [*(s.values[k] for k in keys), str(s.n), str(s.n_failed), _fmt_pm(s.miou_mean, s.miou_std)]
        cells += [_fmt_pm(*s.splits.get(split, (math.nan, math.nan))) for split in splits]
        cells += [_fmt_pm(s.miou_best_mean, s.miou_best_std)]
        cells += [_fmt(s.miou_min).replace("nan", "-"), _fmt(s.miou_max).replace("nan", "-")]
        cells.append(_fmt_pm(s.train_wall_s_mean, s.train_wall_s_std, digits=1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _by_seed(summary: ConfigSummary, split: str) -> dict[str, float]:
    """Seed -> mIoU on ``split`` ("val", or an extra validation split) of a configuration's finished runs."""
    ok = [r for r in summary.runs if r.status == "ok"]
    return {r.overrides.get(SEED, ""): r.miou if split == "val" else r.split_miou(split) for r in ok}


def paired_rows(
    summaries: Sequence[ConfigSummary], keys: Sequence[str]
) -> list[tuple[str, str, str, PairedDifference]]:
    """(A, B, split, A - B over their common seeds) for every pair of configurations, A the better mean first, on
    val and on every extra validation split."""
    rows = []
    splits = ["val", *summary_splits(summaries)]
    for i, a in enumerate(summaries):
        for b in summaries[i + 1 :]:
            label_a, label_b = (_values_label(s.values, keys).replace("\n", ", ") for s in (a, b))
            for split in splits:
                rows.append((label_a, label_b, split, paired_difference(_by_seed(a, split), _by_seed(b, split))))
    return rows


def paired_to_markdown(rows: Sequence[tuple[str, str, str, PairedDifference]]) -> str:
    """The paired table: pairs, mean A - B, its 95% interval (t over seeds), the signs and the reading."""
    header = "| A | B | split | pairs | mean A - B | 95% interval | A > B / A < B | reading |"
    lines = [header, "|---|---|---|---:|---:|---|---:|---|"]
    for a, b, split, d in rows:
        interval = "-" if math.isnan(d.low) else f"[{d.low:+.4f}, {d.high:+.4f}]"
        mean = "-" if math.isnan(d.mean) else f"{d.mean:+.4f}"
        lines.append(
            f"| {a} | {b} | {split} | {d.n} | {mean} | {interval} | {d.positive} / {d.negative} | {d.reading} |"
        )
    return "\n".join(lines)


PAIRED_NOTE = (
    "A - B over the seeds both configurations finished; 95% interval of the mean difference from Student's t over "
    "the seeds; **not shown** where it spans zero (seg/analysis/paired.py)."
)


def report_markdown(runs: Sequence[Run], keys: Sequence[str]) -> str:
    """The per-run table; when seeds vary, above it the table per configuration, over seeds, and the paired
    differences between configurations. Provenance warnings (:func:`provenance_warnings`) first."""
    warnings = "".join(f"> **warning:** {line}\n" for line in provenance_warnings(runs))
    if not seeds_vary(runs):
        return (warnings + "\n" if warnings else "") + to_markdown(runs, keys)
    cfg = config_keys(keys)
    summaries = aggregate(runs, cfg)
    paired = f"## Paired differences over seeds\n\n{PAIRED_NOTE}\n\n{paired_to_markdown(paired_rows(summaries, cfg))}"
    return (
        (warnings + "\n" if warnings else "")
        + f"## Per configuration, over seeds\n\n{configs_to_markdown(summaries, cfg)}\n\n"
        + (paired + "\n\n" if len(summaries) > 1 else "")
        + f"## Per run\n\n{to_markdown(runs, keys)}"
    )


def write_paired_csv(rows: Sequence[tuple[str, str, str, PairedDifference]], path: Path) -> None:
    """The paired differences, one row per pair of configurations and split; NaN left empty."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["A", "B", "split", "pairs", "mean", "low", "high", "positive", "negative", "reading"])
        for a, b, split, d in rows:
            numbers = ["" if math.isnan(v) else v for v in (d.mean, d.low, d.high)]
            writer.writerow([a, b, split, d.n, *numbers, d.positive, d.negative, d.reading])


CONFIG_COLUMNS = (
    "n",
    "n_failed",
    "miou_mean",
    "miou_std",
    "miou_min",
    "miou_max",
    "miou_best_mean",
    "miou_best_std",
    "train_wall_s_mean",
    "train_wall_s_std",
)


def write_configs_csv(summaries: Sequence[ConfigSummary], keys: Sequence[str], path: Path) -> None:
    """The numbers per configuration, one row per configuration; NaN (no finished run, a single seed) left empty."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        splits = summary_splits(summaries)
        writer.writerow([*keys, *CONFIG_COLUMNS, *(f"{split} {c}" for split in splits for c in ("mean", "std"))])
        for s in summaries:
            numbers = [getattr(s, c) for c in CONFIG_COLUMNS]
            numbers += [v for split in splits for v in s.splits.get(split, (math.nan, math.nan))]
            writer.writerow([*(s.values[k] for k in keys), *("" if math.isnan(v) else v for v in numbers)])


def _values_label(values: dict[str, str], keys: Sequence[str]) -> str:
    """Swept values: the bare value for one key, "key=value" lines (last key part) for several."""
    if not keys:
        return "all runs"
    if len(keys) == 1:
        return values.get(keys[0], "")
    return "\n".join(f"{k.rsplit('.', 1)[-1]}={values.get(k, '')}" for k in keys)


def _label(run: Run, keys: Sequence[str]) -> str:
    """The run's swept values (see _values_label)."""
    return _values_label(run.overrides, keys)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def plot(runs: Sequence[Run], keys: Sequence[str]) -> Figure:
    """mIoU against the swept values (left) and against training wall time (right); failed runs marked. When seeds
    vary: per configuration, the mean over seeds with std error bars and each seed as a dot (see plot_configs)."""
    if seeds_vary(runs):
        cfg = config_keys(keys)
        return plot_configs(aggregate(runs, cfg), cfg)
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
        ax_t.annotate(
            _label(r, keys).replace("\n", ", "),
            (r.metrics["train_wall_s"], r.miou),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax_t.margins(x=0.25, y=0.15)
    ax_t.set_xlabel("training wall time (s)")
    ax_t.set_ylabel("val mIoU")
    ax_t.set_title("mIoU against cost")
    return fig


def _or0(value: float) -> float:
    """An error bar's length: 0 for a missing std (a single seed)."""
    return 0.0 if math.isnan(value) else value


def _ci(std: float, n: int) -> float:
    """Half-width of the 95% interval of a mean over ``n`` seeds (t over seeds); 0 where there is none."""
    return 0.0 if n < 2 or math.isnan(std) else t95(n - 1) * std / math.sqrt(n)


def _seed_dots(ax, x: float, summary: ConfigSummary, first: bool) -> None:
    mious = summary.seed_mious
    ax.plot([x] * len(mious), mious, "k.", ms=6, zorder=3, label="one seed" if first else None)


def plot_configs(summaries: Sequence[ConfigSummary], keys: Sequence[str]) -> Figure:
    """Per configuration over seeds: mean final mIoU with the 95% interval of the mean (t over seeds) and each seed
    as a black dot (left; points over a single numeric key, else bars), and mean mIoU against mean training wall
    time, 95% intervals both ways (right). Val is filled, each extra split (a held-out sequence) hollow."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax, ax_t = fig.subplots(1, 2, width_ratios=[3, 2])
    numeric = len(keys) == 1 and all(_number(s.values[keys[0]]) is not None for s in summaries)
    if numeric:
        pts = sorted(((_number(s.values[keys[0]]), s) for s in summaries), key=lambda t: t[0])
        done = [(x, s) for x, s in pts if s.n]
        ax.errorbar(
            [x for x, _ in done],
            [s.miou_mean for _, s in done],
            yerr=[_ci(s.miou_std, s.n) for _, s in done],
            fmt="o-",
            capsize=4,
            label="mIoU (final), mean, 95% interval",
        )
        ax.plot([x for x, _ in done], [s.miou_best_mean for _, s in done], "s--", label="best (mean)")
        for split in summary_splits([s for _, s in done]):
            stats = [s.splits.get(split, (math.nan, math.nan)) for _, s in done]
            ax.errorbar(
                [x for x, _ in done],
                [m for m, _ in stats],
                yerr=[_ci(d, s.n) for (_, d), (_, s) in zip(stats, done, strict=True)],
                fmt="o:",
                mfc="none",
                capsize=4,
                label=f"{split} mIoU, mean, 95% interval",
            )
        for i, (x, s) in enumerate(done):
            _seed_dots(ax, x, s, i == 0)
        for x, s in pts:
            if s.n_failed:
                ax.plot(x, 0, "rx")
                ax.annotate(f"{s.n_failed} failed", (x, 0), color="red", fontsize=8)
        ax.set_xlabel(keys[0])
        ax.legend()
    else:
        xs = range(len(summaries))
        means = [_or0(s.miou_mean) for s in summaries]
        ax.bar(
            xs,
            means,
            yerr=[_ci(s.miou_std, s.n) for s in summaries],
            capsize=4,
            color="tab:blue",
            label="mIoU (final), mean, 95% interval",
        )
        ax.plot(xs, [s.miou_best_mean for s in summaries], "k_", ms=20, mew=2, label="best mIoU (mean)")
        for split in summary_splits(summaries):
            stats = [s.splits.get(split, (math.nan, math.nan)) for s in summaries]
            ax.errorbar(
                list(xs),
                [m for m, _ in stats],
                yerr=[_ci(d, s.n) for (_, d), s in zip(stats, summaries, strict=True)],
                fmt="o",
                mfc="none",
                color="tab:orange",
                capsize=4,
                label=f"{split} mIoU, mean, 95% interval",
            )
        for x, s in zip(xs, summaries, strict=True):
            _seed_dots(ax, x, s, x == 0)
            if s.n:
                top = max([s.miou_mean + _ci(s.miou_std, s.n), *s.seed_mious])
                ax.annotate(f"{s.miou_mean:.3f}", (x, top + 0.01), ha="center", va="bottom", fontsize=8)
            if s.n_failed:
                ax.annotate(f"{s.n_failed} failed", (x, 0.05), ha="center", va="bottom", color="red", rotation=90)
        labels = [_values_label(s.values, keys) + f"\n(n={s.n})" for s in summaries]
        ax.set_xticks(list(xs), labels, fontsize=8, rotation=20 if len(keys) > 1 else 0)
        ax.set_xlabel(keys[0] if len(keys) == 1 else "configuration")
        ax.legend(loc="upper right")
    ax.set_ylabel("val mIoU")
    ax.set_ylim(0, 1.1)
    bad = sum(s.n_failed for s in summaries)
    ax.set_title("mIoU per configuration, over seeds" + (f" ({bad} failed or unfinished)" if bad else ""))
    for s in summaries:
        if s.n and not math.isnan(s.train_wall_s_mean):
            ax_t.errorbar(
                s.train_wall_s_mean,
                s.miou_mean,
                xerr=_ci(s.train_wall_s_std, s.n),
                yerr=_ci(s.miou_std, s.n),
                fmt="o",
                color="tab:blue",
                capsize=3,
            )
            ax_t.annotate(
                _values_label(s.values, keys).replace("\n", ", "),
                (s.train_wall_s_mean, s.miou_mean),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
            for mean, std in s.splits.values():
                ax_t.errorbar(
                    s.train_wall_s_mean, mean, yerr=_ci(std, s.n), fmt="o", mfc="none", color="tab:orange", capsize=3
                )
    ax_t.margins(x=0.25, y=0.15)
    ax_t.set_xlabel("training wall time (s), mean, 95% interval")
    ax_t.set_ylabel("val mIoU, mean, 95% interval")
    ax_t.set_title("mIoU against cost, over seeds")
    return fig


def report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> list[Run]:
    """Write sweep_report.{csv,md,png} for `sweep_dir` (into `out_dir`, default the sweep folder), and
    sweep_report_configs.csv when the seed varies (a stale one from an earlier report is removed otherwise)."""
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
    if seeds_vary(runs):
        cfg = config_keys(keys)
        summaries = aggregate(runs, cfg)
        write_configs_csv(summaries, cfg, out / f"{REPORT}_configs.csv")
        write_paired_csv(paired_rows(summaries, cfg), out / f"{REPORT}_paired.csv")
    else:
        (out / f"{REPORT}_configs.csv").unlink(missing_ok=True)
        (out / f"{REPORT}_paired.csv").unlink(missing_ok=True)
    (out / f"{REPORT}.md").write_text(report_markdown(runs, keys) + "\n")
    plot(runs, keys).savefig(out / f"{REPORT}.png", dpi=110)
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: print the Markdown tables (per configuration first, when seeds vary) and where the files
    went."""
    parser = argparse.ArgumentParser(prog="python -m seg.analysis.sweep", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun folder, e.g. outputs/train/multiruns/<date>")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: the sweep folder)")
    args = parser.parse_args(argv)
    try:
        runs = report(args.sweep_dir, args.out)
    except FileNotFoundError as exc:
        parser.exit(2, f"error: {exc}\n")
    out = args.out or args.sweep_dir
    print(report_markdown(runs, swept_keys(runs)))
    for line in provenance_warnings(runs):
        print(f"warning: {line}", file=sys.stderr)
    bad = sum(r.status != "ok" for r in runs)
    configs = f", {REPORT}_configs.csv and {REPORT}_paired.csv" if seeds_vary(runs) else ""
    print(f"\n{len(runs)} runs ({bad} failed or unfinished); wrote {out}/{REPORT}.csv, .md and .png{configs}")


if __name__ == "__main__":
    main()
