"""Frames per second of a CamVid model on the CPU, per runtime: PyTorch eager (NCHW, channels_last, channels_last
with BatchNorm folded) and ONNX Runtime (fp32, int8), single frames and batches of 8, interleaved rounds.

    python benchmarks/camvid_speed.py --ckpt RUN/checkpoints/last.ckpt [--onnx-dir EXPORT] [--size 360 480]
    python benchmarks/camvid_speed.py --experiment camvid_imagenet_cpu     # an untrained copy of a recipe's net
    python benchmarks/camvid_speed.py --profile      # where a frame's time goes: encoder, head, upsampling, ops
    python benchmarks/camvid_speed.py --profile --fold   # the same with BatchNorm folded into the convolutions
    python benchmarks/camvid_speed.py --bf16 --compile   # + bf16 autocast, + torch.compile (Inductor, freezing)

A frame is a normalised (1, 3, H, W) float batch; its time covers the network at ``model.input_scale`` (the
resize in, the scores upsampled to H x W) and the argmax to a class map, as ``seg-predict`` runs it.
``--bf16`` adds the folded channels_last network under bf16 autocast (oneDNN's bf16 kernels: AMX tiles on a Xeon
with AMX, AVX-512 BF16 dot products on an EPYC that has them). ``--compile`` adds it compiled by
``torch.compile`` (Inductor with ``freezing``: weights treated as constants, folded and pre-packed for oneDNN; the
compile time is printed, not counted), in fp32 and, with ``--bf16``, in bf16; each compiled net's class map on the
test frame is compared with eager fp32's (pixels that differ). ``--onnx-dir`` is a ``seg-export quantize=int8``
output folder (``model.onnx``, ``model.int8.onnx``, and its ``export.json`` with both models' val mIoU); the ONNX
models run at the network's input size.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, float, str]:
    """(eval-mode net, input scale, description) from a checkpoint or a recipe's config."""
    if args.ckpt:
        from seg.runs.config import run_inference_defaults
        from seg.runs.loaded import load_model

        loaded = load_model(args.ckpt, channels_last=False)
        scale = run_inference_defaults(loaded.run_cfg)["input_scale"]
        return loaded.net.float().eval(), scale, str(args.ckpt)
    from hydra.utils import instantiate

    from seg.utils.compose import compose_config

    cfg = compose_config([f"+experiment={args.experiment}", "model.net.weights=null"])
    return instantiate(cfg.model.net).eval(), float(cfg.model.input_scale), f"untrained {args.experiment}"


def pipeline(logits_of: Callable[[torch.Tensor], torch.Tensor], scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """frame batch -> class map at the frame's size, the net run at ``scale``."""

    def run(x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if scale != 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        logits = logits_of(x)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.argmax(dim=1)

    return run


def profile(net: torch.nn.Module, frame: torch.Tensor, scale: float, rounds: int, fold: bool = False) -> None:
    """Where a frame's time goes (eager fp32, channels_last, batch 1): the encoder, the head, the upsampling and
    argmax, each timed alone (medians) with its FLOPs; then the ten operators with the most self CPU time."""
    from bench_utils import median, timed
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(net).to(memory_format=torch.channels_last)
    if fold:
        from seg.models.support.fold_bn import fold_batchnorm

        net, count = fold_batchnorm(net, frame[..., :64, :64].contiguous(memory_format=torch.channels_last))
        print(f"BatchNorm folded into the convolutions ({count})\n")
    x = frame.contiguous(memory_format=torch.channels_last)
    if scale != 1.0:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        features = net.backbone(x)
        logits = net.logits(features)
        parts = {
            "encoder (backbone)": lambda: net.backbone(x),
            "head (logits at the feature size)": lambda: net.logits(features),
            "upsample to the frame + argmax": lambda: F.interpolate(
                logits, size=frame.shape[-2:], mode="bilinear", align_corners=False
            ).argmax(dim=1),
        }
        print("| part | ms | GFLOP | GFLOP/s |\n|---|---:|---:|---:|")
        total = 0.0
        for name, fn in parts.items():
            fn()
            with FlopCounterMode(display=False) as counter:
                fn()
            flops = counter.get_total_flops() / 2  # multiply-adds counted once each, as papers do
            t = median([timed(fn) for _ in range(rounds)])
            total += t
            rate = f"{flops / t / 1e9:.1f}" if flops else ""
            print(f"| {name} | {t * 1000:.1f} | {flops / 1e9:.2f} | {rate} |")
        print(f"| sum | {total * 1000:.1f} | | |\n")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                net(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


def compiled(
    folded: torch.nn.Module, size: list[int], scale: float, bf16: bool
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The folded channels_last net compiled by Inductor with freezing, fp32 (and bf16): runtimes by name."""
    import time

    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # parameters as constants: folded, weights pre-packed for oneDNN
    frame = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    frame = F.interpolate(frame, scale_factor=scale, mode="bilinear") if scale != 1.0 else frame
    frame = frame.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = folded(frame).argmax(dim=1)
    out = {}
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        net = torch.compile(copy.deepcopy(folded), dynamic=False)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

        def logits(x: torch.Tensor, net=net, autocast=autocast) -> torch.Tensor:
            with torch.inference_mode(), autocast:
                return net(x.contiguous(memory_format=torch.channels_last)).float()

        start = time.perf_counter()
        for batch in (1, 8):  # both shapes the timing uses, compiled before it
            logits(frame.repeat(batch, 1, 1, 1))
        differ = (logits(frame).argmax(dim=1) != reference).float().mean().item()
        name = f"torch.compile {precision} (Inductor, freezing), BatchNorm folded"
        print(
            f"{name}: compiled in {time.perf_counter() - start:.0f} s; class map differs from eager fp32 on "
            f"{differ:.3%} of the test frame's pixels"
        )
        out[name] = logits
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=None)
    parser.add_argument("--experiment", default="camvid_imagenet_cpu")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="a seg-export quantize=int8 folder")
    parser.add_argument("--size", type=int, nargs=2, default=[360, 480], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="only the breakdown of one eager frame")
    parser.add_argument("--fold", action="store_true", help="with --profile: BatchNorm folded into the convolutions")
    parser.add_argument("--bf16", action="store_true", help="add the folded network under bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="add torch.compile (Inductor, freezing) runtimes")
    args = parser.parse_args()
    from bench_utils import interleave, machine

    from seg.utils.malloc import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    net, scale, what = build(args)
    if args.profile:
        print(f"{machine()}\n{what}: input_scale {scale}, frame {args.size[0]}x{args.size[1]}\n")
        frame = torch.randn(1, 3, *args.size, generator=torch.Generator().manual_seed(0))
        profile(net, frame, scale, args.rounds, args.fold)
        return
    cl = copy.deepcopy(net).to(memory_format=torch.channels_last)

    def eager(model: torch.nn.Module, channels_last: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        def logits(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

        return logits

    from seg.models.support.fold_bn import fold_batchnorm

    folded, count = fold_batchnorm(cl, torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    print(f"folded {count} BatchNorms into their convolutions")
    runtimes = {
        "eager fp32 NCHW": eager(net, False),
        "eager fp32 channels_last": eager(cl, True),
        "eager fp32 channels_last, BatchNorm folded": eager(folded, True),
    }
    if args.bf16:

        def bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return folded(x.contiguous(memory_format=torch.channels_last)).float()

        runtimes["eager bf16 autocast channels_last, BatchNorm folded"] = bf16
    if args.compile:
        runtimes.update(compiled(folded, args.size, scale, args.bf16))
    report = {}
    if args.onnx_dir:
        from seg.export import onnx_runner

        for name, file in (("ONNX Runtime fp32", "model.onnx"), ("ONNX Runtime int8", "model.int8.onnx")):
            if (args.onnx_dir / file).is_file():
                run = onnx_runner(args.onnx_dir / file, args.threads)
                runtimes[name] = lambda x, run=run: torch.from_numpy(run(x.numpy()))
        export_json = args.onnx_dir / "export.json"
        if export_json.is_file():
            report = json.loads(export_json.read_text()).get("int8", {})
    h, w = args.size
    generator = torch.Generator().manual_seed(0)
    frame, batch = torch.randn(1, 3, h, w, generator=generator), torch.randn(args.batch, 3, h, w, generator=generator)
    pipelines = {name: pipeline(fn, scale) for name, fn in runtimes.items()}
    one = {name: (lambda fn=fn: fn(frame)) for name, fn in pipelines.items()}
    many = {name: (lambda fn=fn: fn(batch)) for name, fn in pipelines.items()}
    single, batched = interleave(one, args.rounds, warmup=2), interleave(many, max(2, args.rounds // 4), warmup=1)
    print(
        f"{machine()}\n{what}: input_scale {scale}, frames {h}x{w}; medians of {args.rounds} single frames and "
        f"{max(2, args.rounds // 4)} batches of {args.batch}, interleaved\n"
    )
    print("| runtime | ms / frame (batch 1) | frames / s (batch 1) | frames / s (batch 8) | val mIoU |")
    print("|---|---:|---:|---:|---:|")
    miou = {"ONNX Runtime fp32": report.get("mIoU_fp32"), "ONNX Runtime int8": report.get("mIoU_int8")}
    for name in runtimes:
        ms = statistics.median(single[name]) * 1000
        fps_batch = args.batch / statistics.median(batched[name])
        score = miou.get(name)
        print(f"| {name} | {ms:.1f} | {1000 / ms:.1f} | {fps_batch:.1f} | {'' if score is None else f'{score:.4f}'} |")
    if report:
        print(f"\n(val mIoU of the ONNX models from {args.onnx_dir / 'export.json'}: {report.get('images')} images)")


if __name__ == "__main__":
    main()
