"""Experiment trackers: ``logger=mlflow`` (a local file store) and ``logger=wandb`` (offline) log a tiny run's
metrics and validation image grids where their own clients read them back; a missing package is one line."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from seg.train import train
from seg.utils.errors import one_line
from tests.helpers import compose_cfg


def with_logger(cfg: DictConfig, name: str) -> DictConfig:
    """``cfg`` with ``logger=name`` composed (its paths interpolations resolve to cfg_train's tmp_path folders)."""
    with open_dict(cfg):
        cfg.logger = compose_cfg([f"logger={name}"]).logger
        cfg.print_config = False
    return cfg


def test_mlflow_run_has_the_metrics_and_the_image_grid(cfg_train, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="pip install 'seg[mlflow]'")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the factory sets it; unset again afterwards
    cfg = with_logger(cfg_train, "mlflow")
    assert cfg.logger.mlflow.tracking_uri == f"file:{tmp_path}/mlflow"
    train(cfg)
    assert (tmp_path / "csv" / "metrics.csv").is_file()  # the CSV logger is still there

    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlflow").as_uri())
    experiment = client.get_experiment_by_name("train")  # task_name
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == tmp_path.name and run.info.status == "FINISHED"
    assert run.data.tags["run_dir"] == str(tmp_path)
    miou = json.loads((tmp_path / "metrics.json").read_text())["mIoU"]
    history = client.get_metric_history(run.info.run_id, "val/mIoU")
    assert len(history) == 1 and history[-1].value == pytest.approx(miou, abs=1e-6)
    assert run.data.params  # the module's hyperparameters

    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any(a.startswith("images/val~samples+step+3+") and a.endswith(".png") for a in artifacts), artifacts
    assert "val/samples_legend.txt" in [a.path for a in client.list_artifacts(run.info.run_id, "val")]


def test_wandb_offline_run_has_the_metrics_and_the_image_grid(cfg_train, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="pip install 'seg[wandb]'")
    for var, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": tmp_path / "wandb_dir",
        "WANDB_CONFIG_DIR": tmp_path / "wandb_config",
        "WANDB_CACHE_DIR": tmp_path / "wandb_cache",
        "WANDB_DATA_DIR": tmp_path / "wandb_data",
        "WANDB_API_KEY": "",
    }.items():
        monkeypatch.setenv(var, str(value))
    cfg = with_logger(cfg_train, "wandb")
    try:
        train(cfg)
    finally:
        wandb.finish()  # the CLI's process ends the run at exit; here the files are complete only after this
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")  # what `wandb sync` uploads
    (log,) = run_dir.glob("run-*.wandb")  # offline, the run's records are only in this file (no wandb-summary.json)
    # wandb's writer is a process of its own: on a loaded machine (make test's two workers) its last records can
    # reach the file after finish() returns, so wait for the validation row (at most 60 s)
    deadline, rows = time.monotonic() + 60, wandb_history(log)
    while not any("val/mIoU" in r for r in rows) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = wandb_history(log)
    miou = json.loads((tmp_path / "metrics.json").read_text())["mIoU"]
    assert [float(r["val/mIoU"]) for r in rows if "val/mIoU" in r] == [pytest.approx(miou, abs=1e-6)]
    (grid,) = [r for r in rows if "val/samples/_type" in r]  # the validation image grid, one validation
    assert json.loads(grid["val/samples/_type"]) == "images/separated"
    (png,) = json.loads(grid["val/samples/filenames"])
    assert (run_dir / "files" / png).is_file()


def wandb_history(path: Path) -> list[dict[str, str]]:
    """The history rows (key -> JSON value) of a W&B ``.wandb`` run file: LevelDB-log blocks of 32 KiB, records of
    7-byte headers (crc, length, type: 1 full, 2 first, 3 middle, 4 last) holding protobuf ``Record`` messages.
    (wandb >= 0.2x has no public reader of this file.)"""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos = path.read_bytes(), 32768, 7  # after the ":W&B" + version header
    records, pending = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            records.append(pending + chunk if kind == 4 else chunk)
            pending = b""
        elif kind in (2, 3):
            pending += chunk
        else:
            break
    rows = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
    return rows


@pytest.mark.parametrize(("logger", "module"), [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_missing_tracker_package_is_one_line(cfg_train, monkeypatch, logger, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    cfg = with_logger(cfg_train, logger)
    with pytest.raises(InstantiationException) as raised:
        instantiate(cfg.logger[logger])  # as seg.train does
    message = one_line(raised.value)
    assert message == f"logger.{logger}: {module} is not installed: pip install 'seg[{logger}]'", message


def test_run_names_are_the_run_folder_under_the_log_dir(tmp_path: Path):
    from seg.utils.loggers import run_name

    assert run_name(tmp_path / "train" / "runs" / "2024-05-01_12-00-00", tmp_path) == "train/runs/2024-05-01_12-00-00"
    assert run_name(tmp_path / "elsewhere", tmp_path / "outputs") == "elsewhere"
