"""Goal 2: seg's DeepLabV3-ResNet50 OS 8 training step against torchvision's deeplabv3_resnet50.

    .venv/bin/python benchmarks/vs_torchvision.py [--batch 2] [--size 512] [--rounds 4]

Both models are built like torchvision's (ResNet-50, output stride 8, ASPP 12/24/36, FCN aux head, 21 classes) and
seg's is loaded with torchvision's weights, so both compute the same numbers. One training step = forward, cross
entropy on "out" + 0.4 x "aux" (ignore 255), backward, SGD (momentum, weight decay), zero_grad; identical code for
every variant. Variants, interleaved round by round (A B C D, D C B A, ...):

  tv_fp32        torchvision, fp32, NCHW                         (the reference)
  seg_fp32       seg, fp32, NCHW                                 goal: seg_fp32 / tv_fp32 <= 1.00
  seg_fp32_cl    seg, fp32, channels_last (seg's memory format)
  seg_fast       seg's default fast path: bf16 autocast + channels_last   goal: tv_fp32 / seg_fast >= 2.2
  tv_fast        torchvision with the same bf16 autocast + channels_last  (what seg_fast is bounded by)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torchvision.models.segmentation import deeplabv3_resnet50

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import (  # noqa: E402
    check_training_batch,
    default_precision,
    header,
    interleave,
    median,
    paired_ratio,
    sgd_step,
    training_batch,
)

from seg.models import DeepLabV3  # noqa: E402


def build_pair(num_classes: int = 21) -> tuple[torch.nn.Module, torch.nn.Module]:
    """torchvision's deeplabv3_resnet50 and seg's DeepLabV3 configured like it, holding the same weights."""
    torch.manual_seed(0)
    tv = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=True)
    seg = DeepLabV3(num_classes, backbone="resnet50", output_stride=8, aspp_rates=[12, 24, 36], aux=True)
    seg.load_state_dict(tv.state_dict())
    return tv, seg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    fast = ["seg_fast", "tv_fast"] if default_precision() == "bf16" else []  # bf16 is emulated without AMX
    p.add_argument(
        "--variants",
        nargs="+",
        default=["tv_fp32", "seg_fp32", "seg_fp32_cl", *fast],
        help="default: the bf16 variants only where the CPU has AMX",
    )
    a = p.parse_args()
    check_training_batch(p, a.batch)
    header("seg DeepLabV3-ResNet50 OS 8 against torchvision deeplabv3_resnet50", "python " + " ".join(sys.argv))
    x, y = training_batch(a.batch, a.size, void_rows=a.size // 16)  # some void pixels, as in VOC
    specs = {  # name: (model, channels_last, bf16)
        "tv_fp32": ("tv", False, False),
        "seg_fp32": ("seg", False, False),
        "seg_fp32_cl": ("seg", True, False),
        "seg_fast": ("seg", True, True),
        "tv_fast": ("tv", True, True),
    }
    steps = {}
    for name in a.variants:
        kind, cl, bf16 = specs[name]
        tv, seg = build_pair()  # every variant its own copy: channels_last converts in place
        steps[name] = sgd_step(tv if kind == "tv" else seg, x, y, bf16, channels_last=cl)
    print(f"batch {a.batch}x3x{a.size}x{a.size}, {a.rounds} interleaved rounds after {a.warmup} warm-up step(s)")
    times = interleave(steps, a.rounds, a.warmup)
    for name, t in times.items():
        print(f"  {name:12s} median {median(t):7.3f} s/step   all: {', '.join(f'{v:.3f}' for v in t)}")
    if "tv_fp32" in times:
        ref = times["tv_fp32"]
        for name in times:
            if name != "tv_fp32":
                print(
                    f"{name} / tv_fp32 = {paired_ratio(times[name], ref):.3f}   "
                    f"(speed-up tv_fp32 / {name} = {paired_ratio(ref, times[name]):.2f}x)"
                )


if __name__ == "__main__":
    main()
