"""Sample images that ship with the package (no network, no scikit-image)."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

NOISE_SIGMA = 25.0


def load(name: str) -> np.ndarray:
    """A bundled image from ``napari_dip/data`` as an array."""
    import imageio.v3 as iio

    return iio.imread(files("napari_dip") / "data" / name)


def noisy_sample(sigma: float = NOISE_SIGMA, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) uint8 RGB 128x128: Gaussian noise of std ``sigma`` (0-255 scale)."""
    clean = load("astronaut.png")
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).round().astype(np.uint8)
    return clean, noisy
