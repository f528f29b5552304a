"""job_status.json: a job ended by SIGTERM (scancel, a time limit) is recorded as failed, with its SLURM job id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from seg.callbacks.job_status import slurm_job_id

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
