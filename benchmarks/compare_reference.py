"""napari_dip against the plain eager reference at the same settings, side by side.

Same image, noise, width and iterations, the fits stepping in turn (``--block``
iterations each), so that a shared machine's drifting speed meets all alike; reports
PSNR of both and the time per iteration, for our fit in each of ``--precisions``
(float32, and bfloat16 under autocast, which ``precision="auto"`` takes on CPUs with
AMX or AVX-512 BF16 from width 64), and the ratios. ``--isolated N`` runs each fit
alone in a fresh process instead.
Run: python benchmarks/compare_reference.py [--size 128] [--width 32] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
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


def _crop(image: np.ndarray, top: int, left: int, s: int) -> np.ndarray:
    """An s x s crop at (top, left), moved up and left where the image ends (the whole 512²
    image at s = 512), so every size gets s x s pixels."""
    if s > min(image.shape[:2]):
        raise ValueError(f"size {s} is larger than the {image.shape[0]}x{image.shape[1]} image")
    top, left = min(top, image.shape[0] - s), min(left, image.shape[1] - s)
    return image[top : top + s, left : left + s]


def _images(s: int) -> dict[str, np.ndarray]:
    return {
        "camera": _crop(data.camera(), 100, 150, s)[None] / 255.0,
        "astronaut": np.moveaxis(_crop(data.astronaut(), 30, 180, s), -1, 0) / 255.0,
    }


def _noisy(clean: np.ndarray, seed: int) -> np.ndarray:
    return np.clip(clean + np.random.default_rng(seed).normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)


def _run_one(args: argparse.Namespace, images: dict, fit: str, name: str, seed: str) -> dict:
    """One fit in this process: ms per iteration after the first 10 (set-up, first calls)."""
    clean = images[name]
    noisy = _noisy(clean, int(seed))
    if fit == "reference":
        steps = reference_steps(noisy, args.iterations, width=args.width, seed=int(seed), device=args.device)
    else:
        options = {"width": args.width, "iterations": args.iterations, "device": args.device}
        steps = iter(Fit("denoise", noisy, seed=int(seed), precision=fit, **options))
    for _ in range(10):
        next(steps)
    t = time.perf_counter()
    for _ in steps:
        pass
    ms = 1e3 * (time.perf_counter() - t) / (args.iterations - 10)
    return {"ms": ms}


def _isolated(args: argparse.Namespace, images: dict) -> None:
    """Every fit alone in a fresh process (its own allocator state), the fits taking turns."""
    kinds = ["reference", *args.precisions]
    print(f"isolated processes, {args.isolated} runs each, {args.size}x{args.size}, width {args.width}")
    rows = []
    for name in images:
        for seed in range(args.seeds):
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for run in range(args.isolated):
                for kind in kinds if run % 2 == 0 else kinds[::-1]:
                    command = [sys.executable, __file__, "--size", str(args.size), "--width", str(args.width)]
                    command += ["--iterations", str(args.iterations), "--device", args.device]
                    command += ["--one", kind, name, str(seed)]
                    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                    times[kind].append(json.loads(out.strip().splitlines()[-1])["ms"])
            ref = float(np.median(times["reference"]))
            row = {
                "benchmark": "compare_reference_isolated",
                "image": name,
                "seed": seed,
                "size": args.size,
                "width": args.width,
                "iterations": args.iterations,
                "runs": args.isolated,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "reference_ms": round(ref, 2),
            }
            line = f"{name:10} {seed:4d} reference {ref:6.1f} ms/it"
            for kind in args.precisions:
                ours = float(np.median(times[kind]))
                row[f"{kind}_ms"] = round(ours, 2)
                row[f"{kind}_ratio"] = round(ours / ref, 3)
                line += f" | {kind} {ours:6.1f} ms/it, ratio {ours / ref:.2f}"
            print(line, flush=True)
            rows.append(row)
    append(args.out, rows)


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
    p.add_argument(
        "--isolated",
        type=int,
        default=0,
        help="instead, run each fit alone in a fresh process, taking turns, this many times each (median)",
    )
    p.add_argument("--one", nargs=3, metavar=("FIT", "IMAGE", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    images = _images(args.size)
    if args.one:
        print(json.dumps(_run_one(args, images, *args.one)))
        return
    if args.isolated:
        _isolated(args, images)
        return
    s = args.size
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
            noisy = _noisy(clean, seed)
            # Every fit steps in blocks, in turn, so that all meet the same machine: on a
            # shared VM the speed drifts by tens of percent within a minute.
            reference = reference_steps(noisy, args.iterations, width=args.width, seed=seed, device=args.device)
            fits = {"reference": reference}
            seconds = {"reference": 0.0}  # the reference's set-up runs in its first step
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
                seconds[precision] = time.perf_counter() - t  # set-up counts, as the reference's does
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
