#!/usr/bin/env bash
# Every GPU speed measurement, for a lent H100/H200, in calls of under 10 minutes:
#   bash benchmarks/gpu_all.sh next       (about 9 minutes: what no lease has measured yet,
#                                          the first call of the next lease)
#   bash benchmarks/gpu_all.sh speed      (about 6 minutes: the whole table again)
#   bash benchmarks/gpu_all.sh compile    (about 6 minutes)
#   bash benchmarks/gpu_all.sh quality    (about 7 minutes: F16 and kate, one and two members)
# (writes under $OUT, or benchmarks/results/gpu). Each step has its own time limit, longer
# than the sum of its runs' own, so one that hangs cannot eat the others' time and every
# finished run's row is written; the results are JSON lines that BENCHMARKS.md's GPU tables
# are read from. The paper's experiments are a separate script (benchmarks/gpu_paper.sh).
# Last run: 2026-12-04, H200 (BENCHMARKS.md, "A second session").
# On a lent machine nothing of ../shared travels: copy ../shared/data/dip into an ignored
# .gpudata/ first, carry .gpudata (and .whl, below), and start the command with
#   export PYTHONPATH=$PWD/src:$PWD/benchmarks DIP_SHARED=$PWD/.gpudata
# Never run two GPU processes side by side: without MPS they time-slice the device.
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
$PY -c "import torch, napari_dip; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

# deepinv (for speed.py's third implementation) travels as wheels: here, once,
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform any -d .whl deepinv==0.5.0 natsort
# and the call carries .whl (its other needs, torchvision among them, are on the machine).
if ls .whl/deepinv-*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
PEERS=$($PY -c "import deepinv" 2> /dev/null && echo deepinv)

case "${1:-next}" in
next)
    # In order of certainty, so that a call cut at 10 minutes keeps the rest: bfloat16
    # activations (autocast; output layer, loss, Adam and average in float32) in the CUDA
    # graph against float32 at 256² and 512² RGB (the reference's rows are the last lease's);
    # F16 end to end in bfloat16 (seconds, and PSNR against float32's 32.59 dB); the compiled
    # network (cold compile, up to 300 s); F16 end to end compiled (warm cache).
    timeout 150 $PY benchmarks/speed.py --device cuda --sizes 256 512 --channels 3 --width 128 \
        --implementations ours --precisions bfloat16 --iterations 100 --timeout 45 --out "$OUT/speed_gpu.jsonl"
    timeout 80 $PY benchmarks/end_to_end.py --device cuda --timeout 75 --out "$OUT/end_to_end.jsonl" \
        --variant bfloat16='{"precision": "bfloat16"}'
    timeout 320 $PY benchmarks/speed.py --device cuda --sizes 512 --channels 3 --width 128 \
        --implementations ours --compiled float32 --iterations 100 --timeout 300 --out "$OUT/speed_gpu.jsonl"
    timeout 80 $PY benchmarks/end_to_end.py --device cuda --timeout 75 --out "$OUT/end_to_end.jsonl" \
        --variant compiled='{"fit": {"compile": true}}'
    ;;
quality)
    # Colour σ = 25 against CBM3D (`end_to_end.py --device cpu --variant cbm3d=bm3d`: 32.84 dB
    # on this noisy F16, 33.39 on kate): the default (one network at 512², width 128) was
    # 0.25 dB under it on F16; two members cost about twice the time.
    timeout 170 $PY benchmarks/end_to_end.py --device cuda --timeout 160 --out "$OUT/end_to_end.jsonl" \
        --variant k2='{"ensemble": 2}'
    timeout 250 $PY benchmarks/end_to_end.py --device cuda --timeout 160 --out "$OUT/end_to_end.jsonl" \
        --image restoration/kate.png --variant default='{}' --variant k2='{"ensemble": 2}'
    ;;
speed)
    # Per iteration: the paper's skip net (width 128), grey and RGB, against the eager
    # reference (and deepinv's DeepImagePrior); our default is a CUDA graph of the eager step.
    timeout 330 $PY benchmarks/speed.py --device cuda --sizes 128 256 512 --width 128 \
        --implementations reference ours $PEERS --iterations 100 --timeout 40 --out "$OUT/speed_gpu.jsonl"
    # Two members (the small-fit ensemble) and cuDNN's heuristics instead of its autotuning
    # (our set-up was 2-3x the reference's).
    timeout 130 $PY benchmarks/speed.py --device cuda --sizes 128 512 --channels 3 --width 128 \
        --implementations ours --ensembles 2 --heuristics --iterations 100 --timeout 40 --out "$OUT/speed_gpu.jsonl"
    # End to end: denoise F16 (σ = 25) with automatic stopping, the default (one network).
    timeout 70 $PY benchmarks/end_to_end.py --device cuda --timeout 65 --out "$OUT/end_to_end.jsonl" \
        --variant default='{}'
    ;;
compile)
    # torch.compile at 512² RGB, float32: the cold compilation of the width-128 network took
    # more than 100 s on the H200's 16 cores, so it has 300 s alone.
    timeout 320 $PY benchmarks/speed.py --device cuda --sizes 512 --channels 3 --width 128 \
        --implementations ours --compiled float32 --iterations 100 --timeout 300 --out "$OUT/speed_gpu.jsonl"
    # End to end, compiled: finds that compilation in inductor's on-disk cache (warm).
    timeout 140 $PY benchmarks/end_to_end.py --device cuda --timeout 65 --out "$OUT/end_to_end.jsonl" \
        --variant default='{}' --variant compiled='{"fit": {"compile": true}}'
    ;;
*)
    echo "usage: bash benchmarks/gpu_all.sh next|speed|compile|quality" >&2
    exit 2
    ;;
esac
echo "done: $OUT"
