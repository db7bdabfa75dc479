#!/usr/bin/env bash
# The paper's experiments at the paper's sizes on a lent GPU (benchmarks/paper.py), in two
# calls of under 10 minutes each (about 72,000 iterations in all; 5-12 ms each on an H100):
#   bash benchmarks/gpu_paper.sh f16 zebra flash prior kate_text
#   bash benchmarks/gpu_paper.sh drop50 library
# Each experiment has a time limit (LIMIT seconds, default 240): past it the rest of that
# experiment is skipped and the rows written so far stay. Results and figure PNGs go to $OUT.
set -u
OUT=${OUT:-benchmarks/results/paper}
mkdir -p "$OUT"
PY=${PY:-python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
timeout "${TOTAL:-570}" $PY benchmarks/paper.py run --device cuda --out "$OUT" --limit "${LIMIT:-240}" --only "$@"
$PY benchmarks/paper.py report "$OUT/paper.jsonl"
