"""Tiles against the whole image: quality, seams and time, with and without warm starts.

A 192x192 grey crop of scikit-image's ``camera`` with Gaussian noise (sigma 25) is
denoised with ``napari_dip.denoise`` defaults (automatic stopping) as a whole and in
96x96 tiles (24-pixel overlap, 9 tiles), each tile fitted from scratch
(warm-starting a tile from its neighbour was measured here and cost 1.4 dB: it is
not done). Seams: the mean absolute error within 2 pixels
of an inner tile border over the mean error elsewhere (1.0 = no seam).

    python benchmarks/tiles.py --out benchmarks/results/tiles.jsonl
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage import data

from jsonl import append, emit
from napari_dip import _api


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((estimate.astype(np.float64) - clean) ** 2)))


def border_ratio(estimate: np.ndarray, clean: np.ndarray, tiles: list) -> float:
    error = np.abs(estimate.astype(np.float64) - clean)
    borders = np.zeros(clean.shape, bool)
    for tile in tiles:
        for axis, sl in enumerate(tile):
            for edge in (sl.start, sl.stop):
                if 0 < edge < clean.shape[axis]:
                    index = [slice(None), slice(None)]
                    index[axis] = slice(edge - 2, edge + 2)
                    borders[tuple(index)] = True
    return float(error[borders].mean() / error[~borders].mean()) if borders.any() else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--tile", type=int, default=96)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    clean = data.camera()[100 : 100 + args.size, 150 : 150 + args.size].astype(np.float64)
    rng = np.random.default_rng(args.seed)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).round().astype(np.uint8)
    rows = []
    for name, tile, warm in (
        ("whole", None, True),
        ("tiles, separate", args.tile, False),
        ("tiles, warm", args.tile, True),
    ):
        job = _api.prepare("denoise", noisy, tile_size=tile, warm_start=warm, width=args.width, device=args.device)
        start = time.perf_counter()
        out = job.run()
        seconds = time.perf_counter() - start
        row = {
            "run": name,
            "size": args.size,
            "tile": tile,
            "tiles": len(job.schedule.tiles),
            "width": args.width,
            "device": args.device,
            "noisy_psnr": round(psnr(noisy, clean), 2),
            "psnr": round(psnr(out, clean), 2),
            "border_error_ratio": round(border_ratio(out, clean, job.schedule.tiles), 3),
            "iterations": [s.iterations for s in job.schedule.summaries],
            "seconds": round(seconds, 1),
        }
        rows.append(row)
        emit(row)
    append(args.out, rows)


if __name__ == "__main__":
    main()
