"""Sweeps through a real SLURM scheduler (``hydra/launcher=slurm``) on a one-node cluster brought up on this machine
by ``scripts/slurm_local.sh``: a two-configuration sweep, a two-rank DDP job started by srun, a job cancelled with
scancel (reported with SLURM's state, the rest of the sweep completes) and resumed from its last.ckpt.

Slow (minutes) and needs root and apt (or SLURM installed): ``make test-slurm``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seg.analysis.sweep import find_runs, slurm_state
from seg.models.support.weights import safe_load
from tests.helpers import TINY, labelled_val_pixels

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"

LOCAL = ["hydra/launcher=slurm_local"]  # no GPU, 2 CPUs, 4 GB, one job at a time


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip().startswith("idle")


@pytest.fixture(scope="module")
def cluster():
    """The local cluster: used as is when one already answers, else brought up here and torn down after."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the [slurm] extra")
    if _cluster_up():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no SLURM cluster answers and this is not root: scripts/slurm_local.sh cannot start one")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.skip(f"scripts/slurm_local.sh up failed: {up.stderr.strip()[-500:]}")
    yield
    subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=120)


def _tiny(data_dir: Path, epochs: int) -> list[str]:
    return [
        f"data.root={data_dir}",
        *(f"data.prepare.{k}={v}" for k, v in TINY.items()),
        "data.train_transform.crop_size=64",
        "data.batch_size=4",
        "data.val_batch_size=5",
        "data.num_workers=0",
        f"trainer.max_epochs={epochs}",
        "trainer.precision=32-true",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "~logger.tensorboard",
    ]


def _train(*overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "seg.train", "-m", *LOCAL, *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _status(run: Path) -> dict:
    return json.loads((run / "job_status.json").read_text())


def _final_state(job: str, timeout: float = 60) -> str | None:
    """sacct's state once it is final: slurmctld hands finished jobs to slurmdbd asynchronously, so right after a
    job ends (and on a freshly started accounting database) sacct can still say RUNNING or nothing at all."""
    deadline = time.time() + timeout
    while True:
        state = slurm_state(job)
        if (state and state.split()[0] not in ("PENDING", "RUNNING", "COMPLETING")) or time.time() > deadline:
            return state
        time.sleep(1)


def test_two_configurations_through_the_scheduler(cluster, tmp_path, tiny_data_dir):
    sweep = tmp_path / "sweep"
    proc = _train(*_tiny(tiny_data_dir, 2), "model.net.output_stride=16,32", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = find_runs(sweep)
    assert [(r.name, r.status) for r in runs] == [("0", "ok"), ("1", "ok")]
    for run, stride in zip(runs, (16, 32), strict=True):
        assert run.overrides["model.net.output_stride"] == str(stride)
        assert run.metrics["global_step"] == 2 * 24 // 4
        assert _final_state(_status(run.path)["slurm_job_id"]) == "COMPLETED"
    logs = list((sweep / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # the job logs land in the sweep folder


def test_ddp_ranks_from_srun_validate_like_one_process(cluster, tmp_path, tiny_data_dir):
    sweep = tmp_path / "ddp"
    proc = _train(
        *_tiny(tiny_data_dir, 2),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        "seed=3",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = sweep / "0"
    log = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log  # two ranks, both started by srun
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["global_step"] == 2 * 24 // (2 * 4)  # each rank half of every epoch
    out = tmp_path / "evaluate"
    cmd = [
        sys.executable,
        "-m",
        "seg.evaluate",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "batch_size=1",
        "inference.precision=32",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
    ]
    evaluated = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    single = json.loads((out / "metrics.json").read_text())
    assert trained["pixels"] == single["pixels"] == labelled_val_pixels(tiny_data_dir)
    assert trained["mIoU"] == pytest.approx(single["mIoU"], abs=1e-6)
    assert trained["per_class_iou"] == pytest.approx(single["per_class_iou"], abs=1e-6, nan_ok=True)


def test_a_cancelled_job_is_reported_and_resumes_from_its_last_checkpoint(cluster, tmp_path, tiny_data_dir):
    sweep = tmp_path / "cancel"
    # two identical jobs: the second is the uninterrupted run the resumed first one must match
    cmd = [
        sys.executable,
        "-m",
        "seg.train",
        "-m",
        *LOCAL,
        *_tiny(tiny_data_dir, 40),
        "seed=1,1",
        f"hydra.sweep.dir={sweep}",
    ]
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = sweep / "0"
    deadline = time.time() + 300
    while not (first / "checkpoints" / "last.ckpt").exists():  # it has trained at least one epoch
        assert time.time() < deadline and launcher.poll() is None, "the first job never saved a checkpoint"
        time.sleep(1)
    job = _status(first)["slurm_job_id"]
    subprocess.run(["scancel", job], check=True)
    output, _ = launcher.communicate(timeout=300)  # the launcher stops at the cancelled job's missing result
    assert launcher.returncode != 0 and "CANCELLED" in output
    array = job.split("_")[0]
    while subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline + 300, "the rest of the sweep did not finish"
        time.sleep(2)
    assert _final_state(job).startswith("CANCELLED")  # accounting has caught up before the report asks it
    runs = {r.name: r for r in find_runs(sweep)}
    assert runs["0"].status == "failed" and runs["0"].note.startswith("SIGTERM after")
    assert runs["0"].note.endswith(f"[SLURM job {job}: CANCELLED by 0]")
    assert runs["1"].status == "ok" and runs["1"].metrics["global_step"] == 40 * 24 // 4
    stopped_at = safe_load(first / "checkpoints" / "last.ckpt")["global_step"]
    assert 0 < stopped_at < 40 * 24 // 4

    resumed = tmp_path / "resumed"
    proc = _train(
        *_tiny(tiny_data_dir, 40), "seed=1", f"ckpt_path={first}/checkpoints/last.ckpt", f"hydra.sweep.dir={resumed}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = find_runs(resumed)
    assert run.status == "ok" and run.metrics["global_step"] == 40 * 24 // 4
    assert run.metrics["mIoU"] == runs["1"].metrics["mIoU"]  # exactly the uninterrupted run
    assert run.metrics["per_class_iou"] == pytest.approx(runs["1"].metrics["per_class_iou"], abs=0, nan_ok=True)
    log = "".join(p.read_text() for p in (resumed / ".submitit").rglob("*_log.*"))  # Lightning logs here
    assert f"Restored all states from the checkpoint at {first}/checkpoints/last.ckpt" in log
