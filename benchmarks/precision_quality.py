"""bfloat16 against float32 at the end of a default fit: `denoise` with automatic
stopping (σ = 25) on crops of scikit-image samples, same seed, both precisions; PSNR
of the returned image, iterations, seconds. Decides whether precision="auto" may pick
bfloat16 (CPUs with AMX or AVX-512 BF16). ``--compare winograd``: float32 with the wide
convolutions by Winograd's algorithm (the default on CPU) against torch's convolutions.

    python benchmarks/precision_quality.py --size 96 --width 32 --out results/precision_quality.jsonl
    python benchmarks/precision_quality.py --size 96 --width 128 --compare winograd
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from skimage import data

sys.path.insert(0, str(Path(__file__).parent))
from jsonl import append, emit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", choices=["bfloat16", "winograd"], default="bfloat16")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from napari_dip import denoise, networks

    # Each variant: (its name in the rows, precision, Winograd's threshold).
    variants = [("float32", "float32", networks.WINOGRAD_WORK), ("bfloat16", "bfloat16", networks.WINOGRAD_WORK)]
    if args.compare == "winograd":
        variants = [("direct", "float32", None), ("winograd", "float32", networks.WINOGRAD_WORK)]

    s = args.size
    images = {
        "camera": data.camera()[100 : 100 + s, 150 : 150 + s],
        "coins": data.coins()[60 : 60 + s, 100 : 100 + s],
        "astronaut": data.astronaut()[30 : 30 + s, 180 : 180 + s],
    }
    rows = []
    for name, clean in images.items():
        rng = np.random.default_rng(args.seed)
        noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).round().astype(np.uint8)
        axis = -1 if clean.ndim == 3 else None
        row = {"benchmark": "precision_quality", "image": name, "size": s, "width": args.width, "seed": args.seed}
        for key, precision, work in variants:
            networks.WINOGRAD_WORK = work
            seen = []
            start = time.perf_counter()
            out = denoise(
                noisy,
                channel_axis=axis,
                width=args.width,
                device="cpu",
                seed=args.seed,
                precision=precision,
                callback=lambda step, seen=seen: seen.append(step.record.iteration),
            )
            seconds = time.perf_counter() - start
            mse = np.mean((out.astype(np.float64) - clean) ** 2)
            row[f"{key}_db"] = round(float(10 * np.log10(255**2 / mse)), 2)
            row[f"{key}_iterations"] = seen[-1]
            row[f"{key}_s"] = round(seconds, 1)
        row["difference_db"] = round(row[f"{variants[1][0]}_db"] - row[f"{variants[0][0]}_db"], 2)
        emit(row)
        rows.append(row)
    append(args.out, rows)


if __name__ == "__main__":
    main()
