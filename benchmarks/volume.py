"""One 3-D network over a Z-stack against plane-by-plane fits.

The synthetic photon-limited fluorescence stack (``fluorescence_stack``: 0.5 um Z steps
over 0.1625 um pixels, a PSF three times longer in Z) is denoised with automatic
stopping as a volume (``volumetric=True`` with the voxel spacing) and plane by plane
(warm-started). PSNR in counts against the noise-free stack, the stack's range as peak.

    python benchmarks/volume.py --out benchmarks/results/volume.jsonl
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import napari_dip
from jsonl import append, emit
from napari_dip._sample_data import VOXEL_UM, fluorescence_stack


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    peak = float(clean.max() - clean.min())
    return float(10 * np.log10(peak**2 / np.mean((estimate.astype(np.float64) - clean) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 64, 64])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    clean, noisy = fluorescence_stack(tuple(args.shape), seed=args.seed)
    quiet = noisy.astype(np.float64) - clean < 1000  # without the camera's hot pixels
    rows = []
    for name, options in (("planes", {}), ("volume", {"volumetric": True, "spacing": tuple(VOXEL_UM)})):
        units: dict[int, int] = {}

        def count(step, units=units):
            units[step.unit] = step.record.iteration

        start = time.perf_counter()
        out = napari_dip.denoise(noisy, width=args.width, device=args.device, callback=count, **options)
        row = {
            "run": name,
            "shape": args.shape,
            "width": args.width,
            "device": args.device,
            "noisy_psnr_without_hot_pixels": round(psnr(noisy[quiet], clean[quiet]), 2),
            "psnr": round(psnr(out, clean), 2),
            "iterations": [units[k] for k in sorted(units)],
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        emit(row)
    append(args.out, rows)


if __name__ == "__main__":
    main()
