"""A full disk is named: a write that fails for lack of space ends with one line naming the file, the free space
and roughly what it needed, job_status.json records the same, and the last good file stays (issue 39, section 3).
The full disk is injected (an ENOSPC, or torch's zip writer's "unexpected pos" with the free space faked to 0):
no test mounts a filesystem."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from seg.data.io import write_image
from seg.utils import atomic
from seg.utils.atomic import DiskFullError, atomic_write
from tests.test_reliability import tiny_args

ROOT = Path(__file__).resolve().parents[1]
Usage = namedtuple("Usage", "total used free")
TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 45923840 vs 45923736"


def test_an_enospc_names_the_file_the_free_space_and_what_was_needed(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"x" * 3 * 2**20)  # the last good checkpoint: 3 MB
    with pytest.raises(DiskFullError) as caught:
        with atomic_write(target) as f:
            f.write(b"y" * 2**20)
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(caught.value)
    assert f"no space left to write {target}: " in message and " MB free" in message
    assert "needed more than 3.0 MB" in message and "the previous last.ckpt (3.0 MB) is kept" in message
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value.__cause__, OSError)  # the cause is kept
    assert target.read_bytes() == b"x" * 3 * 2**20  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_torchs_unexpected_pos_on_a_full_disk_is_named_and_other_errors_pass_through(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _: Usage(10 * 2**20, 10 * 2**20 - 4096, 4096))
    with pytest.raises(DiskFullError, match=r"no space left to write .*new\.ckpt: 0\.0 MB free, the write needed "):
        with atomic_write(tmp_path / "new.ckpt") as f:
            f.write(b"z" * 2**20)
            raise RuntimeError(TORCH_FULL)
    assert not list(tmp_path.iterdir())  # nothing half-written
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _: Usage(10 * 2**30, 2**30, 9 * 2**30))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # plenty of space: not put down to the disk
        with atomic_write(tmp_path / "new.ckpt") as f:
            raise RuntimeError(TORCH_FULL)


def test_prediction_images_are_written_whole_or_raise(tmp_path, monkeypatch):
    """cv2.imwrite only returns False on a full disk; seg writes prediction images through atomic_write."""
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    write_image(tmp_path / "a.jpg", image)
    assert (tmp_path / "a.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"b\.png"):
        write_image(tmp_path / "b.png", image[..., 0])
    assert not (tmp_path / "b.png").exists()


# the child: seg-train whose second checkpoint write meets a full disk as torch reports it
CHILD = """
import sys
from collections import namedtuple
import torch
import seg.utils.atomic as atomic
real_save, calls = torch.save, []
def save(obj, f, *args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
        return real_save(obj, f, *args, **kwargs)
    f.write(b"0" * 4096)
    raise RuntimeError(sys.argv[1])
torch.save = save
atomic.shutil.disk_usage = lambda _: namedtuple("U", "total used free")(2**30, 2**30, 0)
from seg.train import main
sys.argv = ["seg-train", *sys.argv[2:]]
main()
"""


def test_a_training_run_on_a_full_disk_ends_with_one_line_and_keeps_its_last_checkpoint(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "run"
    args = [*tiny_args(tiny_data_dir), "trainer.max_epochs=2", "callbacks.last_checkpoint.every_n_train_steps=3"]
    args += ["callbacks.model_checkpoint=null", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, TORCH_FULL, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert last_line.startswith(f"error: no space left to write {ckpt}"), proc.stderr[-3000:]
    assert "0.0 MB free" in last_line and "is kept" in last_line
    assert "Traceback" not in proc.stderr
    record = json.loads((run_dir / "job_status.json").read_text())
    assert record["status"] == "failed" and record["error"] == f"DiskFullError: {last_line.removeprefix('error: ')}"
    checkpoint = torch.load(ckpt, weights_only=True)  # the first checkpoint, whole
    assert checkpoint["global_step"] == 3
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]
