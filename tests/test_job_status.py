"""job_status.json: a job ended by SIGTERM (scancel, a time limit) is recorded as failed, with its SLURM job id; one
stopped by Ctrl-C (SIGINT) as interrupted, with its last checkpoint and the command that resumes it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seg.analysis.sweep import load_run
from seg.callbacks.job_status import signals_deferred, slurm_job_id
from tests.test_reliability import tiny_args

ROOT = Path(__file__).resolve().parents[1]

# A job as Hydra runs it: the callback's start hook, then work that SIGTERM interrupts.
JOB = """
import sys, time
from omegaconf import OmegaConf
from seg.callbacks.job_status import JobStatusCallback
config = OmegaConf.create({"hydra": {"output_subdir": ".hydra", "runtime": {"output_dir": sys.argv[1]}}})
JobStatusCallback().on_job_start(config)
print("started", flush=True)
time.sleep(60)
"""


def test_sigterm_is_recorded_as_failed_and_still_ends_the_process(tmp_path):
    env = {**os.environ, "SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "1"}
    env.pop("SLURM_PROCID", None)
    job = subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE)
    assert job.stdout.readline() == b"started\n"
    running = json.loads((tmp_path / "job_status.json").read_text())
    assert running["status"] == "running" and running["pid"] == job.pid and running["slurm_job_id"] == "40_1"
    start = time.time()
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) == -signal.SIGTERM  # the default action still happens after the record
    assert time.time() - start < 10
    record = json.loads((tmp_path / "job_status.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("SIGTERM after")
    assert record["slurm_job_id"] == "40_1" and record["pid"] == job.pid


def test_slurm_job_id_outside_and_inside_arrays(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    assert slurm_job_id() == "17"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "16")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert slurm_job_id() == "16_0"


def test_a_signal_during_a_checkpoint_write_is_delivered_after_it():
    """Ctrl-C in the middle of writing and recording a checkpoint stops the job only once both are done."""
    # Python's own handler, also where pytest was started with SIGINT ignored (a background job, nohup)
    outer, done = signal.signal(signal.SIGINT, signal.default_int_handler), []
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal arrives here: held back
                done.append("written and recorded")
        assert done == ["written and recorded"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    finally:
        signal.signal(signal.SIGINT, outer)


def test_ctrl_c_during_training_is_recorded_with_the_command_that_resumes_it(tmp_path, tiny_data_dir):
    """A real ``python -m seg.train`` sent SIGINT (what Ctrl-C sends) after its first checkpoint: job_status.json says
    interrupted, with the checkpoint's step; the last line of stderr is a command that resumes the run to the end."""
    # 24 train images in batches of 4: 6 steps an epoch, 24 in all; last.ckpt every 3 steps
    args = [*tiny_args(tiny_data_dir), "trainer.max_epochs=4", "callbacks.last_checkpoint.every_n_train_steps=3"]
    run_dir = tmp_path / "interrupted"
    # SIGINT at its default in the child, as in a terminal (a script's background job would ignore it)
    proc = subprocess.Popen(
        [sys.executable, "-m", "seg.train", *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr[-2000:]  # Lightning's graceful shutdown, then exit status 1
    assert not (run_dir / "metrics.json").exists()

    record = json.loads((run_dir / "job_status.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGINT" and record["elapsed_s"] > 0
    assert record["last_checkpoint"] == str(ckpt.resolve()) and 3 <= record["last_checkpoint_step"] < 24
    assert record["last_checkpoint_step"] % 3 == 0
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("interrupted after") and last_line.endswith(record["resume"]), last_line
    note = load_run(run_dir, "0").note  # seg-sweep-report shows the interruption and how to go on
    assert note.startswith("interrupted by SIGINT after") and record["resume"] in note

    command = shlex.split(record["resume"])
    assert command[0] == "seg-train" and command[-1] == f"ckpt_path={ckpt.resolve()}"
    overrides = [o for o in command[1:] if not o.startswith("hydra.run.dir=")]
    resumed = subprocess.run(
        [sys.executable, "-m", "seg.train", *overrides, f"hydra.run.dir={tmp_path / 'resumed'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["global_step"] == 24
