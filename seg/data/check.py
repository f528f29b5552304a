"""Dataset checker: ``python -m seg.data.check data=<dataset config> data.root=... [splits=[val]]``.

Scans every pair of the splits with the dataset's own per-sample checks (``SegmentationDataset.inspect``,
the code behind ``load``), reports ids shared between train and val, prints per-class pixel frequencies and
exits 1 listing each bad file with its problem, one line each.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import cv2
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from seg.data.base import IGNORE_INDEX, SegmentationDataset
from seg.utils.cli import entry_point
from seg.utils.progress import progress_bar


@dataclass
class SplitReport:
    """What one split's scan found: pair count, bad pairs and label pixel counts of the good ones."""

    split: str
    pairs: int = 0
    bad_pairs: int = 0
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))


@dataclass
class CheckResult:
    """Every problem found (one line each, naming the file) and the per-split reports."""

    dataset: str = ""
    classes: tuple[str, ...] = ()
    splits: dict[str, SplitReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _splits(cfg: DictConfig) -> list[str]:
    splits = cfg.get("splits") or [cfg.data.get("train_split", "train"), cfg.data.get("val_split", "val")]
    return list(dict.fromkeys(str(s) for s in splits))


def build_datasets(cfg: DictConfig, result: CheckResult) -> dict[str, SegmentationDataset]:
    """One dataset per split, file checks deferred to the scan; set-up errors become problems."""
    factory = instantiate(cfg.data).dataset  # with the dataset options set at the data level (data=folder)
    datasets = {}
    for split in _splits(cfg):
        try:
            datasets[split] = factory(root=cfg.data.root, split=split, transform=None, check_files=False)
        except (OSError, ValueError) as e:
            result.problems.append(str(e))
    if datasets:
        ds = next(iter(datasets.values()))
        result.dataset, result.classes = ds.name, tuple(ds.classes)
        expected = cfg.data.get("num_classes")
        if expected is not None and expected != ds.num_classes:
            result.problems.append(f"data.num_classes={expected} but {ds.name} has {ds.num_classes} classes")
    return datasets


def shared_ids(datasets: dict[str, SegmentationDataset], train_split: str, val_split: str) -> list[str]:
    """One line per id listed in both the train and the val split (a val image must never be trained on)."""
    if train_split == val_split or train_split not in datasets or val_split not in datasets:
        return []
    train, val = datasets[train_split], datasets[val_split]
    shared = set(train.ids) & set(val.ids)
    return [
        f"{image}: id '{i}' is in both '{train_split}' and '{val_split}'"
        for i, (image, _) in zip(val.ids, val.files, strict=True)
        if i in shared
    ]


def scan(datasets: dict[str, SegmentationDataset], result: CheckResult, console: Console) -> None:
    """Inspect every pair under a progress bar; collect problems and label pixel counts."""
    with progress_bar(console) as progress:
        for split, ds in datasets.items():
            report = result.splits[split] = SplitReport(split, pairs=len(ds))
            task = progress.add_task(f"{ds.name} {split}", total=len(ds))
            for index in range(len(ds)):
                _, mask, errors = ds.inspect(index)
                if errors:
                    report.bad_pairs += 1
                    result.problems.extend(str(e) for e in errors)
                elif mask is not None:
                    report.pixels += np.bincount(mask.ravel(), minlength=256)
                progress.advance(task)


def summary_table(result: CheckResult) -> Table:
    """Per-class share of all pixels of each split's good pairs, and the void (255) share."""
    table = Table(title=f"{result.dataset}: pixel frequencies (% of pixels, good pairs only)")
    table.add_column("id", justify="right")
    table.add_column("class")
    for split, report in result.splits.items():
        table.add_column(f"{split} ({report.pairs - report.bad_pairs}/{report.pairs} ok)", justify="right")
    shares = {s: r.pixels / max(int(r.pixels.sum()), 1) * 100 for s, r in result.splits.items()}
    for index, name in enumerate(result.classes):
        table.add_row(str(index), name, *(f"{shares[s][index]:.2f}" for s in result.splits))
    void = (f"{shares[s][IGNORE_INDEX]:.2f}" for s in result.splits)
    table.add_row(str(IGNORE_INDEX), "void (ignored)", *void)
    return table


def run_check(cfg: DictConfig, console: Console | None = None) -> CheckResult:
    """Check the configured dataset's splits; print the summary and one line per problem."""
    console = console or Console()
    result = CheckResult()
    datasets = build_datasets(cfg, result)
    scan(datasets, result, console)
    train_split, val_split = cfg.data.get("train_split", "train"), cfg.data.get("val_split", "val")
    result.problems += shared_ids(datasets, train_split, val_split)
    if result.splits:
        console.print(summary_table(result))
    for line in result.problems:
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # soft_wrap: one line per problem
    pairs = sum(r.pairs for r in result.splits.values())
    verdict = "OK" if result.ok else f"FAILED: {len(result.problems)} problem(s)"
    line = f"{result.dataset or 'dataset'} {cfg.data.root}: {pairs} pairs checked, {verdict}"
    console.print(line, markup=False, soft_wrap=True)
    return result


def check(cfg: DictConfig) -> None:
    """``run_check`` as a command: exit status 1 when any problem was found."""
    # OpenCV logs its own warning for each truncated file on stderr; the report names them already
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if not run_check(cfg).ok:
        sys.exit(1)


main = entry_point("check", check)

if __name__ == "__main__":
    main()
