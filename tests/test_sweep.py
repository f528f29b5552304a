"""Sweep configs and the sweep report: tables sorted by mIoU, failed and unfinished runs listed, a real multirun."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from seg.analysis.sweep import aggregate, find_runs, main, nan_mean, plot, provenance_warnings, report, swept_keys
from seg.utils.machine import cpu_flags, cpu_model
from tests.helpers import TINY, compose_cfg

ROOT = Path(__file__).resolve().parents[1]


def make_run(sweep: Path, name: str, overrides: list[str], miou: float | None = None, status: dict | None = None):
    """A run folder as Hydra + seg.train leave it: .hydra/overrides.yaml, metrics.json, job_status.json."""
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if miou is not None:
        metrics = {
            "mIoU": miou,
            "mIoU_best": miou + 0.01,
            "pixel_acc": 0.9,
            "global_step": 250,
            "train_wall_s": 100.0 * (1 + miou),
            "per_class_iou": {"background": 0.9, "disk": miou},
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
    if status is not None:
        (run / "job_status.json").write_text(json.dumps(status))


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    fixed = "+experiment=dilation_sweep"
    make_run(root, "0", [fixed, "model.net.output_stride=32"], 0.5, {"status": "completed"})
    make_run(root, "1", [fixed, "model.net.output_stride=16"], 0.7, {"status": "completed"})
    make_run(root, "2", [fixed, "model.net.output_stride=8"], 0.6)  # made before job_status existed
    make_run(root, "3", [fixed, "model.net.output_stride=7"], None, {"status": "failed", "error": "ValueError: os 7"})
    make_run(root, "10", [fixed, "model.net.output_stride=4"], None, {"status": "running", "pid": 42})
    make_run(root, "11", [fixed, "model.net.output_stride=2"])
    return root


def test_report_sorts_by_miou_and_lists_failures(sweep):
    runs = report(sweep)
    assert [(r.name, r.status) for r in runs] == [
        ("1", "ok"),
        ("2", "ok"),
        ("0", "ok"),
        ("3", "failed"),
        ("10", "unfinished"),
        ("11", "unfinished"),
    ]
    assert "ValueError: os 7" in runs[3].note and "pid 42" in runs[4].note
    with (sweep / "sweep_report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["1", "2", "0", "3", "10", "11"]
    assert rows[0]["model.net.output_stride"] == "16" and float(rows[0]["mIoU"]) == 0.7
    assert rows[0]["experiment"] == "dilation_sweep" and rows[0]["iou/disk"] == "0.7"
    assert rows[3]["mIoU"] == "" and rows[3]["status"] == "failed"
    md = (sweep / "sweep_report.md").read_text().splitlines()
    assert md[0] == "| run | model.net.output_stride | mIoU | best mIoU | pixel acc | steps | train wall (s) | status |"
    assert md[2] == "| 1 | 16 | 0.7000 | 0.7100 | 0.9000 | 250 | 170.0 | ok |"  # constant overrides left out
    assert md[5].startswith("| 3 | 7 |") and md[5].endswith("| failed: ValueError: os 7 |")
    assert (sweep / "sweep_report.png").read_bytes()[:4] == b"\x89PNG"


def test_report_with_several_swept_keys_and_a_cli(sweep, tmp_path, capsys):
    overrides = ["+experiment=dilation_sweep", "model.net.output_stride=8", "model.net.multi_grid=[1,2]"]
    make_run(sweep, "12", overrides, 0.8)
    main([str(sweep), "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| run | model.net.output_stride | model.net.multi_grid | mIoU |")
    assert "| 12 | 8 | [1,2] | 0.8000 |" in out
    assert "7 runs (3 failed or unfinished)" in out
    assert (tmp_path / "report" / "sweep_report.png").is_file()


@pytest.fixture
def seeded(tmp_path) -> Path:
    """2 configurations x 3 seeds; the third seed of output stride 8 failed."""
    root = tmp_path / "seeded"
    fixed = "+experiment=dilation_sweep"
    values = {"16": [0.40, 0.42, 0.44], "8": [0.50, 0.56, None]}
    for i, (stride, seed) in enumerate((s, seed) for s in values for seed in (1, 2, 3)):
        miou = values[stride][seed - 1]
        status = {"status": "completed"} if miou is not None else {"status": "failed", "error": "RuntimeError: OOM"}
        make_run(root, str(i), [fixed, f"model.net.output_stride={stride}", f"seed={seed}"], miou, status)
    return root


def test_slurm_jobs_get_the_schedulers_state(tmp_path, monkeypatch):
    """A cancelled SLURM job's note carries sacct's state; a stand-in sacct answers only for the job asked."""
    fixed = "+experiment=dilation_sweep"
    make_run(
        tmp_path / "s",
        "0",
        [fixed, "seed=1"],
        None,
        {"status": "failed", "error": "SIGTERM after 17.0 s: cancelled", "slurm_job_id": "7_0"},
    )
    make_run(tmp_path / "s", "1", [fixed, "seed=2"], None, {"status": "running", "pid": 9, "slurm_job_id": "7_1"})
    make_run(tmp_path / "s", "2", [fixed, "seed=3"], 0.5, {"status": "completed", "slurm_job_id": "7_2"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(
        '#!/bin/sh\n[ "$2" = 7_0 ] && echo "CANCELLED by 0" && exit 0\n[ "$2" = 7_1 ] && echo TIMEOUT\nexit 0\n'
    )
    (bin_dir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    runs = {r.name: r for r in find_runs(tmp_path / "s")}
    assert runs["0"].status == "failed"
    assert runs["0"].note == "SIGTERM after 17.0 s: cancelled [SLURM job 7_0: CANCELLED by 0]"
    assert runs["1"].status == "unfinished" and runs["1"].note.endswith("[SLURM job 7_1: TIMEOUT]")
    assert runs["2"].status == "ok" and runs["2"].note == ""
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Problem talking to the database' >&2\nexit 1\n")
    assert find_runs(tmp_path / "s")[0].note.endswith("[SLURM job 7_0: no answer from sacct]")


def test_nan_mean_skips_runs_without_the_figure():
    assert nan_mean([0.3, math.nan, 0.5]) == pytest.approx(0.4)
    assert math.isnan(nan_mean([math.nan])) and math.isnan(nan_mean([]))


def test_aggregate_over_seeds(seeded):
    """Mean and sample std (ddof=1) per configuration, by hand: [0.40, 0.42, 0.44] -> 0.42 ± 0.02; [0.50, 0.56]
    -> 0.53 ± 0.03 * sqrt(2) = 0.0424264; train_wall_s = 100 (1 + mIoU), mIoU_best = mIoU + 0.01."""
    runs = find_runs(seeded)
    assert swept_keys(runs) == ["model.net.output_stride", "seed"]
    os8, os16 = aggregate(runs, ["model.net.output_stride"])  # best mean mIoU first
    assert os8.values == {"model.net.output_stride": "8"} and os16.values == {"model.net.output_stride": "16"}
    assert (os8.n, os8.n_failed, os16.n, os16.n_failed) == (2, 1, 3, 0)
    assert os16.miou_mean == pytest.approx(0.42) and os16.miou_std == pytest.approx(0.02)
    assert (os16.miou_min, os16.miou_max) == (0.40, 0.44)
    assert os16.miou_best_mean == pytest.approx(0.43) and os16.miou_best_std == pytest.approx(0.02)
    assert os16.train_wall_s_mean == pytest.approx(142.0) and os16.train_wall_s_std == pytest.approx(2.0)
    assert os8.miou_mean == pytest.approx(0.53) and os8.miou_std == pytest.approx(0.0424264, abs=1e-7)
    assert (os8.miou_min, os8.miou_max) == (0.50, 0.56)
    assert os8.train_wall_s_mean == pytest.approx(153.0) and os8.train_wall_s_std == pytest.approx(4.242641, abs=1e-6)
    assert sorted(os8.seed_mious) == [0.50, 0.56]


def test_aggregate_single_seed_and_all_failed(tmp_path):
    """One finished seed: a mean but no std (NaN, "-" in the table); no finished seed: NaN mean, listed last."""
    root = tmp_path / "sweep"
    make_run(root, "0", ["model.net.output_stride=32", "seed=1"], None, {"status": "failed", "error": "x"})
    make_run(root, "1", ["model.net.output_stride=16", "seed=1"], 0.3)
    make_run(root, "2", ["model.net.output_stride=16", "seed=2"], None, {"status": "running", "pid": 1})
    one, none = aggregate(find_runs(root), ["model.net.output_stride"])
    assert (one.values["model.net.output_stride"], one.n, one.n_failed) == ("16", 1, 1)
    assert one.miou_mean == 0.3 and math.isnan(one.miou_std) and math.isnan(one.train_wall_s_std)
    assert (none.values["model.net.output_stride"], none.n, none.n_failed) == ("32", 0, 1)
    assert math.isnan(none.miou_mean) and math.isnan(none.miou_min)
    report(root)
    md = (root / "sweep_report.md").read_text()
    assert "| 16 | 1 | 1 | 0.3000 ± - | 0.3100 ± - | 0.3000 | 0.3000 | 130.0 ± - |" in md
    assert "| 32 | 0 | 1 | - | - | - | - | - |" in md


def test_report_over_seeds_writes_the_table_per_configuration(seeded, capsys):
    runs = report(seeded)
    md = (seeded / "sweep_report.md").read_text().splitlines()
    assert md[0] == "## Per configuration, over seeds"
    assert md[2] == (
        "| model.net.output_stride | seeds | failed | mIoU | best mIoU | min mIoU | max mIoU | train wall (s) |"
    )
    assert md[4] == "| 8 | 2 | 1 | 0.5300 ± 0.0424 | 0.5400 ± 0.0424 | 0.5000 | 0.5600 | 153.0 ± 4.2 |"
    assert md[5] == "| 16 | 3 | 0 | 0.4200 ± 0.0200 | 0.4300 ± 0.0200 | 0.4000 | 0.4400 | 142.0 ± 2.0 |"
    per_run = md.index("## Per run")  # the per-run table, below, with the seed as a column
    assert per_run > 5 and md[per_run + 2].startswith("| run | model.net.output_stride | seed | mIoU |")
    assert md[per_run + 4] == "| 4 | 8 | 2 | 0.5600 | 0.5700 | 0.9000 | 250 | 156.0 | ok |"
    assert md[-1] == "| 5 | 8 | 3 |  |  |  |  |  | failed: RuntimeError: OOM |"
    with (seeded / "sweep_report_configs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "model.net.output_stride",
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
    ]
    assert [(r["model.net.output_stride"], r["n"], r["n_failed"]) for r in rows] == [("8", "2", "1"), ("16", "3", "0")]
    assert float(rows[1]["miou_mean"]) == pytest.approx(0.42) and float(rows[1]["miou_std"]) == pytest.approx(0.02)
    assert float(rows[0]["miou_std"]) == pytest.approx(0.0424264, abs=1e-7)
    assert float(rows[0]["train_wall_s_mean"]) == pytest.approx(153.0)
    assert (seeded / "sweep_report.png").read_bytes()[:4] == b"\x89PNG"
    assert len(runs) == 6
    main([str(seeded)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "## Per configuration, over seeds" and out[4] == md[4]  # the grouped table first
    assert out[-1].endswith("sweep_report_configs.csv and sweep_report_paired.csv")
    assert out[-1].startswith("6 runs (1 failed or unfinished)")
    # OS 8 - OS 16 on seeds 1 and 2 (seed 3 of OS 8 failed): +0.10, +0.14; mean 0.12, sd 0.028284, t(1) 12.706
    paired = md.index("## Paired differences over seeds")
    assert 5 < paired < per_run and md[paired + 6] == (
        "| 8 | 16 | val | 2 | +0.1200 | [-0.1341, +0.3741] | 2 / 0 | not shown |"
    )
    with (seeded / "sweep_report_paired.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert (row["A"], row["B"], row["split"], row["pairs"], row["reading"]) == ("8", "16", "val", "2", "not shown")
    assert float(row["low"]) == pytest.approx(0.12 - 12.706 * 0.02, abs=1e-9)


def test_plot_over_seeds_shows_means_error_bars_and_each_seed(seeded):
    runs = find_runs(seeded)
    fig = plot(runs, swept_keys(runs))
    ax, ax_t = fig.axes
    # one numeric key: mean ± std as points over the output stride, sorted by it, and each seed as a black dot
    (means,) = ax.containers
    assert list(means.lines[0].get_xdata()) == [8.0, 16.0]
    assert means.lines[0].get_ydata() == pytest.approx([0.53, 0.42])
    dots = [line for line in ax.lines if line.get_marker() == "." and line.get_color() == "k"]
    assert sorted(y for line in dots for y in line.get_ydata()) == [0.40, 0.42, 0.44, 0.50, 0.56]
    assert "1 failed" in [t.get_text() for t in ax.texts]
    # right panel: mean mIoU against mean wall time, with std error bars in both directions, labelled
    points = sorted((c.lines[0].get_xdata()[0], c.lines[0].get_ydata()[0]) for c in ax_t.containers)
    assert points == [pytest.approx((142.0, 0.42)), pytest.approx((153.0, 0.53))]
    assert all(c.has_xerr and c.has_yerr for c in ax_t.containers)
    assert sorted(t.get_text() for t in ax_t.texts) == ["16", "8"]


def test_plot_over_seeds_with_categorical_configurations(tmp_path):
    """Several swept keys besides the seed: one bar per configuration at its mean, best first."""
    root = tmp_path / "sweep"
    for i, (dilation, grid, seed, miou) in enumerate(
        [("os8", "[1,2]", 1, 0.6), ("os8", "[1,2]", 2, 0.7), ("os16", "null", 1, 0.3), ("os16", "null", 2, 0.5)]
    ):
        make_run(root, str(i), [f"+model/dilation={dilation}", f"model.net.multi_grid={grid}", f"seed={seed}"], miou)
    runs = find_runs(root)
    ax, _ = plot(runs, swept_keys(runs)).axes
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.65, 0.4])
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "model/dilation=os8\nmulti_grid=[1,2]\n(n=2)",
        "model/dilation=os16\nmulti_grid=null\n(n=2)",
    ]


def test_report_without_varying_seed_has_no_table_per_configuration(tmp_path):
    """A seed that is the same in every run is no repetition: only the per-run table, no grouped table or CSV."""
    root = tmp_path / "sweep"
    make_run(root, "0", ["model.net.output_stride=16", "seed=7"], 0.4)
    make_run(root, "1", ["model.net.output_stride=8", "seed=7"], 0.5)
    make_run(root, "2", ["model.net.output_stride=16", "seed=7"], None, {"status": "failed", "error": "x"})
    out = tmp_path / "report"
    out.mkdir()
    (out / "sweep_report_configs.csv").write_text("stale")  # from a report of an earlier, seeded sweep
    report(root, out)
    md = (out / "sweep_report.md").read_text().splitlines()
    assert md[0] == "| run | model.net.output_stride | mIoU | best mIoU | pixel acc | steps | train wall (s) | status |"
    assert len(md) == 5 and not any("±" in line or "Per configuration" in line for line in md)
    assert not (out / "sweep_report_configs.csv").exists()
    runs = find_runs(root)
    ax, ax_t = plot(runs, swept_keys(runs)).axes  # one point per run, no error bars
    assert not ax.containers and not ax_t.containers
    assert ax.get_title() == "mIoU per configuration (1 failed or unfinished)"


def test_missing_sweep_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nope")])
    assert exc.value.code == 2


def test_sweep_configs_compose():
    grid = compose_cfg(["+hparams_search=dilation_grid"])
    assert grid.hydra.mode.name == "MULTIRUN"
    sweeps = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in grid.hydra.sweeper.params.items()])
    sizes = [len(list(o.sweep_iterator())) for o in sweeps]
    assert sizes == [3, 2, 2]  # 12 runs: OS 32/16/8 x multi-grid off/on x two ASPP rate sets
    assert list(sweeps[1].sweep_iterator()) == [None, [1, 2]]
    opt = compose_cfg(["+hparams_search=optuna"])
    assert opt.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert opt.hydra.sweeper.direction == "maximize" and opt.hydra.sweeper.storage is None
    assert opt.optimized_metric == "val/mIoU_best"
    slurm = compose_cfg(["hydra/launcher=slurm"])
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.tasks_per_node == slurm.hydra.launcher.gpus_per_node
    local = compose_cfg(["hydra/launcher=slurm_local"]).hydra.launcher
    assert local._target_ == slurm.hydra.launcher._target_ and local.gpus_per_node == 0 and local.cpus_per_task == 2
    exp = compose_cfg(["+experiment=dilation_sweep", "+model/dilation=os8_mg"])
    assert exp.hydra.sweeper.params["+model/dilation"] == "os32,os16,os8,os8_mg"
    assert exp.model.net.output_stride == 8 and list(exp.model.net.multi_grid) == [1, 2]
    os32 = compose_cfg(["+experiment=dilation_sweep", "+model/dilation=os32"]).model.net  # not the default 8
    assert os32.output_stride == 32 and os32.multi_grid is None


def _tiny(data_dir: Path) -> list[str]:
    return [
        f"data.root={data_dir}",
        *(f"data.prepare.{k}={v}" for k, v in TINY.items()),
        "data.train_transform.crop_size=64",
        "data.batch_size=4",
        "data.val_batch_size=5",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.precision=32-true",
        "~callbacks.progress_bar",
        "~logger.tensorboard",
    ]


def test_real_multirun_with_a_failing_job(tmp_path, tiny_data_dir):
    """A basic-sweeper multirun where one job fails: the report shows the run that trained and the one that failed."""
    sweep = tmp_path / "multirun"
    cmd = [
        sys.executable,
        "-m",
        "seg.train",
        "-m",
        f"hydra.sweep.dir={sweep}",
        "model.net.output_stride=16,7",
        *_tiny(tiny_data_dir),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0  # Hydra re-raises the failed job's error once the batch has run
    # ... and it is job 1's own error, with the value it refused, as the one line a bad input ends with
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and "output_stride must be one of (8, 16, 32), got 7" in errors[-1], proc.stderr[-3000:]
    runs = report(sweep)
    assert [(r.name, r.overrides["model.net.output_stride"], r.status) for r in runs] == [
        ("0", "16", "ok"),
        ("1", "7", "failed"),
    ], proc.stderr[-2000:]
    assert 0.0 <= runs[0].miou <= 1.0 and runs[0].metrics["global_step"] == 2
    assert "output_stride must be one of" in runs[1].note
    # provenance.json of both jobs, completed at their end: code, versions, machine, precision, command, times
    ok, failed = (json.loads((sweep / job / "provenance.json").read_text()) for job in ("0", "1"))
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (CI's clean clone): the commit that ran, and whether files differed
        assert ok["code"]["commit"] == head.stdout.strip() and isinstance(ok["code"]["dirty"], bool)
    assert ok["command"] == "train" and ok["status"] == "completed" and failed["status"] == "failed"
    assert "output_stride must be one of" in failed["error"] and failed["ended"] >= failed["started"]
    assert ok["ended"] >= ok["started"] and ok["elapsed_s"] > 0
    assert ok["argv"].startswith(f"python -m seg.train -m hydra.sweep.dir={sweep} ")
    assert ok["versions"]["torch"] == torch.__version__.split("+")[0] or ok["versions"]["torch"] == torch.__version__
    assert all(ok["versions"][lib] for lib in ("seg", "torchvision", "timm", "pytorch-lightning", "hydra-core"))
    assert ok["machine"]["cpu_model"] == cpu_model() and ok["machine"]["amx"] == ("amx_bf16" in cpu_flags())
    assert ok["precision"] == "32-true" and ok["threads"] == torch.get_num_threads()  # as _tiny sets it
    assert runs[0].commit == runs[1].commit != "?" and runs[0].machine == runs[1].machine == ok["machine"]["label"]
    assert provenance_warnings(runs) == []  # one machine, one precision, one commit


@pytest.mark.slow
def test_real_optuna_sweep_in_memory(tmp_path, tiny_data_dir):
    """+hparams_search=optuna runs trials with list-valued choices and writes its best parameters."""
    sweep = tmp_path / "optuna"
    cmd = [
        sys.executable,
        "-m",
        "seg.train",
        "+hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
        *_tiny(tiny_data_dir),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {
        "model.net.output_stride",
        "model.net.multi_grid",
        "model.net.aspp_rates",
        "model.optimizer.lr",
    }
    runs = report(sweep)
    assert [r.status for r in runs] == ["ok", "ok"]
    assert max(r.miou for r in runs) == pytest.approx(best["best_value"])  # val/mIoU_best of the best trial


def _optuna(sweep: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "seg.train",
        "+hparams_search=optuna",
        f"hydra.sweep.dir={sweep}",
        *_tiny(data_dir),
        *overrides,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_optuna_trial_without_objective_is_recorded_as_failed_and_the_study_goes_on(tmp_path, tiny_data_dir):
    """A trial that never validates returns no objective (NaN): the sweeper records it as failed (no "Values were
    told ... TrialState.FAIL" crash) and, with max_failure_rate=1.0, the in-memory study goes on to the next."""
    conf = tmp_path / "conf" / "nan_trial"
    conf.mkdir(parents=True)  # an extra swept key: trials with no validation (0) and with one (1.0)
    (conf / "limit_val.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      trainer.limit_val_batches: choice(0, 1.0)\n"
    )
    sweep = tmp_path / "optuna"
    proc = _optuna(
        sweep,
        tiny_data_dir,
        f"hydra.searchpath=[file://{conf.parent}]",
        "+nan_trial=limit_val",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=1.0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r.name: r for r in report(sweep)}
    assert len(runs) == 3
    for run in runs.values():
        validated = run.overrides["trainer.limit_val_batches"] != "0"
        assert run.status == ("ok" if validated else "failed"), (run.name, run.status, run.note)
        if not validated:
            assert "val/mIoU_best is not logged" in run.note
    assert {r.status for r in runs.values()} == {"ok", "failed"}, "the seeded sampler must draw both values"
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["trainer.limit_val_batches"] == 1.0
    assert best["best_value"] == pytest.approx(max(r.metrics["mIoU_best"] for r in runs.values() if r.status == "ok"))


def test_optuna_study_stops_with_one_line_when_max_failure_rate_is_exceeded(tmp_path, tiny_data_dir):
    proc = _optuna(tmp_path / "optuna", tiny_data_dir, "trainer.limit_val_batches=0", "hydra.sweeper.n_trials=2")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Values were told" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: sweep stopped: optimized_metric val/mIoU_best is not logged after 2 steps: the run never validated "
        "(trainer.limit_val_batches, check_val_every_n_epoch) or diverged"
    ], proc.stderr[-3000:]
    assert not (tmp_path / "optuna" / "1").exists()  # max_failure_rate=0.0: no trial after the failed one


def test_report_shows_the_extra_validation_splits_per_run_and_per_configuration(tmp_path):
    """Runs validated on a held-out split too (metrics.json's extra_val): a column per split, mean ± std over seeds."""
    root = tmp_path / "sweep"
    held_out = {"os32": (0.30, 0.34), "os16": (0.35, 0.33)}  # the held-out mIoU of seeds 1 and 2
    for i, (os_, seed) in enumerate([(o, s) for o in ("os32", "os16") for s in (1, 2)]):
        make_run(root, str(i), [f"model/dilation={os_}", f"seed={seed}"], 0.5 + i / 100, {"status": "completed"})
        path = root / str(i) / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["extra_val"] = {"train@0006R0": {"mIoU": held_out[os_][seed - 1]}}
        path.write_text(json.dumps(metrics))
    runs = report(root)
    assert [r.split_miou("train@0006R0") for r in runs] == [0.33, 0.35, 0.34, 0.30]  # sorted by val mIoU
    md = (root / "sweep_report.md").read_text()
    assert "| model/dilation | seeds | failed | mIoU | train@0006R0 mIoU | best mIoU |" in md
    assert "| os16 | 2 | 0 | 0.5250 ± 0.0071 | 0.3400 ± 0.0141 |" in md
    assert "| os32 | 2 | 0 | 0.5050 ± 0.0071 | 0.3200 ± 0.0283 |" in md
    with (root / "sweep_report_configs.csv").open() as f:
        rows = {r["model/dilation"]: r for r in csv.DictReader(f)}
    assert float(rows["os32"]["train@0006R0 mean"]) == pytest.approx(0.32)
    with (root / "sweep_report.csv").open() as f:
        assert [float(r["train@0006R0 mIoU"]) for r in csv.DictReader(f)] == [0.33, 0.35, 0.34, 0.30]


def _provenance(run: Path, commit: str, label: str, precision: str) -> None:
    record = {"code": {"commit": commit, "dirty": False}, "machine": {"label": label}, "precision": precision}
    (run / "provenance.json").write_text(json.dumps(record))


def test_report_shows_commit_and_machine_and_warns_when_runs_mix_them(tmp_path, capsys):
    root = tmp_path / "sweep"
    for i, (stride, miou) in enumerate([(32, 0.5), (16, 0.7), (8, 0.6)]):
        make_run(root, str(i), [f"model.net.output_stride={stride}"], miou, {"status": "completed"})
    _provenance(root / "0", "a" * 40, "AMD EPYC", "32-true")
    _provenance(root / "1", "a" * 40, "Intel Xeon +AMX", "bf16-mixed")
    runs = report(root)
    assert [(r.name, r.commit, r.machine, r.precision) for r in runs] == [
        ("1", "aaaaaaa", "Intel Xeon +AMX", "bf16-mixed"),
        ("2", "?", "?", "?"),  # a run from before provenance.json
        ("0", "aaaaaaa", "AMD EPYC", "32-true"),
    ]
    warnings = provenance_warnings(runs)
    assert warnings == [
        "1 of 3 runs have no provenance.json (their code and machine are unknown): 2",
        "the runs mix 2 machines (Intel Xeon +AMX: 1; AMD EPYC: 0)",
        "the runs mix 2 precisions (bf16-mixed: 1; 32-true: 0)",
    ]
    md = (root / "sweep_report.md").read_text()
    assert md.startswith("> **warning:** 1 of 3 runs have no provenance.json")
    assert "| commit | machine | precision | status |" in md and "| aaaaaaa | AMD EPYC | 32-true | ok |" in md
    with (root / "sweep_report.csv").open() as f:
        rows = list(csv.DictReader(f))
    expected = [("aaaaaaa", "Intel Xeon +AMX"), ("?", "?"), ("aaaaaaa", "AMD EPYC")]
    assert [(r["commit"], r["machine"]) for r in rows] == expected
    main([str(root)])
    assert "warning: the runs mix 2 machines" in capsys.readouterr().err
    _provenance(root / "1", "b" * 40, "AMD EPYC", "32-true")
    _provenance(root / "2", "a" * 40, "AMD EPYC", "32-true")
    assert provenance_warnings(find_runs(root)) == ["the runs mix 2 commits (aaaaaaa: 0, 2; bbbbbbb: 1)"]


def test_runs_of_two_sweeps_line_up_by_what_they_ran(tmp_path):
    """An equal-steps sweep left trainer.max_steps and model/net at their config's values; an equal-time sweep set
    them: the first's runs get those values from their run folders (config.yaml, hydra.yaml's choices), so the two
    line up as four configurations, and a run folder that says nothing keeps the key unset."""
    root = tmp_path / "study"
    for i, (dilation, seed) in enumerate([("os32", 1), ("os32", 2), ("os16", 1), ("os16", 2)]):
        make_run(root / "equal_steps", str(i), [f"model/dilation={dilation}", f"seed={seed}"], 0.5 + 0.01 * i)
        run = root / "equal_steps" / str(i) / ".hydra"
        (run / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 300}, "seed": seed}))
        choices = {"model/dilation": dilation, "model/net": "deeplabv3"}
        (run / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    for i, seed in enumerate([1, 2]):
        overrides = ["model/dilation=os32", "model/net=deeplabv3plus", f"seed={seed}", "trainer.max_steps=216"]
        make_run(root / "equal_time", str(i), overrides, 0.6)
    make_run(root / "bare", "0", ["model/dilation=os8", "seed=1"], 0.4)  # no config.yaml, no hydra.yaml
    runs = {r.name: r for r in find_runs(root)}
    assert runs["equal_steps/0"].overrides == {
        "model/dilation": "os32",
        "seed": "1",
        "model/net": "deeplabv3",
        "trainer.max_steps": "300",
    }
    assert runs["equal_time/1"].overrides["trainer.max_steps"] == "216"
    assert "trainer.max_steps" not in runs["bare/0"].overrides
    summaries = aggregate(list(runs.values()), ["model/dilation", "model/net", "trainer.max_steps"])
    configs = {tuple(s.values.values()): s.n for s in summaries}
    assert configs[("os32", "deeplabv3", "300")] == 2 and configs[("os32", "deeplabv3plus", "216")] == 2
    assert configs[("os16", "deeplabv3", "300")] == 2
