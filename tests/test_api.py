"""The public numpy API: restoration quality on tiny seeded cases, dtypes, errors."""

import numpy as np
import pytest
from skimage.transform import resize

import napari_dip
from conftest import FAST, psnr
from napari_dip._api import prepare
from napari_dip.fit import DENOISE_TV, GAUSSIAN_TV, GAUSSIAN_TV_RAMP, Progress, gaussian_tv, tv_weight


def test_denoise_gains_5_db_on_a_64px_crop_at_sigma_25(camera64, noisy_camera):
    out = napari_dip.denoise(noisy_camera, iterations=400, **FAST)
    assert out.dtype == np.uint8 and out.shape == camera64.shape
    before, after = psnr(noisy_camera, camera64), psnr(out, camera64)
    assert after - before >= 5.0, (before, after)


def test_denoise_rgb_gains_and_channel_axis_position_does_not_matter(astronaut64):
    rng = np.random.default_rng(5)
    noisy = np.clip(astronaut64 + rng.normal(0, 25, astronaut64.shape), 0, 255).round().astype(np.uint8)
    last = napari_dip.denoise(noisy, channel_axis=-1, iterations=300, ensemble=1, **FAST)
    assert last.shape == (64, 64, 3) and last.dtype == np.uint8
    assert psnr(last, astronaut64) - psnr(noisy, astronaut64) >= 3.0
    first = napari_dip.denoise(np.moveaxis(noisy, -1, 0), channel_axis=0, iterations=3, **FAST)
    last3 = napari_dip.denoise(noisy, channel_axis=2, iterations=3, **FAST)
    np.testing.assert_array_equal(np.moveaxis(first, 0, -1), last3)


def test_inpaint_beats_mean_fill_on_missing_pixels_and_keeps_known_ones(camera64):
    rng = np.random.default_rng(3)
    mask = np.zeros(camera64.shape, np.uint8)  # label image: > 0 = fill
    mask[20:30, 10:50] = 1
    mask[40:56, 30:38] = 2
    mask[rng.random(camera64.shape) < 0.2] = 3
    missing = mask > 0
    damaged = camera64.copy()
    damaged[missing] = 255  # whatever lies under the mask must not matter
    out = napari_dip.inpaint(damaged, mask, iterations=300, **FAST)
    mean_fill = np.full(int(missing.sum()), camera64[~missing].mean())
    assert psnr(out[missing], camera64[missing]) > psnr(mean_fill, camera64[missing]) + 6
    np.testing.assert_array_equal(out[~missing], camera64[~missing])


def test_super_resolution_x2_beats_nearest_neighbour(camera64):
    low = (resize(camera64 / 255.0, (32, 32), anti_aliasing=True) * 255).round().astype(np.uint8)
    out = napari_dip.super_resolve(low, 2, iterations=800, **FAST)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    nearest = np.repeat(np.repeat(low, 2, axis=0), 2, axis=1)
    assert psnr(out, camera64) > psnr(nearest, camera64)


def test_flash_no_flash_keeps_the_no_flash_colours(astronaut64):
    rng = np.random.default_rng(2)
    scene = astronaut64.astype(float)
    ambient = np.clip(scene * [0.7, 0.56, 0.385], 0, 255)  # dim, warm light
    no_flash = np.clip(ambient + rng.normal(0, 20, scene.shape), 0, 255).round().astype(np.uint8)
    flash = np.clip(scene * [0.85, 0.95, 1.1] + rng.normal(0, 3, scene.shape), 0, 255).round().astype(np.uint8)
    out = napari_dip.flash_no_flash(flash, no_flash, channel_axis=-1, iterations=400, lr=0.01, **FAST)
    assert out.shape == no_flash.shape and out.dtype == np.uint8
    colour = out.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(colour, ambient.reshape(-1, 3).mean(axis=0), atol=5)
    assert np.abs(colour - flash.reshape(-1, 3).mean(axis=0)).max() > 40
    assert psnr(out, ambient) - psnr(no_flash, ambient) >= 5


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        (np.uint8, 0, 255),
        (np.uint16, 1000, 40000),
        (np.int16, -500, 700),
        (np.float32, -3.0, 7.0),
        (np.float64, 0.0, 1.0),
        (np.int32, 0, 100_000),
    ],
)
def test_dtype_shape_and_value_range_round_trip(dtype, low, high):
    rng = np.random.default_rng(0)
    image = (low + (high - low) * rng.random((24, 20))).astype(dtype)
    out = napari_dip.denoise(image, iterations=3, **FAST)
    assert out.shape == image.shape
    assert out.dtype == (np.float32 if dtype == np.float32 else dtype)  # float64 stays float64, as in skimage
    if dtype != np.uint8:  # the data's own range, never outside it
        assert image.min() <= out.min() and out.max() <= image.max()


def test_constant_image_comes_back_constant():
    image = np.full((16, 16), 7, np.uint16)
    np.testing.assert_array_equal(napari_dip.denoise(image, iterations=2, **FAST), image)


def test_inputs_are_never_modified(camera64):
    image = camera64.copy()
    image.flags.writeable = False  # read-only arrays are accepted too
    mask = np.zeros(image.shape, bool)
    mask[10:20, 10:20] = True
    mask.flags.writeable = False
    rgb = np.repeat(image[..., None], 3, axis=-1)
    napari_dip.denoise(image, iterations=2, **FAST)
    napari_dip.inpaint(image, mask, iterations=2, **FAST)
    napari_dip.super_resolve(image, 2, iterations=2, **FAST)
    napari_dip.flash_no_flash(rgb, rgb[..., ::-1], channel_axis=-1, iterations=2, **FAST)
    np.testing.assert_array_equal(image, camera64)
    assert mask.sum() == 100


def test_fixed_seed_reproduces_exactly_and_seeds_differ(noisy_camera):
    a = napari_dip.denoise(noisy_camera, iterations=10, seed=7, **FAST)
    b = napari_dip.denoise(noisy_camera, iterations=10, seed=7, **FAST)
    c = napari_dip.denoise(noisy_camera, iterations=10, seed=8, **FAST)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_callback_sees_progress_and_false_stops_early(noisy_camera):
    seen = []

    def callback(step):
        seen.append(step.record)
        return step.record.iteration < 5

    out = napari_dip.denoise(noisy_camera, iterations=100, callback=callback, ensemble=1, **FAST)
    assert [r.iteration for r in seen] == [1, 2, 3, 4, 5]
    assert isinstance(seen[0], Progress) and np.isfinite(seen[0].loss)
    assert out.shape == noisy_camera.shape and out.dtype == np.uint8


def test_iterations_none_runs_the_task_default():
    planned = {}

    def stop_at_once(step):
        planned["n"] = step.record.iterations
        return False

    image = np.random.default_rng(0).random((16, 16))
    napari_dip.denoise(image, iterations=None, stopping=None, callback=stop_at_once, **FAST)
    assert planned["n"] == 3000
    napari_dip.denoise(image, callback=stop_at_once, **FAST)  # automatic stopping: 3000 x 2 is the cap
    assert planned["n"] == 6000
    napari_dip.super_resolve(image, 8, callback=stop_at_once, **FAST)
    assert planned["n"] == 4000
    napari_dip.inpaint(image, image > 0.9, iterations=None, callback=stop_at_once, **FAST)
    assert planned["n"] == 5000


GOOD = np.zeros((16, 16), np.uint8)
MASK = np.zeros((16, 16), bool)
MASK[4:8, 4:8] = True


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: napari_dip.denoise(np.zeros(16)), ValueError, "2-D"),
        (lambda: napari_dip.denoise(np.zeros((16, 16, 3))), ValueError, "channel_axis"),
        (lambda: napari_dip.denoise(np.zeros((16, 16)), volumetric=True), ValueError, "volumetric"),
        (lambda: napari_dip.denoise(np.zeros((4, 16, 16)), spacing=(1, 1, 1)), ValueError, "volumetric"),
        (lambda: napari_dip.denoise(np.zeros((4, 64, 64)), volumetric=True, network="unet"), ValueError, "plane"),
        (lambda: napari_dip.denoise(GOOD, tile_size=8), ValueError, "tile_size"),
        (lambda: napari_dip.inpaint(np.zeros((3, 16, 16)), np.zeros((2, 16, 16), bool)), ValueError, "does not match"),
        (lambda: napari_dip.denoise(np.zeros((16, 16, 3)), channel_axis=3), ValueError, "out of range"),
        (lambda: napari_dip.denoise(np.zeros((2, 16))), ValueError, "too small"),
        (lambda: napari_dip.denoise(np.full((16, 16), np.nan)), ValueError, "NaN"),
        (lambda: napari_dip.denoise(np.where(np.eye(16) > 0, np.inf, 0.0)), ValueError, "infinite"),
        (lambda: napari_dip.denoise(np.zeros((16, 16), bool)), TypeError, "dtype bool"),
        (lambda: napari_dip.denoise(np.full((16, 16), "a")), TypeError, "dtype"),
        (lambda: napari_dip.denoise(np.zeros((16, 16), complex)), TypeError, "dtype"),
        (lambda: napari_dip.denoise("image.png"), TypeError, "dtype"),
        (lambda: napari_dip.denoise(GOOD, iterations=0), ValueError, "iterations must be >= 1"),
        (lambda: napari_dip.denoise(GOOD, iterations=10.5), TypeError, "iterations"),
        (lambda: napari_dip.denoise(GOOD, network="vgg"), ValueError, "unknown network"),
        (lambda: napari_dip.denoise(GOOD, width=0), ValueError, "width"),
        (lambda: napari_dip.denoise(GOOD, lr=-1), ValueError, "lr"),
        (lambda: napari_dip.denoise(GOOD, device="tpu"), ValueError, "unknown device"),
        (lambda: napari_dip.denoise(GOOD, seed=1.5), TypeError, "seed"),
        (lambda: napari_dip.denoise(GOOD, callback=3), TypeError, "callback"),
        (lambda: napari_dip.inpaint(GOOD, np.zeros((16, 15), bool)), ValueError, "does not match"),
        (lambda: napari_dip.inpaint(GOOD, np.zeros((16, 16), bool)), ValueError, "mask is empty"),
        (lambda: napari_dip.inpaint(GOOD, np.ones((16, 16), bool)), ValueError, "whole image"),
        (lambda: napari_dip.inpaint(GOOD, np.full((16, 16), np.nan)), ValueError, "mask contains"),
        (lambda: napari_dip.super_resolve(GOOD, 1), ValueError, "scale"),
        (lambda: napari_dip.super_resolve(GOOD, 2.5), ValueError, "scale"),
        (lambda: napari_dip.super_resolve(GOOD, "4"), ValueError, "scale"),
        (lambda: napari_dip.super_resolve(GOOD, True), ValueError, "scale"),
        (lambda: napari_dip.flash_no_flash(GOOD, np.zeros((16, 17), np.uint8)), ValueError, "differ in size"),
        (lambda: napari_dip.flash_no_flash(GOOD, GOOD, network="deep-decoder"), ValueError, "no image input"),
        (lambda: napari_dip.denoise(GOOD, stopping="patience"), ValueError, "unknown stopping rule"),
        (lambda: napari_dip.denoise(GOOD, tv=-0.1), ValueError, "tv must be >= 0"),
        (lambda: napari_dip.denoise(GOOD, tv="strong"), TypeError, "tv must be a number"),
        (lambda: napari_dip.denoise(GOOD, tv=True), TypeError, "tv must be a number"),
        (lambda: prepare("inpaint", GOOD, mask=np.eye(16), tv=0.3), ValueError, "denoising only"),
        (lambda: napari_dip.super_resolve(GOOD, 2, stopping="validation"), ValueError, "one frame"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_total_variation_keeps_an_overfitting_fit_flat():
    """Run far past the best iteration, the paper's loss fits the noise back; the TV term
    (in noise stds, from the measured noise) holds flat regions flat."""
    rng = np.random.default_rng(0)
    clean = np.full((48, 48), 0.2)
    clean[12:36, 8:30] = 0.8
    clean[30:44, 26:44] = 0.5
    noisy = (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    runs = {tv: napari_dip.denoise(noisy, iterations=600, stopping=None, tv=tv, ensemble=1, **FAST) for tv in (0, 0.3)}
    gain = {tv: psnr(out, clean, 1.0) - psnr(noisy, clean, 1.0) for tv, out in runs.items()}
    assert gain[0.3] >= gain[0] + 1.0, gain
    assert np.isfinite(runs[0.3]).all() and runs[0.3].dtype == np.float32


def test_auto_tv_is_weak_for_gaussian_noise_and_only_where_it_is_strong(camera64):
    """tv="auto" on a natural image: none under weak Gaussian noise, GAUSSIAN_TV under strong
    noise, a ramp between; 16-bit counts keep the photon strength; an explicit 0 turns it off."""
    start, end = GAUSSIAN_TV_RAMP
    assert gaussian_tv(start) == 0 and gaussian_tv(end) == gaussian_tv(1.0) == GAUSSIAN_TV
    assert 0 < gaussian_tv((start + end) / 2) < GAUSSIAN_TV and gaussian_tv(float("nan")) == 0
    rng = np.random.default_rng(0)
    clean = camera64.astype(np.float32) / 255

    def weight_and_std(noisy: np.ndarray, **kwargs) -> tuple[float, float]:
        job = prepare("denoise", noisy, iterations=1, device="cpu", **kwargs)
        std = float(np.sqrt(job.noise.baseline)) / float(np.mean(job.value_map.scale))
        return job.schedule.options.get("tv", 0.0), std

    weak = clean + rng.normal(0, 0.02, clean.shape).astype(np.float32)
    strong = clean + rng.normal(0, 0.15, clean.shape).astype(np.float32)
    assert weight_and_std(weak)[0] == 0
    weight, std = weight_and_std(strong)
    assert std > end and weight == pytest.approx(tv_weight(GAUSSIAN_TV, std**2), rel=1e-6)
    assert weight_and_std(strong, tv=0)[0] == 0
    counts = rng.poisson(40 * clean).astype(np.uint16) * 2 + 100
    job = prepare("denoise", counts, device="cpu")  # the default rule: it is given the noise variance
    assert job.noise.kind == "poisson" and job.schedule.options["tv"] > 0
    assert job.schedule.options["tv"] == pytest.approx(tv_weight(DENOISE_TV, job.schedule.options["noise_variance"]))


def test_every_network_runs_through_the_api(noisy_camera):
    for network in ("skip", "encoder-decoder", "unet", "resnet", "deep-decoder"):
        out = napari_dip.denoise(noisy_camera[:40, :40], network=network, width=8, iterations=2, device="cpu")
        assert out.shape == (40, 40)


def test_values_under_the_inpainting_mask_do_not_matter(camera64):
    mask = np.zeros(camera64.shape, bool)
    mask[20:30, 20:40] = True
    with_nan = camera64.astype(np.float64)
    with_nan[mask] = np.nan
    huge = camera64.astype(np.float64)
    huge[mask] = 1e6
    a = napari_dip.inpaint(with_nan, mask, iterations=3, **FAST)
    b = napari_dip.inpaint(huge, mask, iterations=3, **FAST)
    np.testing.assert_allclose(a, b, atol=1e-3)  # same fit: the holes are ignored, range from known pixels
    assert np.isfinite(a).all() and a[mask].max() <= camera64[~mask].max() + 1e-3


def test_numpy_integers_and_lists_are_accepted():
    image = np.random.default_rng(0).random((16, 16))
    out = napari_dip.denoise(image, iterations=np.int64(2), width=np.int64(4), seed=np.int32(3), device="cpu")
    assert out.shape == (16, 16)
    mask = [[i == j for j in range(16)] for i in range(16)]
    assert napari_dip.inpaint(image, mask, iterations=1, width=4, device="cpu").shape == (16, 16)


def test_seed_out_of_range_and_super_resolution_cap_under_a_rule():
    with pytest.raises(ValueError, match="seed"):
        napari_dip.denoise(GOOD, seed=2**64)
    planned = {}

    def stop_at_once(step):
        planned["n"] = step.record.iterations
        return False

    napari_dip.super_resolve(np.zeros((8, 8)), 8, stopping="emv", callback=stop_at_once, width=4, device="cpu")
    assert planned["n"] == 8000  # twice the paper's 4000 at x8
