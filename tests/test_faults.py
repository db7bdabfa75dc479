"""Fault injection: a user's files survive every failure, every error is one line,
Ctrl-C exits 130 without a traceback, seeds hold across threads, values are exact,
resources stay bounded. (The widget's faults: test_widget_faults.py.)"""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import napari_dip._io as io
from napari_dip import denoise, flash_no_flash, inpaint, super_resolve
from napari_dip._cli import main

FAST = ["--width", "8", "--device", "cpu", "--quiet"]
TINY = {"width": 8, "device": "cpu", "iterations": 5}
COMMAND = str(Path(sys.executable).with_name("napari-dip"))


@pytest.fixture
def files(tmp_path):
    """An input stack and an existing output, with their bytes to compare against."""
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "in.tif", (rng.random((32, 32)) * 4000).astype(np.uint16))
    tifffile.imwrite(tmp_path / "old.tif", np.full((32, 32), 7, np.uint16))
    return tmp_path, (tmp_path / "in.tif").read_bytes(), (tmp_path / "old.tif").read_bytes()


def no_partial_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if io.PARTIAL in p.name]


def one_line_error(err: str) -> bool:
    """One error line, the last one (a report of the fit may come before it)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("napari-dip: ")]
    return errors == lines[-1:] and "Traceback" not in err


# -- the output is checked before the fit ------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "relative path"])
def test_output_that_is_the_input_is_refused_even_with_overwrite(files, capsys, monkeypatch, how):
    folder, original, _ = files
    source = folder / "in.tif"
    if how == "symlink":
        (folder / "link.tif").symlink_to(source)
        output = folder / "link.tif"
    elif how == "hard link":
        os.link(source, folder / "hard.tif")
        output = folder / "hard.tif"
    elif how == "relative path":
        monkeypatch.chdir(folder)
        output = Path("sub") / ".." / "in.tif"
        (folder / "sub").mkdir()
    else:
        output = source
    assert main(["denoise", str(source), str(output), "--overwrite", *FAST]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "is the input" in err
    assert source.read_bytes() == original


def test_inpainting_mask_is_an_input_too(files, capsys):
    folder, _, _ = files
    tifffile.imwrite(folder / "mask.tif", np.eye(32, dtype=np.uint8))
    mask_bytes = (folder / "mask.tif").read_bytes()
    argv = ["inpaint", str(folder / "in.tif"), str(folder / "mask.tif"), str(folder / "mask.tif"), "--overwrite"]
    assert main([*argv, *FAST]) == 1
    assert "is the input" in capsys.readouterr().err and (folder / "mask.tif").read_bytes() == mask_bytes


def test_existing_output_needs_overwrite(files, capsys):
    folder, _, old = files
    argv = ["denoise", str(folder / "in.tif"), str(folder / "old.tif"), "--iterations", "2", *FAST]
    start = time.perf_counter()
    assert main(argv) == 1
    assert time.perf_counter() - start < 1  # refused before any fit
    err = capsys.readouterr().err
    assert one_line_error(err) and "exists" in err and "--overwrite" in err
    assert (folder / "old.tif").read_bytes() == old
    assert main([*argv, "--overwrite"]) == 0
    new = tifffile.imread(folder / "old.tif")
    assert new.shape == (32, 32) and new.dtype == np.uint16 and not (new == 7).all()
    assert no_partial_files(folder)


@pytest.mark.parametrize(
    "where", ["a folder", "trailing slash", "missing folder", "under a file", "unwritable folder", "format", "stack"]
)
def test_unwritable_output_fails_in_under_a_second(files, capsys, where):
    folder, original, _ = files
    outputs = {
        "a folder": folder,
        "missing folder": folder / "nope" / "out.tif",
        "under a file": folder / "in.tif" / "out.tif",
        "unwritable folder": Path("/proc/napari-dip-out.tif"),  # refuses new files, even to root
        "format": folder / "out.png",  # PNG holds no float32
        "stack": folder / "out.png",  # nor a stack
        "trailing slash": str(folder / "new.tif") + "/",
    }
    source = folder / "in.tif"
    if where in ("format", "stack"):
        image = np.random.default_rng(0).random((2, 2, 32, 32) if where == "stack" else (32, 32))
        tifffile.imwrite(source, (image * 255).astype(np.uint8 if where == "stack" else np.float32))
        original = source.read_bytes()
    if where == "unwritable folder" and not Path("/proc").is_dir():
        pytest.skip("needs Linux /proc")
    start = time.perf_counter()
    assert main(["denoise", str(source), str(outputs[where]), "--iterations", "100000", *FAST]) == 1
    assert time.perf_counter() - start < 1
    assert one_line_error(capsys.readouterr().err)
    assert source.read_bytes() == original and no_partial_files(folder) and not (folder / "new.tif").exists()


def test_inputs_that_are_not_regular_files_are_refused(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.tif")  # reading it would block forever
    assert main(["denoise", str(tmp_path / "fifo.tif"), str(tmp_path / "out.tif"), *FAST]) == 1
    assert "not a regular file" in capsys.readouterr().err


def test_read_only_folder_is_found_before_the_fit(files, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder, _, _ = files
    locked = folder / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["denoise", str(folder / "in.tif"), str(locked / "out.tif"), *FAST]) == 1
        assert "cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)


# -- writes are atomic ----------------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_the_old_file(files, capsys, monkeypatch):
    folder, _, old = files

    def half_then_fail(path, data, **kwargs):
        Path(path).write_bytes(b"II*\0" + bytes(100))  # a torn TIFF, as a full disk leaves it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", half_then_fail)
    argv = ["denoise", str(folder / "in.tif"), str(folder / "old.tif"), "--iterations", "2", "--overwrite", *FAST]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "No space left" in err and "unchanged" in err
    assert (folder / "old.tif").read_bytes() == old and no_partial_files(folder)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_write_leaves_the_old_file(files, capsys, monkeypatch, signum, status):
    folder, _, old = files
    real = tifffile.imwrite

    def write_then_get_signalled(path, data, **kwargs):
        real(path, data, **kwargs)
        os.kill(os.getpid(), signum)  # delivered here, before the rename
        time.sleep(1)

    monkeypatch.setattr(tifffile, "imwrite", write_then_get_signalled)
    argv = ["denoise", str(folder / "in.tif"), str(folder / "old.tif"), "--iterations", "2", "--overwrite", *FAST]
    assert main(argv) == status
    err = capsys.readouterr().err
    assert one_line_error(err) and "no file was changed" in err
    assert (folder / "old.tif").read_bytes() == old and no_partial_files(folder)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_signal_after_the_rename_says_the_file_is_complete(files, capsys, monkeypatch):
    folder, _, old = files
    real = os.replace

    def replace_then_get_signalled(src, dst):
        real(src, dst)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)

    monkeypatch.setattr(os, "replace", replace_then_get_signalled)
    argv = ["denoise", str(folder / "in.tif"), str(folder / "old.tif"), "--iterations", "2", "--overwrite", *FAST]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert one_line_error(err) and "was written in full" in err
    assert (folder / "old.tif").read_bytes() != old and tifffile.imread(folder / "old.tif").shape == (32, 32)


def test_write_only_and_read_only_modes_of_a_replaced_file_are_kept(tmp_path):
    target = tmp_path / "out.tif"
    for mode in (0o200, 0o444):
        target.write_bytes(b"old")
        target.chmod(mode)
        with io.replacing(target) as partial:
            partial.write_bytes(b"new")  # the temporary file is ours to write and fsync
        assert target.stat().st_mode & 0o777 == mode
        target.chmod(0o644)
        assert target.read_bytes() == b"new"


def test_a_file_size_limit_leaves_the_old_file(tmp_path):
    """A real failing write: the kernel stops the file at 32 KB (ulimit -f)."""
    image = np.random.default_rng(0).integers(0, 60000, (128, 128), dtype=np.uint16)  # 32 KB of pixels, and tags
    tifffile.imwrite(tmp_path / "in.tif", image)
    tifffile.imwrite(tmp_path / "out.tif", np.zeros((4, 4), np.uint16))
    old = (tmp_path / "out.tif").read_bytes()
    limit = 32 * 1024

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = subprocess.run(
        [COMMAND, "denoise", "in.tif", "out.tif", "--iterations", "1", "--overwrite", *FAST],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
        timeout=120,
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr and "unchanged" in run.stderr, run.stderr
    assert (tmp_path / "out.tif").read_bytes() == old and no_partial_files(tmp_path)


def test_replacing_keeps_the_old_file_on_any_error_and_writes_through_links(tmp_path):
    target = tmp_path / "out.tif"
    target.write_bytes(b"old")
    target.chmod(0o640)
    for error in (OSError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(error)), io.replacing(target) as partial:
            partial.write_bytes(b"new but torn")
            raise error
        assert target.read_bytes() == b"old" and no_partial_files(tmp_path)
    link = tmp_path / "link.tif"
    link.symlink_to(target)
    with io.replacing(link) as partial:
        assert partial.parent == tmp_path and partial.name.endswith(".tif")
        partial.write_bytes(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions are kept
    umask = os.umask(0o022)
    os.umask(umask)
    io.write_image(tmp_path / "fresh.png", np.zeros((4, 4), np.uint8))
    assert (tmp_path / "fresh.png").stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file


# -- Ctrl-C -----------------------------------------------------------------------------------


def _start(folder: Path, *extra: str) -> subprocess.Popen:
    argv = [COMMAND, "denoise", "in.tif", "out.tif", "--iterations", "100000", "--width", "8", "--device", "cpu"]
    return subprocess.Popen([*argv, *extra], cwd=folder, stderr=subprocess.PIPE)


def _wait_for_the_fit(process: subprocess.Popen, timeout: float = 60) -> bytes:
    """stderr until the progress bar has counted an iteration."""
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline and b"it/s" not in seen:
        ready, _, _ = select.select([process.stderr], [], [], 0.1)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096)
    assert b"it/s" in seen, seen
    return seen


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_ctrl_c_at_start_up_exits_130_without_traceback(files, delay):
    folder, original, _ = files
    process = _start(folder, "--quiet")
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and b"Traceback" not in err, err
    assert not (folder / "out.tif").exists() and (folder / "in.tif").read_bytes() == original


def test_ctrl_c_mid_fit_writes_nothing(files):
    folder, original, _ = files
    process = _start(folder)
    seen = _wait_for_the_fit(process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    err = seen + err
    assert process.returncode == 130 and b"Traceback" not in err and b"nothing written" in err, err
    assert not (folder / "out.tif").exists() and no_partial_files(folder)
    assert (folder / "in.tif").read_bytes() == original


def test_ctrl_c_mid_fit_with_keep_partial_writes_the_result_so_far(files):
    folder, _, _ = files
    process = _start(folder, "--keep-partial")
    seen = _wait_for_the_fit(process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    err = seen + err
    assert process.returncode == 130 and b"Traceback" not in err and b"result so far" in err, err
    out = tifffile.imread(folder / "out.tif")
    assert out.shape == (32, 32) and out.dtype == np.uint16 and no_partial_files(folder)


def test_demo_without_a_display_says_so_in_one_line(capsys, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("display detection is for Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "display" in err and "example" in err
    monkeypatch.setenv("DISPLAY", ":98765")  # set, but no X server behind it
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "no X server" in err and "example" in err


def test_help_and_argument_errors_do_not_import_torch():
    code = (
        "import sys\nfrom napari_dip._cli import main\n"
        "for argv in (['--help'], ['denoise', '--width', 'x']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "False False", run.stdout + run.stderr


# -- seeds hold across threads -------------------------------------------------------------


def test_concurrent_seeded_fits_match_a_sequential_one():
    image = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    options = {"iterations": 20, "width": 8, "device": "cpu", "seed": 5, "stopping": None}
    state = torch.random.get_rng_state()
    alone = denoise(image, **options)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    results: dict[int, np.ndarray] = {}
    stop = threading.Event()

    def fit(k: int) -> None:
        results[k] = denoise(image, **options)

    def meddle() -> None:  # other torch code drawing from and reseeding the global generator
        while not stop.is_set():
            torch.manual_seed(int(time.perf_counter_ns()) % 1000)
            torch.rand(100)
            time.sleep(0.001)

    threads = [threading.Thread(target=fit, args=(k,)) for k in range(2)]
    meddler = threading.Thread(target=meddle)
    meddler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    meddler.join()
    assert all(np.array_equal(results[k], alone) for k in range(2))
    assert not np.array_equal(alone, denoise(image, **{**options, "seed": 6}))


# -- exact values ---------------------------------------------------------------------------

INTEGERS = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]
FLOATS = [np.float16, np.float32, np.float64]


def extremes(dtype: type) -> np.ndarray:
    """A 32x32 image spanning the whole range of ``dtype``: 2x2 blocks at the very
    minimum and maximum (supported by neighbours, so they are signal), noise between."""
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = int(info.min), int(info.max)
        middle = rng.integers(low // 4, high // 4, (32, 32), dtype=dtype, endpoint=True)
    else:
        info = np.finfo(dtype)
        low, high = float(info.min), float(info.max)
        middle = (rng.random((32, 32)) * 0.5 - 0.25).astype(dtype) * dtype(high)
    image = middle.astype(dtype)
    image[4:6, 4:6] = high
    image[20:22, 20:22] = low
    return image


@pytest.mark.parametrize("dtype", INTEGERS + FLOATS)
def test_dtype_round_trip_at_the_extremes(dtype):
    from napari_dip._api import prepare

    image = extremes(dtype)
    before = image.copy()
    out = denoise(image, **TINY)
    expected = np.float64 if dtype == np.float64 else (np.float32 if dtype in FLOATS else dtype)
    assert out.dtype == expected and out.shape == image.shape
    assert np.array_equal(image, before)  # the input is never modified
    assert np.isfinite(out.astype(np.float64)).all()
    assert out.min() >= image.min() and out.max() <= image.max()
    # The way in and back out is exact up to the fit's float32 resolution: no wrap-around,
    # no overflow, at the very limits of the type.
    job = prepare("denoise", image, **TINY)
    back = job.to_user(job.schedule.image)
    span = float(image.max()) - float(image.min())
    assert back.dtype == out.dtype
    assert np.abs(back.astype(np.float64) - image.astype(np.float64)).max() <= span * 2**-22 + 1


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
def test_constant_images_at_the_integer_limits_do_not_wrap(dtype):
    info = np.iinfo(dtype)
    for value in (info.max, info.min):
        out = denoise(np.full((16, 16), value, dtype), **TINY)
        assert out.dtype == dtype
        # float64 cannot hold 2**64 - 1 exactly: the nearest value inside the range comes back.
        assert np.all(np.abs(out.astype(np.float64) - float(value)) <= 4096), (value, out[0, 0])


@pytest.mark.parametrize("dtype", INTEGERS + FLOATS)
def test_inpainting_returns_known_pixels_bit_for_bit(dtype):
    image = extremes(dtype)
    mask = np.zeros(image.shape, bool)
    mask[10:18, 8:24] = True
    out = inpaint(image, mask, **TINY)
    assert np.array_equal(out[~mask], image[~mask].astype(out.dtype))
    assert out[~mask].astype(dtype).tobytes() == image[~mask].tobytes()
    if dtype in FLOATS:
        assert np.isfinite(out).all()


def test_extreme_values_raise_no_warnings():
    info = np.finfo(np.float32)
    image = extremes(np.float32)
    image[0, :4] = [info.max, info.max, info.min, info.min]
    mask = np.zeros(image.shape, bool)
    mask[8:16, 8:16] = True
    hidden = np.where(mask, 1e308, np.abs(extremes(np.float64)))  # huge values under a mask are never used
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for out in (
            denoise(image, **TINY),
            inpaint(image, mask, **TINY),
            denoise(np.ma.masked_array(hidden, mask), **TINY),
        ):
            assert np.isfinite(out).all()


def test_byte_order_and_odd_dtypes():
    big = extremes(np.uint16).astype(">u2")
    mask = np.zeros(big.shape, bool)
    mask[8:16, 8:16] = True
    assert denoise(big, **TINY).dtype == inpaint(big, mask, **TINY).dtype == np.dtype("=u2")
    for bad, error, message in [
        (np.zeros((0, 16)), ValueError, "empty"),
        (np.zeros((16, 16), "m8[s]"), TypeError, "integer or floating-point"),
        (np.zeros((16, 16), complex), TypeError, "integer or floating-point"),
    ]:
        with pytest.raises(error, match=message):
            denoise(bad, **TINY)
    with pytest.raises(ValueError, match="mask shape"):
        inpaint(big, True, **TINY)  # a bool is a mask, of the wrong shape


@pytest.mark.parametrize("values", [(1e-310, 3e-310), (-1e308, 1.7e308), (1e300, 1e300)])
def test_float64_data_near_its_limits_comes_back_finite(values):
    t = np.random.default_rng(0).random((24, 24))
    image = values[0] * (1 - t) + values[1] * t  # no difference of the two: it may overflow
    out = denoise(image, **TINY)
    assert out.dtype == np.float64 and np.isfinite(out).all()
    assert image.min() <= out.min() and out.max() <= image.max()


def test_masked_arrays_are_honoured():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32))
    hidden = np.zeros(image.shape, bool)
    hidden[8:16, 8:20] = True
    data = image.copy()
    data[hidden] = np.nan  # what lies under the mask must not matter
    masked = np.ma.masked_array(data, hidden)
    out = inpaint(masked, **TINY)  # the array's own mask says what is missing
    assert type(out) is np.ndarray and np.isfinite(out).all()
    assert np.array_equal(out[~hidden], image[~hidden])
    extra = np.zeros(image.shape, bool)
    extra[20:24, 20:24] = True
    out = inpaint(masked, extra, **TINY)  # both masks count
    assert np.array_equal(out[~(hidden | extra)], image[~(hidden | extra)])
    for restored in (denoise(masked, **TINY), super_resolve(masked, 2, **TINY)):
        assert type(restored) is np.ndarray and np.isfinite(restored).all()
    with pytest.raises(TypeError, match="masked array"):
        inpaint(image, np.ma.masked_array(hidden, hidden), **TINY)
    with pytest.raises(ValueError, match="every value"):
        denoise(np.ma.masked_array(data, np.ones_like(hidden)), **TINY)
    with pytest.raises(ValueError, match="flash"):
        flash_no_flash(masked, image, **TINY)
    with pytest.raises(ValueError, match="needs a mask"):
        inpaint(image, **TINY)


# -- bounded resources ----------------------------------------------------------------------


def test_absurd_iteration_counts_allocate_nothing_up_front(monkeypatch):
    import napari_dip.fit as fit_module
    from napari_dip.fit import Fit

    image = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    start = time.perf_counter()
    fit = Fit("denoise", image, iterations=10**12, width=4, device="cpu", stopping="emv")
    records = [r for _, r in zip(range(3), fit, strict=False)]
    assert time.perf_counter() - start < 10 and records[-1].iteration == 3
    held = sum(t.numel() for t in (fit._history._chunk,))
    assert held <= 2 * fit_module.CHUNK
    # The host keeps the last HISTORY iterations, and they are right.
    monkeypatch.setattr(fit_module, "HISTORY", 100)
    monkeypatch.setattr(fit_module, "CHUNK", 16)
    fit = Fit("denoise", image, iterations=300, width=4, device="cpu", stopping="emv", preview_every=None)
    losses = [r.loss for r in fit]
    kept = fit.losses
    assert 100 <= len(kept) < 100 + 16 and fit.statistics.shape == kept.shape
    np.testing.assert_allclose(kept, losses[-len(kept) :], rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda img: denoise(img, width=10**9, device="cpu"), ValueError, "width must be between"),
        (lambda img: super_resolve(img, 2**70, width=8, device="cpu"), ValueError, "scale must be an integer from 2"),
        (lambda img: super_resolve(np.zeros((4096, 4096), np.uint8), 32, width=8), MemoryError, "smaller scale"),
        (lambda img: denoise(np.broadcast_to(np.float32(1), (10**6, 64, 64)), width=8), MemoryError, "in parts"),
        (lambda img: denoise(np.zeros((2**16, 2**16), np.uint8), width=8, device="cpu"), MemoryError, "tile"),
    ],
)
def test_absurd_sizes_are_refused_with_advice(call, error, message):
    start = time.perf_counter()
    with pytest.raises(error, match=message):
        call(np.random.default_rng(0).random((32, 32)))
    assert time.perf_counter() - start < 10


def test_cli_reports_memory_errors_in_one_line(files, capsys):
    folder, _, _ = files
    tifffile.imwrite(folder / "large.tif", np.zeros((4096, 4096), np.uint8))
    argv = ["super-resolve", str(folder / "large.tif"), str(folder / "big.tif"), "--scale", "32", *FAST]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "GB" in err and "smaller scale" in err
    argv[-len(FAST) - 1] = str(2**70)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "scale must be an integer from 2 to 32" in err
