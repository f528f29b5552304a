"""Images as users have them (issue 39, section 1): 16-bit and multi-band files are read at their stored depth and
converted by a stated rule (data.image_scaling), never silently crushed to their high byte; a band the rule does
not cover is an error naming the file, its shape, dtype and the setting that would accept it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from seg.data.io import read_header, read_image, to_uint8
from seg.predict import predict
from tests.helpers import fake_run
from tests.test_folder import folder, make_folder
from tests.test_predict import predict_cfg

# a 12-bit sensor's picture stored in 16 bits: a ramp 0-4000 across, 3 rows
RAMP = np.tile(np.linspace(0, 4000, 8).round().astype(np.uint16), (3, 1))


def test_a_16_bit_image_without_a_rule_is_an_error_naming_file_dtype_values_and_setting(tmp_path):
    path = tmp_path / "scan.png"
    cv2.imwrite(str(path), RAMP)
    with pytest.raises(ValueError) as caught:
        read_image(path)
    message = str(caught.value)
    assert str(path) in message and "8x3, 1 band(s), uint16, values 0-4000" in message
    assert "data.image_scaling=dtype" in message and "data.image_scaling=4095" in message and "percentile" in message


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_each_rule_by_hand(tmp_path, suffix):
    """4000 of 4095 -> 249 (rint(4000 * 255 / 4095)); of 65535 -> 16; percentile stretches the ramp to 0-255. The
    single band is repeated to RGB, as an 8-bit grey image is."""
    path = tmp_path / f"scan{suffix}"
    cv2.imwrite(str(path), RAMP)
    by_max = read_image(path, 4095)
    assert by_max.shape == (3, 8, 3) and by_max.dtype == np.uint8 and (by_max[..., 0] == by_max[..., 2]).all()
    assert by_max[0, -1, 0] == 249 and by_max[0, 0, 0] == 0
    assert read_image(path, "dtype")[0, -1, 0] == 16
    stretched = read_image(path, "percentile")[0, :, 0]
    assert stretched[0] == 0 and stretched[-1] == 255 and (np.diff(stretched.astype(int)) > 0).all()


def test_to_uint8_rules_clip_and_handle_floats():
    x = np.array([[-5.0, 0.5, 2.0]], np.float32)
    assert to_uint8(x, "dtype").tolist() == [[0, 128, 255]]  # a float image is 0-1
    assert to_uint8(np.array([[5000]], np.uint16), 4095).tolist() == [[255]]  # above the maximum: clipped
    assert to_uint8(np.full((2, 2), 7, np.uint16), "percentile").tolist() == [[0, 0], [0, 0]]  # flat: no 0/0


def test_colour_16_bit_keeps_rgb_order_and_the_header_says_its_depth(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint16)
    bgr[..., 2] = 65535  # red, as OpenCV stores it
    path = tmp_path / "red.tif"
    cv2.imwrite(str(path), bgr)
    assert read_image(path, "dtype")[0, 0].tolist() == [255, 0, 0]
    assert read_header(path)[1] == "RGB;16"  # PIL alone would report RGB and read the high bytes


def test_a_fourth_band_is_an_error_unless_it_is_an_opaque_alpha_or_dropping_is_asked_for(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    opaque, nir = tmp_path / "opaque.png", tmp_path / "nir.tif"
    cv2.imwrite(str(opaque), np.dstack([rgb[..., ::-1], np.full((6, 7), 255, np.uint8)]))
    cv2.imwrite(str(nir), np.dstack([rgb[..., ::-1], np.arange(42, dtype=np.uint8).reshape(6, 7)]))
    assert (read_image(opaque) == rgb).all()
    with pytest.raises(ValueError, match=r"nir\.tif: 7x6, 4 band\(s\), uint8, .*data\.extra_bands=drop"):
        read_image(nir)
    assert (read_image(nir, extra_bands="drop") == rgb).all()


def test_data_folder_trains_on_16_bit_images_by_the_rule_and_refuses_them_without_one(tmp_path):
    root = make_folder(tmp_path / "scans", [f"s{i}" for i in range(5)])
    for i, image in enumerate(sorted((root / "images").glob("*.jpg"))):
        cv2.imwrite(str(image.with_suffix(".png")), np.full((24, 32), 1000 * i, np.uint16))
        image.unlink()
    with pytest.raises(ValueError, match=r"s\d\.png: a I;16 image \(deeper than 8 bits\).*data\.image_scaling="):
        folder(root, "train").check_headers()  # the datamodule's set-up: from the headers, before any model is built
    ds = folder(root, "train", image_scaling=4095)
    ds.check_headers()
    stems = [p.stem for p, _ in ds.files]
    image, _ = ds.load(0)
    expected = round(1000 * int(stems[0][1:]) * 255 / 4095)
    assert image.dtype == np.uint8 and (image == expected).all()
    with pytest.raises(ValueError, match="data.image_scaling='bright'"):
        folder(root, "train", image_scaling="bright")


def test_predict_reads_16_bit_inputs_by_the_rule_and_skips_them_with_the_setting_without_one(
    cfg_train, tmp_path, capsys
):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "scan.png"), np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (48, 1)))
    cv2.imwrite(str(inputs / "photo.png"), np.full((48, 64, 3), 90, np.uint8))
    result = predict(predict_cfg(ckpt, inputs, tmp_path / "plain"))
    assert [p.name for p in result.written] == ["photo.png"]
    assert len(result.skipped) == 1 and "data.image_scaling" in result.skipped[0][1]
    result = predict(predict_cfg(ckpt, inputs, tmp_path / "scaled", "data.image_scaling=4095"))
    assert sorted(p.name for p in result.written) == ["photo.png", "scan.png"] and not result.skipped
