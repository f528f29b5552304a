"""Images larger than memory: window-by-window prediction in bands of rows (the same class map as the whole-image
sliding window), blending weights, TIFFs read chunk by chunk and class maps written as tiled TIFFs, and
seg-predict choosing that path for large images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from seg.data.io import read_image
from seg.data.raster import ArrayRows, TiffRows, open_rows, write_tiled_mask
from seg.data.transforms import val_transforms
from seg.inference import InferenceConfig, infer, window_weights
from seg.large_image import predict_rows, window_count
from seg.predict import predict
from seg.runs.loaded import load_model
from tests.helpers import fake_run
from tests.test_predict import predict_cfg


@pytest.fixture
def net() -> torch.nn.Module:
    """A dilated two-layer network with a 17 px field: windows see different context, so blending matters."""
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 5, 5, padding=6, dilation=3)]
    return torch.nn.Sequential(*layers).eval()


@pytest.fixture
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((150, 170, 3)) * 255).astype(np.uint8)


class CountingRows(ArrayRows):
    """An image in memory that records every band of rows it is asked for."""

    def __init__(self, image: np.ndarray) -> None:
        super().__init__("counting.png", image)
        self.reads: list[tuple[int, int]] = []

    def read(self, y0: int, y1: int) -> np.ndarray:
        self.reads.append((y0, y1))
        return super().read(y0, y1)


def slide_mask(net, image: np.ndarray, cfg: InferenceConfig) -> np.ndarray:
    x = val_transforms()(image=image)["image"][None]
    return infer(net, x, cfg).argmax(dim=1)[0].numpy().astype(np.uint8)


@pytest.mark.parametrize("blend", ["flat", "gaussian"])
@pytest.mark.parametrize("window", [(48, 64), (200, 64)])  # the second is taller than the image: one band
def test_bands_of_windows_give_the_whole_image_sliding_window_map(net, image, blend, window):
    cfg = InferenceConfig(mode="slide", window=window, stride=(32, 40), window_batch=1, blend=blend)
    source = CountingRows(image)
    bands = list(predict_rows(net, source, val_transforms(), cfg))
    assert np.array_equal(np.concatenate(bands), slide_mask(net, image, cfg))
    height = min(window[0], 150)
    # memory holds one band: every read is one window row high, top to bottom, and the image is never read whole
    assert all(y1 - y0 == height for y0, y1 in source.reads)
    assert [y0 for y0, _ in source.reads] == sorted({y0 for y0, _ in source.reads})
    assert sum(len(b) for b in bands) == 150 and (len(bands) == 1) == (window[0] > 150)


def test_blending_changes_the_map_only_where_windows_overlap(net, image):
    """Weights only matter where windows overlap: with windows that tile the image exactly, every blend gives the
    same map; with overlaps, the Gaussian's map differs from the flat average's on a share of the pixels."""
    tiling = [InferenceConfig(mode="slide", window=(50, 85), stride=(50, 85), blend=b) for b in ("flat", "gaussian")]
    assert np.array_equal(*(slide_mask(net, image, c) for c in tiling))
    overlap = [InferenceConfig(mode="slide", window=(48, 64), stride=(16, 20), blend=b) for b in ("flat", "gaussian")]
    differ = (slide_mask(net, image, overlap[0]) != slide_mask(net, image, overlap[1])).mean()
    assert 0.005 < differ < 0.5


def test_window_weights():
    assert torch.equal(window_weights(3, 4, "flat"), torch.ones(3, 4))
    linear = window_weights(5, 4, "linear")
    assert linear[2].tolist() == pytest.approx([0.5, 1.0, 1.0, 0.5])  # 1-2-2-1 over 2
    assert linear[:, 1].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    gauss = window_weights(64, 64, "gaussian")
    assert gauss[31, 31] == gauss[32, 32] == gauss.max() and gauss.min() >= 1e-6
    # sigma 8 px: column 16 is 15.5 px off the centre, column 31 0.5 px; at the border (31.5 px) clamped to 1e-3
    row = gauss[31] / gauss[31].max()
    assert row[16] == pytest.approx(float(np.exp(-(15.5**2 - 0.5**2) / (2 * 8**2))), rel=1e-4)
    assert row[0] == pytest.approx(1e-3 / float(np.exp(-(0.5**2) / (2 * 8**2))), rel=1e-4)
    assert torch.equal(gauss, gauss.flip(0)) and torch.equal(gauss, gauss.T)
    with pytest.raises(ValueError, match="inference.blend='cosine'; expected one of"):
        InferenceConfig(mode="slide", window=8, blend="cosine")


def test_window_count_and_refusals(net, image):
    cfg = InferenceConfig(mode="slide", window=(48, 64), stride=(32, 40))
    assert window_count(150, 170, cfg) == 5 * 4
    with pytest.raises(ValueError, match="needs inference.mode=slide"):
        next(predict_rows(net, ArrayRows("a.png", image), val_transforms(), InferenceConfig()))
    scaled = InferenceConfig(mode="slide", window=48, input_scale=0.5)
    with pytest.raises(ValueError, match="input_scale=0.5: a large image is predicted window by window"):
        next(predict_rows(net, ArrayRows("a.png", image), val_transforms(), scaled))

    def resize(image):
        return {"image": torch.zeros(3, 10, 10)}

    with pytest.raises(ValueError, match="a.png: the validation transform turns a 170x48 band into 10x10"):
        next(predict_rows(net, ArrayRows("a.png", image), resize, cfg))


@pytest.mark.parametrize("layout", [{"tile": (64, 48)}, {"rowsperstrip": 7}])
def test_chunked_tiff_rows_equal_the_whole_decoded_image(tmp_path, layout):
    data = (np.random.default_rng(1).random((300, 200, 3)) * 4000).astype(np.uint16)
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, data, compression="zlib", **layout)
    whole = read_image(path, scaling=4095)
    source = open_rows(path, scaling=4095)
    assert isinstance(source, TiffRows) and (source.height, source.width) == (300, 200)
    for y0, y1 in [(0, 300), (100, 170), (60, 64), (290, 300)]:
        assert np.array_equal(source.read(y0, y1), whole[y0:y1])
    assert len(source._cache) <= 2  # the chunk rows of the last band, not the image
    source.close()
    # the depth rule is checked when the file is opened, naming it, as read_image does
    with pytest.raises(ValueError, match=r"deep.tif: 200x\d+, 3 band\(s\), uint16.*rows 0-\d+ of the 200x300 image"):
        open_rows(path)
    # percentile scaling needs the whole image: decoded whole
    assert isinstance(open_rows(path, scaling="percentile"), ArrayRows)


def test_tiled_mask_round_trips_with_its_palette(tmp_path):
    mask = (np.random.default_rng(2).random((300, 530)) * 5).astype(np.uint8)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=np.uint8)
    path = tmp_path / "mask.tif"
    write_tiled_mask(path, iter([mask[:100], mask[100:101], mask[101:]]), 300, 530, palette)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        assert np.array_equal(page.asarray(), mask)
    with Image.open(path) as im:
        assert im.mode == "P" and im.getpalette()[:15] == palette.reshape(-1).tolist()
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_predict_switches_large_images_to_windows_and_tiled_tiffs(cfg_train, tmp_path):
    """An image over max_whole_pixels is predicted window by window with the run's crop (64 px), its mask the same
    as inference.mode=slide's; over tiff_above_pixels it is a tiled TIFF with the same classes."""
    ckpt = fake_run(cfg_train, tmp_path / "run")
    rng = np.random.default_rng(3)
    image = np.kron(rng.random((20, 25, 3)), np.ones((8, 8, 1)))  # 160 x 200, blocks the model tells apart
    tifffile.imwrite(tmp_path / "big.tif", (image * 255).astype(np.uint8), tile=(32, 32))
    common = ["inference.precision=32", "inference.window_batch=1"]
    slide = predict(predict_cfg(ckpt, tmp_path / "big.tif", tmp_path / "slide", "inference=slide", *common))
    auto = predict(predict_cfg(ckpt, tmp_path / "big.tif", tmp_path / "auto", "max_whole_pixels=10000", *common))
    whole = predict(predict_cfg(ckpt, tmp_path / "big.tif", tmp_path / "whole", *common))
    tiled_cfg = predict_cfg(ckpt, tmp_path / "big.tif", tmp_path / "tiled", "inference=slide", *common)
    tiled_cfg.tiff_above_pixels = 10000
    tiled = predict(tiled_cfg)
    masks = {}
    for name, result in [("slide", slide), ("auto", auto), ("whole", whole), ("tiled", tiled)]:
        (path,) = result.written
        with Image.open(path) as im:
            masks[name] = np.array(im)
            assert im.mode == "P" and im.size == (200, 160)
    assert tiled.written[0].suffix == ".tif" and slide.written[0].suffix == ".png"
    assert np.array_equal(masks["slide"], masks["auto"]) and np.array_equal(masks["slide"], masks["tiled"])
    assert len(np.unique(masks["slide"])) > 1
    assert not np.array_equal(masks["slide"], masks["whole"])  # the windows really were used
    # and the map is the one the whole-image sliding window (seg.inference.slide_logits) gives
    loaded = load_model(ckpt)
    loaded.fold_batchnorm()
    x = val_transforms()(image=read_image(tmp_path / "big.tif"))["image"][None]
    cfg = InferenceConfig(mode="slide", window=64, window_batch=1, precision="32", channels_last=True)
    assert np.array_equal(masks["slide"], infer(loaded.module.eval(), x, cfg).argmax(dim=1)[0].numpy())


def test_predict_skips_a_tiff_that_breaks_the_band_rule(cfg_train, tmp_path):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    bands = np.random.default_rng(4).integers(0, 255, (40, 50, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "four.tif", bands, tile=(16, 16), photometric="rgb", extrasamples=[0])
    Image.fromarray(bands[..., :3]).save(tmp_path / "ok.png")
    result = predict(predict_cfg(ckpt, tmp_path, tmp_path / "out", "inference=slide"))
    assert [p.name for p in result.written] == ["ok.png"]
    assert [(p.name, "band 4 carries data" in why) for p, why in result.skipped] == [("four.tif", True)]


def test_mask_path_keeps_subfolders(cfg_train, tmp_path):
    ckpt = fake_run(cfg_train, tmp_path / "run")
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((70, 90, 3), np.uint8)).save(tmp_path / "in" / "sub" / "a.png")
    out = tmp_path / "out"
    result = predict(predict_cfg(ckpt, tmp_path / "in", out, "inference=slide", "overlay=true"))
    assert [p.relative_to(out).as_posix() for p in result.written] == ["sub/a.png"]
    assert (out / "overlay" / "sub" / "a.jpg").is_file()
    assert Path(result.written[0]).is_file()


def test_a_large_image_for_a_downscaling_model_asks_for_a_choice(cfg_train, tmp_path):
    cfg_train.model.input_scale = 0.5
    ckpt = fake_run(cfg_train, tmp_path / "run")
    Image.fromarray(np.zeros((70, 90, 3), np.uint8)).save(tmp_path / "a.png")
    cfg = predict_cfg(ckpt, tmp_path / "a.png", tmp_path / "out", "max_whole_pixels=1000")
    with pytest.raises(ValueError, match="runs at input_scale 0.5: resize the image first, or raise max_whole_pixels"):
        predict(cfg)
    assert len(predict(predict_cfg(ckpt, tmp_path / "a.png", tmp_path / "out")).written) == 1
    # an image that fits still slides its windows over the rescaled image, in memory, as before
    slide = predict(predict_cfg(ckpt, tmp_path / "a.png", tmp_path / "slide", "inference=slide"))
    assert len(slide.written) == 1 and not slide.skipped


@pytest.mark.parametrize(
    ("shape", "extra_bands", "photometric"),
    [((90, 70), "error", "minisblack"), ((90, 70, 4), "keep", "rgb"), ((90, 70, 4), "drop", "rgb")],
)
def test_grey_and_four_band_tiffs_read_by_chunks_as_read_image_reads_them(tmp_path, shape, extra_bands, photometric):
    data = (np.random.default_rng(5).random(shape) * 65535).astype(np.uint16)
    path = tmp_path / "bands.tif"
    extra = {"extrasamples": [0]} if len(shape) == 3 else {}
    tifffile.imwrite(path, data, tile=(32, 32), photometric=photometric, **extra)
    source = open_rows(path, scaling="dtype", extra_bands=extra_bands)
    assert isinstance(source, TiffRows)
    whole = read_image(path, scaling="dtype", extra_bands=extra_bands)
    assert whole.shape[2] == {"error": 3, "keep": 4, "drop": 3}[extra_bands]
    assert np.array_equal(source.read(0, 90), whole) and np.array_equal(source.read(40, 75), whole[40:75])
    source.close()
