"""A dim 256² uint16 Z-stack through the CLI, plane by plane against BM3D+GAT (issue 12).

Three planes (7-9) of the package's synthetic widefield volume (``_fluorescence_parts``,
spots dimmed as in ``quality.py``'s nuclei), scaled to ``--photons`` at the brightest voxel,
Poisson noise, gain 2, offset 100, read noise 1.5 e⁻; ``napari-dip denoise`` at width 32
(``--no-warm-start``: every plane from scratch). Prints and appends a JSON row: seconds, the
CLI's report, and per plane the PSNR in photons of the noisy plane, the result and BM3D
after the generalized Anscombe transform with the true camera.

    python benchmarks/stack_cli.py --out benchmarks/results/stack_cli.jsonl [--no-warm-start]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jsonl
import quality

PLANES = slice(7, 10)
CAMERA = {"gain": 2.0, "offset": 100, "read_noise": 1.5}


def stack(size: int, photons: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(rate in photons, noisy uint16 counts), (3, size, size)."""
    from napari_dip._sample_data import _fluorescence_parts

    parts = _fluorescence_parts((16, size, size), seed)
    spots = parts["spots"][PLANES] * (1.5 * parts["nuclei"][8].max() / parts["spots"][8].max())
    truth = parts["background"][PLANES] + parts["nuclei"][PLANES] + spots
    rate = photons * truth / truth.max()
    rng = np.random.default_rng(7)
    counts = CAMERA["gain"] * rng.poisson(rate) + CAMERA["offset"]
    counts = counts + rng.normal(0, CAMERA["read_noise"] * CAMERA["gain"], rate.shape)
    return rate, np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--photons", type=float, default=40)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--no-warm-start", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rate, noisy = stack(args.size, args.photons)
    case = quality.Case("stack", "probe", "photon", "nuclei", {"peak": args.photons, **CAMERA})
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "stack.tif", Path(tmp) / "out.tif"
        tifffile.imwrite(src, noisy)
        cli = Path(sys.executable).with_name("napari-dip")  # the environment's entry point
        command = [str(cli), "denoise", str(src), str(dst), "--width", str(args.width), "-q"]
        command += ["--no-warm-start"] if args.no_warm_start else []
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if run.returncode:
            raise SystemExit(run.stderr)
        out = tifffile.imread(dst)
    planes = []
    for z in range(len(noisy)):
        bm3d, _ = quality.bm3d_gat(case, noisy[z], rate[z], argparse.Namespace())
        scores = {"noisy": noisy[z], "dip": out[z], "bm3d_gat": bm3d}
        planes.append({k: round(quality.psnr(case, rate[z], v), 2) for k, v in scores.items()})
    row = {
        "size": args.size,
        "photons": args.photons,
        "width": args.width,
        "warm_start": not args.no_warm_start,
        "seconds": round(seconds, 1),
        "planes": planes,
        "report": run.stderr,
    }
    jsonl.emit(row)
    jsonl.append(args.out, [row])


if __name__ == "__main__":
    main()
