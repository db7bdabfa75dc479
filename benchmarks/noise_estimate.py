"""How well ``napari_dip.estimate_noise`` measures a camera's gain and offset, or a
Gaussian sigma, from one image: 96x96 crops of scikit-image's coins and camera with
photon noise (peak 5/15/40 photons, gain 2/0.5/4.5 counts per photon, offset 100/400/100,
read noise 1.5/1/2 e-) or Gaussian noise (sigma 15/25/50 on 0..255, clipped to uint8),
and the bundled fluorescence Z-stack (gain 2, offset 100, read noise 1.5 e-, hot pixels):

    python benchmarks/noise_estimate.py

The "offset" it reports is where the fitted variance vanishes: the true offset less
read² · gain (a few counts).
"""

from __future__ import annotations

import time

import numpy as np
from skimage import data

import napari_dip
from napari_dip._sample_data import fluorescence_stack

CAMERAS = ((5, 2.0, 100, 1.5), (15, 0.5, 400, 1.0), (40, 4.5, 100, 2.0))


def main() -> None:
    rng = np.random.default_rng(0)
    images = {"coins": data.coins()[40:136, 100:196], "camera": data.camera()[100:196, 100:196]}
    for name, image in images.items():
        for peak, gain, offset, read in CAMERAS:
            rate = image.astype(float) / image.max() * peak
            counts = gain * rng.poisson(rate) + offset + rng.normal(0, read * gain, rate.shape)
            counts = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
            start = time.perf_counter()
            model = napari_dip.estimate_noise(counts)
            ms = 1e3 * (time.perf_counter() - start)
            print(f"{name} {peak} photons, gain {gain}, offset {offset}: {model.describe()} ({ms:.0f} ms)")
        for sigma in (15, 25, 50):
            noisy = np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)
            print(f"{name} Gaussian sigma {sigma}: {napari_dip.estimate_noise(noisy).describe()}")
    _, stack = fluorescence_stack((4, 64, 64), seed=1)
    print(f"fluorescence stack, gain 2, offset 100: {napari_dip.estimate_noise(stack).describe()}")


if __name__ == "__main__":
    main()
