#!/usr/bin/env bash
# Every GPU speed measurement in one run, for a lent H100/H200 (about 9 minutes):
#   bash benchmarks/gpu_all.sh            (writes under $OUT, or benchmarks/results/gpu)
# Each step has its own time limit, longer than the sum of its runs' own, so one that
# hangs cannot eat the others' time and every finished run's row is written; the results
# are JSON lines that BENCHMARKS.md's GPU tables are read from. The paper's experiments
# are a separate script (benchmarks/gpu_paper.sh). Last run: 2026-12-04, H200 (see there).
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, napari_dip; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

# 1. Per iteration: the paper's skip net (width 128), grey and RGB, against the eager
#    reference; our default (a CUDA graph of the eager step) and two members (the small-fit
#    ensemble). About 2 minutes.
timeout 200 $PY benchmarks/speed.py --device cuda --sizes 128 256 512 --width 128 \
    --implementations reference ours --ensembles 2 --iterations 100 --timeout 40 --out "$OUT/speed_gpu.jsonl"

# 2. torch.compile at 512² RGB, float32: the cold compilation of the width-128 network took
#    more than 100 s on the H200's 16 cores, so it has 300 s alone.
timeout 320 $PY benchmarks/speed.py --device cuda --sizes 512 --channels 3 --width 128 \
    --implementations ours --compiled float32 --iterations 100 --timeout 300 --out "$OUT/speed_gpu.jsonl"

# 3. End to end: denoise F16 (σ = 25) with automatic stopping, one network, eager and compiled
#    (the compiled one finds step 2's compilation in inductor's on-disk cache: warm).
timeout 130 $PY benchmarks/end_to_end.py --device cuda --timeout 62 --out "$OUT/end_to_end.jsonl" \
    --variant k1='{"ensemble": 1}' --variant k1-compiled='{"ensemble": 1, "fit": {"compile": true}}'
echo "done: $OUT"
