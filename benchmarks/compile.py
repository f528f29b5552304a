"""Training speed of the camvid_cpu recipe, eager against ``torch.compile`` (inductor), in one run, interleaved.

    .venv/bin/python benchmarks/compile.py --root ../shared/data/camvid [--steps 50] [--precision 32|bf16]

Both variants start from the same weights and train on the same real CamVid batches (the recipe's augmentation,
read once into memory, so data loading is not timed), stepping alternately: step i of one, then step i of the
other, the order flipping every step. Prints seconds per step and images per second of each, the speed ratio, the
compile time (the compiled variant's first steps beyond its median step), the steps it takes to pay that back, and
how far the two loss curves drift apart.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import header  # noqa: E402

from seg.utils.compose import compose_config  # noqa: E402

WARM = 3  # steps of each variant left out of the medians (compilation, oneDNN primitive creation)


def batches(cfg, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The recipe's first ``steps`` training batches, in memory."""
    dm = instantiate(cfg.data, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    out = []
    while len(out) < steps:
        for x, y in dm.train_dataloader():
            out.append((x.contiguous(memory_format=torch.channels_last), y.long()))
            if len(out) == steps:
                break
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--root", required=True, help="the CamVid folder (train/, trainannot/, ...)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--precision", choices=("32", "bf16"), default="32")
    a = p.parse_args()
    header(
        "camvid_cpu training step: eager vs torch.compile (inductor)",
        f"python benchmarks/compile.py --root {a.root} --steps {a.steps} --precision {a.precision}",
    )
    cfg = compose_config(["+experiment=camvid_cpu", f"data.root={a.root}"])
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    data = batches(cfg, a.steps)
    eager = module.net.train()
    compiled_net = copy.deepcopy(eager)
    variants = {"eager": eager, "compiled": torch.compile(compiled_net)}
    opts = {
        name: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        for name, net in (("eager", eager), ("compiled", compiled_net))
    }
    times: dict[str, list[float]] = {n: [] for n in variants}
    losses: dict[str, list[float]] = {n: [] for n in variants}
    bf16 = a.precision == "bf16"
    for i, (x, y) in enumerate(data):
        for name in list(variants) if i % 2 == 0 else list(variants)[::-1]:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = variants[name](x)
                loss = module.criterion(out["out"], y) + module.hparams.aux_weight * module.criterion(out["aux"], y)
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            times[name].append(time.perf_counter() - start)
            losses[name].append(loss.item())
        print(f"step {i}: " + ", ".join(f"{n} {times[n][-1]:.2f} s loss {losses[n][-1]:.4f}" for n in variants))
    batch = data[0][0].shape[0]
    med = {n: statistics.median(t[WARM:]) for n, t in times.items()}
    for n in variants:
        print(f"{n}: {med[n]:.3f} s/step, {batch / med[n]:.2f} img/s; first {WARM} steps {sum(times[n][:WARM]):.1f} s")
    ratio = med["eager"] / med["compiled"]
    overhead = sum(times["compiled"][:WARM]) - WARM * med["compiled"]
    saved = med["eager"] - med["compiled"]
    payback = f"{overhead / saved:.0f} steps" if saved > 0 else "never (not faster)"
    drift = max(abs(e - c) for e, c in zip(losses["eager"], losses["compiled"], strict=True))
    print(f"speed-up {ratio:.3f}x; compile time {overhead:.1f} s, paid back after {payback}")
    print(
        f"loss after {a.steps} steps: eager {losses['eager'][-1]:.4f}, compiled {losses['compiled'][-1]:.4f}; "
        f"largest difference over the curve {drift:.4f}"
    )


if __name__ == "__main__":
    main()
