#!/usr/bin/env bash
# Every GPU speed measurement in one run, for a lent H100/H200 (about 5 minutes):
#   bash benchmarks/gpu_all.sh            (writes under $OUT, or benchmarks/results/gpu)
# Each step has its own time limit, so one that hangs cannot eat the others' time; the
# results are JSON lines that BENCHMARKS.md's GPU tables are read from. The paper's
# experiments are a separate script (benchmarks/gpu_paper.sh), run right after.
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, napari_dip; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

# 1. Per iteration: the paper's skip net (width 128), RGB, against the eager reference; our
#    default (CUDA graph of the eager step), the same with torch.compile (float32 and bfloat16;
#    their set-up holds the cold compilation), and a batched ensemble of 4 (its cost).
timeout 200 $PY benchmarks/speed.py --device cuda --sizes 512 --channels 3 --width 128 \
    --implementations reference ours --ensembles 4 --compiled float32 bfloat16 --iterations 100 \
    --timeout 100 --out "$OUT/speed_gpu.jsonl"
timeout 110 $PY benchmarks/speed.py --device cuda --sizes 256 --channels 3 --width 128 \
    --implementations reference ours --ensembles 4 --compiled float32 --iterations 100 \
    --timeout 80 --out "$OUT/speed_gpu.jsonl"

# 2. End to end: denoise F16 (σ = 25) with automatic stopping, one network, eager and compiled
#    (the compiled ones find the 512² compilations of step 1 in inductor's on-disk cache: warm).
timeout 130 $PY benchmarks/end_to_end.py --device cuda --timeout 60 --out "$OUT/end_to_end.jsonl" \
    --variant k1='{"ensemble": 1}' --variant k1-compiled='{"ensemble": 1, "fit": {"compile": true}}' \
    --variant k1-compiled-bf16='{"ensemble": 1, "precision": "bfloat16", "fit": {"compile": true}}'
echo "done: $OUT"
