"""The notebooks run top to bottom (nbclient, tiny data, small parameters) and are committed without outputs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from hydra.utils import instantiate

from seg.analysis.receptive_field import receptive_fields
from seg.runs.checkpoint import newest_checkpoint
from tests.helpers import TINY, compose_cfg, fake_run
from tests.test_sweep import make_run

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
_spec = importlib.util.spec_from_file_location("nb_execute", NOTEBOOKS / "execute.py")
nb_execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nb_execute)


def text_of(nb: nbformat.NotebookNode) -> str:
    """Everything the executed cells printed or displayed as text or Markdown."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts.append(data.get("text/markdown", ""))
    return "\n".join(parts)


def png_count(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def test_notebooks_are_committed_without_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {"visualize_masks.ipynb", "receptive_field.ipynb", "sweep_analysis.ipynb", "camvid.ipynb"} <= {
        p.name for p in paths
    }
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, (
            f"{path.name}: cells {dirty} hold outputs or execution counts; clear them before committing "
            f"(.venv/bin/jupyter nbconvert --clear-output --inplace {path})"
        )
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), f"{path.name}: no parameters cell"


def test_parameters_are_injected_after_the_parameters_cell_and_unknown_ones_refused():
    nb = nbformat.read(NOTEBOOKS / "sweep_analysis.ipynb", as_version=4)
    injected = nb_execute.with_parameters(nb, {"SWEEP_DIR": "x/y", "FIGURE_DPI": 50})
    tagged = next(i for i, c in enumerate(injected.cells) if "parameters" in c.metadata.get("tags", []))
    assert injected.cells[tagged + 1].source == "# injected parameters\nSWEEP_DIR = 'x/y'\nFIGURE_DPI = 50"
    assert len(injected.cells) == len(nb.cells) + 1
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['SWEEP'\]"):
        nb_execute.with_parameters(nb, {"SWEEP": 1})
    assert nb_execute.literal("4") == 4 and nb_execute.literal("None") is None
    assert nb_execute.literal("outputs/a.ckpt") == "outputs/a.ckpt" and nb_execute.literal("[1, 2]") == [1, 2]


def test_newest_checkpoint_is_last_ckpt_of_the_most_recent_run(cfg_train, tmp_path):
    outputs = tmp_path / "outputs"
    assert newest_checkpoint(outputs) is None
    old = fake_run(cfg_train, outputs / "train" / "runs" / "a")
    new = fake_run(cfg_train, outputs / "sweep" / "multiruns" / "b" / "0")
    (new.parent / "best-epoch001-mIoU0.5.ckpt").write_bytes(new.read_bytes())
    os.utime(old, (1e9, 1e9))
    os.utime(new, (2e9, 2e9))  # the newest file of the newest run is the best checkpoint: last.ckpt is still chosen
    (outputs / "stray" / "checkpoints").mkdir(parents=True)
    (outputs / "stray" / "checkpoints" / "x.ckpt").write_bytes(b"no run folder")  # no .hydra: ignored
    assert newest_checkpoint(outputs) == new
    os.utime(old, (3e9, 3e9))
    assert newest_checkpoint(outputs) == old


@pytest.fixture
def tiny_overrides(tiny_data_dir: Path) -> list[str]:
    """The conftest's tiny training set-up as Hydra overrides (for the notebook's demo model)."""
    return [
        f"data.root={tiny_data_dir}",
        *(f"data.prepare.{k}={v}" for k, v in TINY.items()),
        "data.train_transform.crop_size=64",
        "data.batch_size=4",
        "data.val_batch_size=5",
        "data.num_workers=0",
    ]


def test_visualize_masks_trains_a_demo_model_when_there_is_no_checkpoint(tmp_path, tiny_overrides):
    outputs, figures = tmp_path / "outputs", tmp_path / "figures"
    params = {
        "OUTPUTS_DIR": str(outputs),
        "DEMO_STEPS": 2,
        "DEMO_OVERRIDES": tiny_overrides,
        "N_SHOW": 2,
        "SAVE_FIGURES": str(figures),
    }
    nb = nb_execute.execute(NOTEBOOKS / "visualize_masks.ipynb", params)
    text = text_of(nb)
    assert "training a quick demo model for 2 steps" in text
    (run,) = (outputs / "notebook_demo" / "runs").iterdir()
    assert f"checkpoint: {run / 'checkpoints' / 'last.ckpt'}" in text
    # the notebook's dataset-level mIoU is the validation's (same weights, same data, same inference)
    notebook_miou = float(re.search(r"5 images in [\d.]+ s: mIoU ([\d.]+)", text).group(1))
    validation = float(re.search(r"metrics.json, same weights\): mIoU ([\d.]+)", text).group(1))
    assert notebook_miou == validation == round(json.loads((run / "metrics.json").read_text())["mIoU"], 4)
    assert sorted(p.name for p in figures.iterdir()) == ["confusion_matrix.png", "masks_grid.png", "per_class_iou.png"]
    assert png_count(nb) == 4  # grid, IoU bars, confusion matrix, per-image histogram


def test_camvid_notebook_fine_tunes_briefly_and_shows_real_frames(tmp_path):
    from tests.helpers import needs_shared

    camvid = needs_shared("camvid")
    outputs, figures = tmp_path / "outputs", tmp_path / "figures"
    params = {
        "CAMVID_ROOT": str(camvid),
        "OUTPUTS_DIR": str(outputs),
        "DEMO_STEPS": 3,
        "MAX_IMAGES": 4,
        "N_SHOW": 1,
        "DEMO_OVERRIDES": ["trainer.limit_val_batches=1", "data.num_workers=0", "data.batch_size=2"],
        "SAVE_FIGURES": str(figures),
    }
    nb = nb_execute.execute(NOTEBOOKS / "camvid.ipynb", params)
    text = text_of(nb)
    assert "fine-tuning the CamVid ImageNet recipe for 3 steps" in text
    assert "TimmBackbone on CamVidSegmentation 'val' (101 frames)" in text
    assert re.search(r"4 frames in [\d.]+ s: mIoU 0\.\d+", text)
    assert sorted(p.name for p in figures.iterdir()) == [
        "camvid_confusion_matrix.png",
        "camvid_frames.png",
        "camvid_per_class_iou.png",
    ]
    assert png_count(nb) == 3


def test_receptive_field_notebook_measures_the_four_variants_and_a_checkpoint(cfg_train, tmp_path):
    ckpt = fake_run(cfg_train, tmp_path / "outputs" / "train" / "runs" / "r")
    figures = tmp_path / "figures"
    params = {
        "INPUT_SIZE": 64,
        "ERF_SAMPLES": 2,
        "OUTPUTS_DIR": str(tmp_path / "outputs"),
        "SAVE_FIGURES": str(figures),
    }
    nb = nb_execute.execute(NOTEBOOKS / "receptive_field.ipynb", params)
    text = text_of(nb)
    assert f"checkpoint: {ckpt}" in text
    net = instantiate(compose_cfg(["+model/dilation=os8_mg"]).model.net)
    size = receptive_fields(net, 64)["output"].size
    assert re.search(rf"\| OS 8 \+ multi-grid \(1, 2\) \|.*\| {size:g} \|", text), size
    assert "OS 32 (no dilation): layer4 rates [1, 1, 1, 1]: no holes" in text
    assert png_count(nb) == 1 + 4 + 2  # gridding, four ERFs at init, the checkpoint's before/after
    assert sorted(p.name for p in figures.iterdir()) == ["erf_trained.png", "gridding.png"]


def test_sweep_analysis_notebook_reads_a_sweep_folder(tmp_path):
    sweep = tmp_path / "outputs" / "dilation_sweep" / "multiruns" / "2026-01-01_00-00-00"
    fixed = "+experiment=dilation_sweep"
    make_run(sweep, "0", [fixed, "+model/dilation=os32"], 0.5, {"status": "completed"})
    make_run(sweep, "1", [fixed, "+model/dilation=os16"], 0.7, {"status": "completed"})
    make_run(sweep, "2", [fixed, "+model/dilation=os8"], None, {"status": "failed", "error": "ValueError: boom"})
    (sweep / "1" / "csv").mkdir()
    curve = "epoch,step,train/loss,val/mIoU\n0,9,1.2,\n0,125,,0.41\n1,250,,0.7\n"
    (sweep / "1" / "csv" / "metrics.csv").write_text(curve)
    figures = tmp_path / "figures"
    nb = nb_execute.execute(
        NOTEBOOKS / "sweep_analysis.ipynb", {"OUTPUTS_DIR": str(tmp_path / "outputs"), "SAVE_FIGURES": str(figures)}
    )
    text = text_of(nb)
    lines = [line for line in text.splitlines() if re.match(r"\| \d \|", line)]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert [r[:3] for r in rows] == [["1", "os16", "0.7000"], ["0", "os32", "0.5000"], ["2", "os8", ""]]
    assert rows[2][-1] == "failed: ValueError: boom"
    assert sorted(p.name for p in figures.iterdir()) == ["sweep.png", "sweep_curves.png", "sweep_per_class.png"]
