"""Reading images with their axes and pixel size; writing TIFFs whose axes survive."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_dip._io import ImageFile, read_image, read_image_file, write_image

SPACING = {"Z": 0.5, "Y": 0.1625, "X": 0.1625}


@pytest.fixture
def tzyx() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4000, (2, 3, 16, 20), dtype=np.uint16)


@pytest.mark.parametrize("ome", [True, False])
def test_tzyx_round_trip_ome_and_imagej(tmp_path, tzyx, ome):
    path = tmp_path / "stack.tif"
    write_image(path, tzyx, axes="TZYX", spacing=SPACING, ome=ome)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome == ome and tif.is_imagej == (not ome)
    image = read_image_file(path)
    np.testing.assert_array_equal(image.data, tzyx)
    assert image.axes == "TZYX" and image.ome == ome
    assert image.spacing == pytest.approx(SPACING)
    np.testing.assert_array_equal(read_image(path), tzyx)


def test_ome_suffix_writes_ome(tmp_path, tzyx):
    path = tmp_path / "stack.ome.tif"
    write_image(path, tzyx[0], axes="ZYX", spacing={"Z": 1.0})
    image = read_image_file(path)
    assert image.ome and image.axes == "ZYX" and image.spacing == {"Z": 1.0}


def test_tczyx_and_channels_last(tmp_path):
    data = np.zeros((2, 3, 2, 8, 8), np.uint16)
    write_image(tmp_path / "a.tif", data, axes="TZCYX")
    assert read_image_file(tmp_path / "a.tif").axes == "TZCYX"
    zyxc = np.arange(4 * 8 * 8 * 2, dtype=np.uint16).reshape(4, 8, 8, 2)
    for ome in (True, False):
        write_image(tmp_path / "b.tif", zyxc, axes="ZYXC", ome=ome)
        image = read_image_file(tmp_path / "b.tif")
        assert image.axes == "ZYXC"
        np.testing.assert_array_equal(image.data, zyxc)


def test_what_imagej_cannot_hold_keeps_axes_in_the_description(tmp_path):
    data = np.random.default_rng(1).random((3, 8, 2, 8))  # float64, Y before C: no ImageJ, no OME
    write_image(tmp_path / "q.tif", data, axes="ZYCX", spacing={"Z": 2.0, "X": 0.3})
    image = read_image_file(tmp_path / "q.tif")
    np.testing.assert_array_equal(image.data, data)
    assert image.axes == "ZYCX" and image.spacing == {"Z": 2.0, "X": 0.3} and not image.ome


def test_rgb_stack_as_imagej(tmp_path):
    data = np.random.default_rng(2).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    write_image(tmp_path / "rgb.tif", data, axes="ZYXC", spacing=SPACING)
    with tifffile.TiffFile(tmp_path / "rgb.tif") as tif:
        assert tif.is_imagej
    image = read_image_file(tmp_path / "rgb.tif")
    assert image.axes == "ZYXC" and image.spacing == pytest.approx(SPACING)
    np.testing.assert_array_equal(image.data, data)


def test_plain_tiff_stack_has_no_axes(tmp_path, tzyx):
    tifffile.imwrite(tmp_path / "plain.tif", tzyx[0], photometric="minisblack")
    image = read_image_file(tmp_path / "plain.tif")
    assert image == ImageFile(image.data, None, {}, False)
    np.testing.assert_array_equal(image.data, tzyx[0])
    tifffile.imwrite(tmp_path / "generic.tif", tzyx[0], photometric="minisblack", metadata=None)  # no description
    assert read_image_file(tmp_path / "generic.tif").axes is None
    write_image(tmp_path / "default.tif", tzyx)  # no axes given: the old behaviour, no axes stored
    assert read_image_file(tmp_path / "default.tif").axes is None


def test_single_page_tiffs_are_yx_or_yxc(tmp_path):
    tifffile.imwrite(tmp_path / "grey.tif", np.zeros((8, 9), np.uint16))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    assert read_image_file(tmp_path / "grey.tif").axes == "YX"
    assert read_image_file(tmp_path / "rgb.tif").axes == "YXC"


def test_imagej_units_are_converted_to_micrometres(tmp_path, tzyx):
    tifffile.imwrite(
        tmp_path / "nm.tif",
        tzyx,
        imagej=True,
        metadata={"axes": "TZYX", "spacing": 500.0, "unit": "nm"},
        resolution=(1 / 162.5, 1 / 162.5),
    )
    assert read_image_file(tmp_path / "nm.tif").spacing == pytest.approx(SPACING)
    tifffile.imwrite(tmp_path / "px.tif", tzyx, imagej=True, metadata={"axes": "TZYX"})  # uncalibrated
    image = read_image_file(tmp_path / "px.tif")
    assert image.axes == "TZYX" and image.spacing == {}


def test_ome_units_and_sample_axis(tmp_path):
    data = np.zeros((2, 8, 8, 3), np.uint8)
    tifffile.imwrite(
        tmp_path / "o.ome.tif",
        data,
        photometric="rgb",
        metadata={"axes": "ZYXS", "PhysicalSizeZ": 1.0, "PhysicalSizeZUnit": "mm", "PhysicalSizeX": 200.0,
                  "PhysicalSizeXUnit": "nm"},
    )  # fmt: skip
    image = read_image_file(tmp_path / "o.ome.tif")
    assert image.ome and image.axes == "ZYXC" and image.spacing == pytest.approx({"Z": 1000.0, "X": 0.2})


def test_png_axes(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    write_image(tmp_path / "rgb.png", rgb, axes="YXC", spacing={"X": 1.0}, ome=True)  # PNG ignores them
    image = read_image_file(tmp_path / "rgb.png")
    assert image.axes == "YXC" and image.spacing == {} and not image.ome
    np.testing.assert_array_equal(image.data, rgb)
    iio.imwrite(tmp_path / "grey.png", rgb[..., 0])
    assert read_image_file(tmp_path / "grey.png").axes == "YX"


def test_bad_axes_and_spacing_are_refused(tmp_path, tzyx):
    with pytest.raises(ValueError, match="dimensions"):
        write_image(tmp_path / "x.tif", tzyx, axes="ZYX")
    with pytest.raises(ValueError, match="at most once"):
        write_image(tmp_path / "x.tif", tzyx, axes="ZZYX")
    with pytest.raises(ValueError, match="spacing"):
        write_image(tmp_path / "x.tif", tzyx, axes="TZYX", spacing={"T": 1.0})
    with pytest.raises(ValueError, match="spacing needs axes"):
        write_image(tmp_path / "x.tif", tzyx, spacing={"Z": 1.0})
    with pytest.raises(ValueError, match="OME-TIFF needs Y, X"):
        write_image(tmp_path / "x.tif", tzyx, axes="TYXZ", ome=True)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_image_file(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="cannot read"):
        read_image_file(tmp_path / "junk.tif")
