"""Checks of user images, their axes, and conversion between user values and the
fit's float32 arrays in [0, 1]. numpy only.

Layout: every shell turns the user's array into ``(P, C, *S)`` — P planes (the
flattened extra axes: Z, T or both), C channels, S the 2 spatial axes fitted
together (3 for volumetric fits) — and back, exactly (``Layout``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .noise import NoiseModel

#: Headroom, as a fraction of the robust range, left above and below it in [0, 1]:
#: the sigmoid output cannot reach 0 or 1, and a true peak may sit above the noisy one.
MARGIN = 0.05
#: A bright pixel is signal when an 8-neighbour in its plane reaches at least this
#: fraction of its height above the floor: a focused spot spreads over neighbours
#: (a Gaussian PSF of sigma 0.7 px still gives ~0.36), a hot pixel does not (~0).
SUPPORT = 0.25
#: How many extreme values per channel are checked for support.
CANDIDATES = 4096


#: Float data whose magnitude lies outside 2**±LIMIT_EXPONENT is scaled by a power of
#: two (exact) before it is mapped, so that differences and margins cannot overflow to
#: inf near float64's limits (~1.8e308) nor lose subnormal precision.
LIMIT_EXPONENT = 256


def output_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype restored values come back in, as in scikit-image: integers keep their
    type, float64 (and wider) gives float64, float32 and smaller floats float32."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return dtype.newbyteorder("=")  # native byte order, whatever the file's
    return np.dtype(np.float64) if dtype.itemsize >= 8 else np.dtype(np.float32)


def _float_within(value: int, below: bool) -> float:
    """The float64 nearest to integer ``value`` on its side (at most ``value`` when
    ``below``): int64/uint64 extremes are not floats, and rounding up would wrap."""
    near = float(value)
    if (int(near) > value) if below else (int(near) < value):
        near = float(np.nextafter(near, -np.inf if below else np.inf))
    return near


@dataclass(frozen=True)
class ValueMap:
    """How user values map to [0, 1], per channel: ``unit = (value·2**-exponent - offset) / scale``.

    ``offset`` and ``scale`` have one entry per channel (equal entries when the
    channels share a mapping); ``low``/``high`` are the data's own extremes per
    channel, in the data's dtype (float64 for floats), which restored values never
    leave. ``exponent`` is 0 except for floats near float64's limits (see
    ``LIMIT_EXPONENT``). ``dtype`` is the dtype of restored values (``output_dtype``).
    """

    offset: np.ndarray
    scale: np.ndarray
    dtype: np.dtype
    low: np.ndarray
    high: np.ndarray
    exponent: int = 0
    #: A Poisson–Gaussian noise model (``napari_dip.noise``) whose variance-stabilising
    #: transform comes first (``unit`` then maps the stabilised values), or None.
    noise: NoiseModel | None = None

    @staticmethod
    def _per_channel(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
        shape = [1] * ndim
        shape[axis] = -1
        return values.reshape(shape)

    def scaled(self, image: np.ndarray) -> np.ndarray:
        """``image`` as float64 times ``2**-exponent`` (exact)."""
        values = image.astype(np.float64)
        if self.noise is not None:
            return self.noise.stabilize(values)
        return np.ldexp(values, -self.exponent) if self.exponent else values

    def to_unit(self, image: np.ndarray, axis: int = 0) -> np.ndarray:
        """A new float32 array; channels along ``axis``. Converted plane by plane (along
        axis 0, when the channels are not there): float64 temporaries stay one plane big."""
        if axis > 0 and image.ndim > 2:
            out = np.empty(image.shape, np.float32)
            for i in range(image.shape[0]):
                out[i] = self.to_unit(image[i], axis - 1)
            return out
        offset, scale = (self._per_channel(v, axis, image.ndim) for v in (self.offset, self.scale))
        # Values far outside the range (under a mask, or isolated outliers) may overflow
        # float32; they are clipped or masked out after this anyway.
        with np.errstate(over="ignore", invalid="ignore"):
            return ((self.scaled(image) - offset) / scale).astype(np.float32)

    def to_user(self, unit: np.ndarray, axis: int = 0) -> np.ndarray:
        """``unit`` (channels along ``axis``) in ``dtype`` and the user's units, within
        the data's extremes: never inf, NaN or wrapped around. Plane by plane, as ``to_unit``."""
        if axis > 0 and unit.ndim > 2:
            out = np.empty(unit.shape, self.dtype)
            for i in range(unit.shape[0]):
                out[i] = self.to_user(unit[i], axis - 1)
            return out
        integer = np.issubdtype(self.dtype, np.integer)
        if integer:  # the float64 bounds inside the integer ones
            low = np.array([_float_within(int(v), below=False) for v in self.low])
            high = np.array([_float_within(int(v), below=True) for v in self.high])
        else:
            low, high = self.low.astype(np.float64), self.high.astype(np.float64)
        if self.exponent:
            low, high = np.ldexp(low, -self.exponent), np.ldexp(high, -self.exponent)
        scale, offset, low, high = (self._per_channel(v, axis, unit.ndim) for v in (self.scale, self.offset, low, high))
        values = unit.astype(np.float64) * scale + offset
        if self.noise is not None:
            values = self.noise.unstabilize(values)
        values = np.clip(values, low, high)
        if self.exponent:
            values = np.ldexp(values, self.exponent)  # exact: the clipped values scale back within the bounds
        if integer:
            return np.rint(values).astype(self.dtype)
        return values.astype(self.dtype)

    def describe(self) -> str:
        def user(value: float) -> float:
            return float(self.noise.unstabilize(value)) if self.noise else float(np.ldexp(value, self.exponent))

        parts = [f"{user(lo):.6g}..{user(lo + s):.6g}" for lo, s in zip(self.offset, self.scale, strict=True)]
        return ", ".join(dict.fromkeys(parts))


def as_image(image: object, name: str = "image") -> np.ndarray:
    """``image`` as a numeric ndarray (not copied when already one); TypeError otherwise."""
    if isinstance(image, np.ndarray):
        array = image
    else:
        try:
            array = np.asarray(image)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a numeric array, got {type(image).__name__}") from err
    if array.dtype.kind not in "iuf":  # not bool, complex, timedelta, datetime, object, strings
        raise TypeError(
            f"{name} must hold integer or floating-point values, got dtype {array.dtype}; "
            "convert it, e.g. with image.astype(np.float32)"
        )
    if np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize > 8:  # long double: fit in float64
        with np.errstate(over="ignore"):
            wide = array.astype(np.float64)
        if np.count_nonzero(np.isinf(wide)) != np.count_nonzero(np.isinf(array)):
            raise ValueError(f"{name} has values beyond float64's range (±1.8e308); scale it down first")
        array = wide
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    return array


def check_finite(array: np.ndarray, name: str = "image") -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); replace them first (e.g. np.nan_to_num)")


@dataclass(frozen=True)
class Layout:
    """Where the planes, channels and fitted axes of a user array are, and the way back."""

    #: Shape of the plane axes (empty for a single image).
    plane_shape: tuple[int, ...]
    channels: int
    #: The user's axis order as a permutation of (planes..., channel, spatial...).
    order: tuple[int, ...]
    channel_axis: int | None

    @property
    def planes(self) -> int:
        return math.prod(self.plane_shape)

    def to_user(self, standard: np.ndarray) -> np.ndarray:
        """``(P, C, *S')`` (S' may be larger: super-resolution) in the user's layout."""
        channels, *spatial = standard.shape[1:]  # 1 channel broadcasts (a mask, a flag)
        full = standard.reshape(*self.plane_shape, channels, *spatial)
        full = np.transpose(full, np.argsort(self.order))
        return full if self.channel_axis is not None else full[..., 0]  # the appended channel axis

    def plane_to_user(self, plane: np.ndarray) -> np.ndarray:
        """One plane ``(C, *S')`` in the user's layout of a plane (its axes in the
        user's order, without the plane axes)."""
        n = len(self.plane_shape)
        rest = [a - n for a in self.order[n:]]  # channel, spatial: user axes among the non-plane ones
        if self.channel_axis is None:
            return plane[0]
        return np.transpose(plane, np.argsort(rest))

    def user_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        shape = [*self.plane_shape, self.channels, *spatial]
        shape = [shape[i] for i in np.argsort(self.order)]
        return tuple(shape if self.channel_axis is not None else shape[:-1])


def standardize(
    image: np.ndarray, channel_axis: int | None, spatial_dims: int = 2, name: str = "image"
) -> tuple[np.ndarray, Layout]:
    """View ``image`` as ``(P, C, *S)`` with ``spatial_dims`` axes in S: the last
    non-channel axes; any axes before them are planes."""
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
            raise TypeError(f"channel_axis must be an integer or None, got {type(channel_axis).__name__}")
        if not -image.ndim <= channel_axis < image.ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for {name} of shape {image.shape}")
        channel_axis = int(channel_axis) % image.ndim
    needed = spatial_dims + (channel_axis is not None)
    if image.ndim < needed:
        what = "(Z, Y, X) for a volumetric fit" if spatial_dims == 3 else "(H, W)"
        extra = " plus the channel axis" if channel_axis is not None else ""
        raise ValueError(f"{name} must be at least {needed}-D, {what}{extra}; got shape {image.shape}")
    if channel_axis is None:
        image = image[..., None]
        channel = image.ndim - 1
        others = list(range(image.ndim - 1))
    else:
        channel = channel_axis
        others = [a for a in range(image.ndim) if a != channel]
    planes, spatial = others[: len(others) - spatial_dims], others[len(others) - spatial_dims :]
    order = (*planes, channel, *spatial)
    moved = np.transpose(image, order)
    plane_shape = moved.shape[: len(planes)]
    standard = moved.reshape(-1, *moved.shape[len(planes) :])
    return standard, Layout(tuple(plane_shape), moved.shape[len(planes)], order, channel_axis)


def _neighbour_extreme(planes: np.ndarray, flat: np.ndarray, valid: np.ndarray | None, sign: int) -> np.ndarray:
    """``sign`` times the largest (sign 1) or smallest (-1) 8-neighbour, in the same
    2-D plane, of each flat index into ``planes`` (..., H, W); invalid neighbours
    count as -inf."""
    h, w = planes.shape[-2:]
    lead, rem = np.divmod(flat, h * w)
    rows, cols = np.divmod(rem, w)
    flat_planes = planes.reshape(-1, h, w)
    flat_valid = None if valid is None else valid.reshape(-1, h, w)
    best = np.full(flat.shape, -np.inf)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            r, c = rows + dy, cols + dx
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            r, c = np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)
            if flat_valid is not None:
                inside &= flat_valid[lead, r, c]
            values = sign * flat_planes[lead, r, c].astype(np.float64)
            best = np.maximum(best, np.where(inside, values, -np.inf))
    return best


def _supported_extreme(values: np.ndarray, valid: np.ndarray | None, floor: float, sign: int) -> float | None:
    """The largest (sign 1) or smallest (-1) value of ``values`` (..., H, W) whose
    pixel is not an isolated outlier (see ``SUPPORT``), among the ``CANDIDATES``
    most extreme ones."""
    flat = values.reshape(-1)
    pool = np.flatnonzero(valid.reshape(-1)) if valid is not None else np.arange(flat.size)
    k = min(CANDIDATES, pool.size)
    source = flat[pool]
    top = np.argpartition(source, pool.size - k)[pool.size - k :] if sign > 0 else np.argpartition(source, k - 1)[:k]
    index = pool[top]
    peaks = sign * flat[index].astype(np.float64)
    order = np.argsort(peaks)[::-1]
    index, peaks = index[order], peaks[order]
    neighbours = _neighbour_extreme(values, index, valid, sign)
    supported = neighbours - sign * floor >= SUPPORT * (peaks - sign * floor)
    return float(sign * peaks[supported.argmax()]) if supported.any() else None


def robust_range(values: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """(low, high) bracketing the signal of ``values`` (..., H, W): the extremes
    of pixels backed by a neighbour, so isolated hot or dead pixels are left out
    while the peaks of real structures (a focused spot spans pixels) are kept."""
    data = values if valid is None else values[valid]
    with np.errstate(over="ignore"):  # the mean of the two middle values may overflow float32
        median = float(np.median(data))
    if not np.isfinite(median):
        median = float(np.median(data.astype(np.float64)))
    high = _supported_extreme(values, valid, median, 1)
    low = _supported_extreme(values, valid, median, -1)
    high = float(data.max()) if high is None else high
    low = float(data.min()) if low is None else low
    return low, max(high, low)


def _limit_exponent(low: float, high: float) -> int:
    """The power of two to divide float data by so that its extremes lie near 1, when
    they are near float64's limits; else 0."""
    magnitude = max(abs(low), abs(high))
    if magnitude == 0 or 2.0**-LIMIT_EXPONENT <= magnitude <= 2.0**LIMIT_EXPONENT:
        return 0
    return int(np.frexp(magnitude)[1])


def value_map(
    standard: np.ndarray, rgb: bool, known: np.ndarray | None = None, noise: NoiseModel | None = None
) -> ValueMap:
    """The map of ``standard`` (P, C, *S) to [0, 1]. uint8 uses its full range
    0..255; other dtypes a robust range per channel (one for all channels when
    ``rgb``, so colours stay balanced), widened by ``MARGIN``. ``known`` (P, *S)
    marks the pixels to measure (inpainting ignores the rest). A Poisson–Gaussian
    ``noise`` model maps the stabilised values (``NoiseModel.stabilize``) instead."""
    channels = standard.shape[1]
    integer = np.issubdtype(standard.dtype, np.integer)
    groups = [slice(None)] if rgb or channels == 1 else [slice(c, c + 1) for c in range(channels)]
    offset, scale = np.zeros(channels), np.zeros(channels)
    low = np.zeros(channels, standard.dtype if integer else np.float64)
    high = np.zeros_like(low)
    for group in groups:
        values = standard[:, group]
        valid = None if known is None else np.broadcast_to(known[:, None], values.shape)
        data = values if valid is None else values[valid]
        low[group], high[group] = data.min(), data.max()
    exponent = 0 if integer or noise is not None else _limit_exponent(float(low.min()), float(high.max()))
    for group in groups:
        if standard.dtype == np.uint8 and noise is None:
            offset[group], scale[group] = 0.0, 255.0
            continue
        values = standard[:, group]
        if exponent:
            values = np.ldexp(values.astype(np.float64), -exponent)
        valid = None if known is None else np.broadcast_to(known[:, None], values.shape)
        lo, hi = robust_range(values, valid)
        if noise is not None:
            # The range is found in counts, then stabilised (the transform keeps the order):
            # its square root squeezes a hot pixel's lead over its neighbours, so among the
            # stabilised values hot pixels next to bright ones passed as backed up, stretched
            # the range and were fitted (a 16-bit stack: 9-19 dB instead of 39-49).
            lo, hi = (float(v) for v in noise.stabilize(np.array([lo, hi], np.float64)))
        if hi == lo:  # constant: centre it, the sigmoid output cannot reach 0 or 1
            offset[group], scale[group] = lo - 0.5, 1.0
            continue
        span = hi - lo
        offset[group], scale[group] = lo - MARGIN * span, span * (1 + 2 * MARGIN)
    return ValueMap(offset, scale, output_dtype(standard.dtype), low, high, exponent, noise)
