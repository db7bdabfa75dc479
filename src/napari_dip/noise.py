"""Noise models: what the camera did to the image, estimated from the image itself.

A microscope camera's reading is ``y = gain · Poisson(photons) + offset + N(0, read²)``:
its variance grows with the signal, ``var(y) = a · mean(y) + b`` with ``a`` the gain
(counts per photon) and ``b = read² − a · offset``. This noise-level function is
estimated from one image (as in Foi et al., "Practical Poissonian-Gaussian noise
modeling and fitting for single-image raw-data", IEEE TIP 2008): Haar detail
coefficients measure the noise, a smoothed image the level it sits on, and a robust
straight line through binned (level, variance) pairs gives ``a`` and ``b``.

Where the variance does grow with the signal, the fit runs on the generalized
Anscombe transform of the image, ``f(y) = 2/a · sqrt(a·y + 3/8·a² + b)``, whose noise
has unit variance everywhere: the squared loss then weighs dark and bright regions
as their noise deserves, as BM3D's pipeline for photon-limited data does. The result
comes back through the closed-form approximation of the exact unbiased inverse
(Mäkitalo & Foi, IEEE TIP 2011 and 2013), not the algebraic one, which is biased at
low counts.

numpy and scipy only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import numpy as np

from ._names import NOISE_MODELS

#: Bins of the noise-level function (equal counts of smooth pixels each), and the
#: fewest detail coefficients a bin needs for its robust variance.
BINS = 16
MIN_PER_BIN = 64
#: "auto" takes the Poisson–Gaussian model when the fitted variance at the bright end
#: of the data is at least this many times that at the dark end.
POISSON_RATIO = 1.5
#: "auto" fits the variance-stabilised image, as noise="poisson" does, where a single 2-D
#: Poisson–Gaussian image's bright end holds at least this many photons
#: (``NoiseModel.bright_photons``). Bright images fit slowly, their raw outputs' variance
#: lies flat while the PSNR climbs, and the plain loss's rise ended piecewise-constant ones
#: 3-4 dB under BM3D+GAT (a phantom at 80 and 150 photons); stabilised, the 17 cases at 40-150
#: photons that this changes gained 0.82 dB on average (-0.85 to +5.88). Dimmer images keep
#: the plain loss, level with or above it (BENCHMARKS.md, "Bright images: the stabilised fit
#: under 'auto'").
AUTO_STABILISE_PHOTONS = 50.0
#: Side of the box filter giving the level each detail coefficient sits on.
LEVEL_WINDOW = 5
#: Fraction of pixels (those with the steepest level) left out as edges and texture,
#: which would read as noise.
EDGE_FRACTION = 0.5
#: Where that finds no photon noise, steepness is ranked again against the noise around
#: each block (the rms of the detail coefficients in a window of this side): bright flat
#: regions look steep from their photon noise alone, so that on an image with a dark
#: background the bins may hold only the background (a phantom at 150 photons read as
#: Gaussian, σ the read noise, its variance a tenth of its bright regions'). Ranked so
#: throughout, texture stays in and reads as noise: gains of the photon benchmark cases
#: came nearer the truth but their restorations no better (BENCHMARKS.md, "The noise
#: estimate's smooth pixels").
RELATIVE_WINDOW = 9
#: Noise is measured on at most this many 2-D slices (evenly spread through a stack) of
#: at most ``MAX_SIDE`` x ``MAX_SIDE`` pixels each (centred crops): plenty for 16 bins,
#: and a large stack costs no more than a few planes.
MAX_SLICES = 16
MAX_SIDE = 1024
#: The image's bright end (``NoiseModel.bright``): this percentile of its values after a
#: ``BRIGHT_WINDOW`` square median filter, so that hot pixels (8 at 65535 in a dim 64² image
#: made it read as 2000 photons under a box filter) and single noisy values do not count.
BRIGHT_PERCENTILE = 99.0
BRIGHT_WINDOW = 3
_MAD_TO_STD = 1.4826
_SQRT_3_2 = math.sqrt(1.5)


#: Rounding to whole counts adds an error of variance 1/12 count². A restoration ends some
#: 15-20 dB under the noise it removed, so where the noise variance is under 1000/12 count²
#: (std 9 counts; rounding then adds over 0.1 % of it) rounding would take back a tenth or
#: more of the restoration (measured: 0.4-0.8 dB at 5-15 photons and 2 counts/photon,
#: 6 dB at 0.5 counts/photon; 0.02-0.04 dB at 4.5 counts/photon, BENCHMARKS.md).
ROUNDING_VARIANCE = 1000 / 12


@dataclass(frozen=True)
class NoiseModel:
    """The noise of an image: ``var = gain · mean + baseline`` in the image's units.

    ``kind`` is "gaussian" (``gain`` 0, ``baseline`` = sigma²) or "poisson"
    (Poisson–Gaussian). ``offset`` is the user's camera offset when given, else the
    level where the fitted variance vanishes (the offset less read² / gain); ``read``
    the read noise std in the image's units when it can be told (None otherwise).
    ``estimated`` names what came from the image rather than the caller; ``bright`` the
    level at the image's bright end (``BRIGHT_PERCENTILE``) when it was measured.
    """

    kind: str
    gain: float
    baseline: float
    offset: float | None = None
    read: float | None = None
    estimated: tuple[str, ...] = ()
    bright: float | None = None

    @property
    def sigma(self) -> float:
        """The Gaussian noise std (Gaussian model only)."""
        return math.sqrt(max(self.baseline, 0.0)) if not math.isnan(self.baseline) else math.nan

    def describe(self) -> str:
        """One line for the CLI, the widget and logs."""
        if self.kind == "gaussian":
            text = "Gaussian" + ("" if math.isnan(self.baseline) else f", sigma {self.sigma:.4g}")
        else:
            text = f"Poisson–Gaussian, gain {self.gain:.4g} counts/photon"
            if self.offset is not None:
                text += f", offset {self.offset:.5g}"
            if self.read is not None:
                text += f", read noise {self.read:.3g}"
            if math.isfinite(self.bright_photons):
                text += f", {self.bright_photons:.3g} photons at the bright end"
        if self.estimated:
            text += f"; estimated: {', '.join(self.estimated)}"
        return text

    def as_dict(self) -> dict[str, object]:
        """Plain values, for layer metadata and JSON."""
        return {
            "kind": self.kind,
            "gain": self.gain,
            "baseline": self.baseline,
            "offset": self.offset,
            "read": self.read,
            "sigma": self.sigma if self.kind == "gaussian" else None,
            "estimated": list(self.estimated),
            "bright_photons": None if math.isnan(self.bright_photons) else self.bright_photons,
        }

    def variance_at(self, level: float) -> float:
        """The noise variance at ``level`` (NaN when the image was too small to tell)."""
        return self.gain * level + self.baseline if self.kind == "poisson" else self.baseline

    def photons_at(self, level: float) -> float:
        """Photons at ``level`` (counts less the offset, over the gain); NaN unless the model
        is Poisson–Gaussian. Without a given offset, from where the fitted variance vanishes
        (the offset less read² / gain, so a few photons high for a read noise of 1-2 e⁻)."""
        if self.kind != "poisson" or not self.gain > 0:
            return math.nan
        zero = self.offset if self.offset is not None else -self.baseline / self.gain
        return (level - zero) / self.gain

    @property
    def bright_photons(self) -> float:
        """Photons at the image's bright end (``bright``); NaN where unknown."""
        return math.nan if self.bright is None else self.photons_at(self.bright)

    def rounding_matters(self, level: float) -> bool:
        """True when rounding to whole counts (error variance 1/12 count²) would spoil a
        restoration of integer data whose typical level is ``level``: the noise variance
        there is below ``ROUNDING_VARIANCE`` (see there)."""
        variance = self.variance_at(level)
        return not math.isnan(variance) and variance < ROUNDING_VARIANCE

    # The transform works in float64: float32 loses the low bits of large counts.
    def stabilize(self, values: np.ndarray) -> np.ndarray:
        """Generalized Anscombe transform: unit noise variance at every level."""
        a = self.gain
        inside = np.maximum(a * np.asarray(values, np.float64) + 0.375 * a * a + self.baseline, 0.0)
        return (2.0 / a) * np.sqrt(inside)

    def unstabilize(self, values: np.ndarray) -> np.ndarray:
        """The exact unbiased inverse of ``stabilize`` (closed-form approximation)."""
        a = self.gain
        d = np.asarray(values, np.float64)
        # Below f(0 photons, no read noise) the closed form turns back; the algebraic
        # inverse joins it there continuously and keeps the map monotonic.
        low = d < _SQRT_3_2
        safe = np.where(low, _SQRT_3_2, d)
        photons = 0.25 * safe**2 + 0.25 * _SQRT_3_2 / safe - 1.375 / safe**2 + 0.625 * _SQRT_3_2 / safe**3 - 0.125
        photons = np.where(low, 0.25 * d * d - 0.375, photons)
        return a * photons - self.baseline / a


class TooSmall(ValueError):
    """Too few pixels or smooth regions to measure the noise-level function."""


class NoPhotonNoise(ValueError):
    """``noise="poisson"`` on an image whose noise does not grow with the signal."""


def _haar_details(plane: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Diagonal Haar details of every 2x2 block (variance = the noise variance for
    white noise), the smoothed level at each block, its local steepness and the details'
    rms around it (``RELATIVE_WINDOW``), as flat arrays over the blocks whose four
    pixels are valid."""
    from scipy import ndimage

    x = plane.astype(np.float64)
    detail = 0.5 * (x[:-1, :-1] - x[:-1, 1:] - x[1:, :-1] + x[1:, 1:])
    level = ndimage.uniform_filter(x, LEVEL_WINDOW, mode="reflect")
    gy, gx = np.gradient(level)
    steep = np.hypot(gy, gx)
    # The block's level and steepness: the mean of its four pixels'.
    level = 0.25 * (level[:-1, :-1] + level[:-1, 1:] + level[1:, :-1] + level[1:, 1:])
    steep = np.maximum.reduce([steep[:-1, :-1], steep[:-1, 1:], steep[1:, :-1], steep[1:, 1:]])
    local = np.sqrt(ndimage.uniform_filter(detail * detail, RELATIVE_WINDOW, mode="reflect"))
    keep = np.ones(detail.shape, bool)
    if valid is not None:
        keep = valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, :-1] & valid[1:, 1:]
    return detail[keep], level[keep], steep[keep], local[keep]


def _robust_std(detail: np.ndarray) -> float:
    """Std of detail coefficients, robust to the few that edges and hot pixels make
    huge: the second moment of those within 3x the 90th percentile of |d| (4.9 sigma
    for Gaussian noise, so nothing is lost). Unlike a median, it is not fooled by
    the few distinct values of integer counts at low gain."""
    size = np.abs(detail)
    cut = 3 * float(np.quantile(size, 0.9))
    inside = detail[size <= cut] if cut > 0 else detail
    return float(np.sqrt(np.mean(inside * inside)))


def _clipped_bounds(values: np.ndarray) -> tuple[float, float]:
    """Levels at which the data look clipped (many pixels at the very minimum or
    maximum): variance is squeezed there, so bins near them are not trusted."""
    low, high = float(values.min()), float(values.max())
    n = values.size
    clipped_low = np.count_nonzero(values == low) > 0.01 * n
    clipped_high = np.count_nonzero(values == high) > 0.01 * n
    return (low if clipped_low else -np.inf), (high if clipped_high else np.inf)


@dataclass(frozen=True)
class _Blocks:
    """The 2x2 blocks of every measured slice, pooled (``_haar_details``), in units of
    ``2**exponent``, and the levels at which the data look clipped."""

    detail: np.ndarray
    level: np.ndarray
    steep: np.ndarray
    local: np.ndarray
    low: float
    high: float
    exponent: int
    bright: float  # ``NoiseModel.bright``, in the image's units


def _blocks(standard: np.ndarray, known: np.ndarray | None) -> _Blocks:
    """Every 2-D slice (plane, channel, Z slice) of ``standard`` (P, C, *S) gives its
    2x2 blocks (at most ``MAX_SLICES`` slices of ``MAX_SIDE`` squared); ``TooSmall``
    when they are too few to measure the noise on."""
    from scipy import ndimage

    height, width = standard.shape[-2:]
    slices = standard.reshape(-1, height, width)
    valid = None
    if known is not None:
        valid = np.broadcast_to(known[:, None], standard.shape).reshape(-1, height, width)
    chosen = np.unique(np.linspace(0, len(slices) - 1, min(len(slices), MAX_SLICES)).round().astype(int))
    top, left = max(0, (height - MAX_SIDE) // 2), max(0, (width - MAX_SIDE) // 2)
    crop = (slice(top, top + MAX_SIDE), slice(left, left + MAX_SIDE))

    # Data near float64's limits (or subnormal) is measured in units of a power of two
    # (exact), so that differences and squares neither overflow nor underflow.
    def usable(i: int) -> np.ndarray:
        values = slices[i][crop] if valid is None else slices[i][crop][valid[i][crop]]
        return values[np.isfinite(values)]

    magnitude = max(float(np.max(np.abs(usable(i)), initial=0.0)) for i in chosen)
    exponent = int(np.frexp(magnitude)[1]) if magnitude and not 2.0**-256 <= magnitude <= 2.0**256 else 0
    parts, pixels, medians = [], [], []
    for i in chosen:
        mask = None if valid is None else valid[i][crop]
        plane = np.ldexp(slices[i][crop].astype(np.float64), -exponent)
        if mask is not None:  # whatever lies under the mask (NaN too) must not reach the filters
            if not mask.any():
                continue
            plane = np.where(mask, plane, np.median(plane[mask]))
        parts.append(_haar_details(plane, mask))
        pixels.append(plane.ravel() if mask is None else plane[mask])
        median = ndimage.median_filter(plane, BRIGHT_WINDOW, mode="reflect")
        medians.append(median.ravel() if mask is None else median[mask])
    if not parts:
        raise TooSmall("no known pixels to measure the noise on")
    detail, level, steep, local = (np.concatenate(v) for v in zip(*parts, strict=True))
    if detail.size < BINS * MIN_PER_BIN:
        raise TooSmall(f"the image has too few pixels ({detail.size} 2x2 blocks) to measure its noise")
    bright = float(np.ldexp(np.percentile(np.concatenate(medians), BRIGHT_PERCENTILE), exponent))
    return _Blocks(detail, level, steep, local, *_clipped_bounds(np.concatenate(pixels)), exponent, bright)


def level_variance(
    standard: np.ndarray, known: np.ndarray | None = None, relative: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Binned noise-level function of ``standard`` (P, C, *S): (levels, variances,
    counts, clipped), ``clipped`` True when most bins lie where the data are clipped.

    Every 2-D slice (plane, channel, Z slice) gives its smooth 2x2 blocks (with
    ``relative``, smooth against the noise around them, ``RELATIVE_WINDOW``); blocks of
    all slices are pooled (one camera), binned by level into ``BINS`` equal-count
    bins, and each bin's variance is the trimmed second moment of its details
    (``_robust_std``), robust to the hot pixels and edges that remain.
    """
    return _binned(_blocks(standard, known), relative)


def _binned(blocks: _Blocks, relative: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """``level_variance`` of measured blocks."""
    steep = blocks.steep
    if relative:
        steep = steep / np.maximum(blocks.local, np.finfo(np.float64).tiny)
    smooth = steep <= np.quantile(steep, 1 - EDGE_FRACTION)
    detail, level = blocks.detail[smooth], blocks.level[smooth]
    edges = np.quantile(level, np.linspace(0, 1, BINS + 1))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, BINS - 1)
    rows = []
    for b in range(BINS):
        d = detail[which == b]
        if d.size >= MIN_PER_BIN:
            rows.append((float(np.median(level[which == b])), _robust_std(d), d.size))
    table = np.array(rows, float).reshape(-1, 3)
    # Clipping squeezes the variance near the clipped level: such bins are dropped,
    # unless too few would be left (then every bin counts: a rough sigma beats none).
    unclipped = (table[:, 0] - 2 * table[:, 1] > blocks.low) & (table[:, 0] + 2 * table[:, 1] < blocks.high)
    clipped = unclipped.sum() < 3
    if not clipped:
        table = table[unclipped]
    exponent = blocks.exponent
    with np.errstate(over="ignore", under="ignore"):  # back in the data's units: inf beyond float64
        return np.ldexp(table[:, 0], exponent), np.ldexp(table[:, 1] ** 2, 2 * exponent), table[:, 2], clipped


def _fit_line(
    levels: np.ndarray, variances: np.ndarray, counts: np.ndarray, slope: float | None
) -> tuple[float, float]:
    """Weighted least squares ``variance = slope · level + intercept`` (``slope`` fixed
    when given); weights count / variance² (a bin's variance error is relative), with
    one pass that drops bins more than 3 robust deviations off the line."""
    keep = np.ones(levels.size, bool)
    a, b = 0.0, float(np.median(variances))
    for _ in range(2):
        w = counts[keep] / np.maximum(variances[keep], 1e-30) ** 2
        x, y = levels[keep], variances[keep]
        if slope is None:
            design = np.stack([x, np.ones_like(x)], axis=1) * np.sqrt(w)[:, None]
            (a, b), *_ = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)
        else:
            a, b = slope, float(np.sum(w * (y - slope * x)) / np.sum(w))
        relative = (variances - (a * levels + b)) / np.maximum(variances, 1e-30)
        spread = _MAD_TO_STD * np.median(np.abs(relative[keep])) + 1e-12
        new = np.abs(relative) <= 3 * spread
        if new.sum() < 3 or (new == keep).all():
            break
        keep = new
    return float(a), float(b)


def check_options(noise: object, gain: object, offset: object) -> None:
    """Refuse, with the fix, a noise model name or camera values that make no sense."""
    if noise not in NOISE_MODELS:
        raise ValueError(f"noise must be one of {', '.join(map(repr, NOISE_MODELS))}, got {noise!r}")
    for name, value in (("gain", gain), ("offset", offset)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if gain is not None and gain <= 0:
        raise ValueError(f"gain must be positive (camera counts per photon), got {gain}")
    if noise == "gaussian" and (gain is not None or offset is not None):
        raise ValueError("gain and offset describe photon noise; use noise='poisson' or 'auto' with them")


def _gaussian(variances: np.ndarray, counts: np.ndarray) -> NoiseModel:
    """Gaussian noise of the bins' mean variance, weighted by their sizes."""
    return NoiseModel("gaussian", 0.0, float(np.sum(counts * variances) / np.sum(counts)), estimated=("sigma",))


def estimate_noise(
    standard: np.ndarray,
    known: np.ndarray | None = None,
    noise: str = "auto",
    gain: float | None = None,
    offset: float | None = None,
) -> NoiseModel:
    """The noise model of ``standard`` (P, C, *S) in its own units.

    ``noise`` is "auto" (Poisson–Gaussian when the variance grows with the signal by
    ``POISSON_RATIO`` or more over the data, else Gaussian), "gaussian" or "poisson";
    ``gain`` (counts per photon) and ``offset`` (counts at zero photons) fix what the
    caller knows, the rest is estimated from the image. Where the smooth blocks show no
    photon noise, they are chosen again, smooth against the noise around them
    (``RELATIVE_WINDOW``), and a Poisson–Gaussian fit found there is taken. "poisson"
    without a ``gain`` takes the model "auto" finds where that is Poisson–Gaussian.
    """
    check_options(noise, gain, offset)
    try:
        blocks = _blocks(standard, known)
    except TooSmall as err:
        return _unmeasured(str(err), noise, gain, offset)
    # noise="poisson" without a gain takes the model "auto" finds, where that is photon noise:
    # forced onto the first ranking, a line through a dark background's bins with a weak
    # slope read a phantom's gain as 0.3-1.6 (true 4.5) where "auto" read 4.4-4.8.
    model = _auto(blocks, offset) if gain is None and noise != "gaussian" else None
    if model is None or (noise == "poisson" and model.kind != "poisson"):
        try:
            model = _estimate(blocks, noise, gain, offset, relative=False)
        except NoPhotonNoise:  # noise="poisson" without a gain: ask again (RELATIVE_WINDOW)
            model = _estimate(blocks, noise, gain, offset, relative=True)
    return replace(model, bright=blocks.bright)


def _auto(blocks: _Blocks, offset: float | None) -> NoiseModel:
    """``estimate_noise(noise="auto")`` without a gain: where the smooth blocks show no
    photon noise, they are ranked again against the noise around them."""
    model = _estimate(blocks, "auto", None, offset, relative=False)
    if model.kind == "gaussian" and math.isfinite(model.baseline):
        rescued = _estimate(blocks, "auto", None, offset, relative=True)
        if rescued.kind == "poisson":
            return rescued
    return model


def _unmeasured(reason: str, noise: str, gain: float | None, offset: float | None) -> NoiseModel:
    """The model of an image whose noise cannot be measured (``reason``): too small, or
    too close to float64's limits."""
    if noise != "poisson":  # plain squared loss, as without a model; the level is unknown
        return NoiseModel("gaussian", 0.0, math.nan)
    if gain is None or offset is None:
        raise ValueError(f"{reason}; pass the camera's gain= and offset= for noise='poisson'")
    return NoiseModel("poisson", float(gain), -float(gain) * float(offset), float(offset), 0.0)


def _estimate(blocks: _Blocks, noise: str, gain: float | None, offset: float | None, relative: bool) -> NoiseModel:
    """``estimate_noise`` over the blocks smooth as ``level_variance(relative=)`` ranks them."""
    levels, variances, counts, clipped = _binned(blocks, relative)
    if levels.size < 3:
        return _unmeasured("too few smooth regions to measure the noise of this image", noise, gain, offset)
    if not (np.isfinite(levels).all() and np.isfinite(variances).all()):
        reason = "the image's values are too close to float64's limits to measure its noise"
        return _unmeasured(reason, noise, gain, offset)
    if clipped and noise != "poisson":
        # Clipping squeezes the variance near the clipped level, which would read as
        # photon noise; the widest bin is nearest the truth.
        return NoiseModel("gaussian", 0.0, float(variances.max()), estimated=("sigma",))
    if noise == "gaussian":
        return _gaussian(variances, counts)
    a, b = _fit_line(levels, variances, counts, gain)
    estimated = () if gain is not None else ("gain",)
    if noise == "auto" and gain is None:
        lo, hi = float(levels.min()), float(levels.max())
        dark, bright = a * lo + b, a * hi + b
        if a <= 0 or (dark <= 0 and bright <= 0) or bright < POISSON_RATIO * max(dark, 1e-30 * bright):
            return _gaussian(variances, counts)
    if a <= 0:
        raise NoPhotonNoise(
            f"the noise of this image does not grow with the signal (fitted gain {a:.3g}); "
            "use noise='gaussian', or give the camera's gain="
        )
    read = None
    if offset is not None:
        read2 = b + a * offset
        if read2 < 0:  # the given offset and the data disagree: trust the offset, no read noise
            b, read2 = -a * offset, 0.0
        read = math.sqrt(read2)
        shown = float(offset)
    else:
        shown = -b / a
        estimated = (*estimated, "offset")
    return NoiseModel("poisson", a, b, shown, read, estimated)
