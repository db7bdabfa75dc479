"""napari_dip against the plain eager reference at the same settings.

Same image, noise, width and iterations; reports PSNR of both and the time per
iteration. Run: python benchmarks/compare_reference.py [--size 128] [--width 32]
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
from napari_dip.fit import Fit
from reference_dip import reference_dip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=int, default=2)
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
    print(f"{'image':10} {'seed':>4} {'noisy':>6} {'ref dB':>7} {'ours dB':>7} {'ref ms/it':>9} {'ours ms/it':>10}")
    for name, clean in images.items():
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            noisy = np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
            t = time.perf_counter()
            ref, _ = reference_dip(noisy, args.iterations, width=args.width, seed=seed, device=args.device)
            t_ref = (time.perf_counter() - t) / args.iterations
            t = time.perf_counter()
            fit = Fit("denoise", noisy, width=args.width, iterations=args.iterations, seed=seed, device=args.device)
            for _ in fit:
                pass
            ours = fit.result()
            t_ours = (time.perf_counter() - t) / args.iterations
            print(
                f"{name:10} {seed:4d} {psnr(noisy, clean):6.2f} {psnr(ref, clean):7.2f} {psnr(ours, clean):7.2f} "
                f"{1e3 * t_ref:9.1f} {1e3 * t_ours:10.1f}"
            )


if __name__ == "__main__":
    main()
