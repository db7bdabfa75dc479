"""Where a small CPU step's time goes: per-iteration time of our fit and the plain eager
reference against image size, and per-layer convolution costs at the skip net's sizes.

    python benchmarks/step_overhead.py [--sizes 64 96 128] [--layers]

Sizes: our fit and the reference (width 32, one network, float32) step in turns, three
runs each, median ms per iteration after 10 warm-up iterations. Our fit pads images under
its minimum canvas (64² at 5 levels), so 32² and 48² cost as much as 64²; the reference
runs only on multiples of 32 from 64² (BatchNorm over a 1×1 level below), so there
our fit runs alone. ``--layers``: forward and forward +
backward (torch.autograd.grad) of the net's convolutions at each level's size,
channels-last and plain, µs per call. One JSON line per size (``--out`` appends them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jsonl import append
from napari_dip.fit import Fit
from reference_dip import reference_steps


def _ms_per_iteration(kind: str, size: int, width: int, iterations: int = 60) -> float:
    noisy = np.random.default_rng(0).random((1, size, size)).astype(np.float32)
    if kind == "reference":
        steps = reference_steps(noisy, iterations, width=width, seed=0, device="cpu")
    else:
        fit = Fit("denoise", noisy, seed=0, width=width, iterations=iterations, device="cpu", precision="float32")
        steps = iter(fit)
    for _ in range(10):
        next(steps)
    start = time.perf_counter()
    for _ in steps:
        pass
    return 1e3 * (time.perf_counter() - start) / (iterations - 10)


def _us_per_call(fn, n: int = 200) -> float:
    for _ in range(10):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return 1e6 * (time.perf_counter() - start) / n


def _layer(c_in: int, c_out: int, k: int, stride: int, size: int, layout: torch.memory_format) -> tuple[float, float]:
    padded = size + k - 1 if stride == 1 else 2 * size + 1
    x = torch.randn(1, c_in, padded, padded).to(memory_format=layout).requires_grad_()
    w = torch.randn(c_out, c_in, k, k).to(memory_format=layout).requires_grad_()
    grad = torch.randn_like(F.conv2d(x, w, stride=stride))

    def both() -> None:
        torch.autograd.grad(F.conv2d(x, w, stride=stride), (x, w), grad)

    return _us_per_call(lambda: F.conv2d(x, w, stride=stride)), _us_per_call(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--layers", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        kinds = ("reference", "ours") if size >= 64 and size % 32 == 0 else ("ours",)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for run in range(3):
            for kind in kinds if run % 2 == 0 else kinds[::-1]:
                times[kind].append(_ms_per_iteration(kind, size, args.width))
        ms = {k: float(np.median(v)) for k, v in times.items()}
        row = {"benchmark": "step_overhead", "size": size, "width": args.width, "threads": torch.get_num_threads()}
        row |= {f"{k}_ms": round(v, 1) for k, v in ms.items()}
        if "reference" in ms:
            row["ratio"] = round(ms["ours"] / ms["reference"], 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.layers:
        print("in out k stride size | channels-last fwd, fwd+bwd | plain fwd, fwd+bwd (us)")
        for size in (48, 24, 12, 6, 3):
            for c_in, c_out, k, stride in ((36, 32, 3, 1), (32, 32, 3, 1), (32, 32, 3, 2), (32, 32, 1, 1)):
                cl = _layer(c_in, c_out, k, stride, size, torch.channels_last)
                plain = _layer(c_in, c_out, k, stride, size, torch.contiguous_format)
                print(f"{c_in} {c_out} {k} {stride} {size} | {cl[0]:.0f} {cl[1]:.0f} | {plain[0]:.0f} {plain[1]:.0f}")
    append(args.out, rows)


if __name__ == "__main__":
    main()
