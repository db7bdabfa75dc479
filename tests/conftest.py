from __future__ import annotations

import numpy as np
import pytest
from skimage import data

# Tiny nets and few iterations keep every fit to seconds on a CPU.
FAST = {"width": 32, "device": "cpu"}


def psnr(estimate: np.ndarray, truth: np.ndarray, peak: float = 255.0) -> float:
    err = np.mean((np.asarray(estimate, np.float64) - np.asarray(truth, np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / err))


@pytest.fixture(scope="session")
def camera64() -> np.ndarray:
    """64x64 grey uint8 crop with edges and texture (the camera man's head and tripod)."""
    return data.camera()[60:124, 200:264].copy()


@pytest.fixture(scope="session")
def astronaut64() -> np.ndarray:
    """64x64 RGB uint8 crop (face)."""
    return data.astronaut()[40:104, 200:264].copy()


@pytest.fixture(scope="session")
def noisy_camera(camera64: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.clip(camera64 + rng.normal(0, 25, camera64.shape), 0, 255).round().astype(np.uint8)
