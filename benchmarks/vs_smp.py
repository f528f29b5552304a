"""seg against segmentation_models_pytorch (smp), the library most users pick instead: the same architectures,
one training step and one inference forward, interleaved in one run.

    .venv/bin/python benchmarks/vs_smp.py     # the default matrix: under 10 minutes on a 2-core CPU
    .venv/bin/python benchmarks/vs_smp.py --archs dlv3_lite0_os16 --train-batch 8 --infer-batches 8 1
        [--sizes 360x480 512x512] [--formats nchw cl] [--rounds 2] [--precision fp32|bf16]

Needs the ``bench`` extra (``pip install 'seg[bench]'``: smp 0.6). Both sides are built offline with random
weights (smp ``encoder_weights=None``, seg without ``weights``), 11 classes, and matched as closely as the two
libraries allow:

  dlv3_r50_os8     DeepLabV3, ResNet-50 at output stride 8, ASPP 12/24/36 (torchvision's; smp's defaults)
  dlv3p_r50_os16   DeepLabV3+, ResNet-50 at output stride 16, ASPP 6/12/18 (smp: not separable, as seg's),
                   low-level features from layer1; seg's decoder is the paper's (two dense 3x3 convolutions)
  dlv3p_r50_os16_sep  the same with seg's ``separable=True`` decoder (two depthwise-separable 3x3 convolutions,
                   the paper's Xception setting) against smp's (one separable 3x3): the closest pair
  dlv3_lite0_os16  DeepLabV3, tf_efficientnet_lite0 at output stride 16 (smp ``tu-tf_efficientnet_lite0``),
                   ASPP 6/12/18

seg runs without its auxiliary head (smp has none). What still differs is printed per architecture (parameter
counts of both) and explained in benchmarks/RESULTS.md. smp refuses inputs whose sides are not multiples of the
output stride (360 is not one of 16): it gets its own advice, the frame zero-padded to the next multiple (368 x
480; the labels padded with 255), done before the timing; seg runs the 360 x 480 frame as it is.

Per architecture, input size and memory format (NCHW / channels_last):
  train   forward, cross entropy (ignore 255), backward, SGD (momentum, weight decay), zero_grad; batch 2 by
          default (``--train-batch 8``: a ResNet-50 step at output stride 8 takes most of a minute here). Batch 1
          cannot train: both libraries' ASPP pooling branch has a BatchNorm over a 1x1 map.
  infer   eval mode, ``torch.inference_mode``, logits at input size; batch 1 by default (``--infer-batches 8 1``).
Each pair (seg, smp) is timed in interleaved rounds (A B, B A, ...) after a warm-up call, and reported as the
median of the per-round ratios seg / smp (goal: <= 1.00). Peak memory is the largest heap growth (glibc
``mallinfo2``: allocated bytes, mmap'd chunks included) during the warm-up call, sampled every 2 ms.
Precision: the machine's (bf16 autocast where the CPU has AMX, else fp32); ``--precision`` chooses.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import check_training_batch, default_precision, header, interleave, median, paired_ratio  # noqa: E402

from seg.models import DeepLabV3, DeepLabV3Plus  # noqa: E402
from seg.utils.extras import require  # noqa: E402

NUM_CLASSES = 11  # CamVid's
# architecture -> (seg's class, smp's class name, backbone, output stride, ASPP rates, seg's extra options); smp's
# DeepLabV3+ keeps its ASPP plain: the "_sep" case makes only seg's decoder separable
ARCHS = {
    "dlv3_r50_os8": (DeepLabV3, "DeepLabV3", "resnet50", 8, (12, 24, 36), {}),
    "dlv3p_r50_os16": (DeepLabV3Plus, "DeepLabV3Plus", "resnet50", 16, (6, 12, 18), {}),
    "dlv3p_r50_os16_sep": (DeepLabV3Plus, "DeepLabV3Plus", "resnet50", 16, (6, 12, 18), {"separable": True}),
    "dlv3_lite0_os16": (DeepLabV3, "DeepLabV3", "tf_efficientnet_lite0", 16, (6, 12, 18), {}),
}


def build(arch: str) -> tuple[nn.Module, nn.Module]:
    """(seg's model, smp's model) of one architecture, random weights, in train mode."""
    smp = require("segmentation_models_pytorch", "bench")
    if arch not in ARCHS:
        raise SystemExit(f"unknown architecture {arch!r}: one of {tuple(ARCHS)}")
    cls, smp_name, backbone, stride, rates, extra = ARCHS[arch]
    torch.manual_seed(0)
    ours = cls(NUM_CLASSES, backbone=backbone, output_stride=stride, aspp_rates=list(rates), aux=False, **extra)
    smp_extra = {"decoder_aspp_separable": False} if smp_name == "DeepLabV3Plus" else {}
    encoder = backbone if backbone.startswith("resnet") else f"tu-{backbone}"  # smp reaches timm with "tu-"
    theirs = getattr(smp, smp_name)(
        encoder,
        encoder_weights=None,
        classes=NUM_CLASSES,
        encoder_output_stride=stride,
        decoder_atrous_rates=rates,
        **smp_extra,
    )
    return ours, theirs


def smp_padded(x: torch.Tensor, y: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) zero- and 255-padded at the bottom and right to multiples of ``stride`` (what smp asks for)."""
    h, w = x.shape[-2:]
    ph, pw = -h % stride, -w % stride
    if not ph and not pw:
        return x, y
    return F.pad(x, (0, pw, 0, ph)), F.pad(y, (0, pw, 0, ph), value=255)


def _logits(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return out["out"] if isinstance(out, dict) else out


def train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> Callable[[], None]:
    """One SGD step on (x, y), the same code for both libraries."""
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(_logits(net(x)), y, ignore_index=255)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def infer(net: nn.Module, x: torch.Tensor, bf16: bool) -> Callable[[], None]:
    """One eval-mode forward to logits at input size."""

    def forward() -> None:
        net.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = _logits(net(x))
        assert logits.shape[-2:] == x.shape[-2:], logits.shape  # the padded frame's for smp

    return forward


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_in_use() -> Callable[[], int] | None:
    """Bytes glibc's malloc has handed out (arenas and mmap'd chunks), or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


def peak_memory(fn: Callable[[], None]) -> float | None:
    """GB of heap growth at the peak of one call of ``fn`` (sampled every 2 ms), or None where unmeasurable."""
    in_use = _heap_in_use()
    if in_use is None:
        return None
    base, peak, done = in_use(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], in_use())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    fn()
    done.set()
    thread.join()
    return max(peak[0], in_use()) - base


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    p.add_argument("--sizes", nargs="+", default=["360x480", "512x512"])
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--infer-batches", type=int, nargs="+", default=[1])
    p.add_argument("--formats", nargs="+", default=["nchw", "cl"], choices=["nchw", "cl"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (the first measures peak memory)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=default_precision())
    p.add_argument("--no-memory", action="store_true", help="skip the untimed peak-memory call")
    a = p.parse_args()
    check_training_batch(p, a.train_batch, "--train-batch")
    header("seg against segmentation_models_pytorch on shared architectures", "python " + " ".join(sys.argv))
    bf16 = a.precision == "bf16"
    print(f"precision {a.precision}; {a.rounds} interleaved rounds after {a.warmup} warm-up call(s); ratio = seg / smp")
    g = torch.Generator().manual_seed(0)
    rows = []
    for arch in a.archs:
        ours, theirs = build(arch)
        print(f"\n## {arch}: parameters seg {parameters(ours) / 1e6:.2f} M, smp {parameters(theirs) / 1e6:.2f} M")
        for size, fmt in itertools.product(a.sizes, a.formats):
            h, w = (int(v) for v in size.split("x"))
            memory_format = torch.channels_last if fmt == "cl" else torch.contiguous_format
            for net in (ours, theirs):
                net.to(memory_format=memory_format)
            jobs = [("train", a.train_batch)] + [("infer", b) for b in a.infer_batches]
            for kind, batch in jobs:
                x = torch.randn(batch, 3, h, w, generator=g).contiguous(memory_format=memory_format)
                y = torch.randint(0, NUM_CLASSES, (batch, h, w), generator=g)
                y[:, : h // 16] = 255
                xs, ys = smp_padded(x, y, theirs.encoder.output_stride)
                xs = xs.contiguous(memory_format=memory_format)
                if kind == "train":
                    calls = {"seg": train_step(ours, x, y, bf16), "smp": train_step(theirs, xs, ys, bf16)}
                else:
                    calls = {"seg": infer(ours, x, bf16), "smp": infer(theirs, xs, bf16)}
                memory = {} if a.no_memory else {k: peak_memory(fn) for k, fn in calls.items()}  # 1st warm-up
                times = interleave(calls, a.rounds, max(0, a.warmup - (0 if a.no_memory else 1)))
                ratio = paired_ratio(times["seg"], times["smp"])
                row = (
                    arch,
                    kind,
                    f"{h}x{w}",
                    batch,
                    fmt,
                    median(times["seg"]),
                    median(times["smp"]),
                    ratio,
                    memory.get("seg"),
                    memory.get("smp"),
                )
                rows.append(row)
                mem = (
                    ""
                    if a.no_memory
                    else "   peak GB "
                    + " / ".join(f"{m / 1e9:.2f}" if m is not None else "n/a" for m in (row[8], row[9]))
                )
                print(
                    f"  {kind:5s} {h}x{w} batch {batch} {fmt:4s}  seg {row[5]:7.3f} s  smp {row[6]:7.3f} s  "
                    f"seg/smp {ratio:.3f}{mem}",
                    flush=True,
                )
        del ours, theirs
    print("\n| architecture | step | input | batch | format | seg (s) | smp (s) | seg / smp | peak GB seg / smp |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|")
    for arch, kind, size, batch, fmt, ts, tm, ratio, ms, mm in rows:
        mem = f"{ms / 1e9:.2f} / {mm / 1e9:.2f}" if ms is not None and mm is not None else "n/a"
        print(f"| {arch} | {kind} | {size} | {batch} | {fmt} | {ts:.3f} | {tm:.3f} | {ratio:.3f} | {mem} |")
    worst = max(rows, key=lambda r: r[7])
    print(f"\nslowest relative to smp: {worst[0]} {worst[1]} {worst[2]} batch {worst[3]} {worst[4]}: {worst[7]:.3f}")


if __name__ == "__main__":
    main()
