"""data=folder: your own images and masks from config alone; ADE20K through the same machinery; JPEG orientation."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image

from seg.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE, CamVidSegmentation
from seg.data.folder import FolderSegmentation, load_classes
from seg.data.io import read_image
from tests.helpers import TINY, compose_cfg, needs_shared

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [
    {"name": "bg", "color": [0, 0, 0]},
    {"name": "leaf", "color": [0, 200, 0]},
    {"name": "spot", "color": [200, 0, 0]},
]


def make_folder(root: Path, stems: list[str], colour: bool = True, size: tuple[int, int] = (24, 32)) -> Path:
    """``root/images/<stem>.jpg`` and ``root/masks/<stem>.png`` (colour or index) with 3 classes in bands."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = size
    for i, stem in enumerate(stems):
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), np.full((h, w, 3), 40 * i % 255, np.uint8))
        index = np.zeros((h, w), np.uint8)
        index[:, w // 3 :] = 1
        index[:, 2 * w // 3 :] = 2
        index[0, 0] = 255
        if colour:
            rgb = np.array([c["color"] for c in CLASSES] + [[255, 255, 255]], np.uint8)[
                np.where(index == 255, 3, index)
            ]
            Image.fromarray(rgb).save(root / "masks" / f"{stem}.png")
        else:
            Image.fromarray(index).save(root / "masks" / f"{stem}.png")
    return root


def folder(root: Path, split: str = "train", **options) -> FolderSegmentation:
    options = {"classes": CLASSES, "mask_format": "color", "ignore_color": [255, 255, 255], **options}
    return FolderSegmentation(root, split, **options)


def test_colour_masks_map_through_the_class_colours(tmp_path):
    root = make_folder(tmp_path / "leaves", [f"img{i}" for i in range(10)])
    ds = folder(root, "train")
    image, mask = ds.load(0)
    assert image.shape == (24, 32, 3) and mask.dtype == np.uint8
    assert mask[5, 0] == 0 and mask[5, 15] == 1 and mask[5, 31] == 2 and mask[0, 0] == 255
    assert ds.classes == ("bg", "leaf", "spot") and ds.num_classes == 3
    assert tuple(ds.palette[1]) == (0, 200, 0)


def test_val_fraction_draws_fixed_disjoint_splits(tmp_path):
    root = make_folder(tmp_path / "leaves", [f"img{i}" for i in range(10)])
    train, val = folder(root, "train"), folder(root, "val")
    assert len(val) == 2 and len(train) == 8 and not set(train.ids) & set(val.ids)
    assert folder(root, "val").ids == val.ids  # the same draw every time
    assert folder(root, "val", split_seed=1).ids != val.ids or folder(root, "val", split_seed=2).ids != val.ids


def test_split_lists_are_read_when_present(tmp_path):
    root = make_folder(tmp_path / "leaves", [f"img{i}" for i in range(6)])
    (root / "lists").mkdir()
    (root / "lists" / "val.txt").write_text("img4\nimg1\n")
    (root / "lists" / "test.txt").write_text("img5\n")
    assert folder(root, "val", split_dir="lists").ids == ["img4", "img1"]
    assert folder(root, "test", split_dir="lists").ids == ["img5"]
    (root / "lists" / "val.txt").write_text("img9\n")
    with pytest.raises(FileNotFoundError, match=r"val\.txt: 'img9' has no image/mask pair"):
        folder(root, "val", split_dir="lists")


def test_index_masks_and_reduce_zero_label(tmp_path):
    root = make_folder(tmp_path / "idx", ["a", "b", "c"], colour=False)
    _, mask = folder(root, "val", mask_format="index").load(0)
    assert set(np.unique(mask).tolist()) == {0, 1, 2, 255}
    _, reduced = folder(root, "val", mask_format="index", reduce_zero_label=True).load(0)
    # 0 -> ignored, 1 -> 0, 2 -> 1, 255 stays ignored
    assert np.array_equal(reduced, np.select([mask == 0, mask == 255], [255, 255], mask.astype(np.int64) - 1))


def test_bad_folders_name_the_file(tmp_path):
    root = make_folder(tmp_path / "bad", [f"img{i}" for i in range(4)])
    (root / "images" / "extra.png").write_bytes((root / "images" / "img0.jpg").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"extra\.png: image has no mask .*masks/extra\.png"):
        folder(root)
    (root / "images" / "extra.png").unlink()
    (root / "masks" / "lonely.png").write_bytes((root / "masks" / "img0.png").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"lonely\.png: mask has no image"):
        folder(root)
    (root / "masks" / "lonely.png").unlink()
    rgb = np.asarray(Image.open(root / "masks" / "img1.png")).copy()
    rgb[:3, :2] = (1, 2, 3)  # 6 pixels of a colour no class has
    Image.fromarray(rgb).save(root / "masks" / "img1.png")
    (root / "lists").mkdir()
    (root / "lists" / "val.txt").write_text("img1\n")
    with pytest.raises(ValueError, match=r"img1\.png: colour \[1, 2, 3\] \(6 pixels\) is not a class colour"):
        folder(root, "val", split_dir="lists").load(0)
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        folder(root / "images" / "img0.jpg")
    with pytest.raises(ValueError, match="data.mask_format='rgb'"):
        folder(root, mask_format="rgb")


def test_jpeg_masks_are_refused_with_the_reason_and_the_fix(tmp_path):
    root = make_folder(tmp_path / "jpeg", ["a", "b"], colour=False)
    for stem in ("a", "b"):
        mask = np.asarray(Image.open(root / "masks" / f"{stem}.png"))
        cv2.imwrite(str(root / "masks" / f"{stem}.jpg"), mask)
        (root / "masks" / f"{stem}.png").unlink()
    with pytest.raises(ValueError, match=r"masks holds 2 JPEG masks and no PNG: .*re-export them as PNG"):
        folder(root, mask_format="index")


def test_webp_and_ppm_images_are_read_as_seg_predict_reads_them(tmp_path):
    root = make_folder(tmp_path / "formats", ["a", "b", "c"], colour=False)
    image = read_image(root / "images" / "a.jpg")
    for stem, suffix in (("a", ".webp"), ("b", ".ppm")):
        (root / "images" / f"{stem}.jpg").unlink()
        cv2.imwrite(str(root / "images" / f"{stem}{suffix}"), image[..., ::-1])
    ds = folder(root, mask_format="index")
    assert [path.suffix for _, path, _ in ds.all_pairs()] == [".webp", ".ppm", ".jpg"]
    assert all(ds.load(i)[0].shape == image.shape for i in range(len(ds)))


def test_classes_from_a_yaml_file_and_bad_entries(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text("- {name: bg, color: [0, 0, 0]}\n- {name: leaf, color: [0, 200, 0]}\n")
    assert [c["name"] for c in load_classes(str(path))] == ["bg", "leaf"]
    with pytest.raises(FileNotFoundError, match="nope.yaml: no such file"):
        load_classes(str(tmp_path / "nope.yaml"))
    with pytest.raises(ValueError, match=r"class 'x' has color \[1, 2\]"):
        load_classes([{"name": "x", "color": [1, 2]}])
    with pytest.raises(ValueError, match="entry 0"):
        load_classes([{"label": "x"}])


def test_camvid_as_a_colour_folder_equals_data_camvid(tmp_path):
    """The README's worked example: CamVid converted to colour masks and declared as a folder dataset gives the same
    pairs and the same masks as ``data=camvid``."""
    camvid = needs_shared("camvid")
    reference = {split: CamVidSegmentation(camvid, split) for split in ("train", "val")}
    root = tmp_path / "camvid_colour"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(CAMVID_CLASSES)] = CAMVID_PALETTE[: len(CAMVID_CLASSES)]  # void (11 and 255) -> black
    for split, ds in reference.items():
        chosen = list(range(0, len(ds), 25))  # a spread of frames keeps the test fast
        (root / "splits" / f"{split}.txt").write_text("".join(f"{ds.ids[i]}\n" for i in chosen))
        for i in chosen:
            image_path, mask_path = ds.files[i]
            (root / "images" / image_path.name).symlink_to(image_path)
            Image.fromarray(lut[np.asarray(Image.open(mask_path))]).save(root / "masks" / f"{ds.ids[i]}.png")
    classes = [{"name": n, "color": [int(v) for v in CAMVID_PALETTE[i]]} for i, n in enumerate(CAMVID_CLASSES)]
    cfg = compose_cfg(
        [
            "data=folder",
            f"data.root={root}",
            "data.mask_format=color",
            "data.ignore_color=[0,0,0]",
            "data.split_dir=splits",
        ]
    )
    with open_dict(cfg):
        cfg.data.classes = classes
    assert cfg.data.num_classes == 11 and cfg.model.num_classes == 11
    dm = instantiate(cfg.data)
    dm.setup("fit")
    for split, ds in (("train", dm.train_set), ("val", dm.val_set)):
        ref = reference[split]
        assert ds.ids == [ref.ids[i] for i in range(0, len(ref), 25)]
        for k, sample_id in enumerate(ds.ids):
            image, mask = ds.load(k)
            ref_image, ref_mask = ref.load(ref.ids.index(sample_id))
            assert np.array_equal(image, ref_image) and np.array_equal(mask, ref_mask), sample_id


def test_ade20k_layout_reads_and_its_recipe_composes(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for split, stems in (("training", ["ADE_train_1", "ADE_train_2"]), ("validation", ["ADE_val_1"])):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for stem in stems:
            cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), np.zeros((16, 20, 3), np.uint8))
            ann = np.zeros((16, 20), np.uint8)
            ann[:, 10:] = 150  # the last class, "flag"
            ann[:, 15:] = 1  # "wall"
            Image.fromarray(ann).save(root / "annotations" / split / f"{stem}.png")
    cfg = compose_cfg(["data=ade20k", f"data.root={root}"])
    assert cfg.data.num_classes == 150
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert len(dm.train_set) == 2 and dm.val_set.ids == ["ADE_val_1"]
    _, mask = dm.val_set.load(0)
    assert mask[0, 0] == 255 and mask[0, 12] == 149 and mask[0, 17] == 0
    assert dm.val_set.classes[0] == "wall" and dm.val_set.classes[149] == "flag"
    assert tuple(dm.val_set.palette[0]) == (120, 120, 120)
    recipe = compose_cfg(["+experiment=ade20k_dilated", f"data.root={root}"])
    assert recipe.data.train_transform.crop_size == 512 and recipe.trainer.max_steps == 80000
    assert recipe.model.optimizer.lr == 0.01 and recipe.model.num_classes == 150


def test_num_classes_mismatch_is_one_line_before_the_model_is_built(tmp_path, tiny_data_dir):
    # the tiny tree's own generator settings: other settings would regenerate the shared tree for later tests
    prepare = [f"data.prepare.{k}={v}" for k, v in TINY.items()]
    cmd = [
        sys.executable,
        "-m",
        "seg.train",
        f"data.root={tiny_data_dir}",
        *prepare,
        "model.net.num_classes=7",
        "trainer.max_steps=1",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: model.net.num_classes=7 but SyntheticShapes has 5 classes: set it to 5 (or use a dataset with 7)"
    )
    assert not (tmp_path / "checkpoints").exists()


def test_jpeg_orientation_tag_is_not_applied_and_is_reported(tmp_path, caplog):
    """A JPEG whose EXIF says "rotate 90" is read as stored (as its mask is), and set-up warns naming it."""
    root = make_folder(tmp_path / "exif", ["a", "b", "c"], size=(24, 32))
    pixels = np.zeros((24, 32, 3), np.uint8)
    pixels[:, :16] = 255  # left half white: a rotation would move it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW on display"
    Image.fromarray(pixels).save(root / "images" / "b.jpg", exif=exif.tobytes(), quality=100)
    image = read_image(root / "images" / "b.jpg")
    assert image.shape == (24, 32, 3) and image[:, :10].mean() > 200 and image[:, 22:].mean() < 50
    (root / "lists").mkdir()
    (root / "lists" / "val.txt").write_text("a\nb\n")
    with caplog.at_level(logging.WARNING, logger="seg.data.io"):
        folder(root, "val", split_dir="lists").check_headers()
    tagged = [r.getMessage() for r in caplog.records if "EXIF orientation" in r.getMessage()]
    assert len(tagged) == 1 and "b.jpg" in tagged[0] and "a.jpg" not in tagged[0]


def test_the_checker_reads_a_folder_dataset_and_prints_pixel_shares(tmp_path):
    import io

    from rich.console import Console

    from seg.data.check import run_check

    root = make_folder(tmp_path / "leaves", [f"img{i}" for i in range(5)])
    (root / "classes.yaml").write_text("".join(f"- {{name: {c['name']}, color: {c['color']}}}\n" for c in CLASSES))
    overrides = [
        "data=folder",
        f"data.root={root}",
        f"data.classes={root / 'classes.yaml'}",
        "data.mask_format=color",
        "data.ignore_color=[255,255,255]",
    ]
    out = io.StringIO()
    result = run_check(compose_cfg(overrides, config_name="check"), Console(file=out, width=200))
    assert result.ok and result.dataset == "FolderSegmentation" and result.classes == ("bg", "leaf", "spot")
    text = out.getvalue()
    assert "pixel frequencies" in text and "spot" in text and "5 pairs checked, OK" in text
    # 24 x 32 masks in three 10/11/11-column bands, one ignored corner pixel each
    pixels = result.splits["train"].pixels + result.splits["val"].pixels
    assert pixels[:3].tolist() == [5 * (24 * 10 - 1), 5 * 24 * 11, 5 * 24 * 11] and pixels[255] == 5


def test_a_jpeg_with_data_after_its_end_marker_is_not_called_truncated(tmp_path):
    """Phones append data after a JPEG's end-of-image marker (motion photos): a complete image, read as one."""
    root = make_folder(tmp_path / "trailer", ["a", "b", "c"])
    path = root / "images" / "a.jpg"
    path.write_bytes(path.read_bytes() + b"\x00" * 64)
    assert read_image(path).shape == (24, 32, 3)
    folder(root, "train", val_fraction=0.34).check_headers()
    folder(root, "val", val_fraction=0.34).check_headers()
