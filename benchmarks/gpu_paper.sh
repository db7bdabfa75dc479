#!/usr/bin/env bash
# The paper's experiments at the paper's sizes on a lent GPU (benchmarks/paper.py). Each
# argument is one process, its experiments comma-separated; the processes share the GPU
# (their seconds are wall time under that sharing; the speed tables come from gpu_all.sh):
#   TOTAL=360 bash benchmarks/gpu_paper.sh f16,kate_text zebra,flash prior,drop50,library
# Each experiment has a time limit (LIMIT seconds, default 240): past it the rest of that
# experiment is skipped and the rows written so far stay; every process stops at TOTAL
# seconds. Rows go to $OUT/paper.jsonl, figure PNGs into $OUT/figures.tar.
set -u
OUT=${OUT:-benchmarks/results/paper}
mkdir -p "$OUT/figures"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
i=0
for group in "$@"; do
    i=$((i + 1))
    timeout "${TOTAL:-570}" $PY benchmarks/paper.py run --device "${DEVICE:-cuda}" --out "$OUT" --figures "$OUT/figures" ${EXTRA:-} \
        --limit "${LIMIT:-240}" --only ${group//,/ } > "$OUT/paper_$i.log" 2>&1 &
done
wait
tar -cf "$OUT/figures.tar" -C "$OUT" figures && rm -r "$OUT/figures"
$PY benchmarks/paper.py report "$OUT/paper.jsonl"
