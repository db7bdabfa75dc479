"""numpy API: validate, convert to [0, 1], drive the fit generator, convert back.

torch is imported only when a function runs, so ``import napari_dip`` is fast.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._convert import (
    ValueMap,
    as_image,
    check_finite,
    from_channels_first,
    to_channels_first,
    to_unit,
    value_map,
)

if TYPE_CHECKING:
    from .fit import Fit, Progress

__all__ = ["Job", "denoise", "flash_no_flash", "inpaint", "prepare", "super_resolve"]

Callback = Callable[["Progress"], Any]
#: Tasks that stop automatically by default: their target is noisy, so the fit
#: overfits it in the end. Inpainting and super-resolution of clean images do not.
AUTO_STOP_TASKS = ("denoise",)
#: Under a stopping rule, the cap is this many times the task's default count.
AUTO_STOP_CAP = 2
MIN_SIDE = 4

_COMMON_DOC = """
    channel_axis : int or None, optional
        Axis of ``image`` that holds channels (RGB, RGBA or any number). ``None``
        (default) means a 2-D grey image.
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
    seed : int or None
        Seeds weights and noise; a fixed seed gives identical output on CPU.
    callback : callable, optional
        Called with a ``napari_dip.fit.Progress`` after each iteration; returning
        ``False`` stops the fit and returns the averaged result so far (under a
        stopping rule: the best one so far).
    stopping : {"auto", "wmv", "emv", "validation"} or None
        Automatic early stopping (``napari_dip.stopping``): the fit ends when the
        rule finds the output at its best and returns the averaged output of that
        iteration. "auto" uses the default rule when ``iterations`` is None for
        denoising, and no rule otherwise. A rule name always applies, with
        ``iterations`` as the cap. ``None`` never stops early.
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


def _planes(image: object, channel_axis: int | None, name: str = "image") -> np.ndarray:
    """``image`` viewed as (C, H, W), checked for type, layout and size."""
    planes = to_channels_first(as_image(image, name), channel_axis, name)
    if min(planes.shape[1:]) < MIN_SIDE:
        raise ValueError(f"{name} is too small: {planes.shape[1:]} pixels; each spatial side needs >= {MIN_SIDE}")
    return planes


def _to_unit(planes: np.ndarray, name: str = "image", ignore: np.ndarray | None = None) -> tuple[np.ndarray, ValueMap]:
    """(C, H, W) float32 in [0, 1] and the map back to the user's values. Pixels under
    ``ignore`` (H, W) are neither checked nor measured, and come out as 0."""
    values = planes if ignore is None else planes[:, ~ignore]
    check_finite(values, name)
    vmap = value_map(values)
    if ignore is not None:  # the offset maps to exactly 0
        planes = np.where(ignore, vmap.offset, planes)
    return to_unit(planes, vmap), vmap


def _missing_pixels(mask: object, spatial_shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask) if isinstance(mask, (list, tuple)) else mask
    missing = mask if isinstance(mask, np.ndarray) and mask.dtype == bool else as_image(mask, "mask")
    if missing.shape != spatial_shape:
        raise ValueError(
            f"mask shape {missing.shape} does not match the image's spatial shape {spatial_shape}; "
            "the mask must be (H, W), nonzero where pixels are missing"
        )
    check_finite(missing, "mask")
    missing = missing != 0
    n_missing = int(missing.sum())
    if n_missing == 0:
        raise ValueError("mask is empty: no pixel is marked missing (nonzero), so there is nothing to inpaint")
    if n_missing == missing.size:
        raise ValueError("mask covers the whole image: no known pixel is left to fit; mark only the damaged pixels")
    return missing


def _stopping(task: str, stopping: object, iterations: int | None, factor: int) -> tuple[str | None, int | None]:
    """The rule to use and the iteration count (the cap, under a rule)."""
    from .fit import task_defaults
    from .stopping import DEFAULT_RULE, RULES

    if stopping is not None and stopping != "auto" and stopping not in RULES:
        raise ValueError(f"unknown stopping rule {stopping!r}; choose 'auto', None or one of {', '.join(RULES)}")
    if stopping == "auto":
        stopping = DEFAULT_RULE if iterations is None and task in AUTO_STOP_TASKS else None
    if stopping is not None and iterations is None:
        iterations = AUTO_STOP_CAP * task_defaults(task, factor).iterations
    return stopping, iterations


@dataclass
class Job:
    """A prepared fit plus the conversion of its results back to the user's array."""

    fit: Fit
    value_map: ValueMap
    channel_axis: int | None

    def to_user(self, unit: np.ndarray) -> np.ndarray:
        """A (C, H, W) array in [0, 1] (``fit.result()``, a preview) in the input's dtype and layout."""
        return from_channels_first(self.value_map.to_user(unit), self.channel_axis)

    def result(self) -> np.ndarray:
        return self.to_user(self.fit.result())

    def run(self, callback: Callback | None = None) -> np.ndarray:
        for record in self.fit:
            if callback is not None and callback(record) is False:
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
    iterations: int | None = None,
    network: str = "skip",
    width: int = 128,
    lr: float | None = None,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
    preview_every: int | None = 100,
) -> Job:
    """Validate the inputs of ``task`` and set up its fit; ``image`` is the measured image
    (the no-flash image for flash/no-flash). The napari widget and the functions below use it."""
    from .fit import TASKS, Fit

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "super-resolve" and (isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 2):
        raise ValueError(f"scale must be an integer >= 2 (e.g. 2, 4 or 8), got {scale!r}")
    if task == "flash-no-flash" and network == "deep-decoder":
        raise ValueError(
            "network 'deep-decoder' takes no image input; choose 'skip', 'unet', 'resnet' "
            "or 'encoder-decoder' for flash/no-flash"
        )
    _check_options(iterations, lr, network, width, seed, callback)
    rule, iterations = _stopping(task, stopping, iterations, int(scale) if task == "super-resolve" else 4)
    name = "no_flash" if task == "flash-no-flash" else "image"
    planes = _planes(image, channel_axis, name)
    extra: dict[str, Any] = {}
    missing = None
    if task == "inpaint":
        # Whatever lies under the mask (NaN, a fill value) must not matter.
        missing = _missing_pixels(mask, planes.shape[1:])
        extra["known"] = ~missing
    unit, vmap = _to_unit(planes, name, ignore=missing)
    if task == "super-resolve":
        extra["factor"] = int(scale)
    elif task == "flash-no-flash":
        guide, _ = _to_unit(_planes(flash, channel_axis, "flash"), "flash")
        if guide.shape[1:] != unit.shape[1:]:
            raise ValueError(
                f"flash and no_flash differ in size: {np.shape(flash)} vs {np.shape(image)}; "
                "register and crop them to the same shape"
            )
        extra["guide"] = guide
    fit = Fit(
        task,
        unit,
        network=network,
        width=width,
        iterations=iterations,
        lr=lr,
        device=device,
        seed=seed,
        preview_every=preview_every,
        stopping=rule,
        **extra,
    )
    return Job(fit, vmap, channel_axis)


@_doc
def denoise(
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    iterations: int | None = None,
    network: str = "skip",
    width: int = 128,
    lr: float | None = 0.01,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
) -> np.ndarray:
    """Denoise an image with a Deep Image Prior.

    Fits ``f(z)`` to the noisy image with E = ||x - x̂||², perturbing z with fresh
    noise (std 1/30) each step and averaging the outputs (EMA 0.99). Stopping
    early is the regulariser: too many iterations fit the noise back.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C) with ``channel_axis``
        The noisy image; any integer or float dtype.
    {common}

    Returns
    -------
    ndarray
        Same shape and dtype as ``image`` (floats come back as float32), in the
        input's value range (uint8: 0-255; others: the data's own min-max).
    """
    return prepare(
        "denoise",
        image,
        channel_axis=channel_axis,
        iterations=iterations,
        network=network,
        width=width,
        lr=lr,
        device=device,
        seed=seed,
        callback=callback,
        stopping=stopping,
    ).run(callback)


@_doc
def inpaint(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    channel_axis: int | None = None,
    iterations: int | None = 5000,
    network: str = "skip",
    width: int = 128,
    lr: float | None = 0.01,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
) -> np.ndarray:
    """Fill the masked pixels of an image with a Deep Image Prior.

    Fits ``f(z)`` to the known pixels only, E = ||(x - x̂)·m||²; known pixels
    are returned unchanged, missing ones come from the network.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C) with ``channel_axis``
        The damaged image; values under the mask are ignored.
    mask : ndarray, shape (H, W)
        Nonzero (or True) where pixels are missing and must be filled, as in
        ``skimage.restoration.inpaint_biharmonic`` and napari Labels layers.
    {common}

    Returns
    -------
    ndarray
        Same shape and dtype as ``image``.
    """
    return prepare(
        "inpaint",
        image,
        mask=mask,
        channel_axis=channel_axis,
        iterations=iterations,
        network=network,
        width=width,
        lr=lr,
        device=device,
        seed=seed,
        callback=callback,
        stopping=stopping,
    ).run(callback)


@_doc
def super_resolve(
    image: np.ndarray,
    scale: int = 4,
    *,
    channel_axis: int | None = None,
    iterations: int | None = None,
    network: str = "skip",
    width: int = 128,
    lr: float | None = 0.01,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
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
        Same dtype as ``image``.
    """
    return prepare(
        "super-resolve",
        image,
        scale=scale,
        channel_axis=channel_axis,
        iterations=iterations,
        network=network,
        width=width,
        lr=lr,
        device=device,
        seed=seed,
        callback=callback,
        stopping=stopping,
    ).run(callback)


@_doc
def flash_no_flash(
    flash: np.ndarray,
    no_flash: np.ndarray,
    *,
    channel_axis: int | None = None,
    iterations: int | None = 600,
    network: str = "skip",
    width: int = 128,
    lr: float | None = 0.1,
    device: str = "auto",
    seed: int | None = 0,
    callback: Callback | None = None,
    stopping: str | None = "auto",
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
        Same shape and dtype as ``no_flash``.
    """
    return prepare(
        "flash-no-flash",
        no_flash,
        flash=flash,
        channel_axis=channel_axis,
        iterations=iterations,
        network=network,
        width=width,
        lr=lr,
        device=device,
        seed=seed,
        callback=callback,
        stopping=stopping,
    ).run(callback)
