"""How sliding-window blending changes a trained model's class maps and mIoU: flat (mmsegmentation's average),
linear and Gaussian weights, beside whole-image inference.

    .venv/bin/python benchmarks/blending.py CKPT [--splits val train@0006R0] [--window 120 160]

The checkpoint's own data config (its run folder) gives the dataset and the transform; every frame of each split
is predicted whole and with windows of ``--window`` (stride 2/3 of it; on the model's input, after its
``input_scale``) under each blend. Printed per split: mIoU (dataset-level confusion matrix) of each mode, and the
share of pixels whose class differs from the flat sliding window's map (the map seg-predict gave before
``inference.blend`` existed). Precision: the run's (``auto``), as seg-predict uses it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import header  # noqa: E402

from seg.data.base import IGNORE_INDEX  # noqa: E402
from seg.inference import BLENDS, InferenceConfig, infer  # noqa: E402
from seg.metrics import ConfusionMatrix, metrics_from_confmat  # noqa: E402
from seg.runs.config import run_inference_defaults  # noqa: E402
from seg.runs.loaded import data_config, load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", type=Path)
    p.add_argument("--splits", nargs="+", default=None, help="default: the run's val split and extra val splits")
    p.add_argument("--window", type=int, nargs=2, default=[120, 160], help="H W on the model's input")
    p.add_argument("--root", default=None, help="dataset root (default: the run's data.root)")
    a = p.parse_args()
    header(
        "sliding-window blending: mIoU and class-map changes", "python benchmarks/blending.py " + " ".join(sys.argv[1:])
    )
    loaded = load_model(a.ckpt)
    loaded.fold_batchnorm()
    module = loaded.module.eval()
    data = data_config(OmegaConf.create({}), loaded)  # the run's data, normalised as the backbone expects
    root = a.root or data.root
    splits = a.splits or [data.val_split, *(data.get("extra_val_splits") or [])]
    defaults = run_inference_defaults(loaded.run_cfg)
    base = {"precision": defaults["precision"], "channels_last": defaults["channels_last"]}
    base["input_scale"] = defaults["input_scale"]
    modes = {"whole": InferenceConfig(**base)}
    for blend in BLENDS:
        modes[f"slide {blend}"] = InferenceConfig(mode="slide", window=tuple(a.window), blend=blend, **base)
    print(f"windows {a.window[0]}x{a.window[1]} at input scale {base['input_scale']:g}, precision {base['precision']}")
    print("| split | frames | mode | mIoU | pixels differing from slide flat |")
    print("|---|---:|---|---:|---:|")
    transform = instantiate(data.val_transform)
    n = loaded.run_cfg.model.num_classes
    for split in splits:
        dataset = instantiate(data.dataset)(root=root, split=split)
        confmats = {name: ConfusionMatrix(n, ignore_index=IGNORE_INDEX) for name in modes}
        differ = {name: 0 for name in modes}
        pixels = 0
        for i in range(len(dataset)):
            image, label = dataset[i]
            x = transform(image=image)["image"][None]
            preds = {name: infer(module, x, cfg).argmax(dim=1) for name, cfg in modes.items()}
            target = torch.as_tensor(label)[None]
            pixels += target.numel()
            for name, pred in preds.items():
                confmats[name].update(pred, target)
                differ[name] += int((pred != preds["slide flat"]).sum())
        for name in modes:
            miou = metrics_from_confmat(confmats[name].compute())["mIoU"]
            print(f"| {split} | {len(dataset)} | {name} | {miou:.4f} | {differ[name] / pixels:.2%} |", flush=True)


if __name__ == "__main__":
    main()
