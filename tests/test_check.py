"""The dataset checker: each bad file listed once by name, exact pixel counts, exit codes, real data."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from test_datasets import make_camvid, make_cityscapes, make_voc

from seg.data.check import CheckResult, run_check
from seg.data.io import write_index_mask
from seg.data.voc import VOCSegmentation, voc_colormap
from tests.helpers import compose_cfg, needs_shared

REPO = Path(__file__).resolve().parents[1]


def check(overrides: list[str]) -> tuple[CheckResult, str]:
    out = io.StringIO()
    result = run_check(compose_cfg(overrides, config_name="check"), Console(file=out, width=250))
    return result, out.getvalue()


def damaged_voc(root: Path) -> tuple[Path, dict[str, str]]:
    """A VOC tree with one file of each kind the checker reports; returns VOC2012 and file -> phrase."""
    bad = ["corrupt", "trunc", "rgb", "label", "size", "missing"]
    voc = make_voc(root, {"train": ["good1", "good2", *bad], "val": ["val1", "good2"]})
    (voc / "JPEGImages/corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    truncated = voc / "SegmentationClass/trunc.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(voc / "SegmentationClass/rgb.png")
    write_index_mask(voc / "SegmentationClass/label.png", np.full((12, 16), 30, np.uint8), voc_colormap())
    cv2.imwrite(str(voc / "JPEGImages/size.jpg"), np.zeros((12, 20, 3), np.uint8))
    (voc / "JPEGImages/missing.jpg").unlink()
    expected = {
        "JPEGImages/corrupt.jpg": "cannot decode image",
        "SegmentationClass/trunc.png": "cannot decode mask",
        "SegmentationClass/rgb.png": "mode RGB",
        "SegmentationClass/label.png": "label values [30] outside 0..20",
        "SegmentationClass/size.png": "differs from image",
        "JPEGImages/missing.jpg": "does not exist",
        "JPEGImages/good2.jpg": "is in both 'train' and 'val'",
    }
    return voc, expected


def test_checker_lists_every_bad_file_once_with_its_problem(tmp_path):
    voc, expected = damaged_voc(tmp_path)
    result, text = check(["data=voc", f"data.root={voc}"])
    assert not result.ok and len(result.problems) == len(expected)
    for rel, phrase in expected.items():
        lines = [p for p in result.problems if p.startswith(str(voc / rel))]
        assert len(lines) == 1 and phrase in lines[0], (rel, lines)
        assert lines[0] in text.splitlines()  # printed whole, one line each
    assert not any("good1" in p or "val1" in p for p in result.problems)
    assert (result.splits["train"].pairs, result.splits["train"].bad_pairs) == (8, 6)
    assert "FAILED: 7 problem(s)" in text


def test_checker_reuses_the_datasets_own_checks(tmp_path):
    voc, _ = damaged_voc(tmp_path)
    result, _ = check(["data=voc", f"data.root={voc}"])
    ds = VOCSegmentation(voc, "train", check_files=False)
    for index, sample_id in enumerate(ds.ids):
        if sample_id.startswith("good"):
            ds.load(index)
            continue
        with pytest.raises((OSError, ValueError)) as err:
            ds.load(index)
        assert str(err.value) in result.problems  # training raises exactly what the checker reports


def test_checker_counts_pixels_exactly(tmp_path):
    voc = make_voc(tmp_path, {"train": ["a", "b"], "val": ["c"]}, classes={"a": 15, "b": 15, "c": 3})
    result, text = check(["data=voc", f"data.root={voc}"])
    assert result.ok and "OK" in text
    train = result.splits["train"].pixels  # each 12x16 mask: row 0 void, 11x8 class and 11x8 background
    assert (train[255], train[15], train[0], train.sum()) == (32, 176, 176, 384)
    assert result.splits["val"].pixels[3] == 88
    assert "person" in text and "45.83" in text  # 176 / 384 of train's pixels are person


def test_checker_splits_and_setup_errors(tmp_path):
    make_cityscapes(tmp_path, "val", {"bonn_000000_000001": np.array([[7, 26, 40]], np.uint8).repeat(2, 0)})
    result, _ = check(["data=cityscapes", f"data.root={tmp_path}"])
    assert len(result.problems) == 2
    assert "leftImg8bit/train does not exist" in result.problems[0]  # the configured train split is absent
    assert "bonn_000000_000001_gtFine_labelIds.png: label values [40]" in result.problems[1]
    result, _ = check(["data=cityscapes", f"data.root={tmp_path}", "splits=[val]"])
    assert len(result.problems) == 1 and list(result.splits) == ["val"]
    result, _ = check(["data=camvid", f"data.root={tmp_path / 'absent'}", "data.num_classes=12"])
    assert len(result.problems) == 2 and all("absent does not exist" in p for p in result.problems)


def test_checker_flags_wrong_num_classes_and_camvid_labels(tmp_path):
    make_camvid(tmp_path, "train", ["t"], [np.array([[0, 11, 13]], np.uint8)])
    make_camvid(tmp_path, "val", ["v"], [np.array([[0, 1, 2]], np.uint8)])
    result, _ = check(["data=camvid", f"data.root={tmp_path}", "data.num_classes=12"])
    assert result.problems == [
        "data.num_classes=12 but CamVidSegmentation has 11 classes",
        f"{tmp_path / 'trainannot/t.png'}: label values [13] outside 0..10 and 255 (void)",
    ]


def test_checker_command_line_exit_codes_and_no_files_written(tmp_path):
    voc, _ = damaged_voc(tmp_path / "bad")
    good = make_voc(tmp_path / "good", {"train": ["a"], "val": ["b"]})
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "seg.data.check", "data=voc"]
    bad = subprocess.run([*cmd, f"data.root={voc}"], cwd=work, env=env, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    listed = [line for line in bad.stdout.splitlines() if line.startswith(str(voc))]
    assert len(listed) == 7 and f"{voc}/JPEGImages/corrupt.jpg: cannot decode image" in listed[0]
    ok = subprocess.run([*cmd, f"data.root={good}"], cwd=work, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert list(work.iterdir()) == []  # no run folder, no log


def test_checker_on_real_voc_samples():
    root = needs_shared("voc_samples")
    result, _ = check(["data=voc", f"data.root={root}"])
    # the samples' three lists hold the same 14 ids: a full check rightly flags the overlap, and only that
    assert len(result.problems) == 14 and all("in both 'train' and 'val'" in p for p in result.problems)
    result, _ = check(["data=voc", f"data.root={root}", "splits=[val]"])
    assert result.ok and result.splits["val"].pixels[255] > 0


def test_checker_on_real_camvid_and_cityscapes():
    result, _ = check(["data=camvid", f"data.root={needs_shared('camvid')}", "splits=[val]"])
    assert result.ok and result.splits["val"].pairs == 101
    result, _ = check(["data=cityscapes", f"data.root={needs_shared('cityscapes_mini')}", "splits=[val]"])
    assert result.ok and result.splits["val"].pixels.sum() == 128 * 256
