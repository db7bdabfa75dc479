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


# --- Synthetic widefield fluorescence Z-stack -------------------------------------------------
#: Voxel size in µm: a 6.5 µm sCMOS pixel behind a 40x objective; Z steps of 0.5 µm.
VOXEL_UM = (0.5, 0.1625, 0.1625)
#: Gaussian PSF standard deviations in µm (Z, Y, X): FWHM ~0.3 µm laterally, ~1.4 µm axially,
#: roughly a 40x/0.95 widefield objective at ~520 nm emission.
PSF_SIGMA_UM = (0.6, 0.13, 0.13)
CAMERA_GAIN = 2.0  # counts per photoelectron
CAMERA_OFFSET = 100.0  # counts added to every pixel
READ_NOISE_E = 1.5  # Gaussian read noise, rms electrons
BACKGROUND_PHOTONS = 4.0
NUCLEUS_PHOTONS = 25.0


def _gaussian_blur(volume: np.ndarray, sigma_px: tuple[float, ...]) -> np.ndarray:
    """Separable Gaussian blur with mirrored edges (so the stack borders do not darken)."""
    out = np.asarray(volume, np.float64)
    for axis, sigma in enumerate(sigma_px):
        if sigma <= 0:
            continue
        radius = min(int(np.ceil(3.5 * sigma)), out.shape[axis] - 1)
        taps = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (taps / sigma) ** 2)
        kernel /= kernel.sum()
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        lead = (slice(None),) * axis
        # A weighted sum of shifted views: one vectorised pass per tap, no Python loop over lines.
        out = sum(k * padded[(*lead, slice(i, i + n))] for i, k in enumerate(kernel))
    return out


def _fluorescence_parts(shape: tuple[int, int, int], seed: int) -> dict[str, np.ndarray]:
    """Expected photons per voxel of each component, already blurred by the PSF, and the hot pixels.

    Keys: ``background``, ``nuclei``, ``spots`` (float64 volumes of ``shape``) and ``hot``
    ((n, 2) int rows and columns of the hot pixels, the same in every plane).
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    um = np.asarray(VOXEL_UM)
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, um, strict=True)), indexing="ij")  # µm
    extent = np.asarray(shape) * um

    # Dim background: autofluorescence with a gentle smooth variation.
    haze = _gaussian_blur(rng.normal(size=shape), (1.0, 12.0, 12.0))
    background = BACKGROUND_PHOTONS * np.clip(1 + 0.25 * haze / (haze.std() + 1e-12), 0.5, None)

    # Nuclei: ellipsoids ~5-7 µm across, flattened in Z, with a chromatin-like texture and dark nucleoli.
    texture = _gaussian_blur(rng.normal(size=shape), (0.7, 2.0, 2.0))
    texture = 1 + 0.3 * texture / (texture.std() + 1e-12)
    nuclei = np.zeros(shape)
    centres: list[np.ndarray] = []
    for _ in range(200):  # rejection sampling: a few nuclei that barely overlap
        if len(centres) == 4:
            break
        radii = np.array([rng.uniform(1.8, 2.6), *rng.uniform(2.4, 3.4, 2)])  # µm (Z, Y, X)
        centre = rng.uniform([0.3, 0.15, 0.15], [0.7, 0.85, 0.85]) * extent
        if any(np.linalg.norm((centre - c)[1:]) < 5.0 for c in centres):
            continue
        centres.append(centre)
        r2 = ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2
        r2 += ((xx - centre[2]) / radii[2]) ** 2
        inside = r2 < 1
        brightness = NUCLEUS_PHOTONS * rng.uniform(0.8, 1.2)
        nuclei[inside] = np.maximum(nuclei[inside], brightness * texture[inside])
        for _ in range(2):  # nucleoli: dimmer blobs inside the nucleus
            offset = rng.uniform(-0.4, 0.4, 3) * radii
            d2 = ((zz - centre[0] - offset[0]) / 0.8) ** 2
            d2 += ((yy - centre[1] - offset[1]) ** 2 + (xx - centre[2] - offset[2]) ** 2) / 0.6**2
            nuclei[inside & (d2 < 1)] *= 0.45

    # Diffraction-limited spots: point sources, most dim, a few the brightest things in the stack.
    n_dim, n_bright = 70, 8
    points = np.zeros(shape)
    idx = rng.integers(0, [nz, ny, nx], size=(n_dim + n_bright, 3))
    photons = np.concatenate([np.exp(rng.uniform(np.log(100), np.log(800), n_dim)), rng.uniform(2000, 4000, n_bright)])
    np.add.at(points, tuple(idx.T), photons)  # total photons per spot

    sigma_px = tuple(s / v for s, v in zip(PSF_SIGMA_UM, VOXEL_UM, strict=True))
    hot = np.column_stack([rng.integers(0, ny, 6), rng.integers(0, nx, 6)])
    return {
        "background": background,
        "nuclei": _gaussian_blur(nuclei, sigma_px),
        "spots": _gaussian_blur(points, sigma_px),
        "hot": hot,
    }


def fluorescence_stack(shape: tuple[int, int, int] = (16, 128, 128), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) synthetic widefield sCMOS Z-stack of nuclei and spots, (Z, Y, X).

    ``clean`` (float64) is the expected camera reading in counts, ``offset + gain * photons``,
    without noise and hot pixels: the restoration target. ``noisy`` (uint16) is one
    acquisition: Poisson photon noise, Gaussian read noise (``READ_NOISE_E`` e⁻ rms), gain
    ``CAMERA_GAIN`` counts/e⁻, offset ``CAMERA_OFFSET`` counts, and six hot pixels at fixed
    (Y, X) in every plane (two saturated at 65535, the rest a few thousand counts).
    Voxel size ``VOXEL_UM`` (Z, Y, X) in µm; PSF ``PSF_SIGMA_UM``.
    """
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"shape must be (Z, Y, X) with every size >= 2, got {shape}")
    parts = _fluorescence_parts(tuple(int(n) for n in shape), seed)
    photons = parts["background"] + parts["nuclei"] + parts["spots"]
    clean = CAMERA_OFFSET + CAMERA_GAIN * photons
    rng = np.random.default_rng([seed, 1])  # its own stream: the noise does not shift the scene
    electrons = rng.poisson(photons) + rng.normal(0, READ_NOISE_E, photons.shape)
    counts = CAMERA_OFFSET + CAMERA_GAIN * electrons
    rows, cols = parts["hot"].T
    counts[:, rows[:2], cols[:2]] = 65535
    counts[:, rows[2:], cols[2:]] = rng.uniform(2000, 8000, len(rows) - 2)  # fixed per pixel, all planes
    noisy = np.clip(np.round(counts), 0, 65535).astype(np.uint16)
    return clean, noisy


def fluorescence_sample() -> list[LayerData]:
    """A noisy 16-bit fluorescence Z-stack (nuclei and spots), for denoising a stack."""
    _, noisy = fluorescence_stack()
    # Robust limits: hot pixels and the brightest spots saturate rather than set the range.
    low, high = np.percentile(noisy, [0.5, 99.9])
    meta = {
        "axes": "ZYX",
        "units": "µm",
        "voxel_size_um": dict(zip("ZYX", VOXEL_UM, strict=True)),
        "psf_sigma_um": dict(zip("ZYX", PSF_SIGMA_UM, strict=True)),
        "camera": {"gain_counts_per_e": CAMERA_GAIN, "offset_counts": CAMERA_OFFSET, "read_noise_e": READ_NOISE_E},
        "source": "synthetic: napari_dip._sample_data.fluorescence_stack(seed=0)",
    }
    kwargs = {
        "name": "nuclei and spots (noisy 16-bit stack)",
        "scale": VOXEL_UM,
        "metadata": meta,
        "colormap": "gray",
        "contrast_limits": (float(low), float(high)),
    }
    return [(noisy, kwargs, "image")]
