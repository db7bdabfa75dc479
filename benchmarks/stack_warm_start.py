"""Stacks under automatic stopping: warm-started planes against planes fitted separately.

Synthetic photon-limited uint16 Z-stacks (``napari_dip._sample_data.fluorescence_stack``:
nuclei, diffraction-limited spots, Poisson noise, gain, offset, read noise, hot pixels)
are denoised with ``napari_dip.denoise`` defaults (automatic stopping) twice: every plane
from scratch (``warm_start=False``) and warm-started from the previous plane. PSNR per
plane is measured in counts against the noise-free plane, its range as the peak.

    python benchmarks/stack_warm_start.py --planes 8 --size 96 --seeds 1 2 --out results/stack_warm_start.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import napari_dip
from napari_dip import schedule
from napari_dip._sample_data import fluorescence_stack


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """In counts, with the plane's own range as the peak."""
    peak = float(clean.max() - clean.min())
    return float(10 * np.log10(peak**2 / np.mean((estimate.astype(np.float64) - clean) ** 2)))


def run(noisy: np.ndarray, clean: np.ndarray, warm: bool, width: int, device: str) -> dict:
    units: list = []
    start = time.perf_counter()
    out = napari_dip.denoise(
        noisy, width=width, device=device, warm_start=warm, callback=lambda s: units.append(s) and None
    )
    seconds = time.perf_counter() - start
    iterations = {}
    for step in units:
        iterations[step.unit] = step.record.iteration
    return {
        "seconds": round(seconds, 2),
        "iterations": [iterations[k] for k in sorted(iterations)],
        "psnr": [round(psnr(out[p], clean[p]), 2) for p in range(len(clean))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--warm-rule",
        default=None,
        help="window,patience of warm units (default: schedule.WARM_RULE; 'rule': the rule's)",
    )
    parser.add_argument(
        "--warm-only", action="store_true", help="skip the separate fits (to compare warm settings or versions)"
    )
    parser.add_argument("--out", default=None, help="append JSON lines here")
    parser.add_argument("--label", default=None, help="a label for the rows (which defaults they ran)")
    args = parser.parse_args()
    if args.warm_rule == "rule":
        schedule.WARM_RULE = None
    elif args.warm_rule:
        window, patience = map(int, args.warm_rule.split(","))
        schedule.WARM_RULE = {**(schedule.WARM_RULE or {}), "window": window, "patience": patience}
    for seed in args.seeds:
        clean, noisy = fluorescence_stack((args.planes, args.size, args.size), seed=seed)
        # The camera's hot pixels (thousands of counts over the truth) would dominate the
        # noisy image's error: its PSNR is given without them; the restored ones with all.
        quiet = noisy.astype(np.float64) - clean < 1000
        noisy_db = [round(psnr(noisy[p][quiet[p]], clean[p][quiet[p]]), 2) for p in range(args.planes)]
        cold = None if args.warm_only else run(noisy, clean, False, args.width, args.device)
        warm = run(noisy, clean, True, args.width, args.device)
        record: dict = {
            **({"label": args.label} if args.label else {}),
            "seed": seed,
            "shape": list(noisy.shape),
            "width": args.width,
            "device": args.device,
            "warm_rule": schedule.WARM_RULE,
            "noisy_psnr": noisy_db,
            "warm": warm,
        }
        if cold is not None:
            record |= {
                "separate": cold,
                "time_ratio": round(warm["seconds"] / cold["seconds"], 3),
                "iteration_ratio": round(sum(warm["iterations"]) / sum(cold["iterations"]), 3),
                "mean_psnr_gain_over_separate": round(float(np.mean(warm["psnr"]) - np.mean(cold["psnr"])), 3),
            }
        print(json.dumps(record), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
