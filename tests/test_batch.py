"""Batch restoration on a real Dask LocalCluster with two worker processes: folders with
a broken file and a stack among them, resuming a killed run, failures and dying workers
isolated, and the Python entry point for paths and arrays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed")

import dask
from distributed import Client, LocalCluster

import napari_dip
from conftest import psnr
from napari_dip._batch import ALLOWED_FAILURES, BatchItem, find_images, restore_files
from napari_dip._cli import main
from napari_dip._io import read_image_file

COMMAND = str(Path(sys.executable).with_name("napari-dip"))
FAST = {"width": 8, "device": "cpu", "iterations": 5}
FAST_ARGS = ["--width", "8", "--device", "cpu", "--iterations", "5", "--quiet"]


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env={"OMP_NUM_THREADS": "1"}
        )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def noisy_images(n: int, size: int = 32, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Smooth uint16 images (a few blobs) and Poisson-noisy copies."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    clean, noisy = [], []
    for _ in range(n):
        image = np.zeros((size, size))
        for _ in range(4):
            cy, cx, r = [*rng.uniform(4, size - 4, 2).tolist(), rng.uniform(3, 7)]
            image += 300 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        image += 20
        clean.append(image)
        noisy.append(rng.poisson(image).astype(np.uint16))
    return clean, noisy


@pytest.fixture
def tree(tmp_path):
    """in/: three TIFFs, a broken TIFF, and a JPEG and a calibrated Z-stack in a subfolder."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    clean, noisy = noisy_images(3)
    for i, image in enumerate(noisy):
        tifffile.imwrite(src / f"img{i}.tif", image)
    (src / "broken.tif").write_bytes(b"II*\0 not really a TIFF")
    iio.imwrite(src / "sub" / "snap.jpg", (noisy[1] // 2).astype(np.uint8))
    metadata = {"axes": "ZYX", "spacing": 0.5, "unit": "um"}
    tifffile.imwrite(
        src / "sub" / "stack.tif", np.stack(noisy[:2]), imagej=True, resolution=(10, 10), metadata=metadata
    )
    return tmp_path, clean, noisy


def test_a_folder_with_a_broken_file_and_a_stack(tree, capsys):
    root, clean, noisy = tree
    argv = ["batch", str(root / "in"), str(root / "out"), "--workers", "2", "--iterations", "300", "--ensemble", "1"]
    assert main([*argv, "--width", "16", "--device", "cpu", "--quiet"]) == 1  # something failed
    captured = capsys.readouterr()
    table = captured.out
    assert "failed" in table and "broken.tif" in table and "cannot read" in table
    assert "5 done, 0 skipped (already there), 1 failed" in table
    assert "2 worker(s) on a local cluster" in captured.err
    out = root / "out"
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert found == ["img0.tif", "img1.tif", "img2.tif", "sub/snap.png", "sub/stack.tif"]
    for i in range(3):  # restored, not copied
        restored = tifffile.imread(out / f"img{i}.tif")
        assert restored.dtype == np.uint16 and psnr(restored, clean[i], 320) > psnr(noisy[i], clean[i], 320) + 2
    stack = read_image_file(out / "sub" / "stack.tif")
    assert stack.data.shape == (2, 32, 32) and stack.data.dtype == np.uint16 and stack.axes == "ZYX"
    assert stack.spacing == pytest.approx({"Z": 0.5, "Y": 0.1, "X": 0.1})
    assert iio.imread(out / "sub" / "snap.png").dtype == np.uint8  # JPEG comes back lossless

    # The same command again: everything done is skipped, the broken file is tried again.
    assert main([*argv, "--width", "16", "--device", "cpu", "--quiet"]) == 1
    assert "0 done, 5 skipped (already there), 1 failed" in capsys.readouterr().out


def test_a_killed_run_continues_where_it_stopped(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _, noisy = noisy_images(6, seed=1)
    for i, image in enumerate(noisy):
        tifffile.imwrite(src / f"f{i}.tif", image)
    argv = [COMMAND, "batch", str(src), str(out), "--workers", "1", "--width", "8", "--device", "cpu", "--quiet"]
    # A slow first run (many iterations), killed with its workers once some files are done.
    first = subprocess.Popen([*argv, "--iterations", "400"], start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("f*.tif"))) < 2:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done = sorted(p.name for p in out.glob("f*.tif"))
    assert 2 <= len(done) < 6, done
    for name in done:  # what looks done is complete: written atomically
        assert tifffile.imread(out / name).shape == (32, 32)
    (out / ".f5.tif.0badcafe.partial.tif").write_bytes(b"torn")  # as a killed writer leaves it
    second = subprocess.run([*argv, "--iterations", "5"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"{6 - len(done)} done, {len(done)} skipped (already there), 0 failed" in second.stdout
    assert sorted(p.name for p in out.iterdir()) == [f"f{i}.tif" for i in range(6)]  # partial files gone


def test_inpainting_takes_the_mask_beside_each_image(tmp_path, client):
    src = tmp_path / "in"
    src.mkdir()
    _, noisy = noisy_images(2)
    for name, image in zip(("a", "b"), noisy, strict=True):
        tifffile.imwrite(src / f"{name}.tif", image)
    mask = np.zeros((32, 32), np.uint8)
    mask[10:20, 10:20] = 1
    iio.imwrite(src / "a_mask.png", mask * 255)  # b has no mask
    report = napari_dip.batch([src], tmp_path / "out", task="inpaint", client=client, **FAST)
    by_name = {f.source.name: f for f in report.files}
    assert set(by_name) == {"a.tif", "b.tif"}  # the mask is not an image to restore
    assert by_name["a.tif"].status == "done"
    assert by_name["b.tif"].status == "failed" and "no mask" in by_name["b.tif"].reason
    filled = tifffile.imread(tmp_path / "out" / "a.tif")
    known = mask == 0
    assert np.array_equal(filled[known], noisy[0][known])  # known pixels exactly as they were


class DiesOnAWorker(os.PathLike):
    """A path that ends any process that opens it (a worker), except the test's own."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.owner = os.getpid()  # travels with the object to the worker

    def __fspath__(self) -> str:
        if os.getpid() != self.owner:
            os._exit(1)  # as an out-of-memory kill would: no exception, the process is gone
        return self.path

    @property
    def name(self) -> str:
        return Path(self.path).name


def test_a_worker_that_dies_is_retried_then_reported(tmp_path, client):
    _, noisy = noisy_images(1)
    tifffile.imwrite(tmp_path / "good.tif", noisy[0])
    items = [
        BatchItem(DiesOnAWorker(tmp_path / "deadly.tif"), tmp_path / "out" / "deadly.tif"),
        BatchItem(tmp_path / "good.tif", tmp_path / "out" / "good.tif"),
    ]
    report = restore_files(client, items, "denoise", False, None, dict(FAST))
    deadly, good = report.files
    assert deadly.status == "failed" and "died 3 times" in deadly.reason
    assert good.status == "done" and (tmp_path / "out" / "good.tif").exists()
    client.wait_for_workers(2, timeout=60)  # the nannies brought the workers back


def test_python_entry_point_for_arrays_and_files(tmp_path, client):
    _, noisy = noisy_images(3)
    options = {**FAST, "seed": 3}
    results = napari_dip.batch(noisy, client=client, **options)
    assert len(results) == 3
    for image, result in zip(noisy, results, strict=True):
        alone = napari_dip.denoise(image, **options)
        # Workers run with fewer threads, so the float sums differ in the last bits and the
        # fits drift apart a little; the two results are still far closer than to the input.
        assert result.dtype == alone.dtype and result.shape == image.shape
        result, alone = result.astype(float), alone.astype(float)
        assert np.abs(result - alone).mean() < 0.2 * np.abs(image - alone).mean()
    futures = napari_dip.batch(noisy[:2], client=client, return_futures=True, **options)
    assert [f.result().shape for f in futures] == [(32, 32), (32, 32)]

    for i, image in enumerate(noisy):
        tifffile.imwrite(tmp_path / f"{i}.tif", image)
    files = [tmp_path / f"{i}.tif" for i in range(3)]
    seen = []
    report = napari_dip.batch(files, tmp_path / "out", client=client, progress=lambda f, n, t: seen.append(n), **FAST)
    assert report.ok and report.count("done") == 3 and seen[-1] == 3
    again = napari_dip.batch(files, tmp_path / "out", client=client, **FAST)
    assert again.count("skipped") == 3 and again.ok


def test_finding_images(tmp_path):
    (tmp_path / "in" / "deep").mkdir(parents=True)
    for name in ("in/a.tif", "in/a_mask.png", "in/deep/b.ome.tiff", "in/notes.txt", "in/.hidden.tif", "c.czi"):
        (tmp_path / name).write_bytes(b"")
    items = find_images([tmp_path / "in", tmp_path / "c.czi"], tmp_path / "out")
    assert [(str(i.source.relative_to(tmp_path)), str(i.output.relative_to(tmp_path))) for i in items] == [
        ("in/a.tif", "out/a.tif"),
        ("in/deep/b.ome.tiff", "out/deep/b.ome.tiff"),
        ("c.czi", "out/c.ome.tif"),
    ]
    assert [i.mask.name for i in find_images([tmp_path / "in"], tmp_path / "out", task="inpaint") if i.mask] == [
        "a_mask.png"
    ]
    assert len(find_images([tmp_path / "in"], tmp_path / "out", pattern="b*")) == 1
    with pytest.raises(ValueError, match="no such file"):
        find_images([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "in" / "deep" / "a.tif").write_bytes(b"")
    with pytest.raises(ValueError, match="would both be written"):
        find_images([tmp_path / "in" / "a.tif", tmp_path / "in" / "deep" / "a.tif"], tmp_path / "out")
    # An output folder inside the input folder: its files are not inputs.
    (tmp_path / "in" / "restored").mkdir()
    (tmp_path / "in" / "restored" / "a.tif").write_bytes(b"")
    assert len(find_images([tmp_path / "in"], tmp_path / "in" / "restored")) == 3


def test_ome_zarr_is_read_through_bioio_and_written_as_ome_tiff(tmp_path, client):
    writers = pytest.importorskip("bioio_ome_zarr.writers")
    _, noisy = noisy_images(2)
    stack = np.stack(noisy)
    writer = writers.OMEZarrWriter(
        str(tmp_path / "cells.ome.zarr"),
        level_shapes=[stack.shape],
        dtype="uint16",
        axes_names=["z", "y", "x"],
        axes_types=["space", "space", "space"],
        axes_units=["micrometer"] * 3,
        physical_pixel_size=[0.5, 0.2, 0.2],
    )
    writer.write_full_volume(stack)
    report = napari_dip.batch([tmp_path / "cells.ome.zarr"], tmp_path / "out", client=client, **FAST)
    assert report.ok, report.table()
    restored = read_image_file(tmp_path / "out" / "cells.ome.tif")
    assert restored.ome and restored.axes == "ZYX" and restored.data.shape == stack.shape
    assert restored.data.dtype == np.uint16 and restored.spacing == pytest.approx({"Z": 0.5, "Y": 0.2, "X": 0.2})
