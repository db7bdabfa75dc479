"""Robust value mapping: hot pixels and channels of very different ranges.

1. A 128x128 uint16 fluorescence-like image (dim cells, bright diffraction-limited spots,
   Poisson noise) denoised as it is and with five hot pixels (65535) added: PSNR in counts
   (hot pixels excluded), and the brightest spot's peak against the truth.
2. Two channels, one at a few hundred counts and one at tens of thousands, denoised
   together (channel_axis=0): PSNR of each against its own truth.

    python benchmarks/robust_values.py --out benchmarks/results/robust_values.jsonl
"""

from __future__ import annotations

import argparse

import numpy as np

import napari_dip
from jsonl import append, emit


def psnr(estimate: np.ndarray, clean: np.ndarray, peak: float) -> float:
    return float(10 * np.log10(peak**2 / np.mean((estimate.astype(np.float64) - clean) ** 2)))


def cells_and_spots(size: int, seed: int, photons: float = 300, spot: float = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.zeros((size, size))
    for _ in range(6):
        cy, cx, r = *rng.uniform(0, size, 2), rng.uniform(8, 16)
        image += photons * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    for _ in range(8):
        cy, cx = rng.uniform(6, size - 6, 2)
        image += spot * rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.3**2))
    return image + 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    kw = {"width": args.width, "device": args.device}
    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(100 + seed)
        photons = cells_and_spots(128, seed)
        clean = 2 * photons + 100  # gain 2, offset 100
        noisy = np.clip(2 * rng.poisson(photons) + 100, 0, 65535).astype(np.uint16)
        hot = noisy.copy()
        where = rng.integers(0, 128, (2, 5))
        hot[where[0], where[1]] = 65535
        quiet = np.ones(clean.shape, bool)
        quiet[where[0], where[1]] = False
        peak = float(clean.max() - clean.min())
        plain = napari_dip.denoise(noisy, **kw)
        with_hot = napari_dip.denoise(hot, **kw)
        brightest = np.unravel_index(np.argmax(clean), clean.shape)
        rows.append(
            {
                "case": "hot pixels",
                "seed": seed,
                "noisy_psnr": round(psnr(noisy[quiet], clean[quiet], peak), 2),
                "restored_psnr": round(psnr(plain[quiet], clean[quiet], peak), 2),
                "restored_with_hot_pixels_psnr": round(psnr(with_hot[quiet], clean[quiet], peak), 2),
                "hot_pixels_left_over_10000": int((with_hot > 10_000).sum()),
                "brightest_spot_truth": round(float(clean[brightest]), 1),
                "brightest_spot_restored": int(with_hot[brightest]),
            }
        )
        emit(rows[-1])

        dim = cells_and_spots(128, seed + 10, photons=100, spot=300)
        bright = cells_and_spots(128, seed + 20, photons=10_000, spot=30_000)
        truth = np.stack([dim, bright])
        two = np.clip(rng.poisson(truth), 0, 65535).astype(np.uint16)
        out = napari_dip.denoise(two, channel_axis=0, **kw)
        row = {"case": "two channels", "seed": seed, "range": [[int(c.min()), int(c.max())] for c in two]}
        for c in range(2):
            p = float(truth[c].max() - truth[c].min())
            row[f"channel{c}_noisy_psnr"] = round(psnr(two[c], truth[c], p), 2)
            row[f"channel{c}_restored_psnr"] = round(psnr(out[c], truth[c], p), 2)
        rows.append(row)
        emit(row)
    append(args.out, rows)


if __name__ == "__main__":
    main()
