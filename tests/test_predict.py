"""seg.predict: masks for a folder at the input resolution and names, overlays, Cityscapes labelIds; bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from seg.data.cityscapes import CITYSCAPES_PALETTE, LABEL_TO_TRAIN
from seg.data.io import read_image
from seg.data.synthetic import SyntheticShapes
from seg.data.transforms import val_transforms
from seg.inference import InferenceConfig, infer
from seg.predict import list_inputs, predict, train_to_label_ids
from seg.runs.loaded import load_model
from seg.utils.machine import PRECISION_ENV
from seg.viz import overlay
from tests.helpers import compose_cfg, fake_run

ROOT = Path(__file__).resolve().parents[1]


def predict_cfg(ckpt: Path, source: Path | str, out: Path, *overrides: str):
    cfg = compose_cfg([f"ckpt_path={ckpt}", f"input={source}", f"output={out}", *overrides], config_name="predict")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg.hydra
    return cfg


@pytest.fixture
def images(tmp_path: Path, tiny_data_dir: Path) -> Path:
    """Two good images (one resized to 70x50, one in a subfolder) and a corrupt one."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    jpegs = sorted((tiny_data_dir / "JPEGImages").glob("val_*.jpg"))
    shutil.copy(jpegs[0], folder / "a.jpg")
    cv2.imwrite(str(folder / "sub" / "b.png"), cv2.resize(cv2.imread(str(jpegs[1])), (70, 50)))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_masks_keep_names_and_sizes_and_match_the_model(cfg_train, tmp_path, images):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    out = tmp_path / "out"
    result = predict(predict_cfg(ckpt, images, out, "overlay=true", "inference.precision=32"))
    assert sorted(p.relative_to(out).as_posix() for p in result.written) == ["a.png", "sub/b.png"]
    assert [(p.name, "cannot decode" in why) for p, why in result.skipped] == [("broken.jpg", True)]
    loaded = load_model(ckpt)
    for rel in ("a.jpg", "sub/b.png"):
        image = read_image(images / rel)
        with Image.open(out / Path(rel).with_suffix(".png")) as mask_file:
            assert mask_file.mode == "P" and mask_file.size == (image.shape[1], image.shape[0])
            assert mask_file.getpalette()[:15] == SyntheticShapes.palette[:5].reshape(-1).tolist()
            mask = np.array(mask_file)
        x = val_transforms()(image=image)["image"][None]
        expected = infer(loaded.module, x, InferenceConfig(precision="32", channels_last=True)).argmax(dim=1)[0]
        assert np.array_equal(mask, expected.numpy().astype(np.uint8))
        overlay = cv2.imread(str(out / "overlay" / Path(rel).with_suffix(".jpg")))
        assert overlay.shape == image.shape
    assert len(np.unique(mask)) > 1  # the untrained model still predicts several classes: a real comparison


def test_cityscapes_model_writes_label_ids(tmp_path, images):
    cfg = compose_cfg(["data=cityscapes", "data.root=/nowhere", "model.net.output_stride=16"])
    with open_dict(cfg):
        del cfg.hydra
    ckpt = fake_run(cfg, tmp_path / "run", seed=1)
    index = predict(predict_cfg(ckpt, images / "a.jpg", tmp_path / "index"))
    label = predict(predict_cfg(ckpt, images / "a.jpg", tmp_path / "label", "format=labelIds"))
    with Image.open(index.written[0]) as f:
        assert f.getpalette()[:57] == CITYSCAPES_PALETTE[:19].reshape(-1).tolist()
        train_ids = np.array(f)
    label_ids = cv2.imread(str(label.written[0]), cv2.IMREAD_UNCHANGED)
    assert label_ids.dtype == np.uint8 and label_ids.ndim == 2
    assert np.array_equal(label_ids, train_to_label_ids()[train_ids]) and len(np.unique(train_ids)) > 1
    assert np.array_equal(LABEL_TO_TRAIN[train_to_label_ids()[:19]], np.arange(19))  # the official table, inverted
    assert train_to_label_ids()[[0, 10, 18]].tolist() == [7, 23, 33]  # road, sky, bicycle


def test_label_ids_need_a_cityscapes_model(cfg_train, tmp_path, images):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    with pytest.raises(ValueError, match="format=labelIds is Cityscapes' test-server format.*SyntheticShapes"):
        predict(predict_cfg(ckpt, images, tmp_path / "out", "format=labelIds"))


def test_inputs_by_folder_glob_or_file_and_their_errors(tmp_path, images):
    assert [rel.as_posix() for _, rel in list_inputs(images)] == ["a.jpg", "broken.jpg", "sub/b.png"]
    assert [rel.as_posix() for _, rel in list_inputs(f"{images}/**/*.png")] == ["sub/b.png"]
    assert [rel.as_posix() for _, rel in list_inputs(images / "a.jpg")] == ["a.jpg"]
    with pytest.raises(FileNotFoundError, match="matches no files"):
        list_inputs(f"{images}/*.tif")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(tmp_path / "nowhere")


def test_empty_folder_and_all_unreadable_are_one_line_errors(cfg_train, tmp_path, images):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    with pytest.raises(ValueError, match="none of the 1 input images could be read"):
        predict(predict_cfg(ckpt, images / "broken.jpg", tmp_path / "out"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    command = [
        sys.executable,
        "-m",
        "seg.predict",
        f"ckpt_path={ckpt}",
        f"input={empty}",
        f"output={tmp_path / 'o'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: input folder {empty} holds no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp, .ppm)"
    ]
    assert torch.load(ckpt, weights_only=True)  # the checkpoint itself was fine


def write_clip(path: Path, tiny_data_dir: Path) -> list[np.ndarray]:
    """A 12-frame 64x48 clip at 10 fps from the tiny tree's images; returns its frames (BGR)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    frames = [
        cv2.resize(cv2.imread(str(p)), (64, 48)) for p in sorted((tiny_data_dir / "JPEGImages").glob("*.jpg"))[:12]
    ]
    for frame in frames:
        writer.write(frame)
    writer.release()
    return frames


def test_video_gets_an_overlay_video_of_the_same_size_and_frame_rate(cfg_train, tmp_path, tiny_data_dir):
    """A 12-frame 64x48 clip at 10 fps written here: the output has as many frames, the same size and rate, and
    each frame is the model's mask blended over the input frame."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    clip = tmp_path / "clip.mp4"
    write_clip(clip, tiny_data_dir)
    out = tmp_path / "out"
    result = predict(predict_cfg(ckpt, clip, out, "inference.precision=32"))
    assert result.written == [out / "clip.mp4"] and result.frames == 12 and result.fps > 0
    video = cv2.VideoCapture(str(out / "clip.mp4"))
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    size = (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    written = []
    while (frame := video.read())[0]:
        written.append(frame[1])
    assert size == (64, 48) and len(written) == 12
    # frame 0 is the model's mask blended over the (decoded) input frame: nearer that than the plain frame
    source = cv2.VideoCapture(str(clip))
    first = cv2.cvtColor(source.read()[1], cv2.COLOR_BGR2RGB)
    loaded = load_model(ckpt)
    x = val_transforms()(image=first)["image"][None]
    with torch.no_grad():
        mask = infer(loaded.module, x, InferenceConfig(precision="32")).argmax(1)[0].to(torch.uint8).numpy()
    expected = overlay(first, mask, SyntheticShapes.palette, 0.5)[..., ::-1].astype(int)
    got = written[0].astype(int)
    assert np.abs(got - expected).mean() < 0.5 * np.abs(got - first[..., ::-1].astype(int)).mean()


def test_a_missing_video_is_named(cfg_train, tmp_path):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4 does not exist"):
        predict(predict_cfg(ckpt, tmp_path / "nope.mp4", tmp_path / "out"))


@pytest.mark.parametrize(("forced", "precision"), [("32-true", "32"), ("bf16-mixed", "bf16")])
def test_metrics_json_says_how_the_net_ran(cfg_train, tmp_path, images, monkeypatch, forced, precision):
    """By default the machine's fastest accurate path (either kind's, forced with SEG_CPU_PRECISION), uncompiled for
    images; metrics.json records it with what was written and the throughput."""
    monkeypatch.setenv(PRECISION_ENV, forced)
    ckpt = fake_run(cfg_train, tmp_path / "run")
    out = tmp_path / "out"
    predict(predict_cfg(ckpt, images, out))
    report = json.loads((out / "metrics.json").read_text())
    assert (report["written"], report["skipped"], report["frames"]) == (2, 1, 0) and report["per_second"] > 0
    assert (report["device"], report["precision"], report["compiled"]) == ("cpu", precision, False)
    folded = report["batchnorm_folded"]
    assert folded > 0 and report["runtime"].endswith(f"BatchNorm folded ({folded})")
    # and provenance.json says which code and machine ran it, with the precision used
    record = json.loads((out / "provenance.json").read_text())
    assert (record["command"], record["status"], record["precision"]) == ("predict", "completed", forced)
    assert record["machine"]["cpus"] >= 1 and "commit" in record["code"]


def test_a_long_video_is_compiled_a_short_one_not(cfg_train, tmp_path, tiny_data_dir, monkeypatch):
    """inference.compile=auto compiles for a video of at least COMPILE_VIDEO_FRAMES frames (the compile is spied
    on here: its own parity is tests/test_compile.py's); inference.compile=false wins over a long video."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    clip = tmp_path / "clip.mp4"
    write_clip(clip, tiny_data_dir)
    compiled = []
    monkeypatch.setattr("seg.runs.loaded.compile_for_inference", lambda net: compiled.append(net) or net)

    def run(name: str, *overrides: str) -> dict:
        result = predict(predict_cfg(ckpt, clip, tmp_path / name, *overrides))
        assert result.frames == 12
        return json.loads((tmp_path / name / "metrics.json").read_text())

    monkeypatch.setattr("seg.predict.COMPILE_VIDEO_FRAMES", 13)
    assert run("short")["compiled"] is False and compiled == []
    monkeypatch.setattr("seg.predict.COMPILE_VIDEO_FRAMES", 12)
    report = run("long")
    assert report["compiled"] is True and len(compiled) == 1 and report["runtime"].startswith("compiled ")
    assert report["frames"] == 12 and report["per_second"] > 0
    assert run("off", "inference.compile=false")["compiled"] is False and len(compiled) == 1
