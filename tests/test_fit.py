import itertools
import platform
import subprocess
import sys
from dataclasses import astuple

import numpy as np
import pytest
import torch

import napari_dip.fit as fit_module
from napari_dip.fit import (
    PHOTON_CEILING,
    PHOTON_RISE,
    Fit,
    Progress,
    canvas_length,
    photon_options,
    resolve_device,
    task_defaults,
)
from napari_dip.stopping import ExponentialVariance


def small_image(c=1, h=37, w=51, seed=0):
    return np.random.default_rng(seed).random((c, h, w)).astype(np.float32)


def test_generator_yields_one_record_per_iteration_with_periodic_previews():
    fit = Fit("denoise", small_image(), width=8, iterations=7, preview_every=3, device="cpu")
    records = list(fit)
    assert [r.iteration for r in records] == list(range(1, 8))
    assert all(isinstance(r, Progress) and r.iterations == 7 for r in records)
    with_preview = [r.iteration for r in records if r.preview is not None]
    assert with_preview == [3, 6, 7]  # every 3 and the last
    assert records[2].preview.shape == (1, 37, 51)
    assert records[5].losses.shape == (3,) and records[6].losses.shape == (1,)
    assert records[-1].losses[-1] == pytest.approx(records[-1].loss)
    np.testing.assert_allclose(fit.losses, [r.loss for r in records], rtol=1e-6)
    assert all(b.elapsed >= a.elapsed for a, b in itertools.pairwise(records))


def test_stopping_between_iterations_keeps_the_average_so_far():
    fit = Fit("denoise", small_image(), width=8, iterations=50, device="cpu")
    for record in fit:
        if record.iteration == 4:
            break
    assert fit.iteration == 4
    early = fit.result()
    assert early.shape == (1, 37, 51) and early.dtype == np.float32
    np.testing.assert_array_equal(early, fit.result())  # reading does not change it
    # Iterating again resumes where it stopped.
    assert next(iter(fit)).iteration == 5


def test_loss_falls_while_fitting():
    y, x = np.mgrid[0:32, 0:32] / 32
    smooth = (0.5 + 0.4 * np.sin(6 * x) * np.cos(4 * y))[None].astype(np.float32)
    fit = Fit("denoise", smooth, width=16, iterations=60, device="cpu")
    list(fit)
    losses = fit.losses
    assert losses[-10:].mean() < 0.5 * losses[:5].mean()


@pytest.mark.parametrize("shape", [(5, 7), (33, 64), (65, 31), (100, 3 * 32)])
def test_canvas_is_padded_to_the_network_multiple_and_cropped_back(shape):
    h, w = shape
    fit = Fit("denoise", small_image(h=h, w=w), width=4, iterations=1, device="cpu")
    ch, cw = fit.canvas
    assert ch % 32 == 0 and cw % 32 == 0 and ch >= max(h, 64) and cw >= max(w, 64)
    list(fit)
    assert fit.result().shape == (1, h, w)


def test_super_resolution_canvas_and_output_shape():
    fit = Fit("super-resolve", small_image(c=3, h=9, w=13), factor=4, width=4, iterations=1, device="cpu")
    assert fit.canvas[0] % 32 == 0 and fit.canvas[1] % 32 == 0
    list(fit)
    assert fit.result().shape == (3, 36, 52)


def test_same_seed_same_result_on_cpu_and_different_seed_differs():
    def run(seed):
        fit = Fit("denoise", small_image(h=32, w=32), width=8, iterations=5, seed=seed, device="cpu")
        list(fit)
        return fit.result()

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_a_network_that_fails_to_compile_runs_eagerly_with_a_warning(monkeypatch):
    class Broken(torch.nn.Module):  # what inductor without a compiler or Triton amounts to
        def forward(self, z):
            raise RuntimeError("no working C++ compiler")

    def run(**options):
        fit = Fit("denoise", small_image(h=32, w=32), width=8, iterations=5, seed=3, device="cpu", **options)
        list(fit)
        return fit

    monkeypatch.setattr(torch, "compile", lambda module, **_: Broken())
    with pytest.warns(RuntimeWarning, match="no working C\\+\\+ compiler"):
        fallen_back = run(compile=True)
    assert not fallen_back.compiled
    # The failed first call changed nothing: the same fit as one never compiled.
    np.testing.assert_array_equal(fallen_back.result(), run(compile=False).result())
    assert run().compiled is False  # not by default on CPU (slower there)


def test_seeding_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    list(Fit("denoise", small_image(h=16, w=16), width=4, iterations=2, seed=9, device="cpu"))
    np.testing.assert_array_equal(torch.rand(3), expected)


@pytest.mark.parametrize("shifts", [fit_module.NOISE_SHIFTS, 0])
def test_each_step_perturbs_the_input_with_fresh_noise_of_the_set_std(monkeypatch, shifts):
    # On CPU the noise is a window of one bank at a random offset (NOISE_SHIFTS; 0: drawn
    # fresh each step, as on CUDA): every step must still see new, white noise of the std.
    monkeypatch.setattr(fit_module, "NOISE_SHIFTS", shifts)
    fit = Fit("denoise", small_image(h=40, w=40), width=8, iterations=6, input_noise=0.05, ensemble=2, device="cpu")
    assert (fit._noise_bank is not None) == (shifts > 0)
    draws = []
    for _ in fit:
        draws.append((fit._z_noisy - fit._z).flatten().double() / 0.05)
    for a, b in itertools.combinations(draws, 2):
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.03  # another draw each step
    for d in draws:
        assert abs(d.std() - 1) < 0.03 and abs(d.mean()) < 0.03
        # white over pixels and channels, whatever the layout
        assert abs(torch.corrcoef(torch.stack([d[1:], d[:-1]]))[0, 1]) < 0.03
    # Seeded: the same draws again.
    again = Fit("denoise", small_image(h=40, w=40), width=8, iterations=6, input_noise=0.05, ensemble=2, device="cpu")
    list(again)
    np.testing.assert_array_equal(again.result(), fit.result())


def test_inpaint_result_keeps_known_pixels():
    image = small_image(c=2, h=20, w=24)
    known = np.ones((20, 24), bool)
    known[5:12, 6:15] = False
    fit = Fit("inpaint", image, known=known, width=8, iterations=3, device="cpu")
    list(fit)
    out = fit.result()
    np.testing.assert_array_equal(out[:, known], image[:, known])
    assert not np.allclose(out[:, ~known], image[:, ~known])


def test_flash_guide_is_the_network_input():
    flash = small_image(c=3, h=20, w=20, seed=1)
    fit = Fit("flash-no-flash", small_image(c=3, h=20, w=20), guide=flash, width=8, iterations=2, device="cpu")
    assert fit.net.in_channels == 3
    z = fit._z[0, :, fit.output_region[0], fit.output_region[1]].numpy()
    np.testing.assert_allclose(z, flash)
    list(fit)


def test_meshgrid_input():
    fit = Fit(
        "inpaint",
        small_image(h=16, w=16),
        known=np.eye(16, dtype=bool) == 0,
        net_input="meshgrid",
        width=4,
        iterations=2,
        device="cpu",
    )
    assert fit.net.in_channels == 2
    list(fit)


def test_task_defaults_follow_the_papers_code():
    assert astuple(task_defaults("denoise")) == (3000, 0.01, pytest.approx(1 / 30), 0.99)
    assert astuple(task_defaults("inpaint")) == (5000, 0.01, 0.03, 0.99)
    assert astuple(task_defaults("super-resolve", 4)) == (2000, 0.01, 0.03, 0.99)
    assert astuple(task_defaults("super-resolve", 8)) == (4000, 0.01, 0.05, 0.99)
    assert astuple(task_defaults("flash-no-flash")) == (600, 0.1, 0.0, 0.99)
    with pytest.raises(ValueError, match="unknown task"):
        task_defaults("deblur")


def test_canvas_length():
    assert canvas_length(1, 32, 64) == 64
    assert canvas_length(64, 32, 64) == 64
    assert canvas_length(65, 32, 64) == 96


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(TypeError, match="device"):
        resolve_device(3)


def test_time_based_previews(monkeypatch):
    import napari_dip.fit as fit_module

    monkeypatch.setattr(fit_module, "PREVIEW_SECONDS", 0.0)  # every iteration is "a second later"
    fit = Fit("denoise", small_image(h=16, w=16), width=4, iterations=4, preview_every=None, device="cpu")
    assert all(r.preview is not None and r.losses.shape == (1,) for r in fit)
    monkeypatch.setattr(fit_module, "PREVIEW_SECONDS", 1e9)
    fit = Fit("denoise", small_image(h=16, w=16), width=4, iterations=4, preview_every=None, device="cpu")
    assert [r.preview is not None for r in fit] == [False, False, False, True]  # only the last


def test_bfloat16_layers_restore_as_well_as_float32():
    from napari_dip.fit import resolve_precision
    from napari_dip.networks import FullPrecision, large_convolutions_in_bfloat16

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    clean = (0.5 + 0.3 * np.sin(xx / 5) * np.cos(yy / 7))[None].astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    results = {}
    for precision in ("float32", "bfloat16", "mixed"):
        fit = Fit("denoise", noisy, width=16, iterations=300, device="cpu", precision=precision, seed=1)
        if precision == "mixed":  # every 3x3 convolution in bfloat16 (by default only large ones)
            large_convolutions_in_bfloat16(fit.net, 0)
        for _ in fit:
            pass
        out = fit.result()
        assert out.dtype == np.float32
        # The output layer stays float32: bfloat16's steps of 1/256 would show in 16-bit data.
        assert any(isinstance(m, FullPrecision) for m in fit.net.modules()) == (precision == "bfloat16")
        results[precision] = 10 * np.log10(1 / np.mean((out - clean) ** 2))
    noisy_db = 10 * np.log10(1 / np.mean((noisy - clean) ** 2))
    # As well as: not more than 0.5 dB under float32. Better is fine: bfloat16's rounding moves
    # a 300-iteration fit by a few tenths either way, by CPU (+0.52 dB on one 2-core EPYC).
    for precision in ("bfloat16", "mixed"):
        assert results[precision] > noisy_db + 3 and results[precision] > results["float32"] - 0.5, results
    assert resolve_precision("float32", torch.device("cpu")) == "float32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half", torch.device("cpu"))


def test_mixed_precision_runs_only_the_large_convolutions_in_bfloat16(monkeypatch):
    import napari_dip.fit as fit_module
    from napari_dip.networks import _Conv2d, large_convolutions_in_bfloat16, seeded_network

    net = seeded_network("skip", 8, 1, 16, 0).to(memory_format=torch.channels_last)
    z = (torch.rand(1, 8, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.1).contiguous(
        memory_format=torch.channels_last
    )
    exact = net(z)
    exact_grads = torch.autograd.grad(exact.square().sum(), list(net.parameters()), materialize_grads=True)
    large_convolutions_in_bfloat16(net, 10**6)  # at 64²: the top level's 3x3 convolution (20 -> 16)
    seen: dict[str, torch.dtype] = {}
    for name, m in net.named_modules():
        if isinstance(m, _Conv2d):
            m.register_forward_hook(lambda m, i, o, name=name: seen.update({name: o.dtype}))
    mixed = net(z)
    grads = torch.autograd.grad(mixed.square().sum(), list(net.parameters()), materialize_grads=True)
    assert mixed.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    assert set(seen.values()) == {torch.float32}  # cast back inside the layer
    # Rounded somewhere (bfloat16 keeps 8 bits), close everywhere; the gradient of the whole
    # weight set within a few per cent.
    error = (mixed - exact).abs().max().item()
    assert 0 < error < 1e-2
    flat = torch.cat([g.flatten() for g in grads])
    flat_exact = torch.cat([g.flatten() for g in exact_grads])
    assert (flat - flat_exact).norm() < 0.05 * flat_exact.norm()
    # Off again: float32 to the bit.
    large_convolutions_in_bfloat16(net, None)
    assert torch.equal(net(z), exact)
    # A fit under "mixed" marks its 3x3 convolutions with the threshold.
    monkeypatch.setattr(fit_module, "MIXED_WORK", 12345)
    fit = Fit("denoise", small_image(h=16, w=16), width=4, iterations=2, device="cpu", precision="mixed")
    marks = {m.bfloat16_from for m in fit.net.modules() if isinstance(m, _Conv2d)}
    assert marks == {12345}


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "width", "expected"),
    [
        (True, False, 128, "bfloat16"),
        (False, True, 128, "bfloat16"),  # AVX-512 BF16 (e.g. AMD Zen 4/5): 0.56x the reference
        (False, True, 64, "bfloat16"),  # 0.59x the reference, float32 0.75x
        (False, True, 32, "mixed"),  # only the large convolutions gain in bfloat16 there
        (True, False, 32, "mixed"),
        (False, False, 128, "float32"),  # emulated bfloat16 is slower than float32
    ],
)
def test_auto_precision_takes_bfloat16_only_where_the_cpu_multiplies_it(monkeypatch, amx, avx512_bf16, width, expected):
    from napari_dip.fit import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert resolve_precision("auto", torch.device("cpu"), width=width) == expected
    assert resolve_precision("auto", torch.device("meta"), width=width) == "float32"  # not a CPU
    assert resolve_precision("float32", torch.device("cpu"), width=width) == "float32"


@pytest.mark.parametrize(
    ("variable", "cap", "expected"),
    [
        ("ONEDNN_MAX_CPU_ISA", "AVX2", "float32"),  # oneDNN would emulate bfloat16: 8x slower
        ("ONEDNN_MAX_CPU_ISA", "avx512_core", "float32"),
        ("DNNL_MAX_CPU_ISA", "AVX512_CORE_VNNI", "float32"),  # the older name
        ("ONEDNN_MAX_CPU_ISA", "no-such-isa", "float32"),  # unknown: the safe side
        ("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16", "bfloat16"),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", "bfloat16"),
        ("ONEDNN_MAX_CPU_ISA", "ALL", "bfloat16"),
    ],
)
def test_auto_precision_follows_a_cap_on_onednns_instruction_set(monkeypatch, variable, cap, expected):
    from napari_dip.fit import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv(variable, cap)
    assert resolve_precision("auto", torch.device("cpu"), width=128) == expected
    assert resolve_precision("bfloat16", torch.device("cpu"), width=128) == "bfloat16"  # asked for: kept


def test_the_average_weighs_the_outputs_so_far_and_nothing_else():
    """Normalised as Adam's moments are: sum_k (1-e) e^(t-k) out_k / (1 - e^t), so the
    untrained first output fades like any other instead of seeding the average."""
    fit = Fit("denoise", small_image(), width=4, iterations=6, device="cpu", ema=0.9)
    outputs = []
    for _ in fit:
        outputs.append(fit.output.detach().clone())
    t = len(outputs)
    weights = [0.1 * 0.9 ** (t - 1 - k) for k in range(t)]
    expected = sum(w * out for w, out in zip(weights, outputs, strict=True)) / sum(weights)
    torch.testing.assert_close(fit.average, expected, atol=1e-6, rtol=1e-5)
    assert sum(weights) == pytest.approx(1 - 0.9**t)
    with pytest.raises(ValueError, match="ema must be"):
        Fit("denoise", small_image(), width=4, iterations=1, device="cpu", ema=1.0)


def test_one_flat_buffer_of_parameters_steps_as_adam_over_each():
    """Every parameter (channels-last or not) becomes a view of one buffer and its
    gradient of another; Adam on the buffer moves each weight exactly as Adam on the
    separate tensors does."""
    import copy

    import torch

    from napari_dip.fit import _flat_parameters
    from napari_dip.networks import build_network

    torch.manual_seed(0)
    net = build_network("skip", 8, 1, 8).to(memory_format=torch.channels_last)
    twin = copy.deepcopy(net)
    weights = _flat_parameters(net)
    grads = weights.grad
    assert weights.numel() == sum(p.numel() for p in twin.parameters())
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert p.untyped_storage().data_ptr() == weights.untyped_storage().data_ptr()
        assert p.stride() == q.stride()
    flat = torch.optim.Adam([weights], lr=0.01)
    each = torch.optim.Adam(twin.parameters(), lr=0.01)
    z = torch.rand(1, 8, 64, 64).contiguous(memory_format=torch.channels_last)
    target = torch.rand(1, 1, 64, 64)
    for _ in range(3):
        grads.zero_()
        each.zero_grad()
        for model in (net, twin):
            torch.nn.functional.mse_loss(model(z), target).backward()
        flat.step()
        each.step()
    for (name, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        if q.grad is None:  # a bias that a BatchNorm cancels (not added): zeros in the buffer
            assert not p.grad.any(), name
        else:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
        torch.testing.assert_close(p, q, msg=name)


_FAULTS_PER_ITERATION = """
import contextlib, resource, sys
import numpy as np
from napari_dip import fit
if sys.argv[1] == "glibc-defaults":
    fit._host_memory_reused = lambda device: contextlib.nullcontext()
image = np.random.default_rng(0).random((1, 96, 96)).astype(np.float32)
steps = iter(fit.Fit("denoise", image, width=32, iterations=50, device="cpu"))
for _ in range(5):
    next(steps)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    next(steps)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(fit._host_fits)
steps.close()
print(fit._host_fits)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator settings")
def test_a_cpu_fit_reuses_its_host_memory_instead_of_page_faulting_it_back():
    """glibc's defaults return each step's freed activations to the system and fault them
    back in (~1,300-1,700 page faults per iteration of this fit on the 2-core VM); a running
    fit keeps them, and the settings are back at rest once its generator is closed early.
    Both are measured in fresh processes, side by side: the count depends on the machine."""

    def run(mode: str) -> list[float]:
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS_PER_ITERATION, mode], capture_output=True, text=True, check=True
        )
        return [float(line) for line in done.stdout.split()]

    defaults, (kept, running, closed) = run("glibc-defaults")[0], run("kept")
    if defaults < 200:
        pytest.skip(f"glibc's defaults fault only {defaults:.0f} pages per iteration on this machine")
    assert kept < defaults / 4, (kept, defaults)
    assert (running, closed) == (1, 0)


def test_a_tv_fit_drops_the_residual_ceiling_and_reports_the_data_term():
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    plain = Fit("denoise", image, width=8, device="cpu", iterations=1, stopping="emv")
    tv = Fit("denoise", image, width=8, device="cpu", iterations=1, stopping="emv", tv=0.1)
    assert plain.rule.ceiling == ExponentialVariance.default_ceiling and tv.rule.ceiling is None
    # The photon settings' ceiling holds under TV (their residual reaches it: BENCHMARKS.md).
    photon = photon_options(0.05)
    assert photon["ceiling"] == PHOTON_CEILING and photon["rise"] == PHOTON_RISE
    settled = Fit("denoise", image, width=8, device="cpu", iterations=1, stopping="emv", tv=0.1, **photon)
    assert (settled.rule.ceiling, settled.rule.rise) == (PHOTON_CEILING, PHOTON_RISE)
    # The same weights and input at the first step: the records' loss is the data term alone.
    assert next(iter(tv)).loss == pytest.approx(next(iter(plain)).loss)
    with pytest.raises(ValueError, match="tv must be a weight"):
        Fit("denoise", image, width=8, device="cpu", tv=-1.0)


def test_biases_that_batch_norm_cancels_get_no_gradient_and_stay_put():
    """Biases of convolutions feeding a BatchNorm are not added (networks._NormedBias): the
    fit leaves them out of its backward after the first step, and they keep their initial
    values, while every other parameter moves."""
    fit = Fit("denoise", small_image(h=32, w=32), width=8, iterations=4, device="cpu", stopping=None)
    before = {name: p.detach().clone() for name, p in fit.net.named_parameters()}
    cancelled = {f"{n}.bias" for n, m in fit.net.named_modules() if getattr(m, "before_norm", False)}
    assert cancelled and cancelled < set(before)
    for _ in fit:
        pass
    for name, p in fit.net.named_parameters():
        assert torch.equal(p, before[name]) == (name in cancelled), name
