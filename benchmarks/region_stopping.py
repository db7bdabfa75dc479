"""A stopping time per region of one network, replayed on runs saved by ``flat_statistic.py
run`` (issue 12, point 3): the photon rule (``stopping_replay.photon_default``) on each
quadrant's own flat half, raw outputs, residual and its whiteness, with the whole image's
noise variance; each quadrant then takes the network's averaged output at its own kept
iteration (the nearest saved one), and the composite is scored against the clean image.

    python benchmarks/flat_statistic.py run --split check blind --cases nuclei-d-p40 \\
        --size 256 --iterations 3000 --dir /tmp/flat256
    python benchmarks/region_stopping.py --dir /tmp/flat256 --size 256
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flat_statistic
import quality
import stopping_replay


def region_trace(saved: Any, region: tuple[slice, slice], variance: float) -> dict:
    """``flat_statistic.trace`` of one region of a saved run (flat half, blur 2)."""
    import torch

    from napari_dip.stopping import flat_pixels, residual_correlation

    everything = (slice(None), slice(None), *region)
    raw = saved["raw"][everything]
    raw = raw.reshape(len(raw), -1).astype(np.float64)
    target = np.ascontiguousarray(saved["target"][(slice(None), *region)])
    known = saved["known"][(slice(None), *region)].reshape(-1)
    rng = np.random.default_rng(0)
    pool = np.arange(raw.shape[1])[flat_pixels(torch.from_numpy(target), 0.5, 2.0).flatten().numpy() & known]
    watched = rng.choice(pool, min(flat_statistic.SAMPLES, len(pool)), replace=False)
    sampled = rng.choice(raw.shape[1], min(flat_statistic.SAMPLES, raw.shape[1]), replace=False)
    sampled = sampled[known[sampled]]
    averages = np.ascontiguousarray(saved["average"][everything])
    flat = averages.reshape(len(averages), -1)
    emv, windowed = flat_statistic._statistics(raw[:, watched])
    return {
        "emv": emv,
        "wmv100": windowed,
        "residual": list(((flat[:, sampled] - target.reshape(-1)[sampled]) ** 2).mean(1)),
        "whiteness": residual_correlation(torch.from_numpy(target) - torch.from_numpy(averages), None).tolist(),
        "expected_residual": variance,
        "psnr": [0.0] * len(averages),  # unused: the composite is scored as a whole
        "every": flat_statistic.EVERY,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="flat_statistic.py run's .npz files")
    parser.add_argument("--size", type=int, default=256, help="the size the runs were made at")
    parser.add_argument("--regions", type=int, default=2, help="regions along each axis")
    args = parser.parse_args()
    rule = stopping_replay.photon_default()
    every = flat_statistic.EVERY
    bounds = np.linspace(0, args.size, args.regions + 1).astype(int)
    spans = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    regions = [(rows, cols) for rows in spans for cols in spans]
    print("| case | peak (iteration) | whole-image rule (kept) | per region (kept) |\n| --- | --- | --- | --- |")
    for path in sorted(args.dir.glob("*.npz")):
        case = next(c for c in quality.all_cases() if c.name == path.stem)
        clean, noisy = quality.make(case, args.size)
        job = quality.prepare_denoise(noisy, dtype="float32", ensemble=1)  # the runs' value mapping
        saved = np.load(path)
        psnr, records = saved["psnr"], len(saved["average"])

        def record(kept: int, records: int = records) -> int:
            return min(max(round(kept / every) - 1, 0), records - 1)

        whole, _ = rule(flat_statistic.trace(path, 0.5, 2.0))
        composite = saved["average"][record(whole)].copy()
        kept = []
        for region in regions:
            k, _ = rule(region_trace(saved, region, float(saved["variance"])))
            kept.append(k)
            composite[(slice(None), *region)] = saved["average"][record(k)][(slice(None), *region)]
        score = quality.psnr(case, clean, job.plane_to_user(composite).astype(np.float64))
        print(
            f"| {path.stem} | {psnr.max():.2f} ({every * (int(psnr.argmax()) + 1)}) | "
            f"{psnr[record(whole)]:.2f} ({whole}) | {score:.2f} ({', '.join(map(str, kept))}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
