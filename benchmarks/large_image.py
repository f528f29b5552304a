"""Peak memory and time of predicting one large image: the whole-image sliding window against window by window.

    .venv/bin/python benchmarks/large_image.py [--sides 2000 4000 8000 20000] [--old-max-side 8000]

For each side S an S x S RGB image (a mosaic of CamVid frames where ../shared/data/camvid is present, else a
seeded random mosaic) is written as a tiled, uncompressed TIFF; then each path runs in its own process, whose peak
resident memory (``VmHWM``) is reported beside its baseline (the process with torch and the model loaded,
before the image):

- ``slide`` (seg-predict's path before seg.large_image): the whole image decoded (OpenCV), normalised as one float
  tensor, ``seg.inference.infer(mode=slide)`` over it (full-size float32 scores), argmax;
- ``windows`` (``seg.large_image``): the TIFF read chunk by chunk (``seg.data.raster.TiffRows``), windows one band of
  rows at a time, the class map written as a tiled TIFF band by band (``write_tiled_mask``).

The network is the CamVid recipe's (``+experiment=camvid_imagenet_cpu``: EfficientNet-Lite0, output stride 16,
11 classes, window = its 360 x 480 training crop, stride 2/3 of it) with random weights (memory and time do not
depend on their values), BatchNorm folded, channels_last, ``--precision`` (32: the recipe's). ``slide`` above
``--old-max-side`` is skipped: its float32 scores alone are 11 x S^2 x 4 bytes (17.6 GB at 20,000).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import header  # noqa: E402

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
EXPERIMENT = ["+experiment=camvid_imagenet_cpu", "data.root=.", "model.net.weights=null"]


def rss_mb() -> float:
    """Peak resident memory of this process so far (MB): VmHWM, which starts afresh at exec (ru_maxrss would carry
    the parent's peak over a fork + exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: kilobytes on Linux, bytes on macOS


def write_mosaic(path: Path, side: int) -> None:
    """An ``side`` x ``side`` RGB TIFF, 512 px tiles, made of CamVid frames (or seeded noise blocks)."""
    import cv2
    import tifffile

    frames = sorted((CAMVID / "train").glob("*.png"))[:24] if CAMVID.is_dir() else []
    rng = np.random.default_rng(0)
    if frames:
        tiles = [cv2.imread(str(p))[..., ::-1] for p in frames]
    else:
        tiles = [np.kron(rng.random((45, 60, 3)), np.ones((8, 8, 1))).astype(np.float32) * 255 for _ in range(8)]
    th, tw = tiles[0].shape[:2]
    image = np.empty((side, side, 3), dtype=np.uint8)
    k = 0
    for y in range(0, side, th):
        for x in range(0, side, tw):
            t = tiles[k % len(tiles)]
            k += 1
            image[y : y + th, x : x + tw] = t[: side - y, : side - x]
    tifffile.imwrite(path, image, tile=(512, 512))


def worker(path: Path, mode: str, precision: str, out: Path) -> dict:
    """Run one path on ``path`` in this process; return its seconds and memory figures."""
    import torch
    from hydra.utils import instantiate

    from seg.data.io import read_image
    from seg.data.raster import open_rows, write_tiled_mask
    from seg.data.transforms import with_model_normalization
    from seg.inference import InferenceConfig, infer
    from seg.large_image import predict_rows
    from seg.models.support.fold_bn import fold_batchnorm
    from seg.utils.compose import compose_config

    torch.set_num_threads(torch.get_num_threads())
    cfg = compose_config(EXPERIMENT)
    module = instantiate(cfg.model).eval()
    module.net, _ = fold_batchnorm(module.net, torch.randn(1, 3, 128, 128))
    module = module.to(memory_format=torch.channels_last)
    data = with_model_normalization(cfg.data, module.net.input_mean, module.net.input_std)
    transform = instantiate(data.val_transform)
    window = tuple(cfg.data.train_transform.crop_size)
    inference = InferenceConfig(mode="slide", window=window, precision=precision, channels_last=True)
    baseline = rss_mb()
    start = time.perf_counter()
    if mode == "slide":
        image = read_image(path)
        x = transform(image=image)["image"][None]
        mask = infer(module, x, inference).argmax(dim=1)[0].to(torch.uint8).numpy()
        height, width = mask.shape
    else:
        source = open_rows(path)
        height, width = source.height, source.width
        rows = predict_rows(module, source, transform, inference)
        write_tiled_mask(out, rows, height, width)
    seconds = time.perf_counter() - start
    return {"mode": mode, "side": height, "seconds": seconds, "baseline_mb": baseline, "peak_mb": rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="+", default=[2000, 4000, 8000, 20000])
    p.add_argument("--old-max-side", type=int, default=8000, help="largest side the whole-image path is run on")
    p.add_argument("--precision", default="32", choices=["32", "bf16"])
    p.add_argument("--folder", type=Path, default=Path("/tmp/seg_large_image"), help="for the images written")
    p.add_argument("--worker", nargs=3, metavar=("IMAGE", "MODE", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(Path(a.worker[0]), a.worker[1], a.precision, Path(a.worker[2]))))
        return
    header("large-image prediction: peak memory and time", "python benchmarks/large_image.py " + " ".join(sys.argv[1:]))
    a.folder.mkdir(parents=True, exist_ok=True)
    print("| side (px) | megapixels | path | seconds | peak RSS (GB) | baseline (GB) | peak - baseline (GB) |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for side in a.sides:
        image = a.folder / f"mosaic_{side}.tif"
        write_mosaic(image, side)
        for mode in ("slide", "windows"):
            if mode == "slide" and side > a.old_max_side:
                print(f"| {side} | {side * side / 1e6:.0f} | {mode} | not run (scores alone > 11 x S^2 x 4 B) | | | |")
                continue
            command = [sys.executable, __file__, "--precision", a.precision, "--worker", str(image), mode]
            command.append(str(a.folder / f"mask_{side}.tif"))
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode:
                print(f"| {side} | {side * side / 1e6:.0f} | {mode} | failed: {proc.stderr.strip().splitlines()[-1]} |")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            peak, base = r["peak_mb"] / 1024, r["baseline_mb"] / 1024
            print(
                f"| {side} | {side * side / 1e6:.0f} | {mode} | {r['seconds']:.0f} | {peak:.2f} | {base:.2f} "
                f"| {peak - base:.2f} |",
                flush=True,
            )
        image.unlink()
    for leftover in a.folder.glob("*"):
        leftover.unlink()
    a.folder.rmdir()


if __name__ == "__main__":
    main()
