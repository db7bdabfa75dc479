"""The napari-dip command end to end: files in, files out, one-line errors."""

import re
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from conftest import psnr
from napari_dip._cli import main
from napari_dip.stopping import DEFAULT_RULE

FAST = ["--width", "16", "--device", "cpu", "--quiet"]


def test_denoise_png_round_trip(tmp_path, camera64, noisy_camera, capsys):
    iio.imwrite(tmp_path / "noisy.png", noisy_camera)
    argv = ["denoise", str(tmp_path / "noisy.png"), str(tmp_path / "out.png"), "--iterations", "300", "--ensemble", "1"]
    assert main([*argv, *FAST]) == 0
    out = iio.imread(tmp_path / "out.png")
    assert out.shape == noisy_camera.shape and out.dtype == np.uint8
    assert psnr(out, camera64) > psnr(noisy_camera, camera64) + 3
    assert "finished after iteration 300" in capsys.readouterr().err


def test_denoise_stops_automatically_and_says_where(tmp_path, noisy_camera, capsys):
    iio.imwrite(tmp_path / "noisy.png", noisy_camera)
    argv = ["denoise", str(tmp_path / "noisy.png"), str(tmp_path / "out.png"), "--ensemble", "1"]
    assert main([*argv, *FAST]) == 0
    err = capsys.readouterr().err
    pattern = rf"stopped automatically at iteration \d+ \({DEFAULT_RULE} rule, [\d.]+ s\); best output at iteration \d+"
    assert re.search(pattern, err), err


@pytest.mark.parametrize(
    ("native", "width", "precision", "said"),
    [
        (True, 128, "auto", "bfloat16 layers"),
        (True, 32, "auto", "bfloat16 in the largest convolutions"),  # small networks: "mixed"
        (False, 128, "auto", None),  # emulated bfloat16 would be slower
        (True, 128, "float32", None),
    ],
)
def test_the_command_says_when_auto_chose_bfloat16(
    tmp_path, noisy_camera, capsys, monkeypatch, native, width, precision, said
):
    import napari_dip.fit

    monkeypatch.setattr(napari_dip.fit, "_cpu_has_bfloat16", lambda: native)
    iio.imwrite(tmp_path / "noisy.png", noisy_camera[:32, :32])
    args = ["denoise", str(tmp_path / "noisy.png"), str(tmp_path / "out.png"), "--iterations", "2", "--ensemble", "1"]
    assert main([*args, "--width", str(width), "--precision", precision, "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert (said is None and "precision:" not in err) or f"precision: {said}" in err, err


def test_progress_bar_goes_to_stderr(tmp_path, noisy_camera, capsys):
    iio.imwrite(tmp_path / "noisy.png", noisy_camera)
    args = ["denoise", str(tmp_path / "noisy.png"), str(tmp_path / "out.png"), "--iterations", "3"]
    assert main([*args, "--width", "8", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "3/3" in captured.err and captured.out == ""


def test_tiff_float_rgb_channels_first(tmp_path):
    image = np.random.default_rng(0).random((3, 20, 24)).astype(np.float32) * 5 - 1
    tifffile.imwrite(tmp_path / "in.tif", image, photometric="minisblack")
    argv = ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--channel-axis", "0", "--iterations", "2"]
    assert main([*argv, *FAST]) == 0
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == image.shape and out.dtype == np.float32
    assert image.min() <= out.min() and out.max() <= image.max()


def test_inpaint_with_a_known_pixel_mask_as_in_the_papers_files(tmp_path, camera64):
    known = np.full(camera64.shape, 255, np.uint8)
    known[20:30, 20:40] = 0  # the paper's masks: white = known
    iio.imwrite(tmp_path / "img.png", camera64)
    iio.imwrite(tmp_path / "mask.png", known)
    argv = ["inpaint", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), str(tmp_path / "out.png")]
    assert main([*argv, "--mask-known", "--iterations", "5", *FAST]) == 0
    out = iio.imread(tmp_path / "out.png")
    np.testing.assert_array_equal(out[known > 0], camera64[known > 0])


def test_channels_first_tiff_to_png_moves_channels_last(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (3, 20, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image, photometric="minisblack")
    argv = ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.png"), "--channel-axis", "0"]
    assert main([*argv, "--iterations", "2", *FAST]) == 0
    assert iio.imread(tmp_path / "out.png").shape == (20, 24, 3)


def test_super_resolve_and_flash_no_flash_shapes(tmp_path, astronaut64):
    iio.imwrite(tmp_path / "rgb.png", astronaut64)
    argv = ["super-resolve", str(tmp_path / "rgb.png"), str(tmp_path / "sr.png"), "--scale", "2", "--iterations", "2"]
    assert main([*argv, *FAST]) == 0
    assert iio.imread(tmp_path / "sr.png").shape == (128, 128, 3)
    iio.imwrite(tmp_path / "dark.png", astronaut64 // 2)
    argv = ["flash-no-flash", str(tmp_path / "rgb.png"), str(tmp_path / "dark.png"), str(tmp_path / "f.png")]
    assert main([*argv, "--iterations", "2", *FAST]) == 0
    assert iio.imread(tmp_path / "f.png").shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["denoise", "{d}/missing.png", "{d}/out.png"], "no such file"),
        (["denoise", "{d}/img.png", "{d}/nowhere/out.png"], "output folder does not exist"),
        (["denoise", "{d}/img.png", "{d}/out.xyz"], "unsupported output format"),
        (["denoise", "{d}/img.png", "{d}/out.png", "--network", "skip", "--width", "0"], "width"),
        (["denoise", "{d}/img.png", "{d}/out.png", "--device", "tpu"], "unknown device"),
        (["denoise", "{d}/img.png", "{d}/out.png", "--iterations", "0"], "iterations"),
        (["denoise", "{d}/img.png", "{d}/out.png", "--tv", "-1"], "tv must be >= 0"),
        (["super-resolve", "{d}/img.png", "{d}/out.png", "--scale", "1"], "scale"),
        (["inpaint", "{d}/img.png", "{d}/empty.png", "{d}/out.png"], "mask is empty"),
        (["denoise", "{d}/img.png", "{d}/out.tif", "--volumetric"], "volumetric"),
        (["denoise", "{d}/ome_zyx.tif", "{d}/out.tif", "--channel-axis", "0", "--volumetric"], "at least 4-D"),
        (["denoise", "{d}/float.tif", "{d}/out.png"], "cannot store float32"),
        (["denoise", "{d}/junk.png", "{d}/out.png"], "cannot read"),
        (["denoise", "{d}/rgb16.tif", "{d}/out.png"], "uint16 images with 3 channels"),
        (["denoise", "{d}/rgba.png", "{d}/out.jpg"], "uint8 images with 4 channels"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(tmp_path, capsys, argv, message):
    iio.imwrite(tmp_path / "img.png", np.zeros((16, 16), np.uint8))
    iio.imwrite(tmp_path / "empty.png", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "ome_zyx.tif", np.zeros((5, 16, 16), np.uint16), ome=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((16, 16), np.float32))
    (tmp_path / "junk.png").write_text("not an image")
    tifffile.imwrite(tmp_path / "rgb16.tif", np.zeros((16, 16, 3), np.uint16), photometric="rgb")
    iio.imwrite(tmp_path / "rgba.png", np.zeros((16, 16, 4), np.uint8))
    code = main([a.format(d=tmp_path) for a in argv] + ["--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert message in err and err.startswith("napari-dip: error:") and len(err.splitlines()) == 1


def test_console_script_runs_and_reports_errors_without_traceback(tmp_path):
    exe = shutil.which("napari-dip")
    cmd = [exe] if exe else [sys.executable, "-m", "napari_dip._cli"]
    version = subprocess.run([*cmd, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("napari-dip ")
    bad = subprocess.run(
        [*cmd, "denoise", str(tmp_path / "nope.png"), str(tmp_path / "o.png")], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "no such file" in bad.stderr


def test_example_writes_a_before_after_png(tmp_path, capsys):
    out = tmp_path / "example.png"
    argv = ["example", "--output", str(out), "--iterations", "300", "--width", "32", "--device", "cpu", "--quiet"]
    argv += ["--ensemble", "1"]
    assert main(argv) == 0
    panel = iio.imread(out)
    assert panel.shape == (128, 3 * 128 + 16, 3)
    noisy_db, restored_db = map(float, re.findall(r"([\d.]+) dB", capsys.readouterr().out))
    assert restored_db > noisy_db + 3


def test_z_stack_tiff_is_restored_plane_by_plane(tmp_path, capsys):
    rng = np.random.default_rng(0)
    stack = rng.integers(100, 2000, (3, 24, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "zstack.tif", stack)  # a plain (Z, Y, X) TIFF, no metadata
    argv = ["denoise", str(tmp_path / "zstack.tif"), str(tmp_path / "out.tif"), "--iterations", "2"]
    assert main([*argv, "--width", "16", "--device", "cpu"]) == 0  # not quiet: the bar is checked
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == stack.shape and out.dtype == np.uint16
    err = capsys.readouterr().err
    assert "restored 3 of 3 planes" in err
    # The bar counts each finished plane once (an overcount shows as "4plane [00:01, ...]").
    assert "3/3" in err and not re.search(r"(^|\s)4plane \[", err)


def test_ome_tiff_axes_decide_and_survive_a_volumetric_run(tmp_path):
    from napari_dip._io import read_image_file

    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (2, 4, 2, 64, 64), dtype=np.uint16)  # T, Z, C, Y, X
    meta = {"axes": "TZCYX", "PhysicalSizeZ": 0.5, "PhysicalSizeY": 0.1, "PhysicalSizeX": 0.1}
    tifffile.imwrite(tmp_path / "in.ome.tif", image, ome=True, metadata=meta)
    argv = ["denoise", str(tmp_path / "in.ome.tif"), str(tmp_path / "out.ome.tif"), "--volumetric"]
    assert main([*argv, "--iterations", "1", "--width", "4", "--device", "cpu", "--quiet"]) == 0
    out = read_image_file(tmp_path / "out.ome.tif")
    assert out.data.shape == image.shape and out.axes == "TZCYX"
    assert out.spacing == pytest.approx({"Z": 0.5, "Y": 0.1, "X": 0.1})


def test_tile_size_option(tmp_path, capsys):
    image = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    iio.imwrite(tmp_path / "in.png", image)
    argv = ["denoise", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--tile-size", "32", "--iterations", "1"]
    assert main([*argv, *FAST]) == 0
    assert iio.imread(tmp_path / "out.png").shape == (48, 48)
    assert "restored 4 of 4 tiles" in capsys.readouterr().err
