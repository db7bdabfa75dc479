"""Time per iteration of this tree's fit against an earlier revision's and the eager
reference, in one process, stepping in turns (a shared VM's speed drifts within a minute).

The revision's ``src/napari_dip`` is extracted with ``git archive`` into a temporary
folder as the package ``napari_dip_<rev>``. Ratios are to the reference: the sum of
times and the median of the per-turn ratios.
Run: python benchmarks/compare_revisions.py b98b296 [--size 96] [--width 32] [--rgb]
[--precisions float32 bfloat16]
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from compare_reference import _images, _noisy
from napari_dip.fit import Fit
from reference_dip import reference_steps

ROOT = Path(__file__).resolve().parent.parent


def _revision_fit(revision: str, folder: Path) -> type:
    archive = subprocess.run(
        ["git", "archive", revision, "src/napari_dip"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    name = f"napari_dip_{revision.replace('-', '_').replace('~', '_')}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "src" / "napari_dip").rename(folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{name}.fit").Fit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("revision")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--rgb", action="store_true", help="the astronaut crop instead of camera")
    p.add_argument("--turns", type=int, default=40)
    p.add_argument("--block", type=int, default=5, help="iterations each fit runs in its turn")
    p.add_argument(
        "--precisions", nargs="+", default=["float32"], help="this tree's fit in each (the revision's: float32)"
    )
    args = p.parse_args()
    noisy = _noisy(_images(args.size)["astronaut" if args.rgb else "camera"], 0)
    with tempfile.TemporaryDirectory() as folder:
        options = {"width": args.width, "iterations": 10**6, "stopping": None, "seed": 0, "precision": "float32"}
        fits = {
            "reference": reference_steps(noisy, 10**6, width=args.width),
            args.revision: iter(_revision_fit(args.revision, Path(folder))("denoise", noisy, **options)),
        }
        for precision in args.precisions:
            key = "this tree" if args.precisions == ["float32"] else f"tree {precision}"
            fits[key] = iter(Fit("denoise", noisy, **{**options, "precision": precision}))
        for steps in fits.values():  # set-up and first calls apart
            for _ in range(10):
                next(steps)
        ms: dict[str, list[float]] = {k: [] for k in fits}
        for turn in range(args.turns):
            for key in list(fits) if turn % 2 else list(fits)[::-1]:
                t = time.perf_counter()
                for _ in range(args.block):
                    next(fits[key])
                ms[key].append(1e3 * (time.perf_counter() - t) / args.block)
    ref = np.array(ms["reference"])
    print(f"{args.size}² width {args.width} {'RGB' if args.rgb else 'grey'}, {args.turns} turns of {args.block}")
    for key, times in ms.items():
        t = np.array(times)
        print(
            f"{key:>12}: median {np.median(t):6.1f} ms/it, ratio of sums {t.sum() / ref.sum():.3f}, "
            f"median ratio {np.median(t / ref):.3f}"
        )


if __name__ == "__main__":
    main()
