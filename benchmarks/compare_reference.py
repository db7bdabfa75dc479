"""napari_dip against the plain eager reference at the same settings, side by side.

Same image, noise, width and iterations, the fits stepping in turn (``--block``
iterations each), so that a shared machine's drifting speed meets all alike; reports
PSNR of both and the time per iteration, for our fit in each of ``--precisions`` (float32, and bfloat16 under
autocast, which ``precision="auto"`` takes on CPUs with AMX), and the ratios.
Run: python benchmarks/compare_reference.py [--size 128] [--width 32] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data

sys.path.insert(0, str(Path(__file__).parent))
from jsonl import append
from napari_dip.fit import Fit
from reference_dip import reference_steps


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--block", type=int, default=10, help="iterations each fit runs in its turn")
    p.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--out", default=None, help="append the rows here as JSON lines")
    args = p.parse_args()
    s = args.size
    images = {
        "camera": data.camera()[100 : 100 + s, 150 : 150 + s][None] / 255.0,
        "astronaut": np.moveaxis(data.astronaut()[30 : 30 + s, 180 : 180 + s], -1, 0) / 255.0,
    }
    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
        f"{s}x{s}, width {args.width}, {args.iterations} iterations"
    )
    header = f"{'image':10} {'seed':>4} {'noisy':>6} {'ref dB':>7} {'ref ms/it':>9}"
    for precision in args.precisions:
        header += f" | {precision:>8} dB  ms/it  ratio"
    print(header)
    rows = []
    for name, clean in images.items():
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            noisy = np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
            # Every fit steps in blocks, in turn, so that all meet the same machine: on a
            # shared VM the speed drifts by tens of percent within a minute.
            reference = reference_steps(noisy, args.iterations, width=args.width, seed=seed, device=args.device)
            fits = {"reference": reference}
            made = {}
            for precision in args.precisions:
                t = time.perf_counter()
                made[precision] = Fit(
                    "denoise",
                    noisy,
                    width=args.width,
                    iterations=args.iterations,
                    seed=seed,
                    device=args.device,
                    precision=precision,
                )
                fits[precision] = iter(made[precision])
            seconds = dict.fromkeys(fits, 0.0)
            last = {}
            for block in range(-(-args.iterations // args.block)):
                order = list(fits) if block % 2 == 0 else list(fits)[::-1]
                for key in order:
                    t = time.perf_counter()
                    for _ in range(min(args.block, args.iterations - block * args.block)):
                        last[key] = next(fits[key])
                    seconds[key] += time.perf_counter() - t
            ref = last["reference"][1][0].cpu().numpy()
            t_ref = seconds["reference"] / args.iterations
            row = {
                "benchmark": "compare_reference",
                "image": name,
                "seed": seed,
                "size": s,
                "width": args.width,
                "iterations": args.iterations,
                "interleaved_block": args.block,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "noisy_db": round(psnr(noisy, clean), 2),
                "reference_db": round(psnr(ref, clean), 2),
                "reference_ms": round(1e3 * t_ref, 2),
            }
            line = f"{name:10} {seed:4d} {psnr(noisy, clean):6.2f} {psnr(ref, clean):7.2f} {1e3 * t_ref:9.1f}"
            for precision in args.precisions:
                ours = made[precision].result()
                t_ours = seconds[precision] / args.iterations
                row[f"{precision}_db"] = round(psnr(ours, clean), 2)
                row[f"{precision}_ms"] = round(1e3 * t_ours, 2)
                row[f"{precision}_ratio"] = round(t_ours / t_ref, 3)
                line += f" | {psnr(ours, clean):11.2f} {1e3 * t_ours:6.1f} {t_ours / t_ref:6.2f}"
            print(line, flush=True)
            rows.append(row)
    append(args.out, rows)


if __name__ == "__main__":
    main()
