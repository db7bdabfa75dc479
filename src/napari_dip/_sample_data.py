"""Sample images that ship with the package (no network, no scikit-image).

The clean crops in ``napari_dip/data`` come from scikit-image's bundled images
(``scripts/make_sample_data.py``); noise, damage and flash lighting are added
here with fixed seeds. The ``*_sample`` functions are napari sample-data
contributions: they return lists of layer-data tuples.
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np

NOISE_SIGMA = 25.0
LayerData = tuple[np.ndarray, dict, str]


def load(name: str) -> np.ndarray:
    """A bundled image from ``napari_dip/data`` as an array."""
    import imageio.v3 as iio

    return iio.imread(files("napari_dip") / "data" / name)


def _noisy(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).round().astype(np.uint8)


def noisy_pair(sigma: float = NOISE_SIGMA, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) uint8 RGB 128x128: Gaussian noise of std ``sigma`` (0-255 scale)."""
    clean = load("astronaut.png")
    return clean, _noisy(clean, sigma, np.random.default_rng(seed))


def damage_mask(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """uint8 labels, > 0 where a pixel is damaged: scratches (1) and blotches (2)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    labels = np.zeros(shape, np.uint8)
    for _ in range(5):  # thin straight scratches across the image
        (y0, y1), (x0, x1) = rng.uniform(0, h, 2), rng.uniform(0, w, 2)
        length = np.hypot(y1 - y0, x1 - x0)
        distance = np.abs((x1 - x0) * (y0 - yy) - (x0 - xx) * (y1 - y0)) / length
        labels[distance < rng.uniform(1.0, 2.0)] = 1
    for _ in range(3):  # small round blotches
        cy, cx, r = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w), rng.uniform(3, 6)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 2
    return labels


def noisy_sample() -> list[LayerData]:
    """A photograph with strong Gaussian noise (σ = 25), for denoising."""
    _, noisy = noisy_pair()
    return [(noisy, {"name": "astronaut (noisy)", "rgb": True}, "image")]


def damaged_sample() -> list[LayerData]:
    """A photograph with scratches and blotches, and a Labels layer marking them."""
    clean = load("chelsea.png")
    labels = damage_mask(clean.shape[:2])
    damaged = clean.copy()
    damaged[labels > 0] = 255
    return [
        (damaged, {"name": "chelsea (damaged)", "rgb": True}, "image"),
        (labels, {"name": "chelsea damage", "opacity": 0.5}, "labels"),
    ]


def low_resolution_sample() -> list[LayerData]:
    """A 64x64 immunohistochemistry image (4x4 averaged), for super-resolution."""
    return [(load("ihc_lowres.png"), {"name": "tissue (low resolution)", "rgb": True}, "image")]


def flash_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flash, no_flash, ambient truth) uint8 RGB 128x128 of the same scene.

    Flash: bright, cold, almost noise-free. No-flash: dim warm ambient light, noisy.
    """
    rng = np.random.default_rng(seed)
    scene = load("coffee.png").astype(np.float64)
    flash = _noisy(np.clip(scene * [0.95, 1.0, 1.1] + 10, 0, 255), 3, rng)
    ambient = np.clip(scene * [0.75, 0.6, 0.4], 0, 255)
    return flash, _noisy(ambient, 18, rng), ambient.round().astype(np.uint8)


def flash_sample() -> list[LayerData]:
    """A flash / no-flash pair of one scene, for flash/no-flash restoration."""
    flash, no_flash, _ = flash_pair()
    return [
        (flash, {"name": "coffee (flash)", "rgb": True}, "image"),
        (no_flash, {"name": "coffee (no flash)", "rgb": True}, "image"),
    ]
