"""How well ``estimate_noise`` measures photon noise over many images (issue 12, point 1).

Every photon image of ``quality.py`` (96² crops) under each of its three cameras, at 5 to 2000
photons at the brightest pixel: how many read as Gaussian, and the error of the measured gain,
|log(measured / true)| (mean and worst, as a factor); and the Gaussian cases' σ. No fits:
about a minute on a CPU.

    python benchmarks/noise_estimate_grid.py
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

PHOTONS = (5, 15, 40, 150, 600, 2000)


def photon_rows() -> None:
    from napari_dip import estimate_noise

    print("| photons | read as Gaussian | gain error: mean (worst factor) |\n| --- | --- | --- |")
    bases = [c for c in quality.all_cases() if c.kind == "photon" and c.params["peak"] == 40]
    for peak in PHOTONS:
        gaussian, errors = [], []
        for base in bases:
            for gain, offset, read in quality.CAMERAS:
                params = {**base.params, "peak": peak, "gain": gain, "offset": offset, "read_noise": read}
                case = dataclasses.replace(base, name=f"{base.image}-p{peak}-g{gain}", params=params)
                _, noisy = quality.make(case, 96)
                model = estimate_noise(noisy)
                if model.kind == "poisson":
                    errors.append(abs(np.log(model.gain / gain)))
                else:
                    gaussian.append(base.image)
        e = np.array(errors)
        total = len(bases) * len(quality.CAMERAS)
        print(
            f"| {peak} | {len(gaussian)} of {total} ({', '.join(sorted(set(gaussian)))}) "
            f"| {e.mean():.2f} ({np.exp(e.max()):.2f}×) |"
        )


def gaussian_rows() -> None:
    from napari_dip import estimate_noise

    poisson, errors = [], []
    for case in quality.all_cases():
        if case.kind != "gaussian":
            continue
        _, noisy = quality.make(case, 96)
        model = estimate_noise(noisy, channel_axis=-1 if noisy.ndim == 3 else None)
        if model.kind == "gaussian":
            errors.append(abs(np.log(model.sigma / case.params["sigma"])))
        else:
            poisson.append(case.name)
    e = np.array(errors)
    print(
        f"\nGaussian cases read as Poisson: {poisson or 'none'}; σ error mean {e.mean():.3f} "
        f"(worst {np.exp(e.max()):.2f}×)"
    )


if __name__ == "__main__":
    photon_rows()
    gaussian_rows()
