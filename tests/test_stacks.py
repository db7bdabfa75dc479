"""Microscopy data: stacks, volumes, robust values, tiles and memory, on tiny cases."""

import time

import numpy as np
import pytest

import napari_dip
from conftest import psnr
from napari_dip import _api, memory, schedule
from napari_dip._convert import robust_range, standardize
from napari_dip.schedule import Schedule, plan_tiles, tile_starts, tile_weights
from napari_dip.stopping import ExponentialVariance

# One network where a test is about planes, tiles and values and fits for long (the
# default ensemble, two networks for small images on a CPU, doubles the time).
FAST = {"width": 16, "device": "cpu"}
DENOISE = {**FAST, "ensemble": 1}


def blobs(shape=(64, 64), seed=0, n=6, sigma=4.0):
    """Smooth bright blobs on a dim background, float in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = np.full(shape, 0.1)
    for _ in range(n):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        image += rng.uniform(0.3, 0.8) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return np.clip(image, 0, 1)


def photon_stack(planes=4, size=32, photons=40, seed=0):
    """(clean counts, noisy uint16): neighbouring planes alike, Poisson noise, gain 2, offset 100."""
    base = blobs((size, size), seed)
    clean = np.stack([np.roll(base, p, axis=1) for p in range(planes)]) * photons
    rng = np.random.default_rng(seed + 1)
    noisy = rng.poisson(clean) * 2 + 100 + rng.normal(0, 2, clean.shape)
    return clean * 2 + 100, np.clip(noisy, 0, 65535).round().astype(np.uint16)


def peak(clean):
    return float(clean.max() - clean.min())


# -- layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "channel_axis", "dims", "standard"),
    [
        ((5, 16, 24), None, 2, (5, 1, 16, 24)),
        ((2, 5, 16, 24), None, 2, (10, 1, 16, 24)),
        ((5, 2, 16, 24), 1, 2, (5, 2, 16, 24)),
        ((5, 16, 24, 3), -1, 2, (5, 3, 16, 24)),
        ((2, 5, 16, 24), None, 3, (2, 1, 5, 16, 24)),
        ((5, 16, 24), None, 3, (1, 1, 5, 16, 24)),
    ],
)
def test_any_layout_maps_to_planes_and_back_exactly(shape, channel_axis, dims, standard):
    image = np.random.default_rng(0).random(shape)
    std, layout = standardize(image, channel_axis, dims)
    assert std.shape == standard
    np.testing.assert_array_equal(layout.to_user(std), image)
    bigger = np.repeat(np.repeat(std, 2, axis=-1), 2, axis=-2)
    assert layout.to_user(bigger).shape == layout.user_shape((*std.shape[2:-2], std.shape[-2] * 2, std.shape[-1] * 2))


# -- planes and warm starts ---------------------------------------------------------------


def test_stack_keeps_shape_and_every_plane_gains():
    clean, noisy = photon_stack()
    out = napari_dip.denoise(noisy, iterations=250, **DENOISE)
    assert out.shape == noisy.shape and out.dtype == np.float32  # dim counts: rounding would cost
    assert napari_dip.denoise(noisy, iterations=2, dtype="input", **FAST).dtype == np.uint16
    for p in range(len(clean)):
        before, after = psnr(noisy[p], clean[p], peak(clean)), psnr(out[p], clean[p], peak(clean))
        assert after > before + 3, (p, before, after)


def test_warm_start_starts_each_plane_from_the_previous_planes_weights():
    _, noisy = photon_stack(planes=2)

    def first_output(job, plane):
        for step in job.schedule:
            if step.plane == plane and step.record.iteration == 1:
                fit = job.schedule.fit
                return fit.output.detach()[(0, 0, *fit.output_region)].numpy()
        raise AssertionError("plane not reached")

    warm = _api.prepare("denoise", noisy, iterations=150, **DENOISE)
    warm_start = first_output(warm, 1)
    restored0 = warm.schedule.result()[0, 0]
    cold = _api.prepare("denoise", noisy[1:], iterations=2, **DENOISE)
    cold_start = first_output(cold, 0)
    # Plane 1 starts where plane 0 ended: its first output already looks like the image.
    assert np.abs(warm_start - restored0).mean() < 0.5 * np.abs(cold_start - restored0).mean()
    list(warm.schedule)
    assert [s.warm for s in warm.schedule.summaries] == [False, True]


def test_a_warm_plane_takes_the_schedules_rule_settings_over_the_fits():
    image = np.random.default_rng(0).random((2, 1, 24, 24)).astype(np.float32)
    sched = Schedule("denoise", image, width=8, iterations=3, device="cpu", stopping="emv", rise=0.2, tv=0.01)
    rules = {}
    for step in sched:
        if step.record.iteration == 1:
            rules[step.plane] = sched.fit.rule
    cold, warm = rules[0], rules[1]
    assert [s.warm for s in sched.summaries] == [False, True]
    assert (cold.window, cold.patience) == (ExponentialVariance().window, ExponentialVariance().patience)
    assert (warm.window, warm.patience) == (schedule.WARM_RULE["window"], schedule.WARM_RULE["patience"])
    assert cold.growth is not None and warm.growth is None  # WARM_RULE's growth 0: no guard
    # The cold plane takes the fit's rise and (under TV) no ceiling; the warm one the
    # schedule's: no rise, the ceiling at the noise variance.
    assert (cold.rise, cold.ceiling) == (0.2, None) and (warm.rise, warm.ceiling) == (None, 1.0)
    # A fit's own rule option that WARM_RULE does not set (the bright stabilised fit's
    # hold) reaches warm planes too; WARM_RULE's own settings still win.
    sched = Schedule(
        "denoise", image, width=8, iterations=3, device="cpu", stopping="emv", rule_options={"hold": 1.0, "window": 7}
    )
    for step in sched:
        if step.record.iteration == 1:
            rules[step.plane] = sched.fit.rule
    assert rules[0].hold == rules[1].hold == 1.0
    assert (rules[0].window, rules[1].window) == (7, schedule.WARM_RULE["window"])


def test_the_cold_plane_stops_per_region_and_warm_planes_as_one():
    # Regions that stop apart (the photon settings on large planes) hold for a stack's cold
    # plane; a warm plane keeps the whole image (WARM_RULE), and each summary says which.
    image = np.random.default_rng(0).random((2, 1, 64, 64)).astype(np.float32)
    sched = Schedule(
        "denoise", image, width=8, iterations=3, device="cpu", stopping="emv", ensemble=2, rule_options={"region": 32}
    )
    list(sched)
    assert [s.warm for s in sched.summaries] == [False, True]
    assert [np.shape(s.best_iterations) for s in sched.summaries] == [(2, 4), (2, 1)]


def test_a_stopped_stack_keeps_finished_planes_and_zeroes_the_rest():
    _, noisy = photon_stack(planes=3)

    def stop_in_plane_1(step):
        return not (step.plane == 1 and step.record.iteration == 3)

    out = napari_dip.denoise(noisy, iterations=5, callback=stop_in_plane_1, **FAST)
    assert out.shape == noisy.shape
    assert out[0].min() > 0 and out[1].min() > 0  # finished, and the one being fitted as it was
    assert not out[2].any()


def test_time_lapse_of_z_stacks_and_channels_first():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, (2, 3, 2, 16, 16), dtype=np.uint16)  # T, Z, C, Y, X
    out = napari_dip.denoise(image, channel_axis=2, iterations=2, **DENOISE)
    assert out.shape == image.shape and out.dtype == image.dtype


def test_inpainting_a_stack_with_a_2d_mask_and_with_a_stack_mask():
    clean, _ = photon_stack(planes=2)
    image = clean.round().astype(np.uint16)
    mask2d = np.zeros((32, 32), bool)
    mask2d[10:16, 8:24] = True
    out = napari_dip.inpaint(image, mask2d, iterations=150, **FAST)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[:, ~mask2d], image[:, ~mask2d])
    fill = np.full(int(mask2d.sum()), image[:, ~mask2d].mean())
    for p in range(2):
        assert psnr(out[p][mask2d], clean[p][mask2d], peak(clean)) > psnr(fill, clean[p][mask2d], peak(clean)) + 3
    mask3d = np.zeros(image.shape, bool)
    mask3d[1, 5:9, 5:9] = True  # plane 0 has nothing to fill: it is returned as it is
    out = napari_dip.inpaint(image, mask3d, iterations=3, **FAST)
    np.testing.assert_array_equal(out[0], image[0])


def test_super_resolution_of_a_stack_enlarges_y_and_x_only():
    small = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    out = napari_dip.super_resolve(small, 2, iterations=2, **FAST)
    assert out.shape == (3, 32, 32)


# -- volumes ------------------------------------------------------------------------------


def test_volumetric_denoising_of_a_tiny_anisotropic_volume_gains():
    base = blobs((64, 64), seed=3, sigma=6)
    z = np.linspace(-1, 1, 6)[:, None, None]
    clean = base[None] * np.exp(-(z**2)) * 60 + 5  # photons
    noisy = np.random.default_rng(0).poisson(clean).astype(np.float32)
    out = napari_dip.denoise(noisy, volumetric=True, spacing=(3.0, 1.0, 1.0), iterations=400, width=8, device="cpu")
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert psnr(out, clean, peak(clean)) > psnr(noisy, clean, peak(clean)) + 3


# -- robust values ------------------------------------------------------------------------


def spots(size=64, seed=0):
    """(clean counts, noisy uint16) like a fluorescence camera image: dim cells and bright
    diffraction-limited spots (a few tens to ~150 photons), Poisson noise, gain 2, offset 100."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    photons = 4 + 30 * blobs((size, size), seed, sigma=8)
    for _ in range(5):
        cy, cx = rng.uniform(8, size - 8, 2)
        photons = photons + 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.2**2))
    noisy = np.clip(2 * rng.poisson(photons) + 100, 0, 65535).astype(np.uint16)
    return 2 * photons + 100, noisy


def test_hot_pixels_do_not_squash_the_signal_and_spots_are_not_clipped():
    _, spotty = spots()
    hot_spotty = spotty.copy()
    hot_spotty[[3, 40, 50], [7, 20, 60]] = 65535
    _, high = robust_range(hot_spotty)
    assert high == spotty.max()  # the brightest spot is in the range, the hot pixels are not

    clean, noisy = photon_stack(planes=1, seed=6)
    clean, noisy = clean[0], noisy[0]
    hot = noisy.copy()
    where = (np.array([3, 17, 30, 9, 25]), np.array([5, 28, 11, 20, 2]))
    hot[where] = 65535
    quiet = np.ones(clean.shape, bool)
    quiet[where] = False
    plain = napari_dip.denoise(noisy, iterations=250, **DENOISE)
    with_hot = napari_dip.denoise(hot, iterations=250, **DENOISE)
    before = psnr(noisy[quiet], clean[quiet], peak(clean))
    assert psnr(with_hot[quiet], clean[quiet], peak(clean)) > before + 3
    # As good as without the hot pixels, which are gone (filled in from their neighbours).
    assert abs(psnr(with_hot, clean, peak(clean)) - psnr(plain, clean, peak(clean))) < 1
    assert with_hot.max() < 2 * clean.max()


def test_channels_of_different_ranges_are_mapped_each_on_its_own():
    photons = photon_stack(planes=2, seed=4)[0] / 2 - 50  # two channels of ~40 photons
    gains = np.array([5.0, 800.0])[:, None, None]  # a few hundred counts vs tens of thousands
    clean = gains * photons
    noisy = np.clip(gains * np.random.default_rng(0).poisson(photons), 0, 65535).astype(np.uint16)
    assert noisy[0].max() < 1000 < 20_000 < noisy[1].max()
    out = napari_dip.denoise(noisy, channel_axis=0, iterations=250, **DENOISE)
    for c in range(2):
        assert psnr(out[c], clean[c], peak(clean[c])) > psnr(noisy[c], clean[c], peak(clean[c])) + 3, c


# -- tiles --------------------------------------------------------------------------------


def test_tile_plan_covers_the_image_with_equal_overlapping_tiles():
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(30, 40, 10) == [0]
    tiles = plan_tiles((100, 70), 40)
    assert {(t[0].stop - t[0].start, t[1].stop - t[1].start) for t in tiles} == {(40, 40)}
    cover = np.zeros((100, 70))
    for t, w in zip(tiles, tile_weights(tiles), strict=True):
        cover[t] += w
    assert cover.min() > 0.99 - 1e-9 or cover.min() > 0  # every pixel is covered with weight


def test_tiles_blend_without_seams_at_about_whole_image_quality():
    clean = blobs((96, 96), seed=2, n=12, sigma=5) * 200
    noisy = (clean + np.random.default_rng(0).normal(0, 20, clean.shape)).astype(np.float32)
    whole = napari_dip.denoise(noisy, iterations=200, **DENOISE)
    job = _api.prepare("denoise", noisy, tile_size=48, iterations=200, **DENOISE)
    tiled = job.run()
    assert len(job.schedule.tiles) == 9
    error = np.abs(tiled - clean)
    borders = np.zeros(clean.shape, bool)
    for tile in job.schedule.tiles:
        for axis, sl in enumerate(tile):
            for edge in (sl.start, sl.stop):
                if 0 < edge < 96:
                    index = [slice(None), slice(None)]
                    index[axis] = slice(edge - 2, edge + 2)
                    borders[tuple(index)] = True
    assert error[borders].mean() < 1.25 * error[~borders].mean(), (error[borders].mean(), error[~borders].mean())
    # One seed's whole-image fit scatters by 2 dB here (32.7-34.8 dB over seeds 0-3, the
    # tiled one 33.3-34.6): "about" is within 1.5 dB.
    assert psnr(tiled, clean, 200) > psnr(whole, clean, 200) - 1.5
    assert psnr(tiled, clean, 200) > psnr(noisy, clean, 200) + 3


# -- memory -------------------------------------------------------------------------------


def test_a_huge_image_is_refused_at_once_with_the_estimate_and_advice():
    big = np.broadcast_to(np.uint16(7), (16384, 16384))
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"needs about [\d.]+ GB, [\d.]+ GB available.*tile_size=\d+"):
        napari_dip.denoise(big, device="cpu")
    assert time.perf_counter() - start < 30


def test_tile_size_auto_tiles_only_when_the_whole_would_not_fit(monkeypatch):
    image = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    assert _api.prepare("denoise", image, tile_size="auto", iterations=1, **DENOISE).schedule.tiles.__len__() == 1
    whole = memory.estimate_fit_bytes("skip", 16, 32, 1, (128, 128), "cpu")
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": int(whole / memory.SAFETY * 0.7))
    monkeypatch.setattr(_api, "CRUDE_BYTES_PER_PIXEL_CHANNEL", 0)
    with pytest.raises(MemoryError, match="tile_size="):
        _api.prepare("denoise", image, iterations=1, **DENOISE)
    job = _api.prepare("denoise", image, tile_size="auto", iterations=1, **DENOISE)
    assert len(job.schedule.tiles) > 1
    assert job.run().shape == image.shape


def test_schedule_rejects_a_tile_with_no_known_pixel():
    image = np.zeros((1, 1, 64, 64), np.float32)
    known = np.ones((1, 64, 64), bool)
    known[0, :32, :32] = False
    with pytest.raises(ValueError, match="larger tile_size"):
        Schedule("inpaint", image, known=known, tile_size=24, iterations=1, width=8, device="cpu")


def test_flash_no_flash_on_a_stack_of_pairs():
    rng = np.random.default_rng(0)
    flash = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    out = napari_dip.flash_no_flash(flash, flash // 2, channel_axis=-1, iterations=2, **FAST)
    assert out.shape == flash.shape and out.dtype == np.uint8


def test_inpainting_colour_images_and_stacks_keeps_known_pixels():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[5:9, 5:9] = True
    out = napari_dip.inpaint(rgb, mask, channel_axis=-1, iterations=2, **FAST)
    assert out.shape == rgb.shape
    np.testing.assert_array_equal(out[~mask], rgb[~mask])
    stack = np.stack([np.moveaxis(rgb, -1, 0)] * 2)  # (P, C, Y, X)
    out = napari_dip.inpaint(stack, mask, channel_axis=1, iterations=2, **FAST)
    np.testing.assert_array_equal(out[:, :, ~mask], stack[:, :, ~mask])
