"""Goal 8: training images/s and model FLOP utilisation of the dilated ResNets on an NVIDIA GPU (run by gpu.sh).

    python benchmarks/gpu_throughput.py [--backbones resnet50 resnet101] [--output-strides 8 16] [--crop 513] \\
        [--batch 8] [--compile off|on|both] [--json OUT.json]
    torchrun --standalone --nproc_per_node=N benchmarks/gpu_throughput.py ...     # 1-node DDP check
    python benchmarks/gpu_throughput.py --device cpu --crop 65 --batch 2 --steps 1 --warmup 1 --compile off  # CPU check

Each configuration is seg's DeepLabV3 as the paper recipes build it (multi-grid 1/2/4, ASPP 6/12/18 at output stride
16 and 12/24/36 at 8, no aux head, 21 classes) training with SGD in bf16 autocast + channels_last, optionally under
torch.compile. images/s = batch x processes / median step time. Model FLOP utilisation (MFU) = 3 x forward FLOPs
(torch.utils.flop_counter on the meta device) x images/s, against (a) the dense bf16 peak of the GPU's datasheet when
known and (b) a bf16 8192^3 matmul measured on the same GPU. Under torchrun every process trains its own batch through
DistributedDataParallel and the run checks that the replicas' weights stay identical.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seg.models import DeepLabV3  # noqa: E402

# dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets; matched by substring of the name
DATASHEET_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A10G": 70e12,
    "L40S": 362e12,
    "L4": 121e12,
}


def datasheet_peak(name: str) -> float | None:
    for key, peak in sorted(DATASHEET_BF16.items(), key=lambda kv: -len(kv[0])):
        if key in name:
            return peak
    return None


def build(backbone: str, output_stride: int) -> torch.nn.Module:
    rates = [6, 12, 18] if output_stride == 16 else [12, 24, 36]
    grid = [1, 2, 4] if backbone in ("resnet50", "resnet101") else None  # three layer4 blocks
    return DeepLabV3(
        21, backbone=backbone, output_stride=output_stride, multi_grid=grid, aspp_rates=rates, aux=False, dropout=0.1
    )


def forward_flops(backbone: str, output_stride: int, crop: int) -> int:
    with torch.device("meta"):
        net = build(backbone, output_stride)
    counter = FlopCounterMode(display=False)
    with counter:
        net(torch.empty(2, 3, crop, crop, device="meta"))  # batch 2: train-mode BatchNorm on the 1x1 pooled map
    return counter.get_total_flops() // 2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(device: torch.device, n: int = 8192) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    times = []
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        times.append((time.perf_counter() - t) / 10)
    return 2 * n**3 / min(times)


def measure(args, backbone: str, output_stride: int, compiled: bool, device: torch.device, world: int) -> dict:
    torch.manual_seed(0)
    net = build(backbone, output_stride).to(device).to(memory_format=torch.channels_last).train()
    model = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.index is not None else None
        )
    if compiled:
        model = torch.compile(model)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator(device="cpu").manual_seed(1 + (dist.get_rank() if world > 1 else 0))
    x = torch.randn(args.batch, 3, args.crop, args.crop, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 21, (args.batch, args.crop, args.crop), generator=g).to(device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=args.precision == "bf16"):
            loss = F.cross_entropy(model(x)["out"], y, ignore_index=255)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - t0  # includes compilation
    for _ in range(args.warmup - 1):
        step()
    times = []
    for _ in range(args.steps):
        sync(device)
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    result = {
        "backbone": backbone,
        "output_stride": output_stride,
        "compile": compiled,
        "crop": args.crop,
        "batch_per_process": args.batch,
        "processes": world,
        "step_s": statistics.median(times),
        "first_step_s": first,
    }
    result["images_per_s"] = args.batch * world / result["step_s"]
    if world > 1:  # the replicas must hold identical weights after the same number of synchronised steps
        flat = torch.cat([p.detach().float().reshape(-1) for p in net.parameters()])
        lo, hi = flat.clone(), flat.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        result["replica_max_abs_diff"] = float((hi - lo).abs().max())
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--backbones", nargs="+", default=["resnet50", "resnet101"])
    p.add_argument("--output-strides", type=int, nargs="+", default=[8, 16])
    p.add_argument("--crop", type=int, default=513)
    p.add_argument("--batch", type=int, default=8, help="per process")
    p.add_argument("--precision", default="bf16", choices=["bf16", "32"])
    p.add_argument("--compile", default="both", choices=["off", "on", "both"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", type=Path, help="write the results here (rank 0)")
    args = p.parse_args()
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU visible (use --device cpu for the CPU-side check)")

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    sheet = datasheet_peak(name) if device.type == "cuda" else None
    measured = matmul_ceiling(device, 8192 if device.type == "cuda" else 512)
    if rank == 0:
        print(
            f"device {name} x {world} process(es); torch {torch.__version__}; bf16 matmul {measured / 1e12:.1f} "
            f"TFLOP/s measured, datasheet {sheet / 1e12 if sheet else float('nan'):.0f} TFLOP/s"
        )
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    results = []
    for backbone in args.backbones:
        for os_ in args.output_strides:
            flops = forward_flops(backbone, os_, args.crop)
            for compiled in compiles:
                r = measure(args, backbone, os_, compiled, device, world)
                achieved = 3 * flops * r["images_per_s"] / world  # per device
                r.update(
                    forward_gflop=flops / 1e9,
                    device=name,
                    mfu_vs_matmul=achieved / measured,
                    mfu_vs_datasheet=achieved / sheet if sheet else None,
                )
                results.append(r)
                if rank == 0:
                    sheet_txt = f"{r['mfu_vs_datasheet']:.1%}" if sheet else "n/a"
                    extra = f", replicas differ by {r['replica_max_abs_diff']:.1e}" if world > 1 else ""
                    print(
                        f"{backbone} OS {os_:2d} compile={str(compiled):5s}: {r['images_per_s']:8.1f} images/s "
                        f"({r['step_s'] * 1000:.0f} ms/step, first step {r['first_step_s']:.1f} s), MFU "
                        f"{sheet_txt} of datasheet, {r['mfu_vs_matmul']:.1%} of measured matmul{extra}"
                    )
    if rank == 0 and args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"matmul_bf16_flops": measured, "datasheet_bf16_flops": sheet, "results": results}, indent=2)
        )
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
