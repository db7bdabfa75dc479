"""Reading and writing image files for the CLI: TIFF via tifffile, the rest via imageio."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TIFF = (".tif", ".tiff")
#: Formats imageio writes: (dtype, channels) they hold, channels 1 meaning a 2-D image.
WRITABLE = {
    ".png": {("uint8", 1), ("uint8", 3), ("uint8", 4), ("uint16", 1)},
    ".jpg": {("uint8", 1), ("uint8", 3)},
    ".jpeg": {("uint8", 1), ("uint8", 3)},
    ".bmp": {("uint8", 1), ("uint8", 3), ("uint8", 4)},
}


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        if path.suffix.lower() in TIFF:
            import tifffile

            return tifffile.imread(path)
        import imageio.v3 as iio

        return iio.imread(path)
    except Exception as err:  # the readers raise many types; the user needs one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read {path} as an image: {reason}") from err


def check_writable(path: str | Path, dtype: np.dtype, shape: tuple[int, ...] = ()) -> None:
    """Fail before a long fit if ``path`` cannot take an image of ``dtype`` and ``shape``
    (channels last; the spatial size does not matter)."""
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    suffix = path.suffix.lower()
    if suffix in TIFF:
        return
    if suffix not in WRITABLE:
        raise ValueError(f"unsupported output format {suffix or '(none)'!r}; use .tif, .png or .jpg")
    name = np.dtype(dtype).name
    channels = shape[-1] if len(shape) == 3 else 1
    if (name, channels) not in WRITABLE[suffix]:
        what = f"{name} images" if len(shape) != 3 else f"{name} images with {channels} channels"
        raise ValueError(f"{suffix} cannot store {what}; write a .tif instead")


def write_image(path: str | Path, image: np.ndarray) -> None:
    path = Path(path)
    check_writable(path, image.dtype, image.shape)
    if path.suffix.lower() in TIFF:
        import tifffile

        # Say how to store it: tifffile's guess for (C, H, W) floats is deprecated.
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
        tifffile.imwrite(path, image, photometric="rgb" if rgb else "minisblack")
    else:
        import imageio.v3 as iio

        iio.imwrite(path, image)


def guess_channel_axis(image: np.ndarray) -> int | None:
    """2-D: None; 3-D with 3 or 4 values on the last axis (RGB/RGBA): -1.

    Anything else is ambiguous and must be given with ``--channel-axis``.
    """
    if image.ndim == 2:
        return None
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return -1
    raise ValueError(f"cannot tell the channel axis of an image of shape {image.shape}; pass --channel-axis")
