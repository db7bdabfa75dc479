"""napari layers in and out of a fit, without Qt: what to restore of a layer (one
plane, every plane, or the whole volume), and the geometry and name of the result
layer so that it overlays the input. The widget calls these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SUFFIX = {
    "denoise": "denoised",
    "inpaint": "inpainted",
    "super-resolve": "super-resolved",
    "flash-no-flash": "flash/no-flash",
}
#: What to restore of a layer with more than two spatial axes.
MODES = ("plane", "planes", "volume")
MODE_LABELS = {"plane": "this plane", "planes": "every plane", "volume": "whole volume"}
DEFAULT_MODE = "planes"


@dataclass(frozen=True)
class Selection:
    """The data to restore from one layer and how the engine is to read it."""

    data: np.ndarray
    channel_axis: int | None
    #: "plane", "planes" or "volume"; None for a 2-D layer (restored whole).
    mode: str | None = None
    #: "this plane": index of the leading (non-displayed) axes of the plane.
    index: tuple[int, ...] = ()
    #: "whole volume": the (Z, Y, X) voxel size, from the layer's scale.
    spacing: tuple[float, float, float] | None = None

    @property
    def volumetric(self) -> bool:
        return self.mode == "volume"


@dataclass
class Output:
    """What the result layer inherits from the input layer, captured at the start
    so that the input may be removed or changed while the fit runs."""

    name: str
    #: Layer keywords; ``scale`` and ``translate`` span all of the layer's axes.
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Leading size-1 axes the fit's result lacks ("this plane" of a stack).
    lead: int = 0
    #: Stack modes: shape of the axes restored one after another (empty: one unit).
    plane_shape: tuple[int, ...] = ()
    #: What one of those is called: "plane" or "volume".
    unit: str = "plane"

    @property
    def planes(self) -> int:
        return int(np.prod(self.plane_shape))

    def full(self, data: np.ndarray) -> np.ndarray:
        """The fit's result with the layer's number of axes."""
        return data.reshape((1,) * self.lead + data.shape)

    def plane_layer(self, data: np.ndarray, plane: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
        """Data and keywords of a layer holding only plane ``plane`` (flat index;
        one plane's data as ``Job.plane_to_user`` gives it) at its own position."""
        index = np.unravel_index(plane, self.plane_shape) if self.plane_shape else ()
        data = data.reshape((1,) * (len(index) + self.lead) + data.shape)
        translate = np.asarray(self.kwargs["translate"], dtype=float)
        translate[: len(index)] += np.asarray(index) * np.asarray(self.kwargs["scale"], dtype=float)[: len(index)]
        return data, {**self.kwargs, "translate": tuple(translate)}

    def keep_planes(self, data: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The stack ``data`` with the planes not in ``done`` ((P,) bool) set to 0."""
        keep = np.asarray(done, bool).reshape(self.plane_shape + (1,) * (data.ndim - len(self.plane_shape)))
        return np.where(keep, data, np.zeros((), data.dtype))


def spatial_ndim(layer: Any) -> int:
    return layer.data.ndim - (1 if getattr(layer, "rgb", False) else 0)


def modes_for(layer: Any) -> tuple[str, ...]:
    """The modes ``layer`` offers: none for a 2-D layer (it is restored whole)."""
    if layer is None or spatial_ndim(layer) <= 2:
        return ()
    return MODES


def _check_not_multiscale(layer: Any) -> None:
    if getattr(layer, "multiscale", False):
        raise ValueError(
            f"layer {layer.name!r} is multiscale (an image pyramid), too large to restore at once; "
            "crop a region into a new layer and restore that"
        )


def read(data: Any) -> np.ndarray:
    """``data`` as a numpy array of its own: a copy of a numpy array (the layer may
    change during the fit), lazy data (dask, zarr) read in full."""
    if isinstance(data, np.ndarray):
        return data.copy()
    array = np.asarray(data)
    return array if array.flags.owndata else array.copy()


def current_plane(layer: Any, world_point: Any = None) -> Selection:
    """The plane of ``layer`` to restore: all of it when 2-D, else the plane shown at
    ``world_point`` (the viewer's ``dims.point``). A copy: the layer may change
    during the fit. Lazy (dask, zarr) data is read for that plane only."""
    _check_not_multiscale(layer)
    data = layer.data
    channel_axis = -1 if getattr(layer, "rgb", False) else None
    extra = spatial_ndim(layer) - 2
    if extra <= 0:
        return Selection(read(data), channel_axis)
    if world_point is None:
        index = tuple(0 for _ in range(extra))
    else:
        position = np.asarray(layer.world_to_data(np.asarray(world_point)[-spatial_ndim(layer) :]))
        leading = zip(position[:extra], data.shape[:extra], strict=True)
        index = tuple(int(np.clip(round(p), 0, n - 1)) for p, n in leading)
    return Selection(read(data[index]), channel_axis, "plane", index)


def select(layer: Any, mode: str | None, world_point: Any = None) -> Selection:
    """What to restore of ``layer`` in ``mode`` (ignored for a 2-D layer): the plane
    on display, every plane, or the whole volume (the last three spatial axes, with
    the layer's scale as the voxel spacing)."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode is None or mode == "plane" or not modes_for(layer):
        return current_plane(layer, world_point)
    _check_not_multiscale(layer)
    channel_axis = -1 if getattr(layer, "rgb", False) else None
    spacing = None
    if mode == "volume":
        spacing = tuple(float(s) for s in np.asarray(layer.scale)[-3:])
    return Selection(read(layer.data), channel_axis, mode, spacing=spacing)


def companion(layer: Any, selection: Selection, world_point: Any = None) -> np.ndarray:
    """The data of a second layer (mask, flash image) that goes with ``selection``:
    its plane on display for "this plane" (or a 2-D layer whole), else all of it."""
    if selection.mode in (None, "plane"):
        return current_plane(layer, world_point).data
    _check_not_multiscale(layer)
    return read(layer.data)


def output_for(layer: Any, task: str, selection: Selection, scale: int = 1) -> Output:
    """Name and layer keywords of the result of ``task`` on ``selection`` of ``layer``.

    Keeps the input's scale, translate, metadata, colormap and contrast limits over
    all of its axes, so the result overlays the input: for super-resolution the Y, X
    pixel size is divided by ``scale`` and the origin shifted so that the new pixel
    centres fall where they lie in the input; a single plane of a stack keeps its
    leading axes (size 1), translated to where the plane lies.
    """
    layer_scale = np.asarray(layer.scale, dtype=float).copy()
    translate = np.asarray(layer.translate, dtype=float).copy()
    if scale != 1:
        translate[-2:] = translate[-2:] + layer_scale[-2:] * (1 / (2 * scale) - 0.5)
        layer_scale[-2:] = layer_scale[-2:] / scale
    name = f"{layer.name} {SUFFIX[task]}"
    if task == "super-resolve":
        name += f" x{scale}"
    index = selection.index
    if index:
        name += f" [plane {', '.join(map(str, index))}]"
        translate[: len(index)] += np.asarray(index) * layer_scale[: len(index)]
    kwargs: dict[str, Any] = {
        "scale": tuple(layer_scale),
        "translate": tuple(translate),
        "metadata": dict(getattr(layer, "metadata", {}) or {}),
        "rgb": bool(getattr(layer, "rgb", False)),
        "blending": getattr(layer, "blending", "translucent"),
    }
    if not kwargs["rgb"]:
        kwargs["contrast_limits"] = tuple(layer.contrast_limits)
        kwargs["colormap"] = layer.colormap.name
    plane_shape: tuple[int, ...] = ()
    if selection.mode in ("planes", "volume"):
        plane_shape = tuple(layer.data.shape[: spatial_ndim(layer) - (3 if selection.volumetric else 2)])
    unit = "volume" if selection.volumetric else "plane"
    return Output(name, kwargs, len(index), plane_shape, unit)


def plane_ranges(done: np.ndarray) -> str:
    """1-based runs of the True entries of ``done``: "1-3, 5"."""
    flat = np.flatnonzero(done) + 1
    runs: list[list[int]] = []
    for i in flat.tolist():
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
