"""Goal 3: achieved FLOP/s of a training step as a fraction of the matmul ceiling measured in the same run.

    .venv/bin/python benchmarks/utilisation.py [--backbone resnet50] [--output-stride 8] [--batch 2] [--size 512]

Model FLOPs = 3 x the forward FLOPs counted by torch.utils.flop_counter.FlopCounterMode (backward ~ 2 x forward),
divided by the step time (forward, loss, backward, SGD). The ceiling is a large square matmul (fp32: 4096^3,
bf16: 8192^3) timed between the steps (best of 3 per round, median over rounds). One profiled step per precision
then says where the time goes: time in convolutions (forward + backward) and their own FLOP/s, and the share of
memory-bound ops (BatchNorm, ReLU, add, upsampling, loss, optimizer).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import check_training_batch, default_precision, header, median, sgd_step, timed, training_batch  # noqa: E402

from seg.models import DeepLabV3  # noqa: E402

CATEGORIES = {  # profiler op name fragment -> category (first match wins)
    "convolution": "convolution (fwd + bwd)",
    "conv2d": "convolution (fwd + bwd)",
    "batch_norm": "batch norm (fwd + bwd)",
    "threshold_backward": "relu (fwd + bwd)",
    "relu": "relu (fwd + bwd)",
    "upsample": "bilinear upsampling (fwd + bwd)",
    "nll_loss": "loss",
    "log_softmax": "loss",
    "_foreach": "optimizer (SGD)",
    "add": "add / copy / other elementwise",
    "copy": "add / copy / other elementwise",
    "to": "add / copy / other elementwise",
    "max_pool": "max pool",
    "mean": "pooling branch / reductions",
    "avg_pool": "pooling branch / reductions",
}


def category(name: str) -> str:
    for fragment, cat in CATEGORIES.items():
        if fragment in name:
            return cat
    return "other"


def matmul_ceiling(dtype: torch.dtype, n: int) -> float:
    """FLOP/s of the best of three n x n x n matmuls."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = min(timed(lambda: a @ b) for _ in range(3))
    return 2 * n**3 / best


def forward_flops(net: torch.nn.Module, x: torch.Tensor, bf16: bool) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        net(x)
    return counter.get_total_flops(), counter.get_flop_counts()


def where_time_goes(step, conv_flops: float) -> None:
    """Profile one step: self time per category, and the convolutions' own FLOP/s."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    per_cat: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        if evt.key.startswith("aten::") or evt.key.startswith("mkldnn") or "Optimizer" in evt.key:
            per_cat[category(evt.key)] += evt.self_cpu_time_total / 1e6
            per_op[evt.key] += evt.self_cpu_time_total / 1e6
    total = sum(per_cat.values())
    print(f"    profiled step: {total:.2f} s of op self time")
    for cat, t in sorted(per_cat.items(), key=lambda kv: -kv[1]):
        print(f"      {cat:34s} {t:6.2f} s  {100 * t / total:5.1f} %")
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:8]
    print("    top ops: " + ", ".join(f"{k} {v:.2f} s" for k, v in top))
    conv_t = per_cat["convolution (fwd + bwd)"]
    if conv_t:
        rate = 3 * conv_flops / conv_t
        print(f"    convolutions alone: {rate / 1e9:.0f} GFLOP/s (3 x forward conv FLOPs / conv time)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--output-stride", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fp32-n", type=int, default=4096, help="matmul size for the fp32 ceiling")
    p.add_argument("--bf16-n", type=int, default=8192, help="matmul size for the bf16 ceiling")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=None,
        help="default: fp32, and bf16 (+ channels_last) where the CPU has AMX",
    )
    a = p.parse_args()
    check_training_batch(p, a.batch)
    header("Utilisation: training-step FLOP/s against the matmul ceiling", "python " + " ".join(sys.argv))
    x, y = training_batch(a.batch, a.size)
    print(f"seg DeepLabV3 {a.backbone} OS {a.output_stride} (ASPP 12/24/36, aux), batch {a.batch}x3x{a.size}x{a.size}")
    variants = {}
    precisions = a.precisions or (["fp32", "bf16"] if default_precision() == "bf16" else ["fp32"])
    chosen = [
        v
        for v in (("fp32 NCHW", False, a.fp32_n), ("bf16 + channels_last", True, a.bf16_n))
        if ("bf16" if v[1] else "fp32") in precisions
    ]
    for name, bf16, n in chosen:
        torch.manual_seed(0)
        net = DeepLabV3(21, backbone=a.backbone, output_stride=a.output_stride, aspp_rates=[12, 24, 36], aux=True)
        xi = x
        if bf16:
            net = net.to(memory_format=torch.channels_last)
            xi = x.contiguous(memory_format=torch.channels_last)
        net.train()
        flops, by_op = forward_flops(net, xi, bf16)
        conv = sum(v for k, v in by_op.get("Global", {}).items() if "convolution" in str(k))
        variants[name] = {"step": sgd_step(net, xi, y, bf16), "flops": flops, "conv": conv, "bf16": bf16, "n": n}
        print(f"  forward: {flops / 1e9:.1f} GFLOP ({100 * conv / flops:.1f} % in convolutions); step = 3 x forward")
    for v in variants.values():
        v["step"]()  # warm-up (oneDNN primitive creation)
    step_t = {k: [] for k in variants}
    ceil = {k: [] for k in variants}
    for r in range(a.rounds):
        for name, v in variants.items() if r % 2 == 0 else reversed(list(variants.items())):
            ceil[name].append(matmul_ceiling(torch.bfloat16 if v["bf16"] else torch.float32, v["n"]))
            step_t[name].append(timed(v["step"]))
    print()
    for name, v in variants.items():
        t, c = median(step_t[name]), median(ceil[name])
        achieved = 3 * v["flops"] / t
        print(
            f"{name}: step {t:.3f} s (all: {', '.join(f'{s:.2f}' for s in step_t[name])}), "
            f"achieved {achieved / 1e9:.0f} GFLOP/s, matmul ceiling {c / 1e9:.0f} GFLOP/s "
            f"(n={v['n']}) -> fraction {achieved / c:.3f}"
        )
        if not a.no_profile:
            where_time_goes(v["step"], v["conv"])


if __name__ == "__main__":
    main()
