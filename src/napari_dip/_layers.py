"""napari layers in and out of a fit, without Qt: which plane to restore, and
the geometry and name of the result layer. The widget calls these."""

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


@dataclass(frozen=True)
class Plane:
    """The 2-D (plus channels) data to restore from one layer."""

    data: np.ndarray
    channel_axis: int | None
    #: Index of the leading (non-displayed) axes, empty for a 2-D layer.
    index: tuple[int, ...] = ()


@dataclass
class Output:
    """What the result layer inherits from the input layer, captured at the start
    so that the input may be removed or changed while the fit runs."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def spatial_ndim(layer: Any) -> int:
    return layer.data.ndim - (1 if getattr(layer, "rgb", False) else 0)


def current_plane(layer: Any, world_point: Any = None) -> Plane:
    """The plane of ``layer`` to restore: all of it when 2-D, else the plane shown at
    ``world_point`` (the viewer's ``dims.point``). A copy: the layer may change
    during the fit. Lazy (dask, zarr) data is read for that plane only."""
    if getattr(layer, "multiscale", False):
        raise ValueError(
            f"layer {layer.name!r} is multiscale (an image pyramid), too large to restore at once; "
            "crop a region into a new layer and restore that"
        )
    data = layer.data
    channel_axis = -1 if getattr(layer, "rgb", False) else None
    extra = spatial_ndim(layer) - 2
    if extra <= 0:
        return Plane(np.array(data, copy=True), channel_axis)
    if world_point is None:
        index = tuple(0 for _ in range(extra))
    else:
        position = np.asarray(layer.world_to_data(np.asarray(world_point)[-spatial_ndim(layer) :]))
        leading = zip(position[:extra], data.shape[:extra], strict=True)
        index = tuple(int(np.clip(round(p), 0, n - 1)) for p, n in leading)
    return Plane(np.array(data[index], copy=True), channel_axis, index)


def output_for(layer: Any, task: str, plane: Plane, scale: int = 1) -> Output:
    """Name and layer keywords of the result of ``task`` on ``plane`` of ``layer``.

    Keeps the input's scale, translate, metadata, colormap and contrast limits; for
    super-resolution the pixel size is divided by ``scale`` and the origin shifted so
    that the new pixel centres fall where they lie in the input (it overlays).
    """
    layer_scale = np.asarray(layer.scale, dtype=float)[-2:]
    translate = np.asarray(layer.translate, dtype=float)[-2:]
    if scale != 1:
        translate = translate + layer_scale * (1 / (2 * scale) - 0.5)
        layer_scale = layer_scale / scale
    name = f"{layer.name} {SUFFIX[task]}"
    if task == "super-resolve":
        name += f" x{scale}"
    if plane.index:
        name += f" [plane {', '.join(map(str, plane.index))}]"
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
    return Output(name, kwargs)
