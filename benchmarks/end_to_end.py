"""Time to a restored image through the numpy API, end to end: F16 with Gaussian noise
σ = 25 (the speed issue's target) under named variants of the fit's settings.

Each variant runs in a fresh subprocess, so that its seconds hold everything a user
waits for: building the network, the noise estimate, cuDNN autotuning, graph capture,
a ``torch.compile`` (cold the first time a shape is compiled on a machine, from
inductor's on-disk cache after that: run a compiled variant twice to see both), the fit
to its automatic stop and the copy back. One JSON line per variant (PSNR, seconds,
iterations, what the fit stopped at)::

    python benchmarks/end_to_end.py --device cuda --out $OUT/end_to_end.jsonl \\
        --variant default='{}' --variant k1='{"ensemble": 1}' \\
        --variant k1-compiled='{"ensemble": 1, "fit": {"compile": true}}'

A variant is ``prepare``'s keywords (``ensemble``, ``width``, ``precision``, ...) with an
optional ``"fit"`` mapping of ``Fit`` settings the API does not take (``compile``), or
``bm3d``: BM3D (CBM3D for colour) with σ known on the same noisy image, on the CPU, the
baseline of the quality issue's colour target (``pip install bm3d``; run it where it
installs, e.g. ``--device cpu --variant cbm3d=bm3d``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from jsonl import append, emit
from paper import _load, gaussian_noisy, psnr


def _case(image: str, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) in [0, 1]: paper.py's draw, the same noisy image in every variant."""
    clean = _load(image)
    return clean, gaussian_noisy(clean, sigma)


def run_bm3d(image: str, sigma: float) -> dict:
    """Runs in the subprocess: BM3D (CBM3D for colour) given σ, on the same noisy image,
    through ``quality.py``'s call (which takes 8-bit units for colour)."""
    from quality import _bm3d

    clean, noisy = _case(image, sigma)
    start = time.perf_counter()
    restored = _bm3d(255 * noisy.astype(np.float64), sigma) / 255
    seconds = time.perf_counter() - start
    return {"psnr": round(psnr(clean, restored), 2), "seconds": round(seconds, 2), "device_name": "CPU"}


def run_one(image: str, sigma: float, device: str, settings: dict) -> dict:
    """Runs in the subprocess: one variant, timed from the call to the restored image."""
    import torch

    from napari_dip._api import prepare

    clean, noisy = _case(image, sigma)
    settings = dict(settings)
    fit = settings.pop("fit", {})
    iterations = []
    start = time.perf_counter()
    job = prepare("denoise", noisy, channel_axis=-1 if noisy.ndim == 3 else None, device=device, **settings)
    job.schedule.options.update(fit)
    restored = job.run(lambda step: iterations.append(step.record.iteration))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "psnr": round(psnr(clean, restored), 2),
        "noisy_psnr": round(psnr(clean, noisy), 2),
        "seconds": round(seconds, 2),
        "iterations": iterations[-1] if iterations else None,
        "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="denoising/F16_GT.png", help="under ../shared/data/dip (DIP_SHARED)")
    p.add_argument("--sigma", type=float, default=25.0, help="Gaussian noise, in 8-bit units")
    p.add_argument("--device", default="cuda")
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON, repeatable (in order)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per variant")
    p.add_argument("--out", default=None)
    p.add_argument("--one", help=argparse.SUPPRESS)  # the subprocess: a variant's JSON
    args = p.parse_args()
    if args.one is not None:
        if args.one == "bm3d":
            print(json.dumps(run_bm3d(args.image, args.sigma)))
        else:
            print(json.dumps(run_one(args.image, args.sigma, args.device, json.loads(args.one))))
        return

    import torch

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    for variant in args.variant or ["default={}"]:
        label, _, settings = variant.partition("=")
        command = [sys.executable, __file__, "--image", args.image, "--sigma", str(args.sigma)]
        command += ["--device", args.device, "--one", settings or "{}"]
        row = {"benchmark": "end_to_end", "image": args.image, "sigma": args.sigma, "variant": label}
        row |= {"settings": settings if settings == "bm3d" else json.loads(settings or "{}")}
        row |= {"device_name": name, "torch": torch.__version__}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            row["skipped"] = f"over {args.timeout:.0f} s"
        else:
            if done.returncode == 0:
                row |= json.loads(done.stdout.strip().splitlines()[-1])
            else:
                row["skipped"] = (done.stderr.strip().splitlines() or ["failed"])[-1][:300]
            warned = [line for line in done.stderr.splitlines() if "Warning" in line]
            if warned:
                row["warnings"] = warned[:3]
        emit(row)
        append(args.out, [row])


if __name__ == "__main__":
    main()
