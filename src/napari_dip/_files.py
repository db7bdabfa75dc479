"""Image files in, restored image files out: one file's journey, shared by the CLI's
single-file commands and the batch runner. Reading follows the file's axis metadata
(channel axis, Z spacing); writing keeps the axes and pixel sizes and is atomic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._io import OME_SUFFIXES, TIFF, ImageFile, check_writable, read_image, read_image_file, write_image

if TYPE_CHECKING:
    from ._api import Callback, Job


@dataclass(frozen=True)
class Source:
    """An image file read for restoration, with what its metadata decided."""

    file: ImageFile
    channel_axis: int | None
    #: (Z, Y, X) voxel size for volumetric fits, or None.
    spacing: tuple[float, float, float] | None

    @property
    def data(self) -> np.ndarray:
        return self.file.data


def open_source(
    path: str | Path,
    *,
    channel_axis: int | None = None,
    volumetric: bool = False,
    spacing: tuple[float, float, float] | None = None,
) -> Source:
    """Read ``path``. The channel axis is ``channel_axis``, else the file's C axis, else
    RGB(A) on the last axis, else none; with axis metadata the fitted axes must be
    (Z,) Y, X. A volumetric fit's spacing is ``spacing``, else the file's."""
    file = read_image_file(path)
    ndim = file.data.ndim
    if channel_axis is not None and not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel axis {channel_axis} is out of range for {path}, an image of shape {file.data.shape}")
    axis = channel_axis
    if axis is None:
        if file.axes is not None and "C" in file.axes:
            axis = file.axes.index("C")
        elif file.data.ndim >= 3 and file.data.shape[-1] in (3, 4):
            axis = -1
        if file.axes is not None:
            spatial = [a for i, a in enumerate(file.axes) if axis is None or i != axis % len(file.axes)]
            wanted = "ZYX" if volumetric else "YX"
            if "".join(spatial[-len(wanted) :]) != wanted:
                raise ValueError(
                    f"the file's axes are {file.axes}: the last axes must be {', '.join(wanted)}"
                    + (" (no Z axis for a volumetric fit)" if volumetric else "")
                )
    if volumetric and spacing is None and file.spacing and all(k in file.spacing for k in "ZYX"):
        spacing = tuple(file.spacing[k] for k in "ZYX")
    return Source(file, axis, tuple(spacing) if volumetric and spacing is not None else None)


def dtype_for(output: str | Path, dtype: str | None) -> str | None:
    """``dtype=`` for a result written to ``output``: PNG and JPEG hold integers only, so
    there the per-image choice (None or "auto") keeps the input's dtype."""
    if dtype in (None, "auto"):
        return None if Path(output).suffix.lower() in TIFF else "input"
    return dtype


def check_format(output: str | Path, image: np.ndarray, channel_axis: int | None, dtype: str | None = None) -> None:
    """Before the fit: the format of ``output`` can hold the restoration of ``image``
    returned as ``dtype`` (None or "input": the input's, ``output_dtype``)."""
    from ._convert import as_image, output_dtype

    shape = image.shape if channel_axis is None else np.moveaxis(image, channel_axis, -1).shape
    wanted = output_dtype(as_image(image).dtype) if dtype in (None, "input") else np.dtype(dtype)
    check_writable(output, wanted, shape)


def known_or_missing(mask: np.ndarray, known: bool) -> np.ndarray:
    """A mask image as missing pixels (nonzero); ``known``: it marks the known ones instead."""
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):  # an RGB(A) mask image: any colour counts
        mask = mask[..., :3].max(axis=-1)
    return (mask == 0) if known else mask


def write_result(output: str | Path, result: np.ndarray, source: Source, *, scale: int = 1) -> None:
    """Write ``result`` (in the source's layout) atomically. TIFF keeps the source's axes
    and pixel sizes (divided by ``scale`` in Y and X after super-resolution); PNG and
    JPEG take channels last."""
    file = source.file
    if Path(output).suffix.lower() in TIFF:
        spacing = {k: v / scale if k in "YX" else v for k, v in file.spacing.items()}
        axes = file.axes if file.axes is not None and len(file.axes) == result.ndim else None
        ome = (file.ome or str(output).lower().endswith(OME_SUFFIXES)) and axes is not None
        write_image(output, result, axes=axes, spacing=spacing if axes else None, ome=ome)
        return
    if source.channel_axis is not None:
        result = np.moveaxis(result, source.channel_axis, -1)
    write_image(output, result)


def restore_file(
    task: str,
    source_path: str | Path,
    output: str | Path,
    *,
    mask: str | Path | None = None,
    mask_known: bool = False,
    flash: str | Path | None = None,
    channel_axis: int | None = None,
    volumetric: bool = False,
    spacing: tuple[float, float, float] | None = None,
    scale: int = 4,
    callback: Callback | None = None,
    **options: Any,
) -> tuple[np.ndarray, Job]:
    """Restore one file into ``output`` (``task``'s measured image; ``flash`` for
    flash/no-flash, ``mask`` for inpainting); ``options`` go to ``napari_dip._api.prepare``.
    Returns the result and the job (its schedule says how each fit ended)."""
    from ._api import prepare

    guide = None if flash is None else open_source(flash, channel_axis=channel_axis, volumetric=volumetric)
    source = open_source(
        source_path,
        channel_axis=channel_axis if guide is None else guide.channel_axis,
        volumetric=volumetric,
        spacing=spacing,
    )
    options["dtype"] = dtype_for(output, options.get("dtype"))
    check_format(output, source.data, source.channel_axis, options["dtype"])
    kwargs: dict[str, Any] = {"channel_axis": source.channel_axis, "volumetric": volumetric}
    kwargs["spacing"] = source.spacing
    if task == "inpaint":
        if mask is None:
            raise ValueError("inpainting needs a mask file")
        kwargs["mask"] = known_or_missing(read_image(mask), mask_known)
    if task == "super-resolve":
        kwargs["scale"] = scale
    if guide is not None:
        kwargs["flash"] = guide.data
    job = prepare(task, source.data, **kwargs, **options)
    result = job.run(callback)
    write_result(output, result, guide or source, scale=scale if task == "super-resolve" else 1)
    return result, job
