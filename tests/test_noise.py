"""Noise models (measured from the image, variance-stabilised fits) and batched ensembles."""

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage
from skimage import data

from conftest import psnr
from napari_dip import denoise
from napari_dip import estimate_noise as measure_noise
from napari_dip._api import prepare
from napari_dip._cli import main
from napari_dip._convert import value_map
from napari_dip.fit import (
    PHOTON_CEILING,
    PHOTON_OVERFIT,
    PHOTON_RISE,
    PHOTON_WHITE,
    STABILISED_WHITE,
    Fit,
    photon_options,
)
from napari_dip.networks import Ensemble, GroupedEnsemble, seeded_network
from napari_dip.noise import AUTO_STABILISE_PHOTONS, NoiseModel, estimate_noise


def photon_image(peak: float, gain: float, offset: float, read: float, seed: int = 0, size: int = 96):
    """(expected counts, uint16 camera counts) of coins scaled to ``peak`` photons."""
    clean = data.coins()[40 : 40 + size, 100 : 100 + size].astype(float)
    rate = clean / clean.max() * peak
    rng = np.random.default_rng(seed)
    counts = gain * rng.poisson(rate) + offset + rng.normal(0, read * gain, rate.shape)
    return gain * rate + offset, np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize(("peak", "gain", "offset"), [(5, 2.0, 100), (30, 4.0, 400)])
def test_photon_noise_is_recognised_and_its_gain_and_offset_measured(peak, gain, offset):
    _, counts = photon_image(peak, gain, offset, read=1.5)
    model = estimate_noise(counts[None, None].astype(float))
    assert model.kind == "poisson"
    assert model.gain == pytest.approx(gain, rel=0.3)
    # The level where the variance would vanish: the offset less read² / gain (a few counts).
    assert model.offset == pytest.approx(offset - 1.5**2 * gain, abs=0.15 * gain * peak)
    assert set(model.estimated) == {"gain", "offset"}


@pytest.mark.parametrize("peak", [40, 600])
def test_photon_noise_of_bright_regions_over_a_dark_background(peak):
    """A phantom's bright flat regions look steep from their photon noise alone; ranked by
    steepness as it is, only the dark background (read noise) filled the bins and the image
    read as Gaussian with σ 9 counts, a tenth of its bright regions' variance."""
    clean = data.shepp_logan_phantom()[182:278, 152:248]
    gain, read = 4.5, 2.0
    rng = np.random.default_rng(0)
    counts = gain * rng.poisson(clean / clean.max() * peak) + 100 + rng.normal(0, read * gain, clean.shape)
    counts = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
    model = estimate_noise(counts[None, None].astype(float))
    assert model.kind == "poisson"
    assert model.gain == pytest.approx(gain, rel=0.15)
    # noise="poisson" finds the same model (forced onto the first ranking, it read the
    # gain at 600 photons as 1.27).
    assert estimate_noise(counts[None, None].astype(float), noise="poisson") == model
    # The shells fit with that model: the variance the stopping rule expects is the bright
    # regions' too, not the background's read noise alone.
    job = prepare("denoise", counts, width=8, device="cpu", ensemble=1)
    assert job.noise.kind == "poisson" and job.noise.gain == pytest.approx(model.gain)
    assert job.noise.variance_at(float(counts.mean())) > 3 * (read * gain) ** 2


@pytest.mark.parametrize("sigma", [10, 25])
def test_gaussian_noise_is_recognised_and_sigma_measured(camera64, sigma):
    noisy = np.clip(data.camera()[100:196, 100:196] + np.random.default_rng(0).normal(0, sigma, (96, 96)), 0, 255)
    model = estimate_noise(noisy[None, None])
    assert model.kind == "gaussian"
    assert model.sigma == pytest.approx(sigma, rel=0.15)


def test_given_gain_and_offset_are_kept_and_read_noise_measured():
    _, counts = photon_image(20, 2.0, 100, read=2.0)
    model = estimate_noise(counts[None, None].astype(float), noise="poisson", gain=2.0, offset=100.0)
    assert (model.gain, model.offset, model.estimated) == (2.0, 100.0, ())
    assert model.read == pytest.approx(2.0 * 2.0, rel=0.35)  # 2 e- read noise at 2 counts/e-


def test_unbiased_inverse_of_the_stabilising_transform():
    """The closed-form inverse undoes the transform's bias at low counts, where the
    algebraic inverse is far off (Mäkitalo & Foi)."""
    rng = np.random.default_rng(0)
    gain, offset, read = 2.0, 100.0, 3.0
    model = NoiseModel("poisson", gain, read**2 - gain * offset)
    for photons in (1.0, 3.0, 10.0, 50.0):
        counts = gain * rng.poisson(photons, 200_000) + offset + rng.normal(0, read, 200_000)
        back = model.unstabilize(model.stabilize(counts).mean())
        assert (back - offset) / gain == pytest.approx(photons, abs=0.05 * photons + 0.1)
    values = np.linspace(-50, 2000, 500)
    assert np.all(np.diff(model.unstabilize(model.stabilize(values))) >= 0)  # monotonic both ways


def test_public_estimate_takes_user_arrays_and_masked_values():
    _, counts = photon_image(20, 2.0, 100, read=1.5)
    stack = np.stack([counts, counts[::-1]])  # (Z, Y, X): planes pooled, one camera
    model = measure_noise(stack)
    assert model.kind == "poisson" and model.gain == pytest.approx(2.0, rel=0.3)
    hot = np.ma.masked_array(counts, mask=np.zeros_like(counts, bool))
    hot.data[5, 5], hot.mask[5, 5] = 65535, True
    assert measure_noise(hot).gain == pytest.approx(model.gain, rel=0.3)
    rgb = np.clip(data.astronaut()[:96, :96] + np.random.default_rng(0).normal(0, 20, (96, 96, 3)), 0, 255)
    assert measure_noise(rgb, channel_axis=-1).sigma == pytest.approx(20, rel=0.2)


def test_tiny_images_fall_back_to_the_plain_loss():
    model = estimate_noise(np.random.default_rng(0).random((1, 1, 12, 12)))
    assert model.kind == "gaussian" and np.isnan(model.sigma)
    with pytest.raises(ValueError, match="gain= and offset="):
        estimate_noise(np.random.default_rng(0).random((1, 1, 12, 12)), noise="poisson")


def test_denoise_reports_its_noise_model_and_restores_photon_counts():
    truth, counts = photon_image(30, 2.0, 100, read=1.5, size=64)
    job = prepare("denoise", counts, width=16, device="cpu", iterations=400, stopping=None, noise="poisson", ensemble=1)
    assert job.noise.kind == "poisson" and "Poisson" in job.noise.describe()
    assert job.value_map.noise is job.noise  # the fit runs on the stabilised image
    restored = job.run()
    assert restored.dtype == np.float32 and restored.shape == counts.shape  # tens of photons: too fine to round
    peak = truth.max() - truth.min()
    assert psnr(restored, truth, peak) > psnr(counts, truth, peak) + 4
    assert counts.dtype == np.uint16  # the input is untouched
    # Values in the stabilised domain come back in counts, within the data's range.
    assert restored.min() >= counts.min() and restored.max() <= counts.max()


def test_the_stabilised_fit_keeps_no_rise_the_linear_fit_does():
    # noise="poisson": the raw outputs' variance lies flat while the PSNR climbs, so a rise
    # fires on a fluctuation (BENCHMARKS.md, "The variance-stabilised fit under the white gate").
    _, counts = photon_image(30, 2.0, 100, read=1.5, size=48)
    stabilised = prepare("denoise", counts, width=4, device="cpu", noise="poisson", gain=2.0, offset=100.0)
    linear = prepare("denoise", counts, width=4, device="cpu", noise="auto", gain=2.0, offset=100.0)
    assert stabilised.value_map.noise is not None and linear.value_map.noise is None
    assert stabilised.schedule.options["rise"] is None and linear.schedule.options["rise"] == PHOTON_RISE
    for job in (stabilised, linear):  # both wait for a white residual, under the same ceiling
        assert job.schedule.options["ceiling"] == PHOTON_CEILING
    # ... the stabilised one for a slightly high-passed one: on bright piecewise-constant
    # images its correlation hovers just under 0 while the PSNR climbs.
    assert linear.schedule.options["white"] == PHOTON_WHITE == 0
    assert stabilised.schedule.options["white"] == STABILISED_WHITE < 0
    assert photon_options(0.05, stabilised=True)["rise"] is None and photon_options(0.05)["rise"] == PHOTON_RISE
    # The end at a high-passed residual was measured on the linear fit only.
    assert stabilised.schedule.options["overfit"] is None and linear.schedule.options["overfit"] == PHOTON_OVERFIT


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise": "laplace"}, "noise must be one of"),
        ({"noise": "gaussian", "gain": 2.0}, "photon noise"),
        ({"gain": -1.0}, "gain must be positive"),
        ({"gain": "2"}, "gain must be a number"),
        ({"offset": float("nan")}, "offset must be finite"),
        ({"ensemble": 0}, "ensemble must be from 1"),
        ({"ensemble": 2.5}, "ensemble must be an integer"),
    ],
)
def test_bad_noise_and_ensemble_options_are_refused(noisy_camera, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        denoise(noisy_camera, iterations=1, width=4, device="cpu", **kwargs)


def test_auto_measures_photon_noise_but_keeps_the_plain_loss():
    _, counts = photon_image(30, 2.0, 100, read=1.5, size=64)
    job = prepare("denoise", counts, width=8, device="cpu", iterations=1)
    assert job.noise.kind == "poisson" and job.value_map.noise is None and not job.stabilised
    assert job.noise.bright_photons < AUTO_STABILISE_PHOTONS
    assert "variance-stabilised" not in job.describe_noise()
    # Hot pixels do not move the bright end (8 at 65535 made it 2000 photons under a box filter).
    _, dim = photon_image(5, 2.0, 100, read=1.5, size=64)
    hot = dim.copy()
    hot.reshape(-1)[:: hot.size // 8] = 65535
    measured = [prepare("denoise", image, width=8, device="cpu").noise for image in (dim, hot)]
    assert measured[1].bright == pytest.approx(measured[0].bright, rel=0.05)
    assert measured[1].bright_photons < AUTO_STABILISE_PHOTONS


@pytest.mark.parametrize("gain", [0.5, 4.0])
def test_auto_fits_bright_photon_images_stabilised(gain):
    # Bright images under the plain loss ended 3-4 dB early (BENCHMARKS.md, "Bright images").
    truth, counts = photon_image(300, gain, 100, read=1.5, size=64)
    job = prepare("denoise", counts, width=8, device="cpu")
    bright = (np.percentile(ndimage.median_filter(truth, 3), 99) - 100) / gain  # the truth's, in photons
    # As near as the estimated gain (0.6-1.8x the true one on the benchmark's cameras).
    assert job.noise.bright_photons == pytest.approx(bright, rel=0.5)
    assert job.noise.bright_photons >= AUTO_STABILISE_PHOTONS and job.stabilised
    assert job.value_map.noise is job.noise and job.schedule.options["rise"] is None  # as noise="poisson"
    assert "photons at the bright end" in job.describe_noise() and "variance-stabilised" in job.describe_noise()
    assert job.noise.as_dict()["bright_photons"] == job.noise.bright_photons
    # The camera's own gain and offset tell the photons exactly; Gaussian noise has none.
    given = prepare("denoise", counts, width=8, device="cpu", gain=gain, offset=100.0)
    assert given.stabilised and given.noise.bright_photons == pytest.approx(bright, rel=0.1)
    plain = prepare("denoise", counts, width=8, device="cpu", noise="gaussian")
    assert not plain.stabilised and np.isnan(plain.noise.bright_photons)
    # A stack keeps the plain loss (stabilised, a bright 16-bit stack lost 0.4 dB), unless asked.
    stack = np.stack([counts, counts])
    assert not prepare("denoise", stack, width=8, device="cpu").stabilised
    assert prepare("denoise", stack, width=8, device="cpu", noise="poisson").stabilised


def test_the_stabilised_value_range_leaves_hot_pixels_out():
    # The robust range is found in counts: in the stabilised (square-root) values a hot
    # pixel's lead over a bright neighbour shrinks (here from 8 % of its height to 29 %,
    # over the 25 % that counts as backed up), and a 16-bit stack's hot pixels stretched the
    # range and were fitted (9-19 dB instead of 39-49; BENCHMARKS.md, "Bright images").
    model = NoiseModel("poisson", 2.0, -200.0, 100.0, 0.0)  # 2 counts/photon, offset 100
    counts = (100 + 2 * np.random.default_rng(0).poisson(5, (48, 48))).astype(np.uint16)
    counts[20:23, 20:23] = 600
    counts[21, 21] = 1100  # a spot whose peak its neighbours back up
    counts[21, 23] = 6000  # a hot pixel beside it
    standard = counts[None, None]
    for noise in (None, model):
        unit = value_map(standard, False, None, noise).to_unit(standard, axis=1)[0, 0]
        assert unit[21, 21] <= 1 < unit[21, 23], noise  # the spot in range, the hot pixel out


def test_noise_options_belong_to_denoising(noisy_camera):
    with pytest.raises(ValueError, match="denoising only"):
        prepare("inpaint", noisy_camera, mask=noisy_camera > 200, noise="poisson", device="cpu")


def test_cli_prints_the_noise_model(tmp_path, capsys):
    _, counts = photon_image(20, 2.0, 100, read=1.5, size=64)
    tifffile.imwrite(tmp_path / "in.tif", counts)
    args = ["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--iterations", "2"]
    assert main([*args, "--width", "8", "--device", "cpu", "--quiet", "--gain", "2", "--offset", "100"]) == 0
    err = capsys.readouterr().err
    assert "noise: Poisson–Gaussian, gain 2 counts/photon, offset 100" in err
    assert "ensemble: 2 networks" in err  # a small image on a CPU (fit.default_ensemble)


def test_automatic_ensemble_is_two_networks_for_small_images_on_a_cpu():
    """On a CPU "auto" fits two members where a fit is small (pixels x width² up to
    256² x 32²), one for larger images, volumes, other networks and other tasks; four on CUDA."""
    from napari_dip.fit import default_ensemble

    cpu = torch.device("cpu")
    assert default_ensemble(cpu, 256 * 256, 32) == 2
    assert default_ensemble(cpu, 257 * 256, 32) == 1
    assert default_ensemble(cpu, 64 * 64, 128) == 2 and default_ensemble(cpu, 96 * 96, 128) == 1
    assert default_ensemble(cpu, 64 * 64, 32, volumetric=True) == 1
    assert default_ensemble(cpu, 64 * 64, 32, network="unet") == 1
    # On a GPU too (four members cost 3.7-4.7x one on an H200): two for small fits only.
    assert default_ensemble(torch.device("cuda"), 64 * 64, 32) == 2
    assert default_ensemble(torch.device("cuda"), 512 * 512, 128) == 1
    small = np.random.default_rng(0).integers(90, 110, (48, 48)).astype(np.uint16)
    assert prepare("denoise", small, width=8, device="cpu").schedule.options["ensemble"] == 2
    assert prepare("denoise", small, width=8, device="cpu", ensemble=1).schedule.options["ensemble"] == 1
    known = np.zeros(small.shape, bool)
    known[:4] = True
    assert prepare("inpaint", small, mask=known, width=8, device="cpu").schedule.options["ensemble"] == 1
    large = np.zeros((300, 300), np.uint16)
    assert prepare("denoise", large, width=32, device="cpu").schedule.options["ensemble"] == 1


def test_ensemble_members_are_the_networks_they_stack():
    nets = [seeded_network("skip", 8, 1, 8, seed) for seed in (3, 5)]
    z = torch.rand(2, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = Ensemble(nets)(z)
        alone = [net(z[k : k + 1])[0] for k, net in enumerate(nets)]
    for k in range(2):
        torch.testing.assert_close(together[k], alone[k], atol=1e-4, rtol=1e-4)


@pytest.fixture(params=[None, 1], ids=["threads", "one-thread"])
def torch_threads(request):
    """Torch's own thread count, and one thread (batch workers on a cluster of one-core workers)."""
    before = torch.get_num_threads()
    if request.param:
        torch.set_num_threads(request.param)
    yield
    torch.set_num_threads(before)


def test_grouped_ensemble_is_its_members_forward_and_back(torch_threads):
    """On CPU an ensemble of skip networks is one grouped channels-last network: each
    member's output and the gradients of its weights and input are those of the member
    alone (the grouped shifted weight gradient: test_networks). With one thread, oneDNN's
    grouped 1x1 convolution took a wrong weight gradient from an input whose batch stride
    was not channels-last's own (the arranged z's flattened view)."""
    cl = torch.channels_last
    nets = [seeded_network("skip", 32, 3, 16, seed).to(memory_format=cl) for seed in (3, 5)]
    grouped = GroupedEnsemble(nets).to(memory_format=cl)
    z = torch.rand(2, 32, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.1
    z_grouped = grouped.arrange(z).requires_grad_()
    assert z_grouped.flatten(0, 1)[None].is_contiguous(memory_format=cl)
    y = grouped(z_grouped)
    grad = torch.rand(y.shape, generator=torch.Generator().manual_seed(1))
    y.backward(grad)
    params = dict(grouped.grouped.named_parameters())
    for k, net in enumerate(nets):
        z_k = z[k : k + 1].contiguous(memory_format=cl).requires_grad_()
        y_k = net(z_k)
        y_k.backward(grad[k : k + 1])
        torch.testing.assert_close(y[k], y_k[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(z_grouped.grad[k], z_k.grad[0], rtol=0, atol=1e-3 * float(z_k.grad.abs().max()))
        for name, p in net.named_parameters():
            if name.endswith(".0.bias") and not name.startswith("head"):
                continue  # a bias before BatchNorm has no gradient: rounding either way
            rows = p.shape[0]
            ours = params[name].grad[k * rows : (k + 1) * rows]
            # float32 sums through five BatchNorms; near-zero gradients mostly cancel.
            torch.testing.assert_close(ours, p.grad, rtol=0, atol=1e-2 * float(p.grad.abs().max()) + 1e-5)


def test_ensemble_fits_members_apart_and_averages_their_best_outputs(camera64, noisy_camera):
    image = (noisy_camera / 255.0).astype(np.float32)[None]
    fit = Fit("denoise", image, width=8, iterations=300, device="cpu", ensemble=3, stopping="emv")
    list(fit)
    assert isinstance(fit.net, GroupedEnsemble)  # on CPU: grouped channels-last convolutions
    assert fit.net.members == 3 and len(fit.rule.best_iterations) == 3
    members = fit.rule.best_average[(slice(None), 0, *fit.output_region)]
    np.testing.assert_allclose(fit.result()[0], members.mean(0).numpy(), atol=1e-6)
    scores = [psnr(255 * m.numpy(), camera64) for m in members]
    assert max(scores) - min(scores) > 0.01  # the members differ: own weights and inputs
    assert psnr(255 * fit.result()[0], camera64) > np.mean(scores) + 0.2  # averaging helps


def test_counts_coarser_than_photons_come_back_as_float32():
    """At 0.5 counts per photon whole counts are 2 photons apart: rounding the restored
    levels costs PSNR, so denoise returns float32 and says why; with noise of tens of
    counts (and under dtype="input") the input's uint16 stays."""
    truth, counts = photon_image(6, 0.5, 100, read=1.0, size=64)
    options = {"width": 8, "device": "cpu", "iterations": 300, "stopping": None, "ensemble": 1}
    job = prepare("denoise", counts, **options)
    assert job.noise.kind == "poisson" and job.noise.gain < 1
    assert "float32 output: the noise is fine" in job.float_reason
    restored = job.run()
    assert restored.dtype == np.float32 and counts.dtype == np.uint16
    rounded = denoise(counts, dtype="input", **options)  # the same fit, rounded to counts
    assert rounded.dtype == np.uint16
    assert np.abs(rounded.astype(float) - np.rint(restored)).max() <= 1  # float32 vs float64 at .5
    peak = truth.max() - truth.min()
    assert psnr(restored, truth, peak) > psnr(rounded, truth, peak) + 0.5
    _, brighter = photon_image(60, 4.0, 100, read=2.0, size=64)
    kept = prepare("denoise", brighter, **options)
    assert kept.value_map.dtype == np.uint16 and kept.float_reason is None


def test_dtype_is_checked_and_honoured(noisy_camera):
    options = {"width": 4, "device": "cpu", "iterations": 2}
    assert denoise(noisy_camera, dtype="float64", **options).dtype == np.float64
    assert denoise(noisy_camera, dtype=np.float32, **options).dtype == np.float32
    with pytest.raises(ValueError, match=r"dtype must be None .* float32 or float64, got 'int8'"):
        denoise(noisy_camera, dtype="int8", **options)
    mask = np.zeros(noisy_camera.shape, bool)
    mask[10:20, 10:20] = True
    filled = prepare("inpaint", noisy_camera, mask=mask, dtype="float32", **options).run()
    assert filled.dtype == np.float32
    np.testing.assert_array_equal(filled[~mask], noisy_camera[~mask])  # known pixels exact


def test_cli_writes_float32_tiff_for_fine_noise_but_keeps_png_integers(tmp_path, capsys):
    _, counts = photon_image(6, 0.5, 100, read=1.0, size=64)
    tifffile.imwrite(tmp_path / "in.tif", counts)
    common = ["--iterations", "2", "--width", "8", "--device", "cpu", "--quiet"]
    assert main(["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), *common]) == 0
    assert tifffile.imread(tmp_path / "out.tif").dtype == np.float32
    assert "float32 output: the noise is fine" in capsys.readouterr().err
    assert main(["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.png"), *common]) == 0
    assert "float32 output" not in capsys.readouterr().err
    assert main(["denoise", str(tmp_path / "in.tif"), str(tmp_path / "raw.tif"), "--dtype", "input", *common]) == 0
    assert tifffile.imread(tmp_path / "raw.tif").dtype == np.uint16
    assert main(["denoise", str(tmp_path / "in.tif"), str(tmp_path / "x.png"), "--dtype", "float32", *common]) == 1
    assert ".png cannot store float32 images" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_photon_limited_images_get_their_fit_settings(noisy_camera):
    """Measured photon noise: a longer average and an input noise that grows with the
    noise level; Gaussian noise keeps the paper's settings."""
    options = {"width": 8, "device": "cpu", "iterations": 1}
    _, dim = photon_image(5, 2.0, 100, read=1.5, size=64)
    _, bright = photon_image(200, 2.0, 100, read=1.5, size=64)
    dim_options = prepare("denoise", dim, **options).schedule.options
    bright_options = prepare("denoise", bright, **options).schedule.options
    assert dim_options["ema"] == bright_options["ema"] == 0.995
    assert 1 / 30 < dim_options["input_noise"] <= 0.06
    assert bright_options["input_noise"] < dim_options["input_noise"]
    gaussian = prepare("denoise", noisy_camera, **options)
    assert gaussian.noise.kind == "gaussian"
    assert "ema" not in gaussian.schedule.options and "input_noise" not in gaussian.schedule.options
    fit = gaussian.schedule._make_fit(gaussian.schedule.units[0])
    assert (fit.ema, fit.input_noise) == (0.99, pytest.approx(1 / 30))
    masked = np.ma.masked_array(dim.astype(float), mask=np.zeros(dim.shape, bool))
    masked.data[:8], masked.mask[:8] = np.nan, True  # NaN under the mask is not data
    assert prepare("denoise", masked, **options).schedule.options["input_noise"] == pytest.approx(
        dim_options["input_noise"], rel=0.2
    )
    # Stopped automatically, the long average is kept where the variance has risen (PHOTON_RISE).
    auto = {"width": 8, "device": "cpu"}
    assert "rise" not in dim_options  # a fixed count: no rule
    photon_job = prepare("denoise", dim, **auto)
    assert photon_job.schedule._make_fit(photon_job.schedule.units[0]).rule.rise == PHOTON_RISE
    gaussian_job = prepare("denoise", noisy_camera, **auto)
    assert gaussian_job.schedule._make_fit(gaussian_job.schedule.units[0]).rule.rise is None
    # The rule's residual floor gets the noise variance in the fitted units: (25 / 255)² here.
    assert gaussian_job.schedule.options["noise_variance"] == pytest.approx((25 / 255) ** 2, rel=0.25)
    scale = float(np.mean(photon_job.value_map.scale))
    expected = photon_job.noise.variance_at(float(np.mean(np.maximum(dim, photon_job.noise.offset)))) / scale**2
    assert photon_job.schedule.options["noise_variance"] == pytest.approx(expected, rel=0.01)
    assert "noise_variance" not in dim_options  # no rule, no floor
    # Hot pixels are left out of the fit, and out of the mean level the variance is taken at.
    hot = dim.copy()
    hot.reshape(-1)[:: hot.size // 8] = 65535
    hot_job = prepare("denoise", hot, **auto)
    assert hot_job.schedule.known is not None and not hot_job.schedule.known.all()
    assert hot_job.schedule.options["noise_variance"] == pytest.approx(
        photon_job.schedule.options["noise_variance"], rel=0.05
    )
    assert "rise" not in prepare("denoise", dim, stopping="validation", **auto).schedule.options


def test_camera_counts_get_the_photon_settings_whatever_the_noise_estimate(noisy_camera):
    """16-bit counts whose noise reads as Gaussian (a dim, low-contrast camera image) take
    the photon settings; the same values as floats or 8 bits keep the paper's."""
    options = {"width": 8, "device": "cpu"}
    counts = (100 + noisy_camera.astype(np.uint16) // 4).astype(np.uint16)  # offset, little range
    job = prepare("denoise", counts, **options)
    assert job.noise.kind == "gaussian"
    assert job.schedule.options["ema"] == 0.995 and job.schedule.options["rise"] == PHOTON_RISE
    assert 1 / 30 <= job.schedule.options["input_noise"] <= 0.06
    for other in (counts.astype(np.float32), noisy_camera):
        assert not {"ema", "input_noise", "rise"} & set(prepare("denoise", other, **options).schedule.options)
