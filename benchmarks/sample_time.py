"""Data-loading time of one training sample per composed configuration: what an augmentation costs a worker.

    C="+experiment=camvid_imagenet_trainval data.root=../shared/data/camvid"   # carries [0.3,0.3,0,0] jitter
    python benchmarks/sample_time.py "$C data.train_transform.color_jitter=null" "$C"

Each argument is one configuration's overrides (as on ``seg-train``'s command line). Its training set is built as
``seg.train`` builds it (reader, per-sample checks, the configured augmentation, normalisation, to tensor), and
``dataset[i]`` is timed in this process on one thread (torch and OpenCV), as in a DataLoader worker; collation and
the transfer between processes are not included (benchmarks/data_pipeline.py measures those). The configurations
alternate within each round over the same samples, so a drifting machine affects all alike. The last column is the
extra time a training batch of the first configuration's batch size costs the loader against the first
configuration; benchmarks/step_time.py gives the step it competes with.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import header, interleave, median  # noqa: E402


def training_set(overrides: list[str], out_dir: Path):
    """The training dataset of the composed configuration and its batch size."""
    from seg.train import build_datamodule
    from seg.utils.compose import compose_config

    cfg = compose_config(overrides)
    datamodule = build_datamodule(cfg, out_dir)
    return datamodule.train_dataloader().dataset, int(cfg.data.batch_size)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="one quoted string of overrides per configuration")
    p.add_argument("--samples", type=int, default=60, help="samples loaded per configuration and round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (after a warm-up)")
    args = p.parse_args(argv)
    if args.samples < 1 or args.rounds < 1:
        p.error("--samples and --rounds must be >= 1")
    logging.getLogger("seg").setLevel(logging.ERROR)  # the train + val overlap warning, once per configuration
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    header("data-loading time per training sample", "python benchmarks/sample_time.py " + shlex.join(sys.argv[1:]))
    loaders = {}
    with tempfile.TemporaryDirectory(prefix="seg-sample-time-") as tmp:
        for i, text in enumerate(args.configs):
            ds, batch = training_set(shlex.split(text), Path(tmp) / str(i))
            if i == 0:
                first_batch = batch
            stride = max(1, len(ds) // args.samples)
            indices = [(k * stride) % len(ds) for k in range(args.samples)]
            loaders[text] = lambda ds=ds, indices=indices: [ds[k] for k in indices]
        times = interleave(loaders, args.rounds)
    per_sample = {text: median(t) / args.samples * 1000 for text, t in times.items()}
    first = per_sample[args.configs[0]]
    print(f"{args.samples} samples per configuration and round, {args.rounds} rounds, one thread")
    print(f"| configuration | ms per sample, median | extra ms per batch of {first_batch} |")
    print("|---|---:|---:|")
    for text, ms in per_sample.items():
        print(f"| `{text}` | {ms:.2f} | {(ms - first) * first_batch:+.1f} |")


if __name__ == "__main__":
    main()
