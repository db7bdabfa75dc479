"""numpy API: validate, convert to [0, 1], drive the fit generator, convert back.

torch is imported only when a function runs, so ``import napari_dip`` is fast.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._convert import Layout, ValueMap, as_image, check_finite, standardize, value_map
from ._names import PRECISIONS

if TYPE_CHECKING:
    import torch

    from .fit import Fit
    from .noise import NoiseModel
    from .schedule import Schedule, Step

__all__ = ["Job", "denoise", "estimate_noise", "flash_no_flash", "inpaint", "prepare", "super_resolve"]

Callback = Callable[["Step"], Any]
#: Tasks that stop automatically by default: their target is noisy, so the fit
#: overfits it in the end. Inpainting and super-resolution of clean images do not.
AUTO_STOP_TASKS = ("denoise",)
#: Under a stopping rule, the cap is this many times the task's default count.
AUTO_STOP_CAP = 2
MIN_SIDE = 4
MIN_TILE = 16
#: Super-resolution factors beyond this have no data to stand on (the paper goes to 8).
MAX_SCALE = 32

_COMMON_DOC = """
    channel_axis : int or None, optional
        Axis of ``image`` that holds channels (RGB, RGBA or any number); ``None``
        (default): no channel axis. Channels share one value mapping when they are
        RGB(A) (3 or 4 on the last axis), else each gets its own.
    volumetric : bool
        False (default): the last two non-channel axes (Y, X) are fitted, any axes
        before them (Z, T) are planes restored one by one, each warm-started from
        the previous one. True: one 3-D network over the last three (Z, Y, X);
        axes before them (T) are volumes restored one by one.
    spacing : sequence of float, optional
        Volumetric only: the (Z, Y, X) voxel size in any unit; the network does
        not downsample Z while it is sampled more coarsely than Y and X.
    tile_size : int, "auto" or None
        Restore each plane in overlapping tiles of this side (Y and X), blended
        without seams. ``None``: whole planes, or a ``MemoryError`` with advice
        when the fit would not fit in memory; "auto": tiles only when needed,
        as large as fit.
    warm_start : bool
        Start each plane (and tile) from the weights of the previous one. Under
        automatic stopping later planes then stop far sooner.
    iterations : int or None, optional
        Adam steps. ``None``: stop automatically for denoising (see ``stopping``),
        the task's default count from the paper's code for the other tasks.
    network : {"skip", "encoder-decoder", "unet", "resnet", "deep-decoder"}
        The prior. "skip" is the paper's default hourglass.
    width : int
        Channels per level (128 in the paper; 32-64 is much faster on a CPU).
    lr : float or None
        Adam learning rate; ``None`` takes the task's default.
    device : str
        "auto" (CUDA, then Apple MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
    precision : {"auto", "float32", "mixed", "bfloat16"}
        Arithmetic of the network's layers: "auto" runs them in bfloat16 on CPUs with
        AMX tiles or AVX-512 BF16 at width 64 and more (a step 1.3-1.7x faster, about 0.1 dB
        lower on average), "mixed" there below width 64 (only the largest convolutions in
        bfloat16: 1.05-1.15x faster), float32 elsewhere. The output layer, loss, optimiser
        and averaged output are float32 either way.
    seed : int or None
        Seeds weights and noise; a fixed seed gives identical output on CPU.
    callback : callable, optional
        Called with a ``napari_dip.schedule.Step`` after each iteration (its
        ``record`` is the plane's ``napari_dip.fit.Progress``); returning
        ``False`` stops: finished planes are kept, the current one as it is
        (under a stopping rule: its best output so far), and planes not reached
        are 0.
    stopping : {"auto", "wmv", "emv", "validation"} or None
        Automatic early stopping (``napari_dip.stopping``): the fit ends when the
        rule finds the output at its best and returns the averaged output of that
        iteration. "auto" uses the default rule when ``iterations`` is None for
        denoising, and no rule otherwise. A rule name always applies, with
        ``iterations`` as the cap. ``None`` never stops early.
    dtype : None, "input", float32 or float64
        The result's dtype. "input": integers keep their type (rounded), float64
        stays float64, smaller floats come back as float32. None (default): the same,
        except that denoising returns float32 for integer data whose noise at the
        median level is under 9 counts std (``noise.ROUNDING_VARIANCE``; photon-limited
        images of a few tens of photons), where rounding to whole counts would take
        back part of the restoration; ``Job.float_reason`` then says so.
"""


def _doc(func: Callable) -> Callable:
    func.__doc__ = func.__doc__.replace("    {common}\n", _COMMON_DOC.strip("\n") + "\n")
    return func


def _check_options(
    iterations: object, lr: object, network: object, width: object, seed: object, callback: object
) -> None:
    from .networks import check_network

    check_network(network, width)
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral):
            raise TypeError(f"iterations must be an integer or None, got {type(iterations).__name__}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
    if lr is not None:
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
            raise TypeError(f"lr must be a number, got {type(lr).__name__}")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__}")
        if not 0 <= seed < 2**62:
            raise ValueError(f"seed must be between 0 and 2**62, got {seed}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")


def _standard(image: object, channel_axis: int | None, spatial_dims: int, name: str) -> tuple[np.ndarray, Layout]:
    """``image`` as ``(P, C, *S)``, checked for type, layout and size."""
    standard, layout = standardize(as_image(image, name), channel_axis, spatial_dims, name)
    if channel_axis is None and spatial_dims == 2 and standard.shape[0] > 1 and standard.shape[-1] in (3, 4):
        # (H, W, 3) read as 3 planes of H x 4: almost certainly an RGB image.
        raise ValueError(
            f"{name} of shape {np.shape(image)} looks like a colour image; pass channel_axis=-1 "
            "(or treat it as planes by giving it a different shape)"
        )
    if min(standard.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"{name} is too small: {standard.shape[-2:]} pixels; each spatial side needs >= {MIN_SIDE}")
    return standard, layout


def _unmask(image: object, name: str) -> tuple[object, np.ndarray | None]:
    """A masked array's data and its mask (same shape; None when nothing is masked);
    anything else as it is. The masked values are never read as data."""
    if not isinstance(image, np.ma.MaskedArray):
        return image, None
    masked = np.ma.getmaskarray(image)
    return np.ma.getdata(image), (masked if masked.any() else None)


def _masked_pixels(masked: np.ndarray, channel_axis: int | None, spatial_dims: int) -> np.ndarray:
    """A masked array's mask as (P, *S): a pixel is masked when any of its channels is."""
    standard, _ = standardize(masked, channel_axis, spatial_dims, "image")
    return standard.any(axis=1)


def _missing_pixels(mask: object, user_shape: tuple[int, ...], layout: Layout, spatial_dims: int) -> np.ndarray:
    """The mask as (P, *S) bool, True where pixels are missing. It has the image's
    shape without the channel axis, or its trailing spatial shape (broadcast over planes)."""
    if isinstance(mask, np.ma.MaskedArray):
        raise TypeError(
            "mask is a masked array, which is ambiguous; pass a plain array (nonzero = missing), "
            "e.g. mask.filled(1) to count its masked entries as missing"
        )
    mask = mask if isinstance(mask, np.ndarray) else np.asarray(mask)
    missing = mask if isinstance(mask, np.ndarray) and mask.dtype == bool else as_image(mask, "mask")
    check_finite(missing, "mask")
    plane_and_space = tuple(
        n for i, n in enumerate(user_shape) if layout.channel_axis is None or i != layout.channel_axis
    )
    if missing.shape == plane_and_space:
        standard, _ = standardize(missing, None, spatial_dims, "mask")
        missing = standard[:, 0]
    elif missing.ndim >= 2 and plane_and_space[-missing.ndim :] == missing.shape:
        missing = np.broadcast_to(missing, plane_and_space)
        missing = standardize(missing, None, spatial_dims, "mask")[0][:, 0]
    else:
        raise ValueError(
            f"mask shape {missing.shape} does not match the image: it must be {plane_and_space} (the image's "
            f"shape without channels) or its last axes {plane_and_space[-2:]}, broadcast over the planes; "
            "nonzero where pixels are missing"
        )
    missing = missing != 0
    n_missing = int(missing.sum())
    if n_missing == 0:
        raise ValueError("mask is empty: no pixel is marked missing (nonzero), so there is nothing to inpaint")
    if n_missing == missing.size:
        raise ValueError("mask covers the whole image: no known pixel is left to fit; mark only the damaged pixels")
    return missing


def _anisotropy(spacing: object, volumetric: bool) -> float:
    if spacing is None:
        return 1.0
    if not volumetric:
        raise ValueError("spacing applies to volumetric fits only; pass volumetric=True or leave spacing out")
    try:
        values = [float(v) for v in spacing]  # type: ignore[union-attr]
    except (TypeError, ValueError) as err:
        raise TypeError(f"spacing must be three numbers (Z, Y, X), got {spacing!r}") from err
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive numbers (Z, Y, X voxel size), got {spacing!r}")
    return values[0] / (0.5 * (values[1] + values[2]))


def _stopping(task: str, stopping: object, iterations: int | None, factor: int) -> tuple[str | None, int | None]:
    """The rule to use and the iteration count (the cap, under a rule)."""
    from ._names import DEFAULT_RULE, RULES
    from .fit import task_defaults

    if stopping is not None and stopping != "auto" and stopping not in RULES:
        raise ValueError(f"unknown stopping rule {stopping!r}; choose 'auto', None or one of {', '.join(RULES)}")
    if stopping == "auto":
        stopping = DEFAULT_RULE if iterations is None and task in AUTO_STOP_TASKS else None
    if stopping is not None and iterations is None:
        iterations = AUTO_STOP_CAP * task_defaults(task, factor).iterations
    return stopping, iterations


@dataclass
class Job:
    """A prepared restoration: the schedule of fits and the way back to the user's array."""

    schedule: Schedule
    value_map: ValueMap
    layout: Layout
    #: Inpainting: the user's image and, broadcastable to it, where pixels are missing;
    #: known pixels are returned exactly as they were.
    original: np.ndarray | None = None
    missing: np.ndarray | None = None
    #: Denoising: the image's noise model, given or estimated (``napari_dip.noise``).
    noise: NoiseModel | None = None
    #: Why an integer image comes back as floats under ``dtype=None`` (else None).
    float_reason: str | None = None

    @property
    def stabilised(self) -> bool:
        """Whether the fit runs on the variance-stabilised image: ``noise="poisson"``, or
        "auto" on a bright photon-limited one (``noise.AUTO_STABILISE_PHOTONS``)."""
        return self.value_map.noise is not None

    def describe_noise(self) -> str | None:
        """The noise model in one line, and whether the fit runs on the stabilised image
        (for the CLI and the widget); None when the task has no noise model."""
        if self.noise is None:
            return None
        return self.noise.describe() + ("; the fit runs on the variance-stabilised image" if self.stabilised else "")

    @property
    def precision(self) -> str:
        """The arithmetic of the network's layers, "auto" resolved (``fit.resolve_precision``)."""
        from .fit import resolve_precision

        options = self.schedule.options
        return resolve_precision(options.get("precision", "auto"), options["device"], int(options["width"]))

    def describe_precision(self) -> str | None:
        """A line when ``precision="auto"`` chose bfloat16 for some or all layers (for the
        CLI and the widget), None when they run in float32 or a precision was asked for."""
        if self.schedule.options.get("precision", "auto") != "auto" or self.precision == "float32":
            return None
        what, gain = (
            ("bfloat16 layers", "1.3-1.7x")
            if self.precision == "bfloat16"
            else ("bfloat16 in the largest convolutions", "1.05-1.15x")
        )
        return f"{what} (this CPU multiplies bfloat16 natively: {gain} faster; precision float32 turns it off)"

    @property
    def fit(self) -> Fit | None:
        """The fit of the plane (or tile) being restored, None between two."""
        return self.schedule.fit

    def to_user(self, unit: np.ndarray) -> np.ndarray:
        """A (P, C, *S) array in [0, 1] (``schedule.result()``) in the input's dtype and layout."""
        restored = self.layout.to_user(self.value_map.to_user(unit, axis=1))
        if self.original is not None:
            restored = np.where(self.missing, restored, self.original)
        return restored

    def plane_to_user(self, plane: np.ndarray) -> np.ndarray:
        """One plane (C, *S) in [0, 1] (``Step.plane_preview``) in the input's dtype and a plane's layout."""
        return self.layout.plane_to_user(self.value_map.to_user(plane, axis=0))

    def result(self) -> np.ndarray:
        """The restored array; planes no fit has reached yet (after a stop) are 0."""
        restored = self.to_user(self.schedule.result())
        started = self.schedule.planes_started
        if not started.all():
            ones = [1] * (self.schedule.image.ndim - 2)
            flags = (~started).reshape(-1, 1, *ones)
            restored = np.where(self.layout.to_user(flags), 0, restored).astype(restored.dtype)
        return restored

    def run(self, callback: Callback | None = None) -> np.ndarray:
        for step in self.schedule:
            if callback is not None and callback(step) is False:
                break
        return self.result()


def prepare(
    task: str,
    image: object,
    *,
    mask: object = None,
    scale: object = 4,
    flash: object = None,
    channel_axis: int | None = None,
    volumetric: bool = False,
    spacing: object = None,
    tile_size: int | str | None = None,
    warm_start: bool = True,
    iterations: int | None = None,
    network: str = "skip",
    width: int = 128,
    lr: float | None = None,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
    preview_every: int | None = 100,
    precision: str = "auto",
    noise: str = "auto",
    gain: float | None = None,
    offset: float | None = None,
    tv: float | str = "auto",
    ensemble: int | str = "auto",
    dtype: object = None,
) -> Job:
    """Validate the inputs of ``task`` and plan its fits; ``image`` is the measured image
    (the no-flash image for flash/no-flash). The napari widget, the CLI and the
    functions below use it."""
    from .fit import DENOISE_TV, TASKS, gaussian_tv, photon_options, resolve_device, tv_weight
    from .schedule import Schedule

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "super-resolve" and (
        isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or not 2 <= scale <= MAX_SCALE
    ):
        raise ValueError(f"scale must be an integer from 2 to {MAX_SCALE} (the paper uses 4 and 8), got {scale!r}")
    if task == "flash-no-flash" and network == "deep-decoder":
        raise ValueError(
            "network 'deep-decoder' takes no image input; choose 'skip', 'unet', 'resnet' "
            "or 'encoder-decoder' for flash/no-flash"
        )
    if not isinstance(volumetric, (bool, np.bool_)):
        raise TypeError(f"volumetric must be True or False, got {type(volumetric).__name__}")
    if volumetric and network not in ("skip", "encoder-decoder"):
        raise ValueError(
            f"volumetric fits use the 'skip' or 'encoder-decoder' network, not {network!r}; "
            "or restore plane by plane (volumetric=False)"
        )
    _check_options(iterations, lr, network, width, seed, callback)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    _check_tile_size(tile_size)
    check_noise(task, noise, gain, offset)
    strength = tv_strength(task, tv)
    device = resolve_device(device)
    spatial_dims = 3 if volumetric else 2
    anisotropy = _anisotropy(spacing, bool(volumetric))
    rule, iterations = _stopping(task, stopping, iterations, int(scale) if task == "super-resolve" else 4)
    name = "no_flash" if task == "flash-no-flash" else "image"
    data, masked = _unmask(image, name)
    user = as_image(data, name)
    standard, layout = _standard(user, channel_axis, spatial_dims, name)
    pixels = math.prod(standard.shape[-2:])  # per plane
    members = _ensemble(task, ensemble, device, pixels, width, network, bool(volumetric))
    rgb = layout.channel_axis == user.ndim - 1 and layout.channels in (3, 4)
    requested = _requested_dtype(dtype, user.dtype)
    # A masked array's masked values are not data: missing for inpainting, else left out
    # of the loss and filled in by the network.
    masked = None if masked is None else _masked_pixels(masked, layout.channel_axis, spatial_dims)
    known = missing = None
    if task == "inpaint":
        if mask is None and masked is None:
            raise ValueError("inpainting needs a mask (nonzero where pixels are missing), or a masked array as image")
        missing = masked if mask is None else _missing_pixels(mask, user.shape, layout, spatial_dims)
        if masked is not None:
            missing = missing | masked
        if missing.all():
            raise ValueError("mask covers the whole image: no known pixel is left to fit; mark only the damaged pixels")
        known = ~missing
    elif masked is not None:
        if masked.all():
            raise ValueError(f"every value of {name} is masked: nothing is left to restore")
        known = ~masked
    flash_standard = None
    if task == "flash-no-flash":
        if isinstance(flash, np.ma.MaskedArray) and np.ma.getmaskarray(flash).any():
            raise ValueError("flash is a masked array with masked values: the network input needs every pixel")
        flash_standard, _ = _standard(np.ma.getdata(flash), channel_axis, spatial_dims, "flash")
        if flash_standard.shape[0] != standard.shape[0] or flash_standard.shape[2:] != standard.shape[2:]:
            raise ValueError(
                f"flash and no_flash differ in size: {np.shape(flash)} vs {np.shape(image)}; "
                "register and crop them to the same shape"
            )
    options: dict[str, Any] = {
        "network": network,
        "width": width,
        "iterations": iterations,
        "lr": lr,
        "device": device,
        "seed": seed,
        "preview_every": preview_every,
        "stopping": rule,
        "precision": precision,
        "ensemble": members,
    }
    if volumetric:
        options["anisotropy"] = anisotropy
    factor = int(scale) if task == "super-resolve" else 1
    # Memory first: a fit that cannot run is refused before the data is even converted.
    in_channels = None if flash_standard is None else flash_standard.shape[1]
    tile = _plan_memory(standard.shape[1:], tile_size, factor, in_channels, options)
    # Under dtype=None denoising may turn integers into float32: counted at the larger size.
    may_float = requested is None and task == "denoise" and np.issubdtype(standard.dtype, np.integer)
    _check_array_memory(standard, factor, name, np.dtype(np.float32) if may_float else requested)

    check_finite(standard if known is None else standard.transpose(1, 0, *range(2, standard.ndim))[:, known], name)
    model = None
    if task == "denoise":
        from .noise import AUTO_STABILISE_PHOTONS, estimate_noise

        model = estimate_noise(standard, known, noise, gain, offset)
    # noise="poisson": the fit sees the variance-stabilised image, whose noise is even.
    # "auto" does so only for bright photon-limited 2-D images (AUTO_STABILISE_PHOTONS); under
    # the photon settings (TV, two members) the plain squared loss is level with it at 40
    # photons end to end (+0.03 dB on ten cases, -1.5 to +1.0) and above it at 5-15 photons
    # (BENCHMARKS.md, "The variance-stabilised fit under the white gate"). Stacks and volumes
    # keep it too: a bright 16-bit stack lost 0.4 dB stabilised (its first plane ended early).
    single = standard.shape[0] == 1 and spatial_dims == 2
    bright = model is not None and model.bright_photons >= AUTO_STABILISE_PHOTONS  # NaN (Gaussian): False
    stabilised = model is not None and (noise == "poisson" or (noise == "auto" and single and bright))
    vmap = value_map(standard, rgb, known, model if stabilised else None)
    level = _median_level(standard) if model is not None else math.nan
    vmap, float_reason = _result_dtype(vmap, requested, model, level)
    if model is not None and (model.kind == "poisson" or _camera_counts(standard.dtype)) and math.isfinite(level):
        # A stabilised fit sees unit noise.
        noise_std = 1.0 if stabilised else math.sqrt(max(model.variance_at(level), 0.0))
        if math.isfinite(noise_std):
            relative = noise_std / float(np.mean(vmap.scale))
            options.update(photon_options(relative, rule, stabilised=stabilised, bright=bright))
            # Photon-limited images gain from the TV term; natural images' texture loses
            # (BENCHMARKS.md, "Total variation for photon-limited images").
            strength = DENOISE_TV if strength is None else strength
    unit = vmap.to_unit(standard, axis=1)
    # Values outside the robust range are isolated outliers (hot or dead pixels; the
    # range holds every pixel a neighbour backs up): left out of the loss, as missing
    # pixels are, or the network would fit them in the end. They are then filled in.
    outliers = ((unit < 0) | (unit > 1)).any(axis=1)
    if known is not None:
        outliers &= known
        known = known & ~outliers
    elif outliers.any():
        known = ~outliers
    np.clip(unit, 0.0, 1.0, out=unit)
    if known is not None:
        np.copyto(unit, 0.0, where=~known[:, None])  # whatever lies under the mask (NaN too) must not matter
    if model is not None:
        variance = _noise_variance(standard, known, model, vmap)
        if strength is None and model.kind == "gaussian":
            # Natural images: a weak term where the noise is strong (fit.gaussian_tv; 0 for NaN).
            strength = gaussian_tv(math.sqrt(max(variance, 0.0)))
        if rule is not None:
            options["noise_variance"] = variance
        if strength:
            options["tv"] = tv_weight(strength, variance)
    guide = None
    if flash_standard is not None:
        check_finite(flash_standard, "flash")
        guide = value_map(flash_standard, rgb).to_unit(flash_standard, axis=1)
    schedule = Schedule(
        task,
        unit,
        known=known,
        guide=guide,
        factor=factor,
        tile_size=tile,
        warm_start=warm_start,
        **options,
    )
    if missing is None:
        return Job(schedule, vmap, layout, noise=model, float_reason=float_reason)
    return Job(schedule, vmap, layout, user, layout.to_user(missing[:, None]), noise=model)


#: What ``dtype=`` takes besides None: the input's own dtype, or floats.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _requested_dtype(dtype: object, input_dtype: np.dtype) -> np.dtype | None:
    """``dtype=`` checked: None (chosen per image), or the dtype results come back in."""
    from ._convert import output_dtype

    if dtype is None or (isinstance(dtype, str) and dtype == "auto"):
        return None
    if isinstance(dtype, str) and dtype == "input":
        return output_dtype(input_dtype)
    try:
        wanted = np.dtype(dtype)
    except TypeError:
        wanted = None
    if wanted is not None and (wanted in FLOAT_DTYPES or wanted == output_dtype(input_dtype)):
        return wanted.newbyteorder("=")
    raise ValueError(
        f"dtype must be None (chosen per image), 'input' (the image's {np.dtype(input_dtype).name}), "
        f"float32 or float64, got {dtype!r}"
    )


def _camera_counts(dtype: np.dtype) -> bool:
    """Integers wider than a byte: a scientific camera's counts (uint16 from an sCMOS or
    EMCCD). They take the photon settings even where the noise estimate calls the noise
    Gaussian: on dim, low-contrast images (a few photons, little range in the signal) the
    variance hardly grows over the data, and there the photon settings kept 0.6-2.9 dB
    more (BENCHMARKS.md, "One set of settings for camera counts"); 8-bit photographs and
    float images keep the paper's."""
    return bool(np.issubdtype(dtype, np.integer) and np.dtype(dtype).itemsize >= 2)


def _noise_variance(standard: np.ndarray, known: np.ndarray | None, model: NoiseModel, vmap: ValueMap) -> float:
    """The noise model's variance averaged over the pixels the fit uses (``known``, (P,
    *S): hot pixels and masked ones left out), in the fitted [0, 1] units (NaN when
    unknown): a stopping rule's residual floor is a fraction of it."""
    scale2 = float(np.mean(vmap.scale)) ** 2
    if vmap.noise is not None:  # the fit sees the variance-stabilised image: unit noise
        return 1.0 / scale2
    if model.kind != "poisson":
        return model.baseline / scale2  # Gaussian: sigma², the same everywhere
    # The variance is linear in the level: its mean is the variance at the mean level.
    level = float(np.nanmean(np.maximum(_sample(standard, known).astype(np.float64), model.offset or 0.0)))
    return max(model.variance_at(level), 0.0) / scale2


def _sample(standard: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """At most about a million of the (P, C, *S) image's values, evenly strided: they
    tell its median or mean as well as all of them, fast; with ``known`` (P, *S), only
    those of known pixels."""
    step = max(standard.size // 2**20, 1)
    values = standard.reshape(-1)[::step]
    if known is None:
        return values
    flat = np.arange(0, standard.size, step)
    spatial = math.prod(standard.shape[2:])
    return values[known.reshape(-1)[flat // (standard.shape[1] * spatial) * spatial + flat % spatial]]


def _median_level(standard: np.ndarray) -> float:
    """The image's median value (of ``_sample``); NaN under a mask does not count."""
    return float(np.nanmedian(_sample(standard)))


def _result_dtype(
    vmap: ValueMap, requested: np.dtype | None, model: NoiseModel | None, level: float
) -> tuple[ValueMap, str | None]:
    """``vmap`` returning ``requested``; under None, float32 for integer data whose noise
    at the median level is too fine for whole counts (``NoiseModel.rounding_matters``), and why."""
    from dataclasses import replace

    if requested is not None:
        return replace(vmap, dtype=requested), None
    if model is None or not np.issubdtype(vmap.dtype, np.integer):
        return vmap, None
    if not model.rounding_matters(level):
        return vmap, None
    std = math.sqrt(model.variance_at(level))
    reason = (
        f"float32 output: the noise is fine (std {std:.2g} counts at the median level), so rounding to "
        f"whole counts would take back part of the restoration; dtype='input' keeps {vmap.dtype.name}"
    )
    return replace(vmap, dtype=np.dtype(np.float32)), reason


def _check_array_memory(standard: np.ndarray, factor: int, name: str, dtype: np.dtype | None) -> None:
    """Refuse at once, with advice, data whose conversion and result would not fit in
    memory: the fit's plan looks at one plane (or tile), this at the whole array
    returned as ``dtype`` (None: the input's, ``output_dtype``)."""
    from ._convert import output_dtype
    from .memory import available_bytes, gigabytes, usable_bytes

    values = standard.size
    # Per value: a copy for the robust range, the [0, 1] float32 copy; per restored value
    # (factor² more after super-resolution): the float32 result and the returned array.
    per_out = 4 + (output_dtype(standard.dtype) if dtype is None else dtype).itemsize
    need = values * (standard.itemsize + 4) + values * factor**2 * per_out
    available = available_bytes("cpu")
    if need > usable_bytes(available):
        raise MemoryError(
            f"{name} has {values:.3g} values: converting and restoring it needs about {gigabytes(need)} "
            f"of memory, {gigabytes(available)} available; restore it in parts (a range of planes, or a crop)"
        )


def check_noise(task: str, noise: object, gain: object, offset: object) -> None:
    """The noise options of ``task``: valid (``noise.check_options``), and denoising's only."""
    from .noise import check_options

    check_options(noise, gain, offset)
    if task != "denoise" and (noise != "auto" or gain is not None or offset is not None):
        raise ValueError("noise, gain and offset apply to denoising only")


def tv_strength(task: str, tv: object) -> float | None:
    """The total-variation strength in noise stds: ``tv`` checked; None for "auto"
    (denoising decides per image: ``fit.DENOISE_TV`` under the photon settings, else
    ``fit.gaussian_tv`` of the measured noise)."""
    if isinstance(tv, str) and tv == "auto":
        return None
    if isinstance(tv, bool) or not isinstance(tv, numbers.Real):
        raise TypeError(f"tv must be a number of noise stds or 'auto', got {tv!r}")
    if not 0 <= tv < math.inf:
        raise ValueError(f"tv must be >= 0 noise stds (0: no total-variation term; 0.3 is the default), got {tv!r}")
    if tv and task != "denoise":
        raise ValueError("tv applies to denoising only")
    return float(tv)


def _ensemble(
    task: str, ensemble: object, device: torch.device, pixels: int, width: int, network: str, volumetric: bool
) -> int:
    """The number of ensemble members: ``ensemble``, or for "auto" the default for
    denoising on ``device`` (``fit.default_ensemble``: on a CPU it depends on the size of
    a plane and the width) and 1 for the other tasks."""
    from .fit import MAX_ENSEMBLE, default_ensemble

    if ensemble == "auto":
        return default_ensemble(device, pixels, width, network, volumetric) if task == "denoise" else 1
    if isinstance(ensemble, bool) or not isinstance(ensemble, numbers.Integral):
        raise TypeError(f"ensemble must be an integer or 'auto', got {ensemble!r}")
    if not 1 <= ensemble <= MAX_ENSEMBLE:
        raise ValueError(f"ensemble must be from 1 to {MAX_ENSEMBLE} networks, got {ensemble}")
    return int(ensemble)


def _check_tile_size(tile_size: object) -> None:
    if tile_size is None or tile_size == "auto":
        return
    if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral):
        raise TypeError(f"tile_size must be an integer, 'auto' or None, got {tile_size!r}")
    if tile_size < MIN_TILE:
        raise ValueError(f"tile_size must be >= {MIN_TILE} pixels, got {tile_size}; tiles of 128 to 512 work well")


#: Bytes per canvas pixel and channel of width that no network exceeds (measured peaks:
#: 67-225, ResNet at full resolution the most; benchmarks/memory_estimate.py), plus a
#: constant: below this bound a fit surely fits and the exact estimate is skipped.
CRUDE_BYTES_PER_PIXEL_CHANNEL = 300
CRUDE_CONSTANT = 256 * 2**20


def _plan_memory(
    shape: tuple[int, ...],
    tile_size: int | str | None,
    factor: int,
    in_channels: int | None,
    options: dict[str, Any],
) -> int | None:
    """The tile side to use: ``tile_size``, or for "auto" the largest that fits (None:
    whole planes). Raises MemoryError, with the estimate, the memory available and
    what to do, when a fit would not fit in memory — before anything is allocated."""
    import torch

    from .fit import canvas_geometry
    from .memory import advice, available_bytes, estimate_fit_bytes, largest_tile, usable_bytes
    from .networks import build_network, input_channels

    network, width, device = options["network"], int(options["width"]), options["device"]
    channels, *spatial = shape
    ndim = len(spatial)
    net_options: dict[str, Any] = {}
    if ndim == 3:
        net_options = {"spatial_dims": 3, "z_size": spatial[0], "anisotropy": options.get("anisotropy", 1.0)}
    z_channels = in_channels or input_channels(network, width)
    with torch.device("meta"):
        net = build_network(network, z_channels, channels, width, **net_options)
    scales = (1,) * (ndim - 2) + (factor, factor)

    def tile_shape(side: int | None) -> tuple[int, ...]:
        return tuple(spatial) if side is None else (*spatial[:-2], *(min(side, n) for n in spatial[-2:]))

    def canvas(side: int | None) -> tuple[int, ...]:
        padded, _ = canvas_geometry(tile_shape(side), net, scales)
        return tuple(c * f for c, f in zip(padded, scales, strict=True))

    members = int(options.get("ensemble", 1))

    def need(side: int | None) -> int:
        # Members multiply every activation, weight and optimiser state.
        return members * estimate_fit_bytes(network, width, z_channels, channels, canvas(side), device, **net_options)

    side = tile_size if isinstance(tile_size, int) else None
    available = available_bytes(device)
    budget = usable_bytes(available)
    crude = members * CRUDE_BYTES_PER_PIXEL_CHANNEL * math.prod(canvas(side)) * max(width, z_channels) + CRUDE_CONSTANT
    if crude <= budget:
        return side
    estimate = need(side)
    if estimate <= budget:
        return side
    size = "x".join(map(str, tile_shape(side)))
    what = f"a {'tile' if side else 'plane'} of {size} pixels at width {width} (network {network!r})"
    if side is not None:
        raise MemoryError(advice(estimate, available, what, device=device) + " Pass a smaller tile_size.")
    depth = canvas(None)[0] if ndim == 3 else None
    try:
        fitting = (
            largest_tile(
                network, width, z_channels, channels, budget, device, spatial_dims=ndim, depth=depth, **net_options
            )
            // factor
        )
    except MemoryError:
        fitting = None
    if fitting is not None and fitting < MIN_TILE:
        fitting = None  # even the smallest tile does not fit: tiles are no remedy
    if tile_size == "auto" and fitting is not None:
        return fitting
    first = f"use a smaller scale than {factor}" if factor > 1 else None
    raise MemoryError(advice(estimate, available, what, device=device, tile_size=fitting, first=first))


def estimate_noise(
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    noise: str = "auto",
    gain: float | None = None,
    offset: float | None = None,
) -> NoiseModel:
    """Measure the noise of ``image``: what ``denoise`` assumes, without fitting.

    Parameters
    ----------
    image : ndarray, shape (..., H, W) or (..., H, W, C) with ``channel_axis``
        A noisy image or stack (all planes are taken to come from one camera).
    channel_axis : int or None
    noise, gain, offset
        As for ``denoise``: what is known; the rest is estimated.

    Returns
    -------
    napari_dip.noise.NoiseModel
        ``kind`` ("gaussian" or "poisson"), ``gain`` (counts per photon), ``offset``,
        ``sigma`` (Gaussian), ``read``; ``describe()`` gives one line.
    """
    from .noise import estimate_noise as measure

    check_noise("denoise", noise, gain, offset)
    data, masked = _unmask(image, "image")
    user = as_image(data, "image")
    standard, layout = _standard(user, channel_axis, 2, "image")
    check_finite(standard, "image")
    known = None if masked is None else ~_masked_pixels(masked, layout.channel_axis, 2)
    return measure(standard, known, noise, gain, offset)


@_doc
def denoise(
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    volumetric: bool = False,
    spacing: tuple[float, float, float] | None = None,
    tile_size: int | str | None = None,
    warm_start: bool = True,
    iterations: int | None = None,
    network: str = "skip",
    width: int = 128,
    lr: float | None = 0.01,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
    precision: str = "auto",
    noise: str = "auto",
    gain: float | None = None,
    offset: float | None = None,
    tv: float | str = "auto",
    ensemble: int | str = "auto",
    dtype: object = None,
) -> np.ndarray:
    """Denoise an image with a Deep Image Prior.

    Fits ``f(z)`` to the noisy image with E = ||x - x̂||², perturbing z with fresh
    noise (std 1/30) each step and averaging the outputs (EMA 0.99, normalised).
    Photon-limited images and 16-bit camera counts get settings measured for them
    (``fit.photon_options``).
    Stopping early is the regulariser: too many iterations fit the noise back.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C) with ``channel_axis``
        The noisy image; any integer or float dtype. A masked array's masked
        values are left out of the fit and filled in.
    noise : {"auto", "gaussian", "poisson"}
        The noise model. "poisson": a camera's photon (Poisson) plus read (Gaussian)
        noise, whose variance grows with the signal; the fit then runs on the
        variance-stabilised image (generalized Anscombe transform), so dark regions
        weigh as much as their noise deserves (its stopping rule keeps no rise,
        ``napari_dip.fit.STABILISED_RISE``). "gaussian": the same noise everywhere.
        "auto" (default) measures the noise against the signal level in the image
        (``napari_dip.noise.estimate_noise``) and reports it (``Job.noise``); it fits
        the variance-stabilised image where photon noise holds 50 photons or more at
        the bright end of a single 2-D image (``napari_dip.noise.AUTO_STABILISE_PHOTONS``),
        else the plain squared loss, which scored higher (PSNR) on dimmer photon-limited
        images and on a bright stack in our benchmark.
    gain, offset : float, optional
        The camera's counts per photon and counts at zero light, for photon noise;
        estimated from the image when not given.
    tv : float or "auto"
        Weight of a total-variation term added to the loss (DIP-TV), in noise stds (the
        measured or given noise): flatter backgrounds and cleaner edges. "auto": 0.3
        (``napari_dip.fit.DENOISE_TV``) for photon-limited images and camera counts
        (16-bit), which gain 0.7 dB from it in our benchmark; for other images with
        Gaussian noise 0.1 where the noise is strong (std from 8 % of the value range
        on; none under 5 %, where texture loses from it; ``napari_dip.fit.gaussian_tv``),
        which gained 0.2 dB at sigma 25-50 of 255; 0: the paper's loss alone.
    ensemble : int or "auto"
        Fit this many networks (own weights and input each) at once, in one batched
        call, each stopped on its own; the result is their mean, which is sharper and
        less noisy than any one of them. "auto": ``napari_dip.fit.default_ensemble``,
        on a CPU or GPU 2 for small 2-D skip-network fits (pixels per plane x width² up
        to 256² x 32², about twice the time of one network), else 1: K members cost
        about K times one network's time on both.
    {common}

    Returns
    -------
    ndarray
        Same shape as ``image``, in the input's value range (uint8: 0-255; others:
        the data's own min-max). Integer dtypes are kept, except float32 for counts
        too coarse for their noise (see ``dtype``); float64 stays float64 and smaller
        floats come back as float32 (as in scikit-image).
    """
    return prepare(
        "denoise",
        image,
        channel_axis=channel_axis,
        volumetric=volumetric,
        spacing=spacing,
        tile_size=tile_size,
        warm_start=warm_start,
        iterations=iterations,
        network=network,
        width=width,
        lr=lr,
        device=device,
        seed=seed,
        callback=callback,
        stopping=stopping,
        precision=precision,
        noise=noise,
        gain=gain,
        offset=offset,
        tv=tv,
        ensemble=ensemble,
        dtype=dtype,
    ).run(callback)


@_doc
def inpaint(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    channel_axis: int | None = None,
    volumetric: bool = False,
    spacing: tuple[float, float, float] | None = None,
    tile_size: int | str | None = None,
    warm_start: bool = True,
    iterations: int | None = 5000,
    network: str = "skip",
    width: int = 128,
    lr: float | None = 0.01,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
    precision: str = "auto",
    dtype: object = None,
) -> np.ndarray:
    """Fill the masked pixels of an image with a Deep Image Prior.

    Fits ``f(z)`` to the known pixels only, E = ||(x - x̂)·m||²; known pixels
    are returned unchanged, missing ones come from the network.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C) with ``channel_axis``
        The damaged image; values under the mask are ignored. A masked array's
        masked values count as missing too.
    mask : ndarray, shape (H, W), optional
        Nonzero (or True) where pixels are missing and must be filled, as in
        ``skimage.restoration.inpaint_biharmonic`` and napari Labels layers.
        May be left out when ``image`` is a masked array.
    {common}

    Returns
    -------
    ndarray
        Same shape as ``image``, dtype as ``dtype`` says (integers kept, float64
        kept, smaller floats as float32); the known pixels exactly as given.
    """
    return prepare(
        "inpaint",
        image,
        mask=mask,
        channel_axis=channel_axis,
        volumetric=volumetric,
        spacing=spacing,
        tile_size=tile_size,
        warm_start=warm_start,
        iterations=iterations,
        network=network,
        width=width,
        lr=lr,
        device=device,
        seed=seed,
        callback=callback,
        stopping=stopping,
        precision=precision,
        dtype=dtype,
    ).run(callback)


@_doc
def super_resolve(
    image: np.ndarray,
    scale: int = 4,
    *,
    channel_axis: int | None = None,
    volumetric: bool = False,
    spacing: tuple[float, float, float] | None = None,
    tile_size: int | str | None = None,
    warm_start: bool = True,
    iterations: int | None = None,
    network: str = "skip",
    width: int = 128,
    lr: float | None = 0.01,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
    precision: str = "auto",
    dtype: object = None,
) -> np.ndarray:
    """Upsample an image ``scale`` times per spatial axis with a Deep Image Prior.

    Fits the high-resolution ``x = f(z)`` so that its Lanczos2 downsampling d(x)
    matches the image: E = ||d(x) - x̂||².

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C) with ``channel_axis``
        The low-resolution image.
    scale : int
        Integer factor >= 2 (the paper uses 4 and 8).
    {common}
    Notes
    -----
    ``iterations=None`` runs the paper's count for the factor: 2000 up to x4,
    4000 from x8.

    Returns
    -------
    ndarray, shape (H·scale, W·scale[, C])
        dtype as ``dtype`` says (integers kept, float64 kept, smaller floats as float32).
    """
    return prepare(
        "super-resolve",
        image,
        scale=scale,
        channel_axis=channel_axis,
        volumetric=volumetric,
        spacing=spacing,
        tile_size=tile_size,
        warm_start=warm_start,
        iterations=iterations,
        network=network,
        width=width,
        lr=lr,
        device=device,
        seed=seed,
        callback=callback,
        stopping=stopping,
        precision=precision,
        dtype=dtype,
    ).run(callback)


@_doc
def flash_no_flash(
    flash: np.ndarray,
    no_flash: np.ndarray,
    *,
    channel_axis: int | None = None,
    volumetric: bool = False,
    spacing: tuple[float, float, float] | None = None,
    tile_size: int | str | None = None,
    warm_start: bool = True,
    iterations: int | None = 600,
    network: str = "skip",
    width: int = 128,
    lr: float | None = 0.1,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
    precision: str = "auto",
    dtype: object = None,
) -> np.ndarray:
    """Restore a no-flash photograph guided by a flash photograph of the scene.

    The flash image is the network input z and the no-flash image the target:
    the output keeps the no-flash lighting with the flash image's low noise.

    Parameters
    ----------
    flash : ndarray, shape (H, W) or (H, W, C) with ``channel_axis``
        The flash image (sharp, low noise, harsh light).
    no_flash : ndarray, same shape as ``flash``
        The no-flash image (ambient light, noisy).
    {common}

    Returns
    -------
    ndarray
        Same shape as ``no_flash``, dtype as ``dtype`` says (that of ``no_flash`` by default).
    """
    return prepare(
        "flash-no-flash",
        no_flash,
        flash=flash,
        channel_axis=channel_axis,
        volumetric=volumetric,
        spacing=spacing,
        tile_size=tile_size,
        warm_start=warm_start,
        iterations=iterations,
        network=network,
        width=width,
        lr=lr,
        device=device,
        seed=seed,
        callback=callback,
        stopping=stopping,
        precision=precision,
        dtype=dtype,
    ).run(callback)
