"""glibc malloc tuning (``seg.utils.malloc.keep_freed_memory``) on a CPU training step: time, user and kernel seconds.

    python benchmarks/malloc.py [--size 360 480] [--batch 8] [--steps 3] [--rounds 2]

Each variant runs in its own process (the setting is process-wide), alternated A B B A ...: the DeepLabV3 of
``+experiment=camvid_imagenet_cpu`` (tf_efficientnet_lite0, output stride 16, ASPP) in fp32, channels_last, one
training step (forward, ce + Lovasz, backward, SGD) on random data, after one untimed step. Prints per-step wall,
user and system seconds and minor page faults, medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(args: argparse.Namespace) -> None:
    import torch

    from seg.losses import build_loss
    from seg.models import DeepLabV3
    from seg.utils.malloc import keep_freed_memory

    applied = keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = args.size
    net = DeepLabV3(11, "tf_efficientnet_lite0", output_stride=16, aspp_rates=(3, 6, 9), dropout=0.1, aux=False)
    net = net.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss = build_loss([{"name": "ce", "weight": 1.0}, {"name": "lovasz", "weight": 1.0}])
    x = torch.randn(args.batch, 3, h, w).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 11, (args.batch, h, w))

    def step() -> None:
        opt.zero_grad()
        loss(net(x)["out"], y).backward()
        opt.step()

    step()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        step()
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    n = args.steps
    per_step = {
        "wall": (t1 - t0) / n,
        "user": (r1.ru_utime - r0.ru_utime) / n,
        "sys": (r1.ru_stime - r0.ru_stime) / n,
        "minflt": (r1.ru_minflt - r0.ru_minflt) / n,
    }
    print(json.dumps({"applied": applied, **per_step}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from bench_utils import machine

    variants = {"glibc default": "0", "keep_freed_memory": "1"}
    results: dict[str, list[dict]] = {name: [] for name in variants}
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--size",
        *map(str, args.size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
    ]
    for r in range(args.rounds):
        for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
            env = {**os.environ, "SEG_MALLOC_TUNING": variants[name]}
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
    h, w = args.size
    print(
        f"{machine()}\nDeepLabV3 tf_efficientnet_lite0 OS 16, batch {args.batch} x {h}x{w}, fp32 channels_last, "
        f"{args.steps} steps x {args.rounds} rounds per variant (medians per step)\n"
    )
    print("| malloc | step s | user s | kernel s | minor faults |\n|---|---:|---:|---:|---:|")
    med = {
        n: {k: statistics.median(r[k] for r in rs) for k in ("wall", "user", "sys", "minflt")}
        for n, rs in results.items()
    }
    for name, m in med.items():
        print(f"| {name} | {m['wall']:.2f} | {m['user']:.2f} | {m['sys']:.2f} | {m['minflt']:,.0f} |")
    print(f"\nspeed-up: {med['glibc default']['wall'] / med['keep_freed_memory']['wall']:.2f}x")


if __name__ == "__main__":
    main()
