"""Goal 6: sliding-window inference, windows batched against one window at a time, on a 1024x2048 image.

    .venv/bin/python benchmarks/sliding_window.py [--windows 128 512] [--batch 8] [--rounds 2]

seg.inference.infer with mode=slide (stride 2/3 of the window, mmsegmentation's grid) on one 1x3x1024x2048 image,
``window_batch=1`` against ``--batch`` windows per forward pass, fp32 (so the two outputs can be compared exactly)
and bf16 autocast + channels_last (the default inference precision of a bf16-trained run). The model is the quickstart
network (``python -m seg.train``'s ResNet-18) at output stride 16 with Cityscapes' 19 classes: small enough for a
short run. The max abs difference of the logits (asserted <= --atol in fp32) and the number of pixels whose predicted
class differs are printed. ``--device cuda`` runs the same comparison on a GPU (benchmarks/gpu.sh does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import header, interleave, median, paired_ratio  # noqa: E402

from seg.inference import InferenceConfig, infer, windows  # noqa: E402
from seg.utils.compose import compose_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--windows", type=int, nargs="+", default=[128, 512])
    p.add_argument("--output-stride", type=int, default=16, help="of the quickstart net (16 keeps the run short)")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass on the batched side")
    p.add_argument("--precisions", nargs="+", default=["32", "bf16"], choices=["32", "bf16"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed fp32 logit difference")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: run by gpu.sh")
    a = p.parse_args()
    header("Sliding window: batched windows against one at a time", "python " + " ".join(sys.argv))
    torch.manual_seed(0)
    cfg = compose_config(["data.num_classes=19", f"model.net.output_stride={a.output_stride}"]).model.net
    device = torch.device(a.device)
    net = instantiate(cfg).eval().to(device)
    image = torch.randn(1, 3, a.height, a.width, generator=torch.Generator().manual_seed(0)).to(device)
    print(
        f"image 1x3x{a.height}x{a.width} on {device.type}; quickstart net ({cfg.backbone} OS {cfg.output_stride}, "
        f"ASPP {list(cfg.aspp_rates)}), 19 classes; {a.rounds} rounds"
    )
    for precision in a.precisions:
        cl = precision == "bf16"
        model = net.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        for w in a.windows:
            cfgs = {
                b: InferenceConfig(mode="slide", window=w, window_batch=b, precision=precision, channels_last=cl)
                for b in (1, a.batch)
            }
            outs = {b: infer(model, image, c) for b, c in cfgs.items()}  # also the warm-up
            diff = (outs[1] - outs[a.batch]).abs().max().item()
            changed = int((outs[1].argmax(1) != outs[a.batch].argmax(1)).sum())
            n = len(windows(a.height, a.width, cfgs[1].window, cfgs[1].stride))
            calls = {b: (lambda c=c, m=model: infer(m, image, c)) for b, c in cfgs.items()}
            times = interleave(calls, a.rounds, warmup=0)
            speedup = paired_ratio(times[1], times[a.batch])
            print(
                f"{precision:>4s} window {w}x{w} stride {cfgs[1].stride[0]}: {n} windows; one at a time "
                f"{median(times[1]):.2f} s, {a.batch} per pass {median(times[a.batch]):.2f} s -> {speedup:.2f}x; "
                f"max abs logit difference {diff:.2e}, {changed} of {a.height * a.width} pixels differ"
            )
            if precision == "32":
                assert diff <= a.atol, f"batched and single-window fp32 logits differ by {diff}"


if __name__ == "__main__":
    main()
