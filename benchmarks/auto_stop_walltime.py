"""Automatic stopping against a plain reference DIP run to its oracle peak (CPU).

For images and noise levels that are not in the early-stopping benchmark, runs
the eager reference (benchmarks/reference_dip.py) for a fixed count, finds the
iteration where its averaged output peaks (the oracle, which needs the clean
image), and compares napari_dip.denoise with its default automatic stopping:
PSNR and wall time. Run: python benchmarks/auto_stop_walltime.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data

sys.path.insert(0, str(Path(__file__).parent))
import napari_dip
from reference_dip import reference_dip

WIDTH = 32
REFERENCE_ITERATIONS = 2500


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def reference_curve(noisy: np.ndarray, clean: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """PSNR of the reference's averaged output at every iteration, and seconds per iteration."""
    truth = torch.from_numpy(clean)[None]
    curve = []

    def on_step(_i: int, average: torch.Tensor) -> None:
        curve.append(float(-10 * torch.log10((average - truth).square().mean())))

    start = time.perf_counter()
    reference_dip(noisy, REFERENCE_ITERATIONS, width=WIDTH, seed=seed, on_step=on_step)
    return np.asarray(curve), (time.perf_counter() - start) / REFERENCE_ITERATIONS


def main() -> None:
    rng = np.random.default_rng(7)
    cases = {
        "coffee grey 64², σ=30": (data.coffee()[150:214, 250:314].mean(axis=-1) / 255, 30),
        "coins 64², σ=20": (data.coins()[100:164, 100:164] / 255, 20),
        "rocket RGB 64², σ=40": (data.rocket()[200:264, 250:314] / 255, 40),
    }
    print(f"CPU, {torch.get_num_threads()} threads, width {WIDTH}")
    print(
        "| case | noisy dB | reference peak dB | at iteration | time to peak | napari-dip auto dB | stopped at "
        "| napari-dip time | time / (2 × time to peak) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (clean, sigma) in cases.items():
        chw = (np.moveaxis(clean, -1, 0) if clean.ndim == 3 else clean[None]).astype(np.float32)
        noisy = np.clip(chw + rng.normal(0, sigma / 255, chw.shape), 0, 1).astype(np.float32)
        curve, per_iteration = reference_curve(noisy, chw)
        peak = int(curve.argmax()) + 1
        seen = []
        start = time.perf_counter()
        layout = np.moveaxis(noisy, 0, -1) if chw.shape[0] == 3 else noisy[0]
        out = napari_dip.denoise(
            layout, channel_axis=-1 if chw.shape[0] == 3 else None, width=WIDTH, device="cpu", callback=seen.append
        )
        seconds = time.perf_counter() - start
        out = np.moveaxis(out, -1, 0) if chw.shape[0] == 3 else out[None]
        to_peak = peak * per_iteration
        print(
            f"| {name} | {psnr(noisy, chw):.2f} | {curve.max():.2f} | {peak} | {to_peak:.1f} s | "
            f"{psnr(out, chw):.2f} | {seen[-1].iteration} | {seconds:.1f} s | {seconds / (2 * to_peak):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
