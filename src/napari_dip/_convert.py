"""Checks of user images and conversion between user dtypes and the fit's
float32 (C, H, W) arrays in [0, 1]. numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ValueMap:
    """How user values map to [0, 1]: ``unit = (value - offset) / scale``."""

    offset: float
    scale: float
    dtype: np.dtype

    def to_user(self, unit: np.ndarray) -> np.ndarray:
        values = unit.astype(np.float64) * self.scale + self.offset
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            return np.clip(np.rint(values), info.min, info.max).astype(self.dtype)
        return values.astype(np.float32)


def as_image(image: object, name: str = "image") -> np.ndarray:
    """``image`` as a numeric ndarray (not copied when already one); TypeError otherwise."""
    if isinstance(image, np.ndarray):
        array = image
    else:
        try:
            array = np.asarray(image)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a numeric array, got {type(image).__name__}") from err
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(
            f"{name} must hold integer or floating-point values, got dtype {array.dtype}; "
            "convert it, e.g. with image.astype(np.float32)"
        )
    return array


def check_finite(array: np.ndarray, name: str = "image") -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); replace them first (e.g. np.nan_to_num)")


def to_channels_first(image: np.ndarray, channel_axis: int | None, name: str = "image") -> np.ndarray:
    """View of ``image`` as (C, H, W): 2-D images get one channel."""
    if channel_axis is None:
        if image.ndim != 2:
            hint = (
                " (for colour or multichannel images pass channel_axis=-1 or the channel axis)"
                if image.ndim == 3
                else ""
            )
            raise ValueError(f"{name} must be 2-D (H, W) when channel_axis is None, got shape {image.shape}{hint}")
        return image[None]
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"channel_axis must be an integer or None, got {type(channel_axis).__name__}")
    if image.ndim != 3:
        raise ValueError(
            f"{name} must be 3-D (2 spatial axes and channels) with channel_axis set, got shape {image.shape}"
        )
    if not -3 <= channel_axis < 3:
        raise ValueError(f"channel_axis={channel_axis} is out of range for a 3-D {name}")
    return np.moveaxis(image, channel_axis, 0)


def from_channels_first(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    return image[0] if channel_axis is None else np.moveaxis(image, 0, channel_axis)


def value_map(image: np.ndarray) -> ValueMap:
    """uint8 uses its full range 0..255; other dtypes the data's own min..max."""
    if image.dtype == np.uint8:
        return ValueMap(0.0, 255.0, image.dtype)
    lo, hi = float(image.min()), float(image.max())
    out_dtype = image.dtype if np.issubdtype(image.dtype, np.integer) else np.dtype(np.float32)
    if hi == lo:  # constant image: centre it, the sigmoid output cannot reach 0 or 1
        return ValueMap(lo - 0.5, 1.0, out_dtype)
    return ValueMap(lo, hi - lo, out_dtype)


def to_unit(image: np.ndarray, vmap: ValueMap) -> np.ndarray:
    """A new float32 array ``(image - offset) / scale``; the input is not modified."""
    return ((image.astype(np.float64) - vmap.offset) / vmap.scale).astype(np.float32)
