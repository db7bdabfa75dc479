#!/usr/bin/env bash
# Every GPU measurement in one run, for a lent H100/H200 with about 10 minutes to spare:
#   bash benchmarks/gpu_all.sh            (writes under $OUT, or benchmarks/results/gpu)
# Each step has its own time limit, so one that hangs cannot eat the others' time; the
# results are JSON lines that BENCHMARKS.md's GPU tables are read from. The paper's
# experiments at full size are a separate script (benchmarks/gpu_paper.sh, two more calls).
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PY:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

# 1. Speed: the paper's skip net (width 128) against the eager reference, grey and RGB, and
#    the cost of batched ensembles (fit.DEFAULT_ENSEMBLE["cuda"] is chosen from it).
timeout 300 $PY benchmarks/speed.py --device cuda --sizes 128 256 512 --width 128 \
    --implementations reference ours --ensembles 2 4 8 --iterations 100 --result-iterations 3000 \
    --timeout 120 --out "$OUT/speed_gpu.jsonl" 2>&1 | tail -n 20

# 2. Quality at the GPU default (width 128, the device's ensemble) against one network,
#    on the tune split's Gaussian colour cases (the paper's F16 among them) and photon cases.
for label_kwargs in 'dip-gpu-k1|{"ensemble": 1, "width": 128}' 'dip-gpu-default|{"width": 128}'; do
    label=${label_kwargs%%|*}
    kwargs=${label_kwargs#*|}
    timeout 120 $PY benchmarks/quality.py run --device cuda --methods dip --label "$label" \
        --dip-kwargs "$kwargs" --split tune --cases F16 nuclei-a --out "$OUT/quality_gpu.jsonl" 2>&1 | tail -n 4
done
echo "done: $OUT"
