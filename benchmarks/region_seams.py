"""Do regions that stop apart leave seams? (issue 12; ``stopping.Rule``'s ``region``.)

Denoises photon cases with the default settings (regions of ``fit.PHOTON_REGION`` on planes
of two such sides or more), then measures, along every boundary between two regions, the
step of the error (result minus clean) across it: per segment of ``SEGMENT`` pixels along
the boundary, the mean error over ``BAND`` pixels on one side minus that on the other, RMS
over the segments. The same measure on lines ``OFFSETS`` pixels away from the boundaries is
the control: a seam shows as a boundary step above the control's.

    python benchmarks/region_seams.py --cases nuclei-d-p40 --size 256 --out /tmp/seams
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

SEGMENT = 16
BAND = 4
OFFSETS = (-24, -16, -8, 8, 16, 24)


def steps(error: np.ndarray, line: int, axis: int) -> float:
    """RMS over segments of the mean error just past ``line`` minus just before it, across
    ``axis`` (0: a horizontal line between rows, 1: a vertical one between columns)."""
    e = np.moveaxis(error, axis, 0)
    after, before = e[line : line + BAND].mean(axis=0), e[line - BAND : line].mean(axis=0)
    step = after - before
    usable = len(step) // SEGMENT * SEGMENT
    return float(np.sqrt(np.mean(step[:usable].reshape(-1, SEGMENT).mean(axis=1) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, help="save each result here (.npz)")
    args = parser.parse_args()
    import napari_dip
    from napari_dip.fit import PHOTON_REGION
    from napari_dip.stopping import region_grid

    for case in (c for c in quality.all_cases() if c.name in args.cases):
        clean, noisy = quality.make(case, args.size)
        records = []
        out = napari_dip.denoise(noisy, width=quality.WIDTH, device="cpu", seed=0, callback=records.append)
        score = quality.psnr(case, clean, out.astype(np.float64))
        photons = (out.astype(np.float64) - case.params["offset"]) / case.params["gain"]
        error = (photons - clean) / (clean.max() - clean.min())  # in the clean range
        parts = region_grid(clean.shape, PHOTON_REGION)
        lines = {(0, p[0].start) for p in parts if p[0].start} | {(1, p[1].start) for p in parts if p[1].start}
        seam = [steps(error, line, axis) for axis, line in sorted(lines)]
        control = [steps(error, line + o, axis) for axis, line in sorted(lines) for o in OFFSETS]
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.out / f"{case.name}-{args.size}.npz", out=out, clean=clean, noisy=noisy)
        print(
            json.dumps(
                {
                    "case": case.name,
                    "size": args.size,
                    "psnr": round(score, 3),
                    "regions": len(parts),
                    "kept": records[-1].record.best_iteration,
                    "stopped": records[-1].record.iteration,
                    "seam_step": [round(s, 5) for s in seam],
                    "control_step": [
                        round(float(np.min(control)), 5),
                        round(float(np.median(control)), 5),
                        round(float(np.max(control)), 5),
                    ],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
