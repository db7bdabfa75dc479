#!/usr/bin/env bash
# The paper's experiments at the paper's sizes on a lent GPU (benchmarks/paper.py), in one
# process, one experiment after another: processes sharing one GPU time-slice it (a
# 2026-12-04 lease finished 2 of 8 runs that way). Two calls of under 10 minutes each:
#   TOTAL=540 bash benchmarks/gpu_paper.sh f16 flash prior kate_text
#   TOTAL=540 bash benchmarks/gpu_paper.sh drop50 library
# Each experiment has a time limit (LIMIT seconds, default 240): past it the rest of that
# experiment is skipped and the rows written so far stay; the process stops at TOTAL
# seconds. Rows go to $OUT/paper.jsonl, figure PNGs into $OUT/figures.tar.
set -u
OUT=${OUT:-benchmarks/results/paper}
mkdir -p "$OUT/figures"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
timeout "${TOTAL:-540}" $PY benchmarks/paper.py run --device "${DEVICE:-cuda}" --out "$OUT" \
    --figures "$OUT/figures" --limit "${LIMIT:-240}" --only "$@" ${EXTRA:-}
tar -cf "$OUT/figures.tar" -C "$OUT" figures && rm -r "$OUT/figures"
$PY benchmarks/paper.py report "$OUT/paper.jsonl"
