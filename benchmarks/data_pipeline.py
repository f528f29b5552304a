"""Goal 5: images/s of one data-loading worker against what the model consumes, at VOC and Cityscapes sizes.

    .venv/bin/python benchmarks/data_pipeline.py [--samples 120] [--model-steps 2]

The pipeline is seg's own: the dataset reader (decode + per-sample checks, Cityscapes labelId -> trainId) and the
DeepLab training augmentation (random scale 0.5-2.0, pad, random crop, flip, normalise, to tensor), one core
(torch and OpenCV limited to one thread, as in a DataLoader worker).
  VOC:        the real VOC samples in ../shared/data/voc_samples (JPEG, 513x513: VOC's largest size; a typical
              500x375 image has 0.7x the pixels), crop 513.
  Cityscapes: the real frame in ../shared/data/cityscapes_mini (256x128) upscaled to the dataset's 2048x1024 and
              written as PNG into a temporary Cityscapes tree, crop 769.
Each is timed in-process (dataset[i]) and through a DataLoader with one worker (adds collation and the transfer of
batches through shared memory). The model side is the recipe's network (ResNet-101 OS 16, multi-grid, ASPP
6/12/18; +experiment=voc_dilated / cityscapes_dilated) training at that crop on this machine in its precision
(channels_last; bf16 autocast where the CPU has AMX, else fp32), batch 2. For a GPU, images/s is estimated from
the forward FLOPs (counted on the meta device) and an assumed model FLOP utilisation of the GPU's dense bf16 peak;
benchmarks/gpu.sh measures it.
Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import atexit
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import default_precision, header, median, timed  # noqa: E402

from seg.data.cityscapes import CityscapesSegmentation  # noqa: E402
from seg.data.transforms import train_transforms  # noqa: E402
from seg.data.voc import VOCSegmentation  # noqa: E402
from seg.models import DeepLabV3  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GPUS = {"H100 SXM": 989e12, "A100": 312e12}  # dense bf16 tensor-core peak FLOP/s (NVIDIA datasheets)


def cityscapes_tree(root: Path, frames: int = 4) -> Path:
    """A Cityscapes layout holding the real sample frame at full resolution (2048x1024), ``frames`` times."""
    src = SHARED / "cityscapes_mini"
    image = cv2.imread(str(next((src / "leftImg8bit/val").glob("*/*_leftImg8bit.png"))))
    label = cv2.imread(str(next((src / "gtFine/val").glob("*/*_gtFine_labelIds.png"))), cv2.IMREAD_UNCHANGED)
    image = cv2.resize(image, (2048, 1024), interpolation=cv2.INTER_CUBIC)
    label = cv2.resize(label, (2048, 1024), interpolation=cv2.INTER_NEAREST)
    for i in range(frames):
        (root / "leftImg8bit/train/frankfurt").mkdir(parents=True, exist_ok=True)
        (root / "gtFine/train/frankfurt").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / f"leftImg8bit/train/frankfurt/frankfurt_{i:06d}_000294_leftImg8bit.png"), image)
        cv2.imwrite(str(root / f"gtFine/train/frankfurt/frankfurt_{i:06d}_000294_gtFine_labelIds.png"), label)
    return root


def single_thread(_: int = 0) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def in_process_rate(ds, samples: int) -> float:
    """Images/s of ds[i] in this process (one thread)."""
    ds[0]  # warm-up
    start = time.perf_counter()
    for i in range(samples):
        ds[i % len(ds)]
    return samples / (time.perf_counter() - start)


def loader_rate(ds, samples: int, batch: int) -> float:
    """Images/s delivered by a DataLoader with one worker, the first batch (worker start-up) excluded."""
    repeat = torch.utils.data.Subset(ds, [i % len(ds) for i in range(samples + batch)])
    loader = DataLoader(repeat, batch_size=batch, num_workers=1, worker_init_fn=single_thread, prefetch_factor=2)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = sum(len(x) for x, _ in it)
    return n / (time.perf_counter() - start)


def recipe_net(num_classes: int, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The voc_dilated / cityscapes_dilated network (without pretrained weights)."""
    with torch.device(device):
        return DeepLabV3(
            num_classes,
            backbone="resnet101",
            output_stride=16,
            multi_grid=[1, 2, 4],
            aspp_rates=[6, 12, 18],
            aux=False,
            dropout=0.1,
        )


def forward_flops(num_classes: int, crop: int) -> int:
    """Forward FLOPs of one crop, counted on the meta device (no compute)."""
    net = recipe_net(num_classes, "meta").train()
    counter = FlopCounterMode(display=False)
    with counter:
        net(torch.empty(2, 3, crop, crop, device="meta"))  # batch 2: train-mode BatchNorm on the 1x1 pooled map
    return counter.get_total_flops() // 2


def model_rate(num_classes: int, crop: int, batch: int, steps: int) -> float:
    """Images/s of training steps (channels_last, bf16 autocast where the CPU has AMX) on this machine."""
    bf16 = default_precision() == "bf16"
    torch.manual_seed(0)
    net = recipe_net(num_classes).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch, crop, crop))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x)["out"], y, ignore_index=255)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    return batch / median([timed(step) for _ in range(steps)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=120, help="samples timed per dataset (Cityscapes: a quarter)")
    p.add_argument("--model-steps", type=int, default=2, help="timed training steps per model (0: skip)")
    p.add_argument("--mfu", type=float, default=0.35, help="assumed GPU model FLOP utilisation for the estimate")
    a = p.parse_args()
    header("Data pipeline: images/s per worker against the model's consumption", "python " + " ".join(sys.argv))
    if not SHARED.is_dir():
        print(f"skipped: real sample data {SHARED} is absent")
        return
    threads = torch.get_num_threads()
    single_thread()
    tmp = Path(tempfile.mkdtemp(prefix="seg-bench-data-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # data and checkpoints: GBs
    cases = {
        "VOC (513x513 JPEG, crop 513)": (
            VOCSegmentation(SHARED / "voc_samples", "train", train_transforms(513, (0.5, 2.0))),
            21,
            513,
            a.samples,
        ),
        "Cityscapes (2048x1024 PNG, crop 769)": (
            CityscapesSegmentation(cityscapes_tree(tmp / "cityscapes"), "train", train_transforms(769, (0.5, 2.0))),
            19,
            769,
            max(8, a.samples // 4),
        ),
    }
    png = next((tmp / "cityscapes/leftImg8bit").rglob("*.png"))
    print(f"Cityscapes frame written as {png.stat().st_size / 1e6:.1f} MB PNG (real leftImg8bit files: ~2 MB)")
    for name, (ds, classes, crop, samples) in cases.items():
        image, mask = ds.load(0)
        proc = in_process_rate(ds, samples)
        loader = loader_rate(ds, samples, batch=4)
        torch.set_num_threads(threads)
        model = model_rate(classes, crop, batch=2, steps=a.model_steps) if a.model_steps else float("nan")
        torch.set_num_threads(1)
        flops = forward_flops(classes, crop)
        print(f"{name}: source {image.shape[1]}x{image.shape[0]}, {len(ds)} files")
        print(f"  one worker, in process:        {proc:7.2f} images/s")
        print(f"  one worker, through DataLoader: {loader:7.2f} images/s")
        print(
            f"  model on this machine ({threads} cores, ResNet-101 OS 16, {default_precision()}, batch 2): "
            f"{model:.3f} images/s "
            f"-> one worker delivers {min(proc, loader) / model:.0f}x what it consumes"
        )
        for gpu, peak in GPUS.items():
            rate = a.mfu * peak / (3 * flops)
            workers = math.ceil(rate / min(proc, loader))
            print(
                f"  {gpu}: 3 x {flops / 1e9:.0f} GFLOP per image at {a.mfu:.0%} of {peak / 1e12:.0f} TFLOP/s "
                f"-> ~{rate:.0f} images/s -> {workers} workers (one core each) at this per-core rate"
            )


if __name__ == "__main__":
    main()
