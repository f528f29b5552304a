#!/usr/bin/env bash
# Goal 8: images/s and model FLOP utilisation of seg's DeepLabV3 with ResNet-50/101 at output stride 8 and 16,
# crop 513, bf16 + channels_last, eager and torch.compile, on NVIDIA GPUs; then a 1-node DDP run over every GPU.
#
#   bash benchmarks/gpu.sh                 # on a GPU machine: PYTHON=/path/to/python, else .venv's, else python3
#   bash benchmarks/gpu.sh --cpu-check     # here: the same scripts on the CPU at a tiny size (no GPU needed)
#
# Results go to benchmarks/results/gpu-<date>/ (override with OUT=...): nvidia-smi.csv, single.{txt,json},
# ddp.{txt,json}, slide.txt. Copy the figures into benchmarks/RESULTS.md with the date and this command.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
BATCH=${BATCH:-8}   # per GPU; DeepLabv3's recipe is 16 in total

if [[ "${1:-}" == "--cpu-check" ]]; then
    # argument handling, FLOP counting, the training step and the DDP path (2 gloo processes), in seconds
    "$PY" benchmarks/gpu_throughput.py --device cpu --backbones resnet50 --output-strides 16 --crop 65 \
        --batch 2 --steps 1 --warmup 1 --compile off
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/gpu_throughput.py --device cpu \
        --backbones resnet50 --output-strides 16 --crop 65 --batch 2 --steps 1 --warmup 1 --compile off
    exit 0
fi

command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: gpu.sh needs an NVIDIA GPU" >&2; exit 1; }
OUT=${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.csv"
NGPU=$(nvidia-smi -L | wc -l)

# one GPU: the full matrix, eager and compiled
"$PY" benchmarks/gpu_throughput.py --device cuda --backbones resnet50 resnet101 --output-strides 8 16 \
    --crop 513 --batch "$BATCH" --compile both --json "$OUT/single.json" 2>&1 | tee "$OUT/single.txt"

# every GPU of this node through DistributedDataParallel: throughput and replica agreement
"$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" benchmarks/gpu_throughput.py --device cuda \
    --backbones resnet101 --output-strides 16 --crop 513 --batch "$BATCH" --compile off \
    --json "$OUT/ddp.json" 2>&1 | tee "$OUT/ddp.txt"
# sliding-window inference on a 1024x2048 image: 8 windows per pass against one at a time (goal 6 on a GPU)
"$PY" benchmarks/sliding_window.py --device cuda --windows 256 512 769 --batch 8 --rounds 5 2>&1 | tee "$OUT/slide.txt"
echo "results in $OUT"
