"""Training-step time of the quickstart model: fp32 (NCHW) against bf16 autocast + channels_last, one process.

    .venv/bin/python benchmarks/quickstart_precision.py [--steps 20] [--batch 8] [--size 96]

Prints seconds per step for each variant and the ratio; the ratio is what holds across machines and load.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from seg.hydra_utils import compose_config


def time_steps(channels_last: bool, bf16: bool, steps: int, batch: int, size: int) -> float:
    """Median seconds per SGD step of the default quickstart net on random data."""
    torch.manual_seed(0)
    net = instantiate(compose_config().model.net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 5, (batch, size, size))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(steps + 3):  # 3 warm-up steps (oneDNN primitive creation)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
            loss = F.cross_entropy(out["out"], y) + 0.4 * F.cross_entropy(out["aux"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return sorted(times[3:])[len(times[3:]) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=96)
    a = p.parse_args()
    fp32 = time_steps(False, False, a.steps, a.batch, a.size)
    bf16 = time_steps(True, True, a.steps, a.batch, a.size)
    print(f"fp32 NCHW:              {fp32 * 1000:7.1f} ms/step")
    print(f"bf16 + channels_last:   {bf16 * 1000:7.1f} ms/step")
    print(f"speed-up: {fp32 / bf16:.2f}x  (torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
