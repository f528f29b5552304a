"""Reliability: exact resume after a kill, atomic checkpoint and metrics files, the NaN guard, 2-process DDP on the
CPU, safe loading of checkpoints and weight files. (Bad input: tests/test_bad_input.py; soak: benchmarks/soak.py.)"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from seg.models.backbones.resnet import DilatedResNet
from seg.models.context_net import ContextModule
from seg.models.support.weights import CheckpointError, safe_load
from seg.runs.checkpoint import AtomicCheckpointIO
from seg.train import train, use_sync_batchnorm
from seg.utils.atomic import write_json_atomic
from tests.helpers import TINY, compose_cfg, labelled_val_pixels

ROOT = Path(__file__).resolve().parents[1]


def tiny_args(data_dir: Path, batch_size: int = 4, synthetic: bool = True) -> list[str]:
    """Command-line overrides that shrink ``python -m seg.train`` to seconds on the tiny tree (24 train images);
    ``synthetic=False`` leaves out the generator's settings (for ``data=voc`` reading the same tree)."""
    return [
        f"data.root={data_dir}",
        *(f"data.prepare.{k}={v}" for k, v in TINY.items() if synthetic),
        "data.train_transform.crop_size=64",
        f"data.batch_size={batch_size}",
        "data.val_batch_size=5",
        "data.num_workers=0",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        "~logger.tensorboard",
    ]


def tiny_cfg(data_dir: Path, out_dir: Path, *extra: str):
    cfg = compose_cfg([*tiny_args(data_dir), *extra])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        del cfg.hydra
    return cfg


def net_state(ckpt: Path) -> dict[str, torch.Tensor]:
    return safe_load(ckpt)["state_dict"]


# 1. resume ----------------------------------------------------------------------------------------------------------


def _spy(path: Path) -> list[str]:
    return ["+callbacks.spy._target_=tests.spies.TrainSpy", f"+callbacks.spy.out={path}"]


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [0, 2], ids=["no_workers", "2_workers"])
def test_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path, tiny_data_dir, workers):
    """2 epochs of 6 steps; a second LastCheckpoint keeps the state at step 8 (epoch 1, batch 2) aside. Resumed from
    it, the process starts from the checkpoint's weights, optimizer and schedule, runs only steps 8-11 on the very
    batches the uninterrupted run had there (loader workers or not: the sampler position and per-sample augmentation
    seeds are in the checkpoint), draws the same dropout (RNG state in the checkpoint) and ends at the same step with
    bit-identical weights, metrics and best mIoU."""
    keep = [
        "+callbacks.mid._target_=seg.callbacks.LastCheckpoint",
        f"+callbacks.mid.dirpath={tmp_path}",
        "+callbacks.mid.every_n_train_steps=8",
        "+callbacks.mid.filename=mid.ckpt",
        "+callbacks.mid.after_validation=false",
    ]
    run = ["trainer.max_epochs=2", f"data.num_workers={workers}"]
    train(tiny_cfg(tiny_data_dir, tmp_path / "full", *run, *keep, *_spy(tmp_path / "full.spy")))
    mid = safe_load(tmp_path / "mid.ckpt")
    assert mid["global_step"] == 8 and mid["epoch"] == 1  # mid-epoch: 6 steps an epoch
    if workers == 0:  # with workers the loader's state is laid out per worker
        assert mid["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["_num_yielded"] == 2

    resumed_cfg = tiny_cfg(
        tiny_data_dir, tmp_path / "resumed", *run, f"ckpt_path={tmp_path / 'mid.ckpt'}", *_spy(tmp_path / "resumed.spy")
    )
    train(resumed_cfg)
    spy_full, spy = (torch.load(tmp_path / f"{r}.spy", weights_only=True) for r in ("full", "resumed"))
    # the resumed process starts where the checkpoint stopped: its weights (BatchNorm statistics included), the
    # optimizer's momentum buffers, the schedule's position
    start = spy["start"]
    assert start["global_step"] == 8
    assert _same_tensors(start["state_dict"], mid["state_dict"])
    saved_opt, opt = mid["optimizer_states"][0], start["optimizer"]
    assert saved_opt["state"] and opt["state"].keys() == saved_opt["state"].keys()
    assert all(_same_tensors(opt["state"][i], saved_opt["state"][i]) for i in saved_opt["state"])
    assert [g["lr"] for g in opt["param_groups"]] == [g["lr"] for g in saved_opt["param_groups"]]
    assert start["scheduler_last_epoch"] == mid["lr_schedulers"][0]["last_epoch"] == 8
    # ... and trains only the 4 remaining steps, on the batches the uninterrupted run trained on at those steps
    assert sorted(spy["batches"]) == [8, 9, 10, 11]
    assert spy["batches"] == {s: spy_full["batches"][s] for s in range(8, 12)}
    with (tmp_path / "resumed" / "csv" / "metrics.csv").open() as f:
        logged = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert logged == [8, 9, 10, 11], logged  # its first logged training step is the checkpoint's

    full, resumed = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("full", "resumed"))
    assert resumed["global_step"] == full["global_step"] == 12
    assert resumed["mIoU"] == pytest.approx(full["mIoU"], abs=1e-4)
    assert resumed["mIoU_best"] == pytest.approx(full["mIoU_best"], abs=1e-4)
    # last.ckpt is the final state although the last epoch did not improve val/mIoU (Lightning's save_last would
    # have kept the state of the best epoch there)
    assert safe_load(tmp_path / "full/checkpoints/last.ckpt")["global_step"] == 12
    assert full["mIoU"] < full["mIoU_best"]
    a, b = safe_load(tmp_path / "full/checkpoints/last.ckpt"), safe_load(tmp_path / "resumed/checkpoints/last.ckpt")
    assert _same_tensors(a["state_dict"], b["state_dict"])
    assert all(
        _same_tensors(a["optimizer_states"][0]["state"][i], b["optimizer_states"][0]["state"][i])
        for i in a["optimizer_states"][0]["state"]
    )


def _global_step(ckpt: Path) -> int | None:
    try:
        return int(safe_load(ckpt)["global_step"])
    except (OSError, CheckpointError):
        return None


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(tmp_path, tiny_data_dir):
    """Real processes: ``python -m seg.train`` killed with SIGKILL mid-epoch, restarted from its last.ckpt."""
    # batch 2: 12 steps an epoch; last.ckpt every 5 steps, and after each validation
    args = [
        sys.executable,
        "-m",
        "seg.train",
        *tiny_args(tiny_data_dir, batch_size=2),
        "trainer.max_epochs=3",
        "callbacks.last_checkpoint.every_n_train_steps=5",
    ]
    run = {"cwd": ROOT, "capture_output": True, "text": True, "timeout": 600}
    full = subprocess.run([*args, f"hydra.run.dir={tmp_path / 'full'}"], **run)
    assert full.returncode == 0, full.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [*args, f"hydra.run.dir={killed_dir}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt, step = killed_dir / "checkpoints" / "last.ckpt", None
    while proc.poll() is None:  # kill as soon as last.ckpt holds a mid-epoch state of the second epoch or later
        step = _global_step(ckpt) if ckpt.is_file() else None
        if step is not None and step >= 15 and step % 12:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    step = _global_step(ckpt)  # the state the kill left on disk (the run may have saved once more meanwhile)
    assert step is not None and step % 12 and step < 36, step
    assert not (killed_dir / "metrics.json").exists()

    resumed = subprocess.run([*args, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'resumed'}"], **run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("full", "resumed"))
    assert b["global_step"] == a["global_step"] == 36
    assert abs(b["mIoU"] - a["mIoU"]) <= 1e-4 and abs(b["mIoU_best"] - a["mIoU_best"]) <= 1e-4
    full_w, resumed_w = (net_state(tmp_path / r / "checkpoints" / "last.ckpt") for r in ("full", "resumed"))
    assert full_w.keys() == resumed_w.keys()
    assert [k for k in full_w if not torch.equal(full_w[k], resumed_w[k])] == []  # bit-identical weights


# 2. atomic writes -----------------------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_an_interrupted_checkpoint_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.full((1000,), 1.0)}, "global_step": 1}, path)

    real_save = torch.save

    def save_half_then_die(obj, f, *args, **kwargs):  # as if killed halfway through writing the file
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.full((1000,), 2.0)}, "global_step": 2}, path)
    monkeypatch.undo()
    kept = io.load_checkpoint(path)
    assert kept["global_step"] == 1 and torch.equal(kept["state_dict"]["w"], torch.full((1000,), 1.0))
    assert _leftovers(path.parent) == []


def test_an_interrupted_metrics_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"mIoU": 0.5})

    def die(fd: int) -> None:  # the new content is written, not yet renamed into place
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", die)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"mIoU": 0.75, "more": list(range(1000))})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"mIoU": 0.5}
    assert _leftovers(tmp_path) == []


WRITER = """
import sys, time, torch
from seg.runs.checkpoint import AtomicCheckpointIO
io, path, real_save = AtomicCheckpointIO(), sys.argv[1], torch.save
io.save_checkpoint({"state_dict": {"w": torch.full((1_000_000,), 1.0)}, "global_step": 1}, path)

def save_half_and_hang(obj, f):
    real_save(obj, f)
    f.truncate(f.tell() // 2)
    f.flush()
    print("halfway", flush=True)
    time.sleep(600)

torch.save = save_half_and_hang
io.save_checkpoint({"state_dict": {"w": torch.full((1_000_000,), 2.0)}, "global_step": 2}, path)
"""


def test_sigkill_in_the_middle_of_a_checkpoint_write_leaves_the_previous_file(tmp_path):
    """A real SIGKILL while the second checkpoint is half written: the first one is still there, whole."""
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "halfway"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpt = safe_load(path)
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.full((1_000_000,), 1.0))
    # the kill orphans the half-written temporary file: hidden, and never matched by *.ckpt
    assert _leftovers(tmp_path) == [f".last.ckpt.{proc.pid}.tmp"] and sorted(tmp_path.glob("*.ckpt")) == [path]


# 3. NaN / Inf -------------------------------------------------------------------------------------------------------


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data_dir):
    """lr 1e6 blows the weights up within a few steps; a checkpoint is attempted after every step."""
    cfg = tiny_cfg(
        tiny_data_dir,
        tmp_path,
        "trainer.max_epochs=2",
        "model.optimizer.lr=1e6",
        "callbacks.last_checkpoint.every_n_train_steps=1",
    )
    with pytest.raises(FloatingPointError, match=r"at global step (\d+)") as err:
        train(cfg)
    failed_at = int(re.search(r"at global step (\d+)", str(err.value)).group(1))
    ckpt = safe_load(tmp_path / "checkpoints" / "last.ckpt")
    assert 1 <= ckpt["global_step"] <= failed_at  # the loss guard may fire right after a good checkpoint
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "metrics.json").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]


def test_the_checkpoint_writer_refuses_non_finite_weights_and_keeps_the_previous_file(tmp_path):
    """AtomicCheckpointIO alone (no loss anywhere): an Inf in a BatchNorm statistic is not written."""
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    good = {
        "net.bn1.weight": torch.ones(4),
        "net.bn1.running_var": torch.ones(4),
        "net.bn1.num_batches_tracked": torch.tensor(3),
    }
    io.save_checkpoint({"state_dict": good, "global_step": 4}, path)
    bad = {
        **good,
        "net.bn1.running_var": torch.tensor([1.0, float("inf"), 1.0, 1.0]),
        "net.bn1.weight": torch.tensor([1.0, float("nan"), 1.0, 1.0]),
    }
    refused = r"the weights at global step 5 hold NaN or Inf \(net\.bn1\.weight and 1 more\); not writing .*last\.ckpt"
    with pytest.raises(FloatingPointError, match=refused):
        io.save_checkpoint({"state_dict": bad, "global_step": 5}, path)
    kept = safe_load(path)
    assert kept["global_step"] == 4 and torch.equal(kept["state_dict"]["net.bn1.running_var"], torch.ones(4))
    assert _leftovers(tmp_path) == []


def test_a_run_whose_batchnorm_statistics_turn_inf_stops_at_the_checkpoint_guard(tmp_path, tiny_data_dir):
    """A BatchNorm running_var set to +inf at the start of step 2: the loss stays finite (training normalises with the
    batch's statistics), so only the checkpoint writer's guard can stop the run, when it saves after that step."""
    cfg = tiny_cfg(
        tiny_data_dir,
        tmp_path,
        "trainer.max_epochs=1",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        *_spy(tmp_path / "run.spy"),
        "+callbacks.spy.poison_step=2",
    )
    with pytest.raises(FloatingPointError) as err:
        train(cfg)
    message = str(err.value)
    assert "loss is" not in message  # not the loss guard
    assert re.search(
        r"^training diverged: the weights at global step 3 hold NaN or Inf \(net\.\S+\.running_var\)"
        r"; not writing \S+last\.ckpt",
        message,
    ), message
    spy = torch.load(tmp_path / "run.spy", weights_only=True)
    assert sorted(spy["batches"]) == [0, 1, 2]  # it stopped right after the poisoned step
    ckpt = safe_load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2  # the last good state
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


# 4. distributed on the CPU --------------------------------------------------------------------------------------------


def test_sync_batchnorm_is_kept_for_gpus_only():
    on = {"sync_batchnorm": True}
    assert use_sync_batchnorm(OmegaConf.create({**on, "accelerator": "gpu"}))
    assert not use_sync_batchnorm(OmegaConf.create({**on, "accelerator": "cpu"}))
    assert use_sync_batchnorm(OmegaConf.create({**on, "accelerator": "auto"})) == torch.cuda.is_available()
    assert not use_sync_batchnorm(OmegaConf.create({"sync_batchnorm": False, "accelerator": "gpu"}))


@pytest.mark.slow
def test_two_process_ddp_on_the_cpu_trains_and_validates(tmp_path, tiny_data_dir):
    """``trainer=ddp`` on 2 CPU processes (gloo), SyncBatchNorm requested: each process trains on half of every epoch,
    validation covers the 5 val images exactly once, the run folder is complete."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "seg.train",
        *tiny_args(tiny_data_dir),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=true",
        "trainer.max_epochs=2",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sync_batchnorm=true ignored" in proc.stdout + proc.stderr  # a log line: Hydra logs to stdout
    report = json.loads((out / "metrics.json").read_text())
    assert report["global_step"] == 2 * 24 // (2 * 4)  # 24 images over 2 processes, batch 4, 2 epochs
    assert 0.0 <= report["mIoU"] <= 1.0 and report["epoch"] == 2
    assert report["pixels"] == labelled_val_pixels(tiny_data_dir)  # 5 val images, each scored once
    ckpt = safe_load(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 6 and not any("running_mean" not in k and "sync" in k for k in ckpt["state_dict"])
    assert any(p.name.startswith("best-") for p in (out / "checkpoints").iterdir())


@pytest.mark.slow
def test_context_module_two_stage_schedule_under_ddp_with_the_documented_strategy(tmp_path, tiny_data_dir):
    """The command the README gives for the context model under DDP: the module's parameters get no gradient while
    the front end trains alone, which plain ``ddp`` refuses; ``ddp_find_unused_parameters_true`` trains both stages."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "seg.train",
        *tiny_args(tiny_data_dir),
        "model=context",
        "model.net.front_end_steps=2",
        "trainer=ddp",
        "trainer.strategy=ddp_find_unused_parameters_true",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = safe_load(out / "checkpoints" / "last.ckpt")["state_dict"]
    assert int(state["net.batches_trained"]) == 6  # 24 images / 2 processes / batch 4 = 3 steps, 2 epochs
    identity = ContextModule(5).state_dict()  # 5 classes: background + 4 shapes
    moved = [k for k, v in identity.items() if not torch.equal(state[f"net.context.{k}"], v)]
    assert moved, "the context module never trained after the front-end stage"


# 6. safe loading ----------------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this runs ``open(path, "w")``: the marker file appears if the loader executes pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-shaped checkpoint with valid weights and a pickle payload next to them."""
    torch.save({"state_dict": {"net.w": torch.ones(2)}, "global_step": 3, "payload": Payload(marker)}, path)
    return path


def test_a_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(evil, weights_only=False)  # the payload is real: an unrestricted load runs it
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match=r"evil.ckpt: refused by torch.load\(weights_only=True\)"):
        safe_load(evil)  # evaluate, predict, export and the resume pre-check
    with pytest.raises(CheckpointError, match="refused"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)  # Lightning's resume, whatever it asks for
    with pytest.raises(ValueError, match="weights_only=True"):
        DilatedResNet(18).load_pretrained(str(evil))  # model.net.weights=<file>
    assert not marker.exists()


def test_glibc_keeps_freed_memory_unless_turned_off(monkeypatch):
    import platform

    from seg.utils.malloc import keep_freed_memory

    monkeypatch.setenv("SEG_MALLOC_TUNING", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("SEG_MALLOC_TUNING")
    assert keep_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
