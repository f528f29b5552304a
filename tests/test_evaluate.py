"""seg.evaluate: agrees with the training validation, runs every inference mode, writes its report; bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torchmetrics.classification import MulticlassConfusionMatrix

from seg.data.synthetic import SyntheticShapes
from seg.data.transforms import val_transforms
from seg.evaluate import evaluate
from seg.inference import InferenceConfig, infer
from seg.models.support.weights import CheckpointError
from seg.runs.loaded import load_model
from seg.train import train
from seg.utils.machine import PRECISION_ENV, cpu_precision, inference_precision
from tests.helpers import compose_cfg, fake_run

ROOT = Path(__file__).resolve().parents[1]

# the training default: bf16-mixed on CPUs with bf16 units, else 32-true (seg.cpu_precision); inference's "auto"
# follows the same flags (seg.utils.machine.inference_precision), so a default run is scored as it validated
RUN_PRECISION = {"bf16-mixed": "bf16", "32-true": "32"}[cpu_precision()]


def eval_cfg(ckpt: Path, out: Path, *overrides: str):
    cfg = compose_cfg([f"ckpt_path={ckpt}", "trainer.enable_progress_bar=false", *overrides], config_name="evaluate")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg.hydra
    return cfg


def labelled_pixels(root: Path) -> int:
    """Pixels of the val split that are not void (255): what the confusion matrix must hold, each once."""
    ds = SyntheticShapes(root, "val")
    return sum(int((ds.load(i)[1] != 255).sum()) for i in range(len(ds)))


def test_evaluate_agrees_with_the_training_validation_in_every_mode(cfg_train, tmp_path, tiny_data_dir):
    run = tmp_path  # cfg_train's output folder; train() is called without Hydra, so save its config as Hydra does
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg_train, run / ".hydra" / "config.yaml")
    train(cfg_train)  # the default precision + channels_last: evaluate must follow the run's settings
    trained = json.loads((run / "metrics.json").read_text())
    ckpt = run / "checkpoints" / "last.ckpt"

    # the network exactly as trained (no BatchNorm folding: under bf16 that changes the rounding)
    whole = evaluate(eval_cfg(ckpt, tmp_path / "whole", "inference.fold_batchnorm=false"))
    assert abs(whole["mIoU"] - trained["mIoU"]) <= 1e-6, (whole["mIoU"], trained["mIoU"])
    for name, value in trained["per_class_iou"].items():
        assert (math.isnan(value) and math.isnan(whole["per_class_iou"][name])) or abs(
            whole["per_class_iou"][name] - value
        ) <= 1e-6
    for key in ("pixel_acc", "mean_acc", "fw_iou"):
        assert abs(whole[key] - trained[key]) <= 1e-6, key
    assert whole["precision"] == RUN_PRECISION and whole["images"] == 5 and whole["split"] == "val"
    # both run folders say where they came from, with the precision each actually used
    trained_by, scored_by = (json.loads((d / "provenance.json").read_text()) for d in (run, tmp_path / "whole"))
    expected = ("train", "completed", cpu_precision())
    assert (trained_by["command"], trained_by["status"], trained_by["precision"]) == expected
    assert (scored_by["command"], scored_by["status"]) == ("evaluate", "completed")
    assert scored_by["precision"] == {"32": "32-true", "bf16": "bf16-mixed"}[RUN_PRECISION]
    assert scored_by["code"] == trained_by["code"] and scored_by["machine"] == trained_by["machine"]
    cm = np.array(whole["confusion_matrix"])
    assert cm.shape == (5, 5) and cm.sum() == whole["pixels"] == labelled_pixels(tiny_data_dir)
    # BatchNorm folded into the convolutions by default (ResNet-18 + ASPP + aux head: every BatchNorm follows one):
    # the same predictions but for float rounding (fp32: none seen; bf16 rounds the folded weights differently)
    folded = evaluate(eval_cfg(ckpt, tmp_path / "folded"))
    assert whole["batchnorm_folded"] == 0 and folded["batchnorm_folded"] > 20
    moved = np.abs(np.array(folded["confusion_matrix"]) - cm).sum() / 2
    assert moved <= (0.001 if RUN_PRECISION == "32" else 0.01) * cm.sum(), moved
    png = (tmp_path / "whole" / "confusion_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # the val images are 64 px and the training crop 64: one window per image, the whole image again
    slide = evaluate(eval_cfg(ckpt, tmp_path / "slide", "inference=slide"))
    assert slide["inference"] == "slide 64x64/43x43" and slide["confusion_matrix"] == whole["confusion_matrix"]


def test_evaluate_scores_sliding_windows_with_multi_scale_and_flip(cfg_train, tmp_path):
    """The confusion matrix equals one computed here with seg.inference on the same (untrained) weights."""
    overrides = ["inference=ms_flip", "inference.mode=slide", "inference.window=48", "inference.scales=[0.75,1.25]"]
    label = "slide 48x48/32x32, scales 0.75-1.25 + flip"
    ckpt = fake_run(cfg_train, tmp_path / "run")
    report = evaluate(eval_cfg(ckpt, tmp_path / "eval", *overrides, "inference.precision=32"))
    assert report["inference"] == label and report["precision"] == "32"

    loaded = load_model(ckpt)
    cfg = InferenceConfig.from_options(
        eval_cfg(ckpt, tmp_path, *overrides).inference, {"precision": "32", "channels_last": True}
    )
    ds = SyntheticShapes(cfg_train.data.root, "val", transform=val_transforms())
    x, y = (torch.stack([torch.as_tensor(ds[i][k]) for i in range(len(ds))]) for k in (0, 1))
    confmat = MulticlassConfusionMatrix(5, ignore_index=255)
    confmat.update(infer(loaded.module, x, cfg).argmax(dim=1), y.long())
    assert report["confusion_matrix"] == confmat.compute().tolist()
    whole = MulticlassConfusionMatrix(5, ignore_index=255)
    whole.update(infer(loaded.module, x, InferenceConfig(precision="32")).argmax(dim=1), y.long())
    assert report["confusion_matrix"] != whole.compute().tolist()  # the mode changed the predictions


def test_dataset_with_another_class_count_is_refused(cfg_train, tmp_path, tiny_data_dir):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    # the synthetic tree read as Pascal VOC (21 classes) against a 5-class checkpoint
    cfg = eval_cfg(ckpt, tmp_path / "eval", "data=voc", f"data.root={tiny_data_dir}")
    with pytest.raises(ValueError, match=r"last.ckpt predicts 5 classes but VOCSegmentation has 21"):
        evaluate(cfg)


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt.ckpt: not a"):
        evaluate(eval_cfg(corrupt, tmp_path / "eval"))
    command = [
        sys.executable,
        "-m",
        "seg.evaluate",
        f"ckpt_path={tmp_path / 'missing.ckpt'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'missing.ckpt'}"


def test_inference_precision_null_means_auto(cfg_train, tmp_path):
    """inference.precision=null is valid (InferenceConfig) and means auto: the machine's inference precision."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    report = evaluate(eval_cfg(ckpt, tmp_path / "eval", "inference.precision=null"))
    assert report["precision"] == inference_precision() == RUN_PRECISION and 0.0 <= report["mIoU"] <= 1.0


@pytest.mark.parametrize(("forced", "precision", "label"), [("32-true", "32", "fp32"), ("bf16-mixed", "bf16", "bf16")])
def test_auto_inference_takes_either_machines_path_whatever_the_run_trained_at(
    cfg_train, tmp_path, monkeypatch, forced, precision, label
):
    """A run trained in fp32 is scored on the machine's fastest accurate path: bf16 autocast where the CPU has bf16
    units (forced here with SEG_CPU_PRECISION, as on the Xeon with AMX or an EPYC with AVX-512 BF16), fp32 where it
    has none; metrics.json says which, and inference.precision=32 still gives the fp32 score."""
    with open_dict(cfg_train):
        cfg_train.trainer.precision = "32-true"
    ckpt = fake_run(cfg_train, tmp_path / "run")
    monkeypatch.setenv(PRECISION_ENV, forced)
    report = evaluate(eval_cfg(ckpt, tmp_path / "auto"))
    assert report["precision"] == precision and report["compiled"] is False
    assert report["runtime"].startswith(f"eager {label}") and "channels_last" in report["runtime"]
    scored_by = json.loads((tmp_path / "auto" / "provenance.json").read_text())
    assert scored_by["precision"] == forced
    fp32 = evaluate(eval_cfg(ckpt, tmp_path / "fp32", "inference.precision=32"))
    assert fp32["precision"] == "32" and fp32["runtime"].startswith("eager fp32")
    if precision == "32":
        assert report["mIoU"] == fp32["mIoU"]
    else:  # bf16 rounds the logits: the same model, scored within a small margin (real checkpoints: RESULTS 26)
        assert abs(report["mIoU"] - fp32["mIoU"]) < 0.05


def test_module_has_no_confusion_matrix_before_validating(cfg_train):
    from hydra.utils import instantiate

    module = instantiate(cfg_train.model)
    assert module.last_val_confmat is None and module.last_val_metrics is None


def test_data_root_override_reads_the_runs_dataset_from_another_copy(cfg_train, tmp_path, tiny_data_dir):
    """`seg.evaluate ckpt_path=... data.root=DIR`: the run's own data config with its root replaced (Hydra used to
    refuse `data.root` with "Key 'data' is not in struct"); `data=NAME data.root=DIR` still switches the dataset."""
    import shutil

    from seg.runs.loaded import data_config

    moved = tmp_path / "data_at_training"
    shutil.copytree(tiny_data_dir, moved)
    with open_dict(cfg_train):
        cfg_train.data.root = str(moved)
    ckpt = fake_run(cfg_train, tmp_path / "run")
    elsewhere = tmp_path / "data_elsewhere"
    moved.rename(elsewhere)  # the run's data now lives elsewhere only
    report = evaluate(eval_cfg(ckpt, tmp_path / "eval", f"data.root={elsewhere}", "split=val"))
    assert report["dataset"] == "SyntheticShapes" and report["images"] == 5 and report["pixels"] > 0
    assert not moved.exists()  # nothing read (or generated) at the run's old root

    with pytest.raises(ValueError, match=r"predicts 5 classes but VOCSegmentation has 21"):
        evaluate(eval_cfg(ckpt, tmp_path / "eval_voc", "data=voc", f"data.root={elsewhere}"))
    # predict and export read the same data config: one function
    loaded = load_model(ckpt)
    for name, extra in (("predict", ["input=x"]), ("export", [])):
        cfg = compose_cfg([f"ckpt_path={ckpt}", f"data.root={elsewhere}", *extra], config_name=name)
        data = data_config(cfg, loaded)
        assert data.root == str(elsewhere) and data.dataset._target_.endswith("SyntheticShapes")
        assert data.val_batch_size == cfg_train.data.val_batch_size  # the rest is the run's
        voc_cfg = compose_cfg([f"ckpt_path={ckpt}", "data=voc", "data.root=/v", *extra], config_name=name)
        voc = data_config(voc_cfg, loaded)
        assert voc.root == "/v" and voc.dataset._target_.endswith("VOCSegmentation")


def test_split_may_be_one_the_run_validated_on_as_an_extra_split(cfg_train, tmp_path):
    """A run validated on an extra split (a held-out sequence) is scored on that split alone with split=NAME;
    before, the run's extra_val_splits made the data module refuse it as "already the val split"."""
    with open_dict(cfg_train):
        cfg_train.data.extra_val_splits = ["train"]
    ckpt = fake_run(cfg_train, tmp_path / "run")
    report = evaluate(eval_cfg(ckpt, tmp_path / "eval", "split=train"))
    assert report["split"] == "train" and report["images"] == len(SyntheticShapes(cfg_train.data.root, "train"))
