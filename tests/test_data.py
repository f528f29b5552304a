"""The synthetic generator, the VOC-layout reader, transforms and the DataModule's worker seeding."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from seg.data.datamodule import SegDataModule, seed_worker
from seg.data.io import write_index_mask
from seg.data.synthetic import MARKER, SYNTHETIC_CLASSES, SyntheticShapes, generate, render_sample
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transforms, val_transforms
from seg.data.voc import VOCSegmentation, voc_colormap


def test_voc_colormap_matches_devkit():
    cmap = voc_colormap()
    assert cmap[0].tolist() == [0, 0, 0]
    assert cmap[1].tolist() == [128, 0, 0]
    assert cmap[15].tolist() == [192, 128, 128]  # person
    assert cmap[255].tolist() == [224, 224, 192]  # the void boundary colour


def test_generator_is_deterministic_and_has_void(tmp_path):
    a = render_sample(np.random.default_rng([0, 0, 3]))
    b = render_sample(np.random.default_rng([0, 0, 3]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    image, mask = a
    assert image.dtype == np.uint8 and image.shape == (96, 96, 3)
    values = set(np.unique(mask).tolist())
    assert 255 in values and 0 in values and values - {255} <= set(range(len(SYNTHETIC_CLASSES)))


def test_generated_tree_layout_and_roundtrip(tiny_data_dir):
    ds = SyntheticShapes(tiny_data_dir, "train")
    assert len(ds) == 24 and len(SyntheticShapes(tiny_data_dir, "val")) == 5
    image, mask = ds[0]
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    with Image.open(tiny_data_dir / "SegmentationClass" / f"{ds.ids[0]}.png") as im:
        assert im.mode == "P"  # a real VOC-style palette PNG
        assert np.array_equal(np.array(im), mask)
    assert 255 in np.unique(mask)


def test_generate_reuses_then_regenerates_when_incomplete(tmp_path):
    root = generate(tmp_path / "s", num_train=4, num_val=2, size=32)
    first = (root / "JPEGImages" / "train_00001.jpg").read_bytes()
    stamp = (root / MARKER).stat().st_mtime_ns
    generate(root, num_train=4, num_val=2, size=32)
    assert (root / MARKER).stat().st_mtime_ns == stamp  # complete tree reused, not rewritten
    (root / "SegmentationClass" / "val_00001.png").unlink()
    generate(root, num_train=4, num_val=2, size=32)
    assert (root / "SegmentationClass" / "val_00001.png").is_file()
    assert (root / "JPEGImages" / "train_00001.jpg").read_bytes() == first  # same seed, same bytes


def _write_pair(root, sample_id, image, mask, split="train"):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "JPEGImages" / f"{sample_id}.jpg"), image)
    if mask.ndim == 3:
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{sample_id}.png")
    else:
        write_index_mask(root / "SegmentationClass" / f"{sample_id}.png", mask, voc_colormap())
    with open(root / "ImageSets/Segmentation" / f"{split}.txt", "a") as f:
        f.write(sample_id + "\n")


def test_reader_keeps_indices_and_void_exactly(tmp_path):
    mask = np.arange(64 * 48, dtype=np.int64).reshape(48, 64) % 21
    mask[:, :3] = 255
    _write_pair(tmp_path, "a", np.zeros((48, 64, 3), np.uint8), mask.astype(np.uint8))
    image, read = VOCSegmentation(tmp_path, "train")[0]
    assert image.shape == (48, 64, 3) and read.dtype == np.uint8
    assert np.array_equal(read, mask)


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_root", "does not exist"),
        ("missing_split", "split list"),
        ("empty_split", "is empty"),
        ("missing_file", "b.jpg"),
        ("rgb_mask", "mode RGB"),
        ("bad_label", "label values \\[30\\]"),
        ("size_mismatch", "differs from image"),
        ("corrupt_jpeg", "cannot decode image"),
        ("truncated_png", "cannot decode mask"),
    ],
)
def test_reader_errors_name_the_problem(tmp_path, case, match):
    root = tmp_path / "voc"
    good = np.zeros((16, 16), np.uint8)
    _write_pair(root, "a", np.zeros((16, 16, 3), np.uint8), good)
    split = "train"
    if case == "missing_root":
        root = tmp_path / "nowhere"
    elif case == "missing_split":
        split = "val"
    elif case == "empty_split":
        (root / "ImageSets/Segmentation/train.txt").write_text("\n")
    elif case == "missing_file":
        with open(root / "ImageSets/Segmentation/train.txt", "a") as f:
            f.write("b\n")
    elif case == "rgb_mask":
        _write_pair(root, "a", np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8))
    elif case == "bad_label":
        _write_pair(root, "a", np.zeros((16, 16, 3), np.uint8), good + 30)
    elif case == "size_mismatch":
        _write_pair(root, "a", np.zeros((16, 20, 3), np.uint8), good)
    elif case == "corrupt_jpeg":
        (root / "JPEGImages/a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    elif case == "truncated_png":
        path = root / "SegmentationClass/a.png"
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises((FileNotFoundError, ValueError), match=match) as err:
        VOCSegmentation(root, split)[0]
    if case not in ("missing_root", "missing_split", "empty_split"):
        assert "a." in str(err.value) or "b." in str(err.value)  # the message names the file


def _coded_sample(h=40, w=60):
    """An image whose red channel encodes the class of each pixel (class * 50), so alignment is checkable."""
    mask = np.zeros((h, w), np.uint8)
    mask[:, w // 3 : 2 * w // 3] = 1
    mask[h // 2 :, 2 * w // 3 :] = 2
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = mask * 50 + 50
    return image, mask


def _denormalise_red(t: torch.Tensor) -> np.ndarray:
    return (t[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]).mul(255).numpy()


def test_train_transform_keeps_alignment_and_pads_mask_with_255():
    image, mask = _coded_sample()
    tf = train_transforms(crop_size=(96, 112), scale_range=(0.75, 1.5))
    tf.set_random_seed(0)
    padded_seen = False
    for _ in range(10):
        out = tf(image=image, mask=mask)
        img, m = out["image"], out["mask"].numpy()
        assert img.shape == (3, 96, 112) and m.shape == (96, 112)
        red = _denormalise_red(img)
        pad = m == 255
        padded_seen |= bool(pad.any())
        assert np.abs(red[pad]).max() < 1.0  # padding is 0 in the image, 255 in the mask
        labelled = ~pad
        decoded = np.clip(np.round((red[labelled] - 50) / 50), 0, 2)
        agree = (decoded == m[labelled]).mean()
        assert agree > 0.97, agree  # only interpolated boundary pixels may disagree
    assert padded_seen


def test_color_jitter_changes_colours_within_its_ranges_and_leaves_the_mask_alone():
    """With the geometry fixed (crop = image, scale 1, no flip), jitter changes the image, never the mask, and
    its brightness factor stays within 1 +- 0.3 (a grey image: contrast, saturation and hue leave grey grey)."""
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, (40, 60), dtype=np.uint8)
    grey = np.full((40, 60, 3), 100, dtype=np.uint8)
    plain = train_transforms(crop_size=(40, 60), scale_range=(1.0, 1.0), hflip=False, mean=(0, 0, 0), std=(1, 1, 1))
    jitter = train_transforms(
        crop_size=(40, 60),
        scale_range=(1.0, 1.0),
        hflip=False,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        color_jitter=[0.3, 0.0, 0.0, 0.0],
    )
    jitter.set_random_seed(0)
    base = plain(image=grey, mask=mask)["image"]
    factors = []
    for _ in range(20):
        out = jitter(image=grey, mask=mask)
        assert np.array_equal(out["mask"].numpy(), mask)
        factors.append(float(out["image"].mean() / base.mean()))
    assert 0.7 - 0.01 <= min(factors) and max(factors) <= 1.3 + 0.01
    assert max(factors) - min(factors) > 0.2  # the factor is drawn per image
    with pytest.raises(ValueError, match=r"color_jitter=\[0.3, 0.2\]: expected \[brightness, contrast"):
        train_transforms(color_jitter=[0.3, 0.2])


def test_cat_max_ratio_redraws_crops_that_one_class_fills():
    """A frame that is 90% class 0 with a 10 px strip of class 1 at the right: a 20 x 20 crop has class 0 under 75%
    only when it starts at x >= 76, 5 of 81 positions (6%); redrawn up to 10 times, 1 - 0.94^10 = 46% of them."""
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[:, 90:] = 1
    image = np.zeros((100, 100, 3), dtype=np.uint8)

    def share_ok(transform) -> float:
        transform.set_random_seed(0)
        crops = [transform(image=image, mask=mask)["mask"].numpy() for _ in range(100)]
        return float(np.mean([len(np.unique(c)) > 1 and (c == 0).mean() < 0.75 for c in crops]))

    common = {"crop_size": 20, "scale_range": (1.0, 1.0), "hflip": False}
    plain, balanced = share_ok(train_transforms(**common)), share_ok(train_transforms(**common, cat_max_ratio=0.75))
    assert plain < 0.15 and 0.3 < balanced < 0.65, (plain, balanced)
    with pytest.raises(ValueError, match="cat_max_ratio=1.5: expected a share in"):
        train_transforms(cat_max_ratio=1.5)


def test_val_transform_keeps_full_resolution():
    image, mask = _coded_sample(37, 51)
    out = val_transforms()(image=image, mask=mask)
    assert out["image"].shape == (3, 37, 51)
    assert np.array_equal(out["mask"].numpy(), mask)


def test_compose_is_strict_about_unknown_arguments():
    import albumentations as A

    with pytest.raises(ValueError):
        A.Compose([A.PadIfNeeded(min_height=8, min_width=8, mask_value=255)], strict=True)


def test_workers_get_distinct_augmentation_streams(tiny_data_dir):
    dm = SegDataModule(
        SyntheticShapes, tiny_data_dir, train_transform=train_transforms(crop_size=48), val_transform=val_transforms()
    )
    dm.setup("fit")
    torch.manual_seed(0)
    loader = DataLoader(dm.train_set, batch_size=1, num_workers=2, worker_init_fn=seed_worker, sampler=[0, 0, 0, 0])
    crops = [m[0].numpy() for _, m in loader]
    # sample 0 four times, two from each worker: without per-worker seeding, worker 0 and 1 would repeat
    assert not np.array_equal(crops[0], crops[1]) or not np.array_equal(crops[2], crops[3])
    assert len({c.tobytes() for c in crops}) >= 3


def test_datamodule_checks_num_classes(tiny_data_dir):
    dm = SegDataModule(SyntheticShapes, tiny_data_dir, num_classes=21, val_transform=val_transforms())
    with pytest.raises(ValueError, match="num_classes=21"):
        dm.setup("validate")


def test_missing_root_fails_before_model(tmp_path):
    shutil.rmtree(tmp_path, ignore_errors=True)
    dm = SegDataModule(SyntheticShapes, tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="absent"):
        dm.setup("fit")
