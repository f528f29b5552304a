"""VOC (+SBD train_aug), Cityscapes and CamVid readers on fixture trees in the official layouts, on the real
samples in ../shared/data where present, and the data configs and experiments that use them."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from hydra.utils import instantiate
from omegaconf import open_dict
from omegaconf.errors import MissingMandatoryValue
from PIL import Image

from seg.data.camvid import CAMVID_CLASSES, CamVidSegmentation
from seg.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    LABEL_TO_TRAIN,
    LABELS,
    CityscapesSegmentation,
)
from seg.data.folder import FolderSegmentation
from seg.data.io import read_header, read_image, read_index_mask, write_index_mask
from seg.data.voc import VOCSegmentation, voc_colormap
from seg.data.voc_aug import VOCAugSegmentation
from tests.helpers import compose_cfg, needs_shared

H, W = 12, 16


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _mask(value: int, h: int = H, w: int = W) -> np.ndarray:
    """Class ``value`` in the left half, background (0) on the right, a void (255) first row."""
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 2] = value
    mask[0] = 255
    return mask


def make_voc(root: Path, splits: dict[str, list[str]], classes: dict[str, int] | None = None) -> Path:
    """A VOCdevkit/VOC2012 tree under ``root``: jpg images, palette masks, split lists; returns VOC2012."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for n, sample_id in enumerate(sorted({i for ids in splits.values() for i in ids})):
        cv2.imwrite(str(voc / "JPEGImages" / f"{sample_id}.jpg"), _image(n))
        value = (classes or {}).get(sample_id, n % 20 + 1)
        write_index_mask(voc / "SegmentationClass" / f"{sample_id}.png", _mask(value), voc_colormap())
    for split, ids in splits.items():
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return voc


def make_sbd(root: Path, train: list[str], val: list[str], voc: Path) -> Path:
    """benchmark_RELEASE/dataset, cls/<id>.mat with GTcls.Segmentation 7 but for a 3-column band of 0."""
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    for n, sample_id in enumerate(train + val):
        seg = np.full((H, W), 7, np.uint8)
        seg[:, :3] = 0
        scipy.io.savemat(dataset / "cls" / f"{sample_id}.mat", {"GTcls": {"Segmentation": seg}})
        image = voc / "JPEGImages" / f"{sample_id}.jpg"
        if not image.exists():
            cv2.imwrite(str(image), _image(100 + n))
    (dataset / "train.txt").write_text("\n".join(train) + "\n")
    (dataset / "val.txt").write_text("\n".join(val) + "\n")
    return dataset


# ---------------------------------------------------------------- VOC


@pytest.mark.parametrize("level", ["VOCdevkit/VOC2012", "VOCdevkit", "."])
def test_voc_accepts_devkit_or_voc2012_root(tmp_path, level):
    voc = make_voc(tmp_path, {"train": ["a", "b"], "val": ["c"]}, classes={"a": 15})
    ds = VOCSegmentation(tmp_path / level, "train")
    assert ds.root == voc and ds.ids == ["a", "b"] and ds.num_classes == 21
    image, mask = ds.load(0)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3) and mask.dtype == np.uint8
    assert np.array_equal(mask, _mask(15))


def test_real_voc_samples():
    root = needs_shared("voc_samples")
    ds = VOCSegmentation(root, "val")
    assert len(ds) == 14 and ds.root.name == "VOC2012"
    for i in range(len(ds)):
        image, mask = ds.load(i)
        assert image.shape == (513, 513, 3) and mask.shape == (513, 513)
        assert 255 in mask and set(np.unique(mask).tolist()) <= set(range(21)) | {255}


# ---------------------------------------------------------------- VOC + SBD


def test_train_aug_from_sbd_is_union_minus_voc_val(tmp_path):
    voc = make_voc(tmp_path, {"train": ["a", "b"], "val": ["c", "v"]}, classes={"a": 3, "b": 4})
    make_sbd(tmp_path, train=["b", "d", "c"], val=["e", "v"], voc=voc)
    ds = VOCAugSegmentation(tmp_path / "VOCdevkit", "train_aug")
    assert ds.ids == ["a", "b", "d", "e"]  # (train ∪ SBD train ∪ SBD val) − val: c and v never reach training
    masks = dict(zip(ds.ids, (mp for _, mp in ds.files), strict=True))
    assert masks["b"].suffix == ".png" and masks["d"].suffix == ".mat"  # VOC train keeps its VOC mask
    assert np.array_equal(ds.load(ds.ids.index("b"))[1], _mask(4))
    sbd_mask = ds.load(ds.ids.index("d"))[1]
    assert (sbd_mask[:, :3] == 0).all() and (sbd_mask[:, 3:] == 7).all()
    assert VOCAugSegmentation(tmp_path, "val").ids == ["c", "v"]  # other splits are plain VOC


def test_train_aug_from_segmentation_class_aug_pngs(tmp_path):
    voc = make_voc(tmp_path, {"train": ["a"], "val": ["c"]})
    (voc / "SegmentationClassAug").mkdir()
    for n, i in enumerate(["x", "y"]):
        cv2.imwrite(str(voc / "JPEGImages" / f"{i}.jpg"), _image(50 + n))
        Image.fromarray(_mask(9)).save(voc / "SegmentationClassAug" / f"{i}.png")  # grayscale index PNG
    # DrSleep's list form: "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"
    lines = [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in ["a", "x", "y"]]
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(lines))
    ds = VOCAugSegmentation(voc, "train_aug")
    assert ds.ids == ["a", "x", "y"] and ds.files[1][1] == voc / "SegmentationClassAug" / "x.png"
    assert np.array_equal(ds.load(2)[1], _mask(9))
    # mmseg's aug.txt lists only the extra ids: VOC train joins them
    (voc / "ImageSets/Segmentation/train_aug.txt").unlink()
    (voc / "ImageSets/Segmentation/aug.txt").write_text("x\ny\n")
    assert VOCAugSegmentation(voc, "train_aug").ids == ["a", "x", "y"]


def test_train_aug_list_with_a_val_image_is_refused(tmp_path):
    voc = make_voc(tmp_path, {"train": ["a"], "val": ["c", "v"]})
    (voc / "SegmentationClassAug").mkdir()
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text("a\nv\n")
    with pytest.raises(ValueError, match=r"1 VOC val image\(s\) \(e.g. v\).*must never reach training"):
        VOCAugSegmentation(voc, "train_aug")


def test_train_aug_without_sbd_names_both_layouts(tmp_path):
    make_voc(tmp_path, {"train": ["a"], "val": ["c"]})
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug.*benchmark_RELEASE.*sbd_root"):
        VOCAugSegmentation(tmp_path, "train_aug")


def test_sbd_root_can_be_given_and_bad_mat_files_are_named(tmp_path):
    voc = make_voc(tmp_path / "voc", {"train": ["a"], "val": ["c"]})
    sbd = make_sbd(tmp_path / "elsewhere", train=["d", "e"], val=["f"], voc=voc)
    (sbd / "cls" / "d.mat").write_bytes((sbd / "cls" / "d.mat").read_bytes()[:100])  # truncated
    scipy.io.savemat(sbd / "cls" / "e.mat", {"GTinst": {"Segmentation": np.zeros((H, W), np.uint8)}})
    ds = VOCAugSegmentation(voc, "train_aug", sbd_root=tmp_path / "elsewhere" / "benchmark_RELEASE")
    assert ds.ids == ["a", "d", "e", "f"]
    with pytest.raises(ValueError, match=r"d\.mat: cannot read SBD \.mat"):
        ds.load(1)
    with pytest.raises(ValueError, match=r"e\.mat: not an SBD class file"):
        ds.load(2)


# ---------------------------------------------------------------- Cityscapes

OFFICIAL_TRAIN_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def make_cityscapes(root: Path, split: str, frames: dict[str, np.ndarray], suffix: str = "labelIds") -> Path:
    """leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png and gtFine/.../<frame>_gtFine_<suffix>.png."""
    for n, (name, label) in enumerate(frames.items()):
        city = name.split("_")[0]
        img_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img_dir / f"{name}_leftImg8bit.png"), _image(n, *label.shape))
        Image.fromarray(label).save(gt_dir / f"{name}_gtFine_{suffix}.png")
    return root


def test_cityscapes_maps_every_label_id_to_its_train_id(tmp_path):
    label = np.tile(np.arange(34, dtype=np.uint8), (2, 1))  # every labelId 0..33, one column each
    make_cityscapes(tmp_path, "val", {"aachen_000000_000019": label})
    ds = CityscapesSegmentation(tmp_path, "val")
    assert ds.ids == ["aachen/aachen_000000_000019"]
    _, mask = ds.load(0)
    expected = np.full(34, 255)
    expected[OFFICIAL_TRAIN_IDS] = np.arange(19)  # the 19 evaluated classes, in labelId order
    assert mask[0].tolist() == expected.tolist()
    assert LABEL_TO_TRAIN.shape == (256,) and (LABEL_TO_TRAIN[34:] == 255).all()
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[18] == "bicycle" and ds.num_classes == 19
    assert CITYSCAPES_PALETTE[13].tolist() == [0, 0, 142]  # car


def test_cityscapes_table_matches_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels", reason="cityscapesscripts not installed")
    for label in labels.labels:
        if label.id < 0:
            continue
        assert LABEL_TO_TRAIN[label.id] == (label.trainId if 0 <= label.trainId < 255 else 255), label.name
    ours = {name: (i, t, c) for name, i, t, c in LABELS}
    for label in labels.labels:
        if label.id >= 0:
            assert ours[label.name] == (label.id, label.trainId, label.color)


def test_cityscapes_train_id_files_and_bad_values(tmp_path):
    ids = np.array([[7, 26, 40]], np.uint8).repeat(2, axis=0)
    make_cityscapes(tmp_path, "val", {"bonn_000000_000001": ids})
    with pytest.raises(ValueError, match=r"000001_gtFine_labelIds\.png: label values \[40\] are not"):
        CityscapesSegmentation(tmp_path, "val").load(0)
    train_ids = np.array([[0, 18, 255]], np.uint8).repeat(2, axis=0)
    make_cityscapes(tmp_path, "val", {"bonn_000000_000001": train_ids}, suffix="labelTrainIds")
    ds = CityscapesSegmentation(tmp_path, "val", label_format="labelTrainIds")
    assert ds.load(0)[1][0].tolist() == [0, 18, 255]
    with pytest.raises(ValueError, match="label_format='trainIds'"):
        CityscapesSegmentation(tmp_path, "val", label_format="trainIds")


def test_cityscapes_setup_errors_name_the_path(tmp_path):
    make_cityscapes(tmp_path, "val", {"bonn_000000_000001": np.zeros((2, 3), np.uint8)})
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/train does not exist"):
        CityscapesSegmentation(tmp_path, "train")
    (tmp_path / "gtFine/val/bonn/bonn_000000_000001_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"bonn_000000_000001_gtFine_labelIds\.png is listed"):
        CityscapesSegmentation(tmp_path, "val")


def test_real_cityscapes_frame_agrees_with_its_train_id_file():
    root = needs_shared("cityscapes_mini")
    _, mask = CityscapesSegmentation(root, "val").load(0)
    gt = root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"
    reference = read_index_mask(gt)
    assert mask.shape == (128, 256)
    assert int((mask != reference).sum()) == 77  # the downscaling's disagreement, documented in shared/data


# ---------------------------------------------------------------- CamVid


def make_camvid(root: Path, split: str, names: list[str], masks: list[np.ndarray], with_list=True) -> Path:
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    for n, (name, mask) in enumerate(zip(names, masks, strict=True)):
        cv2.imwrite(str(root / split / f"{name}.png"), _image(n, *mask.shape))
        Image.fromarray(mask).save(root / f"{split}annot" / f"{name}.png")
    if with_list:  # the SegNet lists carry their authors' absolute prefix
        lines = [f"/SegNet/CamVid/{split}/{n}.png /SegNet/CamVid/{split}annot/{n}.png" for n in names]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_camvid_pairs_by_name_and_ignores_void(tmp_path):
    mask = np.array([[0, 10, 11]], np.uint8).repeat(4, axis=0)
    make_camvid(tmp_path, "train", ["0001TP_006690", "0001TP_006720"], [mask, mask])
    ds = CamVidSegmentation(tmp_path, "train")
    assert ds.ids == ["0001TP_006690", "0001TP_006720"]
    assert ds.files[0] == (tmp_path / "train/0001TP_006690.png", tmp_path / "trainannot/0001TP_006690.png")
    assert ds.load(1)[1][0].tolist() == [0, 10, 255] and ds.num_classes == len(CAMVID_CLASSES) == 11


def test_camvid_without_list_bad_label_and_missing_split(tmp_path):
    make_camvid(tmp_path, "val", ["a"], [np.array([[3, 12]], np.uint8)], with_list=False)
    ds = CamVidSegmentation(tmp_path, "val")
    with pytest.raises(ValueError, match=r"valannot/a\.png: label values \[12\] outside 0..10"):
        ds.load(0)
    with pytest.raises(FileNotFoundError, match=r"neither split list .*test\.txt nor folder .*test exists"):
        CamVidSegmentation(tmp_path, "test")


def test_camvid_cross_sequence_splits_hold_one_sequence_out(tmp_path):
    mask = np.zeros((4, 6), np.uint8)
    names = ["0001TP_006690", "0006R0_f00930", "0006R0_f00960", "0016E5_00390"]
    make_camvid(tmp_path, "train", names, [mask] * 4)
    assert CamVidSegmentation(tmp_path, "train-0006R0").ids == ["0001TP_006690", "0016E5_00390"]
    assert CamVidSegmentation(tmp_path, "train@0006R0").ids == ["0006R0_f00930", "0006R0_f00960"]
    with pytest.raises(ValueError, match=r"split 'train@0006R1': unknown sequence '0006R1'; CamVid's are \["):
        CamVidSegmentation(tmp_path, "train@0006R1")
    with pytest.raises(ValueError, match=r"split 'train@Seq05VD' is empty: no frame of Seq05VD in split 'train'"):
        CamVidSegmentation(tmp_path, "train@Seq05VD")


def test_camvid_splits_joined_by_plus_are_read_together_and_never_count_a_frame_twice(tmp_path):
    mask = np.zeros((4, 6), np.uint8)
    make_camvid(tmp_path, "train", ["0001TP_006690", "0006R0_f00930"], [mask] * 2)
    make_camvid(tmp_path, "val", ["0016E5_07959"], [mask])
    both = CamVidSegmentation(tmp_path, "train+val")
    assert both.ids == ["0001TP_006690", "0006R0_f00930", "0016E5_07959"]
    assert both.files[2] == (tmp_path / "val/0016E5_07959.png", tmp_path / "valannot/0016E5_07959.png")
    assert CamVidSegmentation(tmp_path, "train+val-0006R0").ids == ["0001TP_006690", "0016E5_07959"]
    assert CamVidSegmentation(tmp_path, "train+val@0016E5").ids == ["0016E5_07959"]
    make_camvid(tmp_path, "test", ["0006R0_f00930"], [mask])  # a frame of train again
    twice = r"split 'train\+test': frame 0006R0_f00930 is in both 'train' and 'test' \(.*test/0006R0_f00930\.png\)"
    with pytest.raises(ValueError, match=twice + ": it would be counted twice"):
        CamVidSegmentation(tmp_path, "train+test")
    with pytest.raises(ValueError, match=r"split 'train\+' is not <split>\[\+<split>\.\.\.\]\[-\|@<sequence>\]"):
        CamVidSegmentation(tmp_path, "train+")


def test_training_on_the_validation_frames_is_named(tmp_path, caplog):
    """train+val trains on the val frames: the data module says so, with the count, for each validation split."""
    from seg.data.datamodule import SegDataModule

    mask = np.zeros((4, 6), np.uint8)
    make_camvid(tmp_path, "train", ["0001TP_006690", "0006R0_f00930", "0006R0_f00960"], [mask] * 3)
    make_camvid(tmp_path, "val", ["0016E5_07959"], [mask])
    dm = SegDataModule(CamVidSegmentation, tmp_path, train_split="train+val-0006R0", extra_val_splits=["train@0006R0"])
    with caplog.at_level(logging.WARNING, logger="seg.data.datamodule"):
        dm.setup("fit")
        dm.setup("fit")  # as Lightning calls it again: warned once
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        "the train split 'train+val-0006R0' holds 1 of the 1 frames of validation split 'val': not held out"
    ]


def test_real_camvid_sequences_match_the_data_readme():
    root = needs_shared("camvid")
    counts = {s: len(CamVidSegmentation(root, f"train@{s}")) for s in ("0001TP", "0006R0", "0016E5")}
    assert counts == {"0001TP": 62, "0006R0": 101, "0016E5": 204}
    assert len(CamVidSegmentation(root, "train-0006R0")) == 266
    assert len(CamVidSegmentation(root, "train+val")) == 468  # the published test figures' training set
    assert len(CamVidSegmentation(root, "train+val-0006R0")) == 367  # and its cross-sequence proxy
    assert {i[:6] for i in CamVidSegmentation(root, "val").ids} == {"0016E5"}


def test_real_camvid_splits_and_class_shares():
    root = needs_shared("camvid")
    train, val = CamVidSegmentation(root, "train"), CamVidSegmentation(root, "val")
    assert (len(train), len(val)) == (367, 101)
    image, mask = val.load(0)
    assert image.shape == (360, 480, 3) and mask.shape == (360, 480)
    counts = sum(np.bincount(train.read_mask(m).ravel(), minlength=256) for _, m in train.files)
    share = counts / counts.sum() * 100
    # shared/data/README: Sky 16.9%, Road 31.7%, Pedestrian 0.6%, Unlabelled (now 255) 4.0%
    assert share[[0, 3, 9, 255]] == pytest.approx([16.9, 31.7, 0.6, 4.0], abs=0.06)


# ---------------------------------------------------------------- configs and experiments


def _trees(tmp_path: Path, h: int = H, w: int = W) -> dict[str, Path]:
    """One small tree per data config; Cityscapes and CamVid frames are h x w."""
    voc = make_voc(tmp_path / "voc", {"train": ["a", "b"], "val": ["c"]})
    make_sbd(tmp_path / "voc", train=["d"], val=["e"], voc=voc)
    road, car = _mask(7, h, w), _mask(26, h, w)
    frames = {"aachen_000000_000019": road, "aachen_000001_000019": car}
    city = make_cityscapes(tmp_path / "cs", "train", frames)
    make_cityscapes(city, "val", {"bonn_000000_000001": car})
    cam = make_camvid(tmp_path / "camvid", "train", ["t1", "t2"], [_mask(3, h, w), _mask(8, h, w)])
    make_camvid(cam, "val", ["v1"], [_mask(8, h, w)])
    return {"voc": voc, "voc_aug": tmp_path / "voc", "cityscapes": city, "camvid": cam}


@pytest.mark.parametrize(
    "name, train_len, crop",
    [("voc", 2, (513, 513)), ("voc_aug", 4, (513, 513)), ("cityscapes", 2, (769, 769)), ("camvid", 2, (360, 480))],
)
def test_data_configs_build_their_datasets(tmp_path, name, train_len, crop):
    root = _trees(tmp_path)[name]
    dm = instantiate(compose_cfg([f"data={name}", f"data.root={root}", "data.num_workers=0", "data.batch_size=2"]).data)
    dm.setup("fit")
    assert len(dm.train_set) == train_len and dm.val_batch_size == 1
    image, mask = dm.train_set[0]
    assert tuple(image.shape) == (3, *crop) and tuple(mask.shape) == crop
    assert (mask.numpy() == 255).mean() > 0.9  # a 12x16 image scaled <= 2x fills little of the crop
    val_image, val_mask = dm.val_set[0]
    assert tuple(val_image.shape) == (3, H, W) and tuple(val_mask.shape) == (H, W)  # full resolution


@pytest.mark.parametrize("experiment", ["voc_dilated", "cityscapes_dilated", "camvid_dilated"])
def test_experiment_without_root_names_data_root(experiment):
    cfg = compose_cfg([f"+experiment={experiment}"])
    assert cfg.model.net.output_stride == 16 and list(cfg.model.net.multi_grid) == [1, 2, 4]
    assert list(cfg.model.net.aspp_rates) == [6, 12, 18] and cfg.data.batch_size == 16
    with pytest.raises(MissingMandatoryValue, match="data.root"):
        instantiate(cfg.data)


def test_voc_experiment_switches_to_train_aug_from_the_command_line():
    cfg = compose_cfg(["+experiment=voc_dilated", "data=voc_aug"])
    assert cfg.data.dataset._target_.endswith("VOCAugSegmentation") and cfg.data.train_split == "train_aug"
    assert cfg.data.train_transform.crop_size == 513 and cfg.model.optimizer.lr == 0.007


def test_camvid_experiment_trains_on_a_fixture_tree(tmp_path):
    from seg.train import train

    root = _trees(tmp_path, 48, 64)["camvid"]  # big enough that layer4 is not 1x1 (BatchNorm on 2 values)
    cfg = compose_cfg(
        [
            "+experiment=camvid_dilated",
            f"data.root={root}",
            "model.net.weights=null",
            "model.net.backbone=resnet34",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.train_transform.crop_size=[48,64]",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.precision=32-true",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            "~logger.tensorboard",
        ]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        del cfg.hydra
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and 0.0 <= metrics["pixel_acc"] <= 1.0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


# ---------------------------------------------------------------- channel order and truncated files


RED = (255, 0, 0)  # RGB


def _red(path: Path, size: tuple[int, int] = (W, H)) -> None:
    """A pure red image written by PIL (which stores RGB as RGB; OpenCV would expect BGR), JPEG or PNG by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, RED).save(path, quality=95)


def _red_trees(root: Path) -> dict[str, object]:
    """One tree per dataset class, each with a pure red image where an image file goes; the datasets built on them."""
    voc = make_voc(root / "voc", {"train": ["a"], "val": ["b"]})
    _red(voc / "JPEGImages" / "a.jpg")
    (voc / "SegmentationClassAug").mkdir()
    _red(voc / "JPEGImages" / "x.jpg")
    Image.fromarray(_mask(9)).save(voc / "SegmentationClassAug" / "x.png")
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text(
        "/JPEGImages/x.jpg /SegmentationClassAug/x.png\n/JPEGImages/a.jpg /SegmentationClassAug/a.png\n"
    )
    shutil.copy(voc / "SegmentationClass" / "a.png", voc / "SegmentationClassAug" / "a.png")
    city = make_cityscapes(root / "cityscapes", "val", {"aachen_000000_000019": np.full((H, W), 7, np.uint8)})
    _red(city / "leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png")
    camvid = make_camvid(root / "camvid", "train", ["0001TP_006690"], [np.zeros((H, W), np.uint8)])
    _red(camvid / "train" / "0001TP_006690.png")
    folder = root / "folder"
    for stem in ("f0", "f1", "f2", "f3", "f4"):
        _red(folder / "images" / f"{stem}.jpg")
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((H, W), np.uint8)).save(folder / "masks" / f"{stem}.png")
    return {
        "voc": (VOCSegmentation(voc, "train"), "a"),
        "voc_aug_png": (VOCAugSegmentation(voc, "train_aug"), "x"),
        "cityscapes": (CityscapesSegmentation(root / "cityscapes", "val"), "aachen/aachen_000000_000019"),
        "camvid": (CamVidSegmentation(root / "camvid", "train"), "0001TP_006690"),
        "folder": (FolderSegmentation(folder, "train", classes=["bg", "fg"], val_fraction=0.2), None),
    }


def test_every_dataset_class_reads_a_red_image_as_red(tmp_path):
    """RGB, not OpenCV's BGR: channel 0 of every reader's image is the red one (JPEG: within its rounding)."""
    for name, (ds, sample_id) in _red_trees(tmp_path).items():
        index = ds.ids.index(sample_id) if sample_id is not None else 0
        image, _ = ds[index]  # transform=None: the untransformed (image RGB, mask) pair
        assert image.dtype == np.uint8 and image.shape == (H, W, 3), name
        mean = image.reshape(-1, 3).mean(axis=0)
        assert mean[0] > 245 and mean[1] < 10 and mean[2] < 10, (name, mean.tolist())


def test_a_jpeg_cut_short_is_named_by_the_image_reader_and_the_header_check(tmp_path, monkeypatch):
    whole = tmp_path / "whole.jpg"
    Image.fromarray(_image(0, 64, 80)).save(whole, quality=95)
    data = whole.read_bytes()
    assert data.endswith(b"\xff\xd9")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 9 // 10])
    assert read_image(whole).shape == (64, 80, 3) and read_header(whole) == ((80, 64), "RGB")
    truncated = r"cut\.jpg: truncated JPEG \(no end-of-image marker\)"
    with pytest.raises(ValueError, match=truncated):
        read_header(cut)  # PIL reads the header alone: only the end-of-image check sees the cut
    with pytest.raises(ValueError, match=r"cut\.jpg: (truncated JPEG|cannot decode image)"):
        read_image(cut)  # this OpenCV refuses the cut file itself (others decode it with only a warning)

    def lenient(buf, flags):  # an OpenCV that decodes a cut JPEG with a warning: the reader's own check must catch it
        from PIL import ImageFile

        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        with Image.open(io.BytesIO(buf.tobytes())) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB"))[..., ::-1])  # BGR, as OpenCV returns

    monkeypatch.setattr(cv2, "imdecode", lenient)
    assert read_image(whole).shape == (64, 80, 3)
    with pytest.raises(ValueError, match=truncated):
        read_image(cut)
