"""A stopping time per region of one network, replayed on runs saved by ``flat_statistic.py
run`` (issue 12, point 3): the photon rule (``stopping_replay.photon_default``) on each
quadrant's own flat half, raw outputs, residual and its whiteness (``flat_statistic.trace``
of the region), with the whole image's noise variance; each quadrant then takes the
network's averaged output at its own kept iteration (the nearest saved one), and the
composite is scored against the clean image.

    python benchmarks/flat_statistic.py run --split check blind --cases nuclei-d-p40 \\
        --size 256 --iterations 3000 --dir /tmp/flat256
    python benchmarks/region_stopping.py --dir /tmp/flat256 --size 256
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flat_statistic
import quality
import stopping_replay


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
        saved = flat_statistic.load(path)
        psnr, records = saved["psnr"], len(saved["average"])

        def record(kept: int, records: int = records) -> int:
            return min(max(round(kept / every) - 1, 0), records - 1)

        whole, _ = rule(flat_statistic.trace(saved, 0.5, 2.0))
        composite = saved["average"][record(whole)].copy()
        kept = []
        for region in regions:
            k, _ = rule(flat_statistic.trace(saved, 0.5, 2.0, region))
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
