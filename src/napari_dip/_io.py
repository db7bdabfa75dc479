"""Reading and writing image files for the CLI: TIFF via tifffile, the rest via imageio.

Axes convention: a string with one letter per array axis, from the alphabet ``TZCYXQ``
(time, depth, channel, rows, columns, unknown). TIFF sample axes (tifffile's ``S``, e.g.
RGB) read as ``C``; every other tifffile letter (``I``, ``Q``, ``E``, ...) reads as ``Q``.
``axes is None`` means the file does not say: callers must guess or ask.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TIFF = (".tif", ".tiff")
OME_SUFFIXES = (".ome.tif", ".ome.tiff")
#: Read with imageio.
IMAGEIO = (".png", ".jpg", ".jpeg", ".bmp")
#: Microscopy formats read through the bioio reader plugins (``pip install 'napari-dip[formats]'``);
#: OME-Zarr is a folder.
BIOIO = (".czi", ".nd2", ".lif", ".zarr")
#: Formats imageio writes: (dtype, channels) they hold, channels 1 meaning a 2-D image.
WRITABLE = {
    ".png": {("uint8", 1), ("uint8", 3), ("uint8", 4), ("uint16", 1)},
    ".jpg": {("uint8", 1), ("uint8", 3)},
    ".jpeg": {("uint8", 1), ("uint8", 3)},
    ".bmp": {("uint8", 1), ("uint8", 3), ("uint8", 4)},
}
AXES = "TZCYXQ"
#: Marks the temporary file an output is written to before it is renamed into place.
PARTIAL = ".partial"
#: tifffile writes classic TIFF up to 4 GB; above this, BigTIFF.
BIGTIFF_BYTES = 2**32 - 2**25
#: Length units found in OME and ImageJ metadata -> micrometres.
_UNITS_UM = {
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
}
_IMAGEJ_DTYPES = ("uint8", "uint16", "float32")  # what ImageJ opens as 8-bit, 16-bit and 32-bit


@dataclass(frozen=True)
class ImageFile:
    """An image as read from a file, with what the file says about its axes.

    ``axes``: one letter of ``TZCYXQ`` per axis of ``data``, or None when the file does not
    say. ``spacing``: physical size of a pixel in micrometres per axis letter (only the axes
    the file calibrates, e.g. ``{"Z": 0.5, "Y": 0.1625, "X": 0.1625}``). ``ome``: the file
    is an OME-TIFF.
    """

    data: np.ndarray
    axes: str | None = None
    spacing: dict[str, float] = field(default_factory=dict)
    ome: bool = False


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its type when it has none): what a user reads."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unit_um(unit: Any) -> float | None:
    """Micrometres per ``unit``, or None for pixels, unknown units or no unit."""
    if not isinstance(unit, str):
        return None
    # ImageJ writes the micro sign escaped or as Greek mu, depending on version and platform.
    unit = unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ").replace("\u03bc", "µ")
    return _UNITS_UM.get(unit if unit in ("µm", "Å") else unit.lower())


def _normalise_axes(tiff_axes: str) -> str:
    """tifffile's letters -> ``TZCYXQ``: samples become C unless the file also has C."""
    out = []
    for letter in tiff_axes.upper():
        if letter == "S" and "C" not in tiff_axes.upper():
            letter = "C"
        out.append(letter if letter in "TZCYX" else "Q")
    return "".join(out)


def _ome_spacing(xml: str) -> dict[str, float]:
    root = ET.fromstring(xml)
    # The first Image's Pixels describes series 0; match on the local name to ignore the schema version.
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    spacing = {}
    for axis in "ZYX":
        size = pixels.get(f"PhysicalSize{axis}")
        factor = _unit_um(pixels.get(f"PhysicalSize{axis}Unit", "µm"))  # µm is the schema's default
        if size is not None and factor is not None and float(size) > 0:
            spacing[axis] = float(size) * factor
    return spacing


def _imagej_spacing(tif: Any, meta: dict[str, Any]) -> dict[str, float]:
    factor = _unit_um(meta.get("unit"))
    if factor is None:  # uncalibrated (pixels) or a unit we cannot convert
        return {}
    spacing = {}
    if isinstance(meta.get("spacing"), (int, float)) and meta["spacing"] > 0:
        spacing["Z"] = float(meta["spacing"]) * factor
    tags = tif.pages[0].tags
    for axis, name in (("X", "XResolution"), ("Y", "YResolution")):
        tag = tags.get(name)
        if tag is not None:
            num, den = tag.value  # pixels per unit, as a rational
            if num > 0 and den > 0 and num != den:  # 1/1 is ImageJ's "not calibrated"
                spacing[axis] = den / num * factor
    return spacing


def _shaped_spacing(meta: dict[str, Any]) -> dict[str, float]:
    spacing = meta.get("spacing_um")
    if not isinstance(spacing, dict):
        return {}
    return {str(k): float(v) for k, v in spacing.items() if isinstance(v, (int, float)) and v > 0}


def _read_tiff(path: Path) -> ImageFile:
    import logging

    import tifffile

    # tifffile logs what it finds odd; a damaged file must end in one error line, not two.
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return _read_tiff_file(tifffile, path)
    finally:
        logger.setLevel(level)


def _read_tiff_file(tifffile: Any, path: Path) -> ImageFile:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data = series.asarray()
        raw_axes = series.axes
        axes: str | None = None
        spacing: dict[str, float] = {}
        shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else {}
        if tif.is_ome and tif.ome_metadata:
            axes = _normalise_axes(raw_axes)
            spacing = _ome_spacing(tif.ome_metadata)
        elif tif.is_imagej and tif.imagej_metadata is not None:
            axes = _normalise_axes(raw_axes)
            spacing = _imagej_spacing(tif, tif.imagej_metadata)
        elif isinstance(shaped, dict) and isinstance(shaped.get("axes"), str):
            # tifffile's own JSON description: it names the axes only when the writer said them.
            axes = _normalise_axes(raw_axes)
            spacing = _shaped_spacing(shaped)
        elif len(tif.pages) == 1 and raw_axes in ("YX", "YXS"):
            # One page: rows, columns and the SamplesPerPixel tag are facts, not guesses.
            axes = _normalise_axes(raw_axes)
        ome = bool(tif.is_ome)
    if axes is not None:
        spacing = {k: v for k, v in spacing.items() if k in axes}
    return ImageFile(data=data, axes=axes, spacing=spacing, ome=ome)


def read_image_file(path: str | Path) -> ImageFile:
    """Read the first image (series) of ``path`` with its axes and pixel size when the file says.

    TIFF axes are trusted from OME-XML, ImageJ hyperstack metadata or tifffile's own
    ``axes`` description, and for single-page 2-D/RGB TIFFs; other multi-page TIFFs give
    ``axes=None``. PNG, JPEG etc. give ``"YX"`` or ``"YXC"``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() and suffix != ".zarr":
        raise IsADirectoryError(f"{path} is a folder, not an image file")
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not (path.is_file() or path.is_dir()):  # a FIFO or a device would block or never end
        raise ValueError(f"{path} is not a regular file")
    if suffix in BIOIO:
        return _read_bioio(path)
    try:
        if suffix in TIFF:
            return _read_tiff(path)
        import imageio.v3 as iio

        data = iio.imread(path)
        axes = {2: "YX", 3: "YXC"}.get(data.ndim)  # 4-D: frames of an animation; let the caller decide
        return ImageFile(data=data, axes=axes)
    except Exception as err:  # the readers raise many types; the user needs one line
        raise ValueError(f"cannot read {path} as an image: {one_line(err)}") from err


def is_image_path(path: str | Path) -> bool:
    """Whether ``path``'s name says it is an image this package reads."""
    return Path(path).suffix.lower() in (*TIFF, *IMAGEIO, *BIOIO)


def _read_bioio(path: Path) -> ImageFile:
    """A microscopy file through bioio: its first scene, axes from its dimension order
    (singleton axes dropped), pixel sizes in micrometres."""
    try:
        from bioio import BioImage
    except ImportError:
        raise ValueError(
            f"reading {path.suffix} files needs bioio and its reader: pip install 'napari-dip[formats]'"
        ) from None
    try:
        image = BioImage(path)
        data = np.asarray(image.data)
        order = str(image.dims.order)
        sizes = image.physical_pixel_sizes
    except Exception as err:  # no reader plugin for the format, a damaged file, ...
        raise ValueError(f"cannot read {path} with bioio: {one_line(err)}") from err
    keep = [i for i, a in enumerate(order) if a in "YX" or data.shape[i] > 1]
    data = data.reshape([data.shape[i] for i in keep])
    axes = _normalise_axes("".join(order[i] for i in keep))
    spacing = {k: float(v) for k, v in zip("ZYX", sizes, strict=False) if v and k in axes}
    return ImageFile(data=data, axes=axes, spacing=spacing)


def read_image(path: str | Path) -> np.ndarray:
    """The pixels of ``path`` (see :func:`read_image_file` for the axes)."""
    return read_image_file(path).data


def check_writable(path: str | Path, dtype: np.dtype, shape: tuple[int, ...] = ()) -> None:
    """Fail before a long fit if the format of ``path`` cannot hold an image of ``dtype``
    and ``shape`` (channels last; the spatial size does not matter)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF:
        return
    if suffix not in WRITABLE:
        raise ValueError(f"unsupported output format {suffix or '(none)'!r}; use .tif, .png or .jpg")
    name = np.dtype(dtype).name
    if len(shape) > 3 or (len(shape) == 3 and shape[-1] not in (1, 3, 4)):
        raise ValueError(
            f"{suffix} holds one 2-D image (grey, RGB or RGBA), not an array of shape {tuple(shape)}; "
            "write a .tif instead"
        )
    channels = shape[-1] if len(shape) == 3 else 1
    if (name, channels) not in WRITABLE[suffix]:
        what = f"{name} images" if len(shape) != 3 else f"{name} images with {channels} channels"
        raise ValueError(f"{suffix} cannot store {what}; write a .tif instead")


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path after symlinks, or hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_output(
    path: str | Path, inputs: Sequence[str | Path] = (), overwrite: bool = False, hint: str = "pass overwrite=True"
) -> None:
    """Fail at once, before any long work, unless ``path`` can take a new file: not a
    folder, not one of ``inputs`` (even through a link; never overwritten, whatever
    ``overwrite`` says), not an existing file unless ``overwrite`` (``hint`` says how),
    and its folder exists and takes new files (tried, not guessed from permission bits)."""
    text = os.fspath(path)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output {path} is a folder; name a file in it, e.g. {path / 'restored.tif'}")
    if text.endswith(("/", os.sep)):
        raise ValueError(f"output {text} ends with {text[-1]!r}, which names a folder; name a file")
    for source in inputs:
        if same_file(path, source):
            raise ValueError(f"output {path} is the input {source}; name a new file (inputs are never overwritten)")
    target = Path(os.path.realpath(path))
    folder = target.parent
    if not folder.exists():
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"output folder {folder} is not a folder")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"output {path} exists; {hint} to replace it")
        if not os.access(target, os.W_OK) and target.exists():
            raise PermissionError(f"output {path} is read-only; make it writable or name a new file")
    try:
        _new_partial(target).unlink()
    except OSError as err:
        raise PermissionError(f"cannot write to the folder {folder}: {err.strerror or err}") from err


def _new_partial(target: Path) -> Path:
    """A new empty file beside ``target``, hidden, with its suffix (writers pick the format
    from it), with the permissions a new file gets (umask): writable and readable by us
    whatever ``target``'s mode (``replacing`` gives it that mode once written)."""
    while True:
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}{PARTIAL}{target.suffix}")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return partial


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Write ``path`` atomically: yields a temporary file beside it to write to, which
    replaces ``path`` in one rename once the block succeeds. On an error or an interrupt
    the temporary file is removed and ``path`` stays as it was; readers never see a
    part-written file. A symlink is written through: its target is replaced."""
    target = Path(os.path.realpath(path))
    mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else None
    partial = _new_partial(target)
    try:
        yield partial
        with open(partial, "rb+") as file:  # on disk before the rename, or a crash could leave it empty
            os.fsync(file.fileno())
        if mode is not None:  # a replaced file keeps its permissions
            os.chmod(partial, mode)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself on disk (POSIX); best effort
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_axes(axes: str, image: np.ndarray, spacing: dict[str, float]) -> None:
    if len(axes) != image.ndim:
        raise ValueError(f"axes {axes!r} do not match an image with {image.ndim} dimensions {image.shape}")
    if set(axes) - set(AXES) or any(axes.count(a) > 1 for a in "TZCYX"):
        raise ValueError(f"axes {axes!r}: use each of T, Z, C, Y, X at most once (Q for other axes)")
    stray = set(spacing) - (set(axes) & set("ZYX"))
    if stray:
        raise ValueError(f"spacing (micrometres) is for the Z, Y, X axes of {axes!r}, not {sorted(stray)}")


def _imagej_axes(axes: str, image: np.ndarray) -> str | None:
    """The ImageJ hyperstack axes for ``axes``, or None when ImageJ cannot hold the image."""
    if image.dtype.name not in _IMAGEJ_DTYPES or "Q" in axes:
        return None
    if axes.endswith("C"):  # ImageJ keeps channels last only as 8-bit RGB samples
        if not (image.dtype == np.uint8 and image.shape[-1] == 3):
            return None
        axes = axes[:-1] + "S"
    core = axes.removesuffix("S")
    if not core.endswith("YX") or [a for a in "TZCYX" if a in core] != list(core):
        return None  # hyperstacks are TZCYX(S), in that order
    return axes


def _write_tiff(path: Path, image: np.ndarray, axes: str, spacing: dict[str, float], ome: bool) -> None:
    import tifffile

    last_is_channel = axes.endswith("C")
    rgb = last_is_channel and image.shape[-1] in (3, 4)
    kwargs: dict[str, Any] = {"photometric": "rgb" if rgb else "minisblack", "bigtiff": _bigtiff(image)}
    if last_is_channel:
        kwargs["planarconfig"] = "contig"  # channels interleaved within each page, as TIFF samples
    if ome:
        if not axes.removesuffix("C").endswith("YX"):
            raise ValueError(f"OME-TIFF needs Y, X (and optionally C) as the last axes, got {axes!r}")
        metadata: dict[str, Any] = {"axes": axes[:-1] + "S" if last_is_channel else axes}
        for a in "ZYX":
            if a in spacing:
                metadata[f"PhysicalSize{a}"] = spacing[a]
                metadata[f"PhysicalSize{a}Unit"] = "µm"
        tifffile.imwrite(path, image, ome=True, metadata=metadata, **kwargs)
        return
    ij_axes = _imagej_axes(axes, image)
    if ij_axes is not None:
        metadata = {"axes": ij_axes, "unit": "um"}
        if "Z" in spacing:
            metadata["spacing"] = spacing["Z"]
        if "X" in spacing and "Y" in spacing:
            kwargs["resolution"] = (1 / spacing["X"], 1 / spacing["Y"])
        kwargs["bigtiff"] = False  # ImageJ reads its hyperstacks past 4 GB as contiguous data, not BigTIFF
        tifffile.imwrite(path, image, imagej=True, metadata=metadata, **kwargs)
        return
    # tifffile's JSON description keeps any axes order and dtype; spacing rides along under our own key.
    metadata = {"axes": axes}
    if spacing:
        metadata["spacing_um"] = {k: float(v) for k, v in spacing.items()}
    tifffile.imwrite(path, image, ome=False, metadata=metadata, **kwargs)


def _bigtiff(image: np.ndarray) -> bool:
    return image.nbytes > BIGTIFF_BYTES


def write_image(
    path: str | Path,
    image: np.ndarray,
    *,
    axes: str | None = None,
    spacing: dict[str, float] | None = None,
    ome: bool = False,
) -> None:
    """Write ``image`` to ``path`` atomically (see :func:`replacing`); the suffix picks the format.

    For TIFF with ``axes`` (letters of ``TZCYXQ``, see the module docstring) the axes and
    ``spacing`` (micrometres per axis letter) are stored so :func:`read_image_file` gets
    them back: as OME-TIFF when ``ome`` or the name ends in ``.ome.tif``; else as an ImageJ
    hyperstack when ImageJ can hold the dtype and axes order; else in tifffile's JSON
    description. Other formats carry no axes: ``axes``, ``spacing`` and ``ome`` are ignored.
    Images over 4 GB are written as BigTIFF.
    """
    path = Path(path)
    check_writable(path, image.dtype, image.shape)
    suffix = path.suffix.lower()
    spacing = dict(spacing or {})
    ome = ome or path.name.lower().endswith(OME_SUFFIXES)
    if suffix in TIFF:
        if axes is not None:
            _check_axes(axes, image, spacing)
        elif spacing:
            raise ValueError("spacing needs axes to say which axis each value belongs to")
    with replacing(path) as partial:
        if suffix not in TIFF:
            import imageio.v3 as iio

            iio.imwrite(partial, image)
        elif axes is not None:
            _write_tiff(partial, image, axes, spacing, ome)
        else:
            import tifffile

            # Say how to store it: tifffile's guess for (C, H, W) floats is deprecated.
            rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
            photometric = "rgb" if rgb else "minisblack"
            tifffile.imwrite(partial, image, photometric=photometric, ome=ome, bigtiff=_bigtiff(image))


def guess_channel_axis(image: np.ndarray) -> int | None:
    """2-D: None; 3-D with 3 or 4 values on the last axis (RGB/RGBA): -1.

    Anything else is ambiguous and must be given with ``--channel-axis``.
    """
    if image.ndim == 2:
        return None
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return -1
    raise ValueError(f"cannot tell the channel axis of an image of shape {image.shape}; pass --channel-axis")
