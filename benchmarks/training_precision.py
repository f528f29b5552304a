"""Training-step time of each documented recipe in fp32 against bf16 autocast, on the machine at hand.

    python benchmarks/training_precision.py                          # the four recipes, both precisions
    python benchmarks/training_precision.py --recipes camvid_imagenet_cpu --rounds 5
    python benchmarks/training_precision.py --max-batch 2            # shorter: every batch capped at 2

Each recipe's network, loss, auxiliary head, memory format and training batch (its batch size and crop) is
composed from its config exactly as ``seg.train`` would; the step is ``SegModule.training_step`` + backward + SGD
on a seeded random batch (no data loading), bf16 under ``torch.autocast`` as Lightning's ``bf16-mixed`` runs it.
The two precisions alternate within each round (A B, B A, ...), so a drifting machine affects both alike; the
ratio fp32 / bf16 is the figure (above 1: bf16 is faster). Random weights throughout: the speed of a step does
not depend on the values of its weights (the ImageNet ones are not needed).

The paper recipe (ResNet-101, batch 16 of 513 x 513) takes minutes a step on a 2-core CPU: ``--max-batch`` caps
its batch (and the others'), and the table says which batch was timed.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import composed_training_step, header, interleave, median  # noqa: E402

# recipe -> the overrides that compose it; weights off (see above), the paper recipe on its VOC setting
RECIPES = {
    "quickstart": [],
    "camvid_cpu": ["+experiment=camvid_cpu"],
    "camvid_imagenet_cpu": ["+experiment=camvid_imagenet_cpu", "model.net.weights=null"],
    "deeplabv3_paper": ["+experiment=voc_dilated", "model.net.weights=null"],
}


def recipe_step(name: str, bf16: bool, max_batch: int | None):
    """A closure running one training step of recipe ``name``, and the (batch, height, width) it trains on."""
    return composed_training_step(RECIPES[name], bf16, max_batch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    p.add_argument("--rounds", type=int, default=3, help="timed steps of each precision (after one warm-up step)")
    p.add_argument("--max-batch", type=int, default=None, help="cap every recipe's batch (>= 2)")
    a = p.parse_args()
    if a.max_batch is not None and a.max_batch < 2:
        p.error("--max-batch must be >= 2 (BatchNorm on ASPP's 1x1 pooled map needs two values per channel)")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step logs; there is no Trainer here
    header("Training step: fp32 against bf16 autocast, per recipe", shlex.join(["python", *sys.argv]))
    print("\n| recipe | batch x crop | fp32 s/step | bf16 s/step | fp32 / bf16 |")
    print("|---|---|---:|---:|---:|")
    for name in a.recipes:
        fp32, shape = recipe_step(name, False, a.max_batch)
        bf16, _ = recipe_step(name, True, a.max_batch)
        times = interleave({"fp32": fp32, "bf16": bf16}, rounds=a.rounds, warmup=1)
        t32, t16 = median(times["fp32"]), median(times["bf16"])
        print(f"| {name} | {shape[0]} x {shape[1]}x{shape[2]} | {t32:.3f} | {t16:.3f} | {t32 / t16:.2f} |")


if __name__ == "__main__":
    main()
