"""The synthetic fluorescence Z-stack sample: shapes, determinism, camera model, speed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import label

from napari_dip import _sample_data as sd


@pytest.fixture(scope="module")
def stack() -> tuple[np.ndarray, np.ndarray]:
    return sd.fluorescence_stack()


def test_shapes_dtypes_and_range(stack):
    clean, noisy = stack
    assert clean.shape == noisy.shape == (16, 128, 128)
    assert clean.dtype == np.float64 and noisy.dtype == np.uint16
    assert clean.min() > sd.CAMERA_OFFSET  # background photons on top of the offset everywhere
    # a few to a few tens of photons in background and cells
    photons = (clean - sd.CAMERA_OFFSET) / sd.CAMERA_GAIN
    assert 2 < np.median(photons) < 10 and 15 < np.percentile(photons, 95) < 60


def test_deterministic_by_seed(stack):
    clean, noisy = sd.fluorescence_stack(seed=0)
    np.testing.assert_array_equal(clean, stack[0])
    np.testing.assert_array_equal(noisy, stack[1])
    other_clean, other_noisy = sd.fluorescence_stack(seed=1)
    assert not np.array_equal(other_clean, clean) and not np.array_equal(other_noisy, noisy)


def test_other_shapes():
    clean, noisy = sd.fluorescence_stack((8, 64, 96), seed=3)
    assert clean.shape == noisy.shape == (8, 64, 96)
    with pytest.raises(ValueError, match="shape"):
        sd.fluorescence_stack((64, 64))


def test_hot_pixels_fixed_across_planes(stack):
    clean, noisy = stack
    hot = noisy.astype(np.float64) - clean > 1500  # far beyond any noise (std < 30 counts)
    columns = hot.all(axis=0)
    assert 4 <= columns.sum() <= 10  # a handful, at the same (Y, X) in every plane
    assert np.array_equal(hot, np.broadcast_to(columns, hot.shape))
    assert (noisy == 65535).any()


def test_several_spots_brighter_than_the_nuclei():
    parts = sd._fluorescence_parts((16, 128, 128), 0)
    cells = parts["background"] + parts["nuclei"]
    total = cells + parts["spots"]
    assert parts["nuclei"].max() > 5 * parts["background"].mean()
    bright = label(total > 2 * cells.max())  # twice the brightest nucleus voxel
    assert bright.max() >= 5
    assert parts["spots"].flat[np.argmax(total)] > cells.flat[np.argmax(total)]


def test_psf_is_wider_along_z():
    sigma_px = np.divide(sd.PSF_SIGMA_UM, sd.VOXEL_UM)
    assert sd.PSF_SIGMA_UM[0] > 3 * sd.PSF_SIGMA_UM[1] and sd.VOXEL_UM[0] > sd.VOXEL_UM[1]
    point = np.zeros((15, 21, 21))
    point[7, 10, 10] = 1
    blurred = sd._gaussian_blur(point, tuple(sigma_px))
    assert blurred.sum() == pytest.approx(1.0)
    for axis, sigma in enumerate(sigma_px):
        profile = blurred.sum(axis=tuple(a for a in range(3) if a != axis))
        x = np.arange(profile.size) - profile.size // 2
        assert np.sqrt((profile * x**2).sum()) == pytest.approx(sigma, rel=0.05)


def test_noise_follows_the_camera_model(stack):
    clean, noisy = stack
    residual = noisy.astype(np.float64) - clean
    ok = np.abs(residual) < 1000  # leave out hot pixels
    gain, read = sd.CAMERA_GAIN, sd.READ_NOISE_E
    expected = gain * (clean - sd.CAMERA_OFFSET) + (gain * read) ** 2 + 1 / 12  # shot + read + rounding
    assert abs(residual[ok].mean()) < 0.05
    assert np.mean(residual[ok] ** 2 / expected[ok]) == pytest.approx(1.0, abs=0.03)
    dim = ok & (clean < np.percentile(clean, 20))  # background: variance ~ gain * mean + read noise
    assert residual[dim].var() == pytest.approx(expected[dim].mean(), rel=0.05)


def test_generation_is_fast():
    start = time.perf_counter()
    sd.fluorescence_stack(seed=5)
    assert time.perf_counter() - start < 2.0


def test_napari_sample_layer():
    [(data, kwargs, kind)] = sd.fluorescence_sample()
    assert kind == "image" and data.dtype == np.uint16 and data.shape == (16, 128, 128)
    assert kwargs["name"] == "nuclei and spots (noisy 16-bit stack)"
    assert kwargs["scale"] == sd.VOXEL_UM and kwargs["metadata"]["axes"] == "ZYX"
    low, high = kwargs["contrast_limits"]
    assert sd.CAMERA_OFFSET - 20 < low < np.median(data) < high < 1000  # hot pixels do not set the range


def test_manifest_lists_the_sample_and_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-dip")
    samples = {s.key: s for s in manifest.contributions.sample_data}
    assert "fluorescence-stack" in samples
    command = next(c for c in manifest.contributions.commands if c.id == samples["fluorescence-stack"].command)
    assert command.python_name == "napari_dip._sample_data:fluorescence_sample"
    exe = shutil.which("npe2") or str(Path(sys.executable).parent / "npe2")
    out = subprocess.run([exe, "validate", "napari-dip"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
