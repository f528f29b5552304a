"""Training-step time of composed configurations, and the step counts that give each the same training time.

    python benchmarks/step_time.py "+experiment=camvid_imagenet_dilation_sweep model/dilation=os32" \
        "+experiment=camvid_imagenet_dilation_sweep model/dilation=os8" --budget-steps 300

Each argument is one configuration's overrides (as on ``seg-train``'s command line). Its network, loss, memory
format, precision and training batch (batch size and crop) are composed exactly as ``seg.train`` would; the step is
``SegModule.training_step`` + backward + SGD on a seeded random batch (no data loading, no validation), with random
weights (a step's speed does not depend on their values). The configurations alternate within each round, so a
drifting machine affects all alike. ``--budget-steps N``: the training time of N steps of the first configuration,
and for each configuration the steps that fill it (round(N * t_first / t_config)): an equal-time comparison
gives each configuration its own full schedule of that many steps.
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


def config_step(overrides: list[str]):
    """A closure running one training step of the composed configuration (in its own training precision), its
    (batch, height, width) and that precision."""
    from seg.utils.compose import compose_config

    precision = str(compose_config(overrides).trainer.precision)
    step, shape = composed_training_step(overrides, bf16=precision.startswith("bf16"))
    return step, shape, precision


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="one quoted string of overrides per configuration")
    p.add_argument("--rounds", type=int, default=5, help="timed steps of each configuration (after a warm-up)")
    p.add_argument("--budget-steps", type=int, default=None, help="steps of the first configuration: the budget")
    args = p.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    header("training-step time per configuration", "python benchmarks/step_time.py " + shlex.join(sys.argv[1:]))
    steps = {}
    shapes = {}
    for text in args.configs:
        step, shape, precision = config_step(shlex.split(text))
        steps[text], shapes[text] = step, (shape, precision)
    times = interleave(steps, args.rounds)
    first = args.configs[0]
    print("| configuration | batch x H x W | precision | step (s), median | steps for equal time |")
    print("|---|---|---|---:|---:|")
    for text in args.configs:
        (b, h, w), precision = shapes[text]
        t = median(times[text])
        equal = "" if args.budget_steps is None else round(args.budget_steps * median(times[first]) / t)
        print(f"| `{text}` | {b} x {h} x {w} | {precision} | {t:.3f} | {equal} |")
    if args.budget_steps is not None:
        budget = args.budget_steps * median(times[first])
        print(f"\nbudget: {args.budget_steps} steps of the first configuration = {budget:.0f} s of training steps")


if __name__ == "__main__":
    main()
