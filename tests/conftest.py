"""Shared fixtures: Hydra compose-API configs with tmp_path run folders and a small generated dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from seg.data.synthetic import generate
from tests.helpers import TINY, LoopbackServer, compose_cfg


def pytest_configure(config):
    """Under ``pytest -n N`` (pytest-xdist, as ``make test`` runs), the cores are shared out among the N workers and
    the processes their tests start, so that N torch processes never run more threads than there are cores (two
    processes with two threads each on two cores run several times slower, not half as fast).

    Every test runs offline (``SEG_OFFLINE=1``, inherited by the commands they start): a test never reaches past
    127.0.0.1, and those of the fetching code lift the switch for a server they start there."""
    os.environ["SEG_OFFLINE"] = "1"
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the subprocesses (python -m seg.train, ...)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A small synthetic VOC-layout tree (24 train / 5 val images of 64 px), generated once per session."""
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate(root, **TINY)
    return root


@pytest.fixture
def cfg_train(tmp_path: Path, tiny_data_dir: Path) -> DictConfig:
    """The default training config shrunk to seconds: tiny data, ResNet-18, one short epoch, no workers."""
    cfg = compose_cfg(
        [
            f"data.root={tiny_data_dir}",
            *(f"data.prepare.{k}={v}" for k, v in TINY.items()),
            "data.train_transform.crop_size=64",
            "data.batch_size=4",
            "data.val_batch_size=5",
            "data.num_workers=0",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
        ]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        del cfg.hydra
    return cfg


@pytest.fixture(autouse=True)
def _no_seed_leaks():
    """An in-process ``train()`` calls ``seed_everything``, which leaves PL_GLOBAL_SEED / PL_SEED_WORKERS in
    ``os.environ``; the data modules of later tests would then take their seed from there. Put them back."""
    saved = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 for the fetching code's tests (:class:`tests.helpers.LoopbackServer`)."""
    s = LoopbackServer()
    yield s
    s.close()
