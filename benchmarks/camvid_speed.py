"""Frames per second of a CamVid model on the CPU, per runtime: PyTorch eager (NCHW, channels_last, channels_last
with BatchNorm folded) and ONNX Runtime (fp32, int8), single frames and batches of 8, interleaved rounds.

    python benchmarks/camvid_speed.py --ckpt RUN/checkpoints/last.ckpt [--onnx-dir EXPORT] [--size 360 480]
    python benchmarks/camvid_speed.py --experiment camvid_imagenet_cpu     # an untrained copy of a recipe's net
    python benchmarks/camvid_speed.py --profile      # where a frame's time goes: encoder, head, upsampling, ops
    python benchmarks/camvid_speed.py --profile --fold   # the same with BatchNorm folded into the convolutions
    python benchmarks/camvid_speed.py --bf16 --compile   # + bf16 autocast, + torch.compile (Inductor, freezing)
    python benchmarks/camvid_speed.py --ckpt CKPT --bf16 --compile --int8 --score train@0006R0   # + int8, + mIoU

A frame is a normalised (1, 3, H, W) float batch; its time covers the network at ``model.input_scale`` (the
resize in, the scores upsampled to H x W) and the argmax to a class map, as ``seg-predict`` runs it.
``--bf16`` adds the folded channels_last network under bf16 autocast (oneDNN's bf16 kernels: AMX tiles on a Xeon
with AMX, AVX-512 BF16 dot products on an EPYC that has them). ``--compile`` adds it compiled by
``torch.compile`` (Inductor with ``freezing``: weights treated as constants, folded and pre-packed for oneDNN; the
compile time is printed, not counted), in fp32 and, with ``--bf16``, in bf16; each compiled net's class map on the
test frame is compared with eager fp32's (pixels that differ). ``--int8`` adds PT2E static int8 (torchao's
``X86InductorQuantizer``: per-channel int8 weights, per-tensor activations calibrated on ``--calib`` frames of the
run's train split, then compiled by Inductor: oneDNN's VNNI / AMX int8 kernels; needs torchao, ``pip install -e
.[bench]``). ``--score SPLIT ...`` (with ``--ckpt``) scores every runtime on the real frames of each split of the
run's dataset at batch 1 (the dataset-level mIoU seg-evaluate reports, whole frames). ``--onnx-dir`` is a
``seg-export quantize=int8`` output folder (``model.onnx``, ``model.int8.onnx``, and its ``export.json`` with both
models' val mIoU); the ONNX models run at the network's input size.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, float, str, DictConfig | None]:
    """(eval-mode net, input scale, description, the run's data config or None) from a checkpoint or a recipe's
    config."""
    if args.ckpt:
        from omegaconf import OmegaConf

        from seg.runs.config import run_inference_defaults
        from seg.runs.loaded import data_config, load_model

        loaded = load_model(args.ckpt, channels_last=False)
        scale = run_inference_defaults(loaded.run_cfg)["input_scale"]
        return loaded.net.float().eval(), scale, str(args.ckpt), data_config(OmegaConf.create({}), loaded)
    from hydra.utils import instantiate

    from seg.utils.compose import compose_config

    cfg = compose_config([f"+experiment={args.experiment}", "model.net.weights=null"])
    return instantiate(cfg.model.net).eval(), float(cfg.model.input_scale), f"untrained {args.experiment}", None


def pipeline(logits_of: Callable[[torch.Tensor], torch.Tensor], scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """frame batch -> class map at the frame's size (seg's :func:`~seg.inference.class_map`, from 2026-12-07 on;
    ``argmax`` before), the net run at ``scale``."""
    from seg.inference import class_map

    def run(x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if scale != 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        logits = logits_of(x)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return class_map(logits)

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
    folded: torch.nn.Module, frame: torch.Tensor, reference: torch.Tensor, bf16: bool
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The folded channels_last net compiled by Inductor with freezing (seg's
    :func:`~seg.models.support.compile.compile_for_inference`), fp32 (and bf16): runtimes by name. ``frame`` and
    ``reference``: :func:`test_frame`'s."""
    from seg.models.support.compile import compile_for_inference

    out = {}
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        net = compile_for_inference(copy.deepcopy(folded))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

        def logits(x: torch.Tensor, net=net, autocast=autocast) -> torch.Tensor:
            with torch.inference_mode(), autocast:
                return net(x.contiguous(memory_format=torch.channels_last)).float()

        name = f"torch.compile {precision} (Inductor, freezing), BatchNorm folded"
        out[name] = warmed(name, logits, frame, reference)
    return out


def test_frame(folded: torch.nn.Module, size: list[int], scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random frame at the network's input size (channels_last) and eager fp32's class map of it: what
    each compiled runtime is compared with."""
    frame = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    frame = F.interpolate(frame, scale_factor=scale, mode="bilinear") if scale != 1.0 else frame
    frame = frame.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return frame, folded(frame).argmax(dim=1)


def warmed(
    name: str, logits: Callable[[torch.Tensor], torch.Tensor], frame: torch.Tensor, reference: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``logits`` compiled for both shapes the timing uses (batch 1 and 8); prints the compile time and the
    pixels of the test frame whose class differs from eager fp32's."""
    start = time.perf_counter()
    for batch in (1, 8):
        logits(frame.repeat(batch, 1, 1, 1))
    differ = (logits(frame).argmax(dim=1) != reference).float().mean().item()
    print(
        f"{name}: compiled in {time.perf_counter() - start:.0f} s; class map differs from eager fp32 on "
        f"{differ:.3%} of the test frame's pixels"
    )
    return logits


def int8_pt2e(
    folded: torch.nn.Module, frame: torch.Tensor, reference: torch.Tensor, scale: float, calibration: list[torch.Tensor]
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """PT2E static int8 (torchao's X86InductorQuantizer), calibrated on ``calibration`` frames (resized by
    ``scale``), compiled by Inductor with freezing: the runtime by name."""
    try:
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError as e:
        raise SystemExit(f"error: --int8 needs torchao (pip install -e .[bench]): {e}") from e
    from seg.models.support.compile import compile_for_inference

    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    start = time.perf_counter()
    batch = torch.export.Dim("batch", min=1, max=64)  # batches of 1 and 8 are timed
    example = frame.repeat(2, 1, 1, 1)  # a batch of 1 would be specialised to 1 (torch.export's 0/1 rule)
    program = torch.export.export(copy.deepcopy(folded), (example,), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(program, quantizer)
    with torch.no_grad():
        for x in calibration:  # observers record each activation's range
            x = F.interpolate(x, scale_factor=scale, mode="bilinear") if scale != 1.0 else x
            prepared(x.contiguous(memory_format=torch.channels_last))
    net = compile_for_inference(move_exported_model_to_eval(convert_pt2e(prepared)))
    print(f"int8 PT2E: exported, calibrated on {len(calibration)} frames in {time.perf_counter() - start:.0f} s")

    def logits(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x.contiguous(memory_format=torch.channels_last)).float()

    name = "int8 PT2E (X86InductorQuantizer), compiled"
    return {name: warmed(name, logits, frame, reference)}


def real_frames(data_cfg: DictConfig, split: str | None, limit: int | None = None) -> tuple[list, list[str]]:
    """(normalised frame (1, 3, H, W), label (1, H, W)) pairs of ``split`` of a run's dataset (``data_cfg``; None:
    the split it trained on), and class names."""
    from hydra.utils import instantiate

    split = data_cfg.train_split if split is None else split
    datamodule = instantiate(data_cfg, val_split=split, val_batch_size=1, num_workers=0, extra_val_splits=[])
    datamodule.setup("validate")
    frames = []
    for i, (x, y) in enumerate(datamodule.val_dataloader()):
        if limit is not None and i >= limit:
            break
        frames.append((x, y))
    return frames, datamodule.class_names


def score(run: Callable[[torch.Tensor], torch.Tensor], frames: list, num_classes: int) -> float:
    """Dataset-level mIoU (seg.metrics' confusion matrix, 255 ignored) of a frame -> class map runtime."""
    from seg.metrics import ConfusionMatrix, metrics_from_confmat

    confmat = ConfusionMatrix(num_classes, ignore_index=255)
    for x, y in frames:
        confmat.update(run(x), y.long())
    return float(metrics_from_confmat(confmat.compute())["mIoU"])


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
    parser.add_argument("--int8", action="store_true", help="add PT2E static int8, compiled (needs torchao)")
    parser.add_argument("--calib", type=int, default=32, help="--int8: calibration frames of the run's train split")
    parser.add_argument("--score", nargs="+", default=[], metavar="SPLIT", help="with --ckpt: each runtime's mIoU")
    args = parser.parse_args()
    if args.score and not args.ckpt:
        parser.error("--score needs --ckpt (a trained checkpoint and its run's dataset)")
    from bench_utils import interleave, machine

    from seg.utils.malloc import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(args.threads)
    net, scale, what, data_cfg = build(args)
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
    probe, reference = test_frame(folded, args.size, scale)  # compiled runtimes are compared on it
    if args.compile:
        runtimes.update(compiled(folded, probe, reference, args.bf16))
    if args.int8:
        if data_cfg is not None:  # the run's own training frames, as seg-export's int8 calibration uses
            calibration = [x for x, _ in real_frames(data_cfg, None, args.calib)[0]]
        else:
            generator = torch.Generator().manual_seed(2)
            calibration = [torch.randn(1, 3, *args.size, generator=generator) for _ in range(args.calib)]
        runtimes.update(int8_pt2e(folded, probe, reference, scale, calibration))
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
    onnx = {"ONNX Runtime fp32": report.get("mIoU_fp32"), "ONNX Runtime int8": report.get("mIoU_int8")}
    columns = {"val mIoU (export.json)": onnx} if report else {}
    for split in args.score:
        frames, classes = real_frames(data_cfg, split)
        start = time.perf_counter()
        columns[f"mIoU {split} ({len(frames)} frames)"] = {
            name: score(fn, frames, len(classes)) for name, fn in pipelines.items()
        }
        took = time.perf_counter() - start
        print(f"scored {len(pipelines)} runtimes on {len(frames)} frames of {split} in {took:.0f} s\n")
    names = ["ms / frame (batch 1)", "frames / s (batch 1)", f"frames / s (batch {args.batch})", *columns]
    print(f"| runtime | {' | '.join(names)} |\n|---|{'---:|' * len(names)}")
    for name in runtimes:
        ms = statistics.median(single[name]) * 1000
        fps_batch = args.batch / statistics.median(batched[name])
        scores = ["" if (v := column.get(name)) is None else f"{v:.4f}" for column in columns.values()]
        cells = [f"{ms:.1f}", f"{1000 / ms:.1f}", f"{fps_batch:.1f}", *scores]
        print(f"| {name} | {' | '.join(cells)} |")
    if report:
        print(f"\n(val mIoU of the ONNX models from {args.onnx_dir / 'export.json'}: {report.get('images')} images)")


if __name__ == "__main__":
    main()
