"""Goal 4: confusion-matrix accumulation as a share of a validation step at (8, 512, 512).

    .venv/bin/python benchmarks/confmat.py [--batch 8] [--size 512] [--classes 21] [--rounds 7]

The validation step is SegModule.validation_step of the default (quickstart) model with 21 classes, in bf16
autocast + channels_last as Lightning runs it: whole-image inference, val loss, argmax, confusion-matrix update.
The update alone is timed for three accumulators on the same predictions (about 6 % of pixels void, 255):
torchmetrics' MulticlassConfusionMatrix with argument validation (its default), without it (seg before this
benchmark) and seg.metrics.ConfusionMatrix (one bincount, ignore label remapped to a dropped bin). All are
interleaved; the three matrices are asserted equal.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from torchmetrics.classification import MulticlassConfusionMatrix

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import default_precision, header, interleave, median  # noqa: E402

from seg.metrics import ConfusionMatrix  # noqa: E402
from seg.utils.compose import compose_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--classes", type=int, default=21)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default=default_precision(),
        help="default: the machine's (bf16 autocast where the CPU has AMX, else fp32)",
    )
    a = p.parse_args()
    header("Confusion-matrix accumulation against a validation step", "python " + " ".join(sys.argv))
    torch.manual_seed(0)
    cfg = compose_config([f"data.num_classes={a.classes}"])
    module = instantiate(cfg.model).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=g)
    y = torch.randint(0, a.classes, (a.batch, a.size, a.size), generator=g, dtype=torch.uint8)
    y[:, :: a.size // 16] = 255  # ~6 % void rows
    bf16 = a.precision == "bf16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        preds = module(x).argmax(dim=1)
    target = y.long()

    accumulators = {
        "torchmetrics validate_args=True": MulticlassConfusionMatrix(a.classes, ignore_index=255),
        "torchmetrics validate_args=False": MulticlassConfusionMatrix(a.classes, ignore_index=255, validate_args=False),
        "seg.metrics.ConfusionMatrix": ConfusionMatrix(a.classes, ignore_index=255),
    }
    for acc in accumulators.values():
        acc.update(preds, target)
    results = [acc.compute() for acc in accumulators.values()]
    assert all(torch.equal(results[0], r) for r in results[1:]), "the accumulators disagree"
    print(f"the three confusion matrices are equal ({int(results[0].sum())} counted pixels)")

    def val_step() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log outside a Trainer
            module.validation_step((x, y), 0)

    variants = {"validation step": val_step}
    variants.update({name: (lambda acc=acc: acc.update(preds, target)) for name, acc in accumulators.items()})
    net = cfg.model.net
    print(
        f"model: quickstart DeepLabV3 {net.backbone} OS {net.output_stride}, {a.classes} classes, "
        f"batch {a.batch}x3x{a.size}x{a.size}, {a.precision} + channels_last; {a.rounds} rounds"
    )
    times = interleave(variants, a.rounds, warmup=1)
    step = median(times["validation step"])
    print(f"  validation step (seg, with seg.metrics.ConfusionMatrix): {step * 1000:8.1f} ms")
    for name in accumulators:
        t = median(times[name])
        print(f"  update, {name:34s} {t * 1000:8.2f} ms = {100 * t / step:5.2f} % of the validation step")


if __name__ == "__main__":
    main()
