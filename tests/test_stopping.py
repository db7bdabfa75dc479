"""Stopping rules: their statistics, their decisions, and automatic stopping end to end."""

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

import napari_dip
from conftest import FAST, psnr
from napari_dip.fit import PHOTON_OVERFIT, PHOTON_REGION, PHOTON_SETTLE, STABILISED_HOLD, Fit, photon_options
from napari_dip.schedule import WARM_RULE
from napari_dip.stopping import (
    DEFAULT_RULE,
    PLATEAU_SPAN,
    RULES,
    ExponentialVariance,
    Rule,
    WindowedVariance,
    describe_best,
    flat_pixels,
    make_rule,
    region_grid,
    residual_correlation,
)


def feed(rule, outputs):
    """Attach ``rule`` to flat outputs (all values sampled) and feed them in order."""
    average = torch.zeros(1, outputs.shape[1])
    rule.attach(average, torch.arange(outputs.shape[1]))
    stats = []
    for i, out in enumerate(outputs, start=1):
        out_t = torch.from_numpy(out)[None]
        stats.append(float(rule.update(i, out_t, out_t)))
    return np.asarray(stats)


def test_windowed_variance_is_the_variance_over_the_last_window():
    rng = np.random.default_rng(0)
    outputs = rng.random((30, 50)).astype(np.float32) * np.linspace(1, 0.1, 30)[:, None]
    stats = feed(WindowedVariance(patience=5, window=10), outputs)
    assert np.isinf(stats[:9]).all()
    for t in range(10, 31):
        expected = outputs[t - 10 : t].var(axis=0).mean()
        assert stats[t - 1] == pytest.approx(expected, rel=1e-5)


def test_windowed_variance_stays_exact_over_a_long_drifting_fit():
    # Outputs that sweep the value range, then settle at 0.8 with a jitter of 1e-4: a naive
    # float32 running sum of squares (0.64 a value) would lose that variance (1e-8) to rounding.
    rng = np.random.default_rng(2)
    steps = 1000
    level = np.concatenate([np.linspace(0.1, 0.9, 500) + 0.05 * np.sin(np.arange(500) / 20), np.full(500, 0.8)])
    outputs = (level[:, None] + 1e-4 * rng.standard_normal((steps, 64))).astype(np.float32)
    stats = feed(WindowedVariance(patience=5, window=100), outputs)
    expected = [outputs[t - 100 : t].astype(np.float64).var(axis=0).mean() for t in range(100, steps + 1)]
    np.testing.assert_allclose(stats[99:], expected, rtol=2e-3)


def test_exponential_variance_follows_the_recursive_definition():
    rng = np.random.default_rng(1)
    outputs = rng.random((40, 20)).astype(np.float32)
    stats = feed(ExponentialVariance(patience=5, window=9), outputs)
    alpha, mean, var = 0.2, outputs[0].astype(np.float64), 0.0
    for t, x in enumerate(outputs, start=1):
        delta = x - mean
        mean = mean + alpha * delta
        var = (1 - alpha) * (var + alpha * np.mean(delta**2))
        if t >= 9:
            assert stats[t - 1] == pytest.approx(var, rel=1e-4)


def test_rule_keeps_its_best_and_stops_after_patience():
    rule = WindowedVariance(patience=20, window=2)
    # Variance falls until iteration 12, then rises: the best is there.
    values = np.concatenate([np.linspace(1, 0.05, 12), np.linspace(0.05, 1, 40)])
    outputs = (np.cumsum(np.where(np.arange(52) % 2, 1, -1) * values) + 5)[:, None].astype(np.float32)
    feed(rule, outputs)
    assert 10 <= rule.best_iteration <= 14
    assert not rule.done(rule.best_iteration + 19) and rule.done(rule.best_iteration + 20)


class Scripted(Rule):
    """A rule whose statistic is given: ``script[t - 1]`` per member at iteration t."""

    def __init__(self, script, **kwargs):
        super().__init__(window=2, **kwargs)
        self.script = torch.as_tensor(script, dtype=torch.float32)

    def statistic(self, iteration, output, average):
        return self.script[iteration - 1].clone()


def run_scripted(rule, iterations, residual=None):
    """Feed ``rule`` averages equal to the iteration number; (done at each iteration).
    ``residual``: (noisy value, noise variance) for the rule's residual floor."""
    members = rule.script.shape[1]
    rule.attach(torch.zeros(members, 1), torch.zeros(1, dtype=torch.long))
    if residual is not None:
        noisy, variance = residual
        rule.watch_residual(torch.tensor([float(noisy)]), torch.ones(1, dtype=torch.bool), variance)
    done = []
    for i in range(1, iterations + 1):
        average = torch.full((members, 1), float(i))
        rule.update(i, average, average)
        done.append(rule.done(i))
    return done


def test_rise_keeps_the_output_where_the_statistic_rose_over_its_lowest_and_stops():
    # Warm-up (inf), a fall to 0.5 at iteration 10, then 2 % more each iteration.
    fall = [np.inf] * 3 + list(np.linspace(1.0, 0.5, 7))
    script = fall + [0.5 * (1 + 0.02 * k) for k in range(1, 30)]
    plain = Scripted(np.array(script)[:, None], patience=15)
    done = run_scripted(plain, len(script))
    assert plain.best_iterations == [10] and done.index(True) + 1 == 25  # the lowest, patience later
    risen = Scripted(np.array(script)[:, None], patience=15, rise=0.1)
    done = run_scripted(risen, len(script))
    # 0.5 * 1.10 is reached 5 iterations after the lowest: that output is kept, and the fit ends.
    assert risen.best_iterations == [15] and float(risen.best_average[0, 0]) == 15
    assert done.index(True) + 1 == 15
    # Inf while warming up never counts as a rise, and a later lower value cannot replace it.
    assert not any(done[:14])


def test_rise_decides_for_each_member_of_an_ensemble():
    steady = [np.inf, *np.linspace(1.0, 0.2, 39)]  # keeps falling: done by patience only
    rising = [np.inf, *np.linspace(1.0, 0.5, 9), *[0.5 * (1 + 0.05 * k) for k in range(1, 31)]]
    rule = Scripted(np.stack([steady, rising], axis=1), patience=5, rise=0.1)
    done = run_scripted(rule, 40)
    assert rule.best_iterations == [40, 12]
    assert not any(done)  # the falling member is not done, though the other one is


def test_a_member_done_by_patience_stays_done_while_another_runs():
    # Member 0: lowest at 5, a plateau above it, then a slow new lowest at 30 (past its
    # patience). Member 1 keeps falling to the end. Alone, member 0 would end at 15 keeping 5.
    first = [np.inf, 2.0, 1.5, 1.2, 1.0, *[1.1] * 24, 0.99, *[1.1] * 10]
    falling = [np.inf, *np.linspace(2.0, 0.1, 39)]
    rule = Scripted(np.stack([first, falling], axis=1), patience=10)
    done = run_scripted(rule, 40)
    assert rule.best_iterations == [5, 40] and float(rule.best_average[0, 0]) == 5
    assert not any(done)
    alone = Scripted(np.array(first)[:, None], patience=10)
    assert run_scripted(alone, 40).index(True) + 1 == 15 and alone.best_iterations == [5]


def test_tolerance_keeps_a_later_output_on_a_flat_statistic():
    # A fall to 1.0 at iteration 5, a flat stretch within 1 % of it to iteration 12, then a rise.
    script = [np.inf, 2.0, 1.5, 1.2, 1.0, 1.005, 1.008, 1.002, 1.009, 1.007, 1.004, 1.006, *np.linspace(1.02, 2, 20)]
    strict = Scripted(np.array(script)[:, None], patience=10)
    done = run_scripted(strict, len(script))
    assert strict.best_iterations == [5] and done.index(True) + 1 == 15
    tolerant = Scripted(np.array(script)[:, None], patience=10, tolerance=0.01)
    done = run_scripted(tolerant, len(script))
    # The last value within 1 % of the lowest is kept, and the patience counts from there.
    assert tolerant.best_iterations == [12] and float(tolerant.best_average[0, 0]) == 12
    assert done.index(True) + 1 == 22
    # The lowest stays the reference: values drifting up 0.5 % a step stop counting at 1 %.
    drift = Scripted(np.array([np.inf, 1.0, 1.005, 1.00999, 1.015, 1.02])[:, None], patience=10, tolerance=0.01)
    run_scripted(drift, 6)
    assert drift.best_iterations == [4]


def watched(script, patience=100, **kwargs):
    return Scripted(np.array(script)[:, None], patience=patience, **kwargs)


def test_floor_ends_a_member_whose_average_comes_too_close_to_the_noisy_image():
    # The statistic keeps falling (texture: the network memorises the noisy image), while
    # the average (value i at iteration i) nears the noisy value 20; noise variance 4,
    # floor 0.25: a squared residual of 1 or less first at iteration 19.
    falling = [np.inf, *np.linspace(1.0, 0.1, 39)]
    rule = watched(falling, floor=0.25)
    done = run_scripted(rule, 40, residual=(20, 4.0))
    assert done.index(True) + 1 == 19 and rule.best_iterations == [18]  # its best before the floor
    unfloored = watched(falling, floor=0)
    assert not any(run_scripted(unfloored, 40, residual=(20, 4.0))) and unfloored.best_iterations == [40]
    # Still warming up (inf) when the floor is reached: that output is kept.
    late = watched([np.inf] * 30 + [1.0] * 10, floor=0.25)
    assert run_scripted(late, 40, residual=(20, 4.0)).index(True) + 1 == 19 and late.best_iterations == [19]
    # Unknown noise (NaN): no floor.
    assert not any(run_scripted(watched(falling, floor=0.25), 40, residual=(20, float("nan"))))


def test_plateau_ends_a_member_near_the_noisy_image_whose_statistic_lies_flat():
    # Averages i near the noisy value 500, noise variance 100²: the residual is down to 0.75
    # variances from iteration 414 on. The statistic creeps down 2 % per 200 iterations
    # (under PLATEAU_DROP): done there, keeping its best before (as the floor does).
    creeping = np.cumprod(np.full(600, 1 - 0.02 / PLATEAU_SPAN))
    rule = Scripted(creeping[:, None], patience=1000, plateau=0.75)
    done = run_scripted(rule, 600, residual=(500, 100.0**2))
    assert done.index(True) + 1 == 414 and rule.best_iterations == [413]
    # Falling 8 % per 200 iterations, it is heeded: no end before its patience.
    falling = np.cumprod(np.full(600, 1 - 0.08 / PLATEAU_SPAN))
    assert not any(run_scripted(Scripted(falling[:, None], patience=1000, plateau=0.75), 600, residual=(500, 1e4)))
    # Flat, but the residual stays above 0.75 variances (noisy value far off): not done.
    assert not any(run_scripted(Scripted(creeping[:, None], patience=1000, plateau=0.75), 600, residual=(5000, 1e4)))
    # No plateau without the noise variance, nor with plateau 0.
    assert not any(run_scripted(Scripted(creeping[:, None], patience=1000, plateau=0.75), 600))
    assert not any(run_scripted(Scripted(creeping[:, None], patience=1000, plateau=0), 600, residual=(500, 1e4)))


def test_the_photon_settings_and_warm_units_take_no_plateau():
    assert photon_options(0.05)["plateau"] == 0.0
    assert WARM_RULE["plateau"] == 0 and WARM_RULE["flat"] == 0  # warm units: measured over all pixels
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    common = {"width": 4, "iterations": 2, "device": "cpu", "stopping": "emv", "noise_variance": 0.01}
    assert Fit("denoise", image, **common).rule.plateau == 0.75
    assert Fit("denoise", image, **common, **photon_options(0.05)).rule.plateau is None


def test_growth_ends_a_member_once_its_raw_outputs_vary_more_than_growth_times_their_least():
    # Raw outputs climb by 1 a step to iteration 15, then by 2: with a window of 2 their
    # variance goes from 0.25 to 1.0 at iteration 16, 4 times its lowest.
    climb = np.cumsum([1.0] * 15 + [2.0] * 15)
    falling = [np.inf, *np.linspace(1.0, 0.1, 29)]  # the rule's own statistic never turns

    def run(script, residual=None, **kwargs):
        rule = Scripted(np.array(script)[:, None], patience=100, **kwargs)
        rule.attach(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
        if residual is not None:
            rule.watch_residual(torch.tensor([residual[0]]), torch.ones(1, dtype=torch.bool), residual[1])
        done = []
        for i, x in enumerate(climb, start=1):
            out = torch.full((1, 1), float(x))
            rule.update(i, out, out)
            done.append(rule.done(i))
        return rule, done

    rule, done = run(falling, growth=2.5)
    # Done at 16, keeping its best before it (as the floor does).
    assert done.index(True) + 1 == 16 and rule.best_iterations == [15] and float(rule.best_average[0, 0]) == climb[14]
    rule, done = run(falling, growth=2.5, rise=10.0)  # with a rise: this output, as the rise does
    assert done.index(True) + 1 == 16 and rule.best_iterations == [16]
    rule, done = run([np.inf] * 30, growth=2.5)  # still warming up: this output
    assert done.index(True) + 1 == 16 and rule.best_iterations == [16]
    rule, done = run(falling, growth=5.0)  # 4 times is not 5
    assert not any(done)
    rule, done = run(falling, growth=0)
    assert not any(done) and rule.best_iterations == [30]
    # Above a ceiling no growth counts: the outputs (the averages here) come within the noise
    # (variance 36) of the noisy value 40 at 35, iteration 25, and vary evenly from there.
    rule, done = run(falling, residual=(40.0, 36.0), growth=2.5, ceiling=1.0, rise=10.0)
    assert not any(done)


def test_ceiling_lets_no_output_count_until_it_is_as_close_to_the_noisy_image_as_the_noise():
    # The statistic is lowest at iteration 10, but the average (value i at iteration i) is
    # still farther from the noisy value 20 than the noise (variance 36) until iteration 14.
    script = [np.inf, *np.linspace(1.0, 0.5, 9), *np.linspace(0.55, 2.0, 30)]
    plain = watched(script)
    plain.patience = 5
    assert run_scripted(plain, 40, residual=(20, 36.0)).index(True) + 1 == 15 and plain.best_iterations == [10]
    capped = watched(script, ceiling=1.0)
    capped.patience = 5
    done = run_scripted(capped, 40, residual=(20, 36.0))
    # The first output within the ceiling is the best, and the patience counts from there.
    assert capped.best_iterations == [14] and done.index(True) + 1 == 19
    # It holds back a rise too (the photon settings): without it the statistic has risen 10 %
    # over its lowest (0.5 at 10) at iteration 11; with it, over its lowest within the
    # ceiling (0.70 at 14) at iteration 16, and that output is kept.
    risen = watched(script, rise=0.1)
    assert run_scripted(risen, 40, residual=(20, 36.0)).index(True) + 1 == 11 and risen.best_iterations == [11]
    held = watched(script, ceiling=1.0, rise=0.1)
    assert run_scripted(held, 40, residual=(20, 36.0)).index(True) + 1 == 16 and held.best_iterations == [16]


def test_hold_keeps_a_member_going_while_its_residual_is_above_the_noise():
    # Lowest statistic at iteration 10, flat above it, a slow new lowest at 30, then a rise.
    # The average (value i at iteration i) is farther from the noisy value 40 than the noise
    # (variance 36) until iteration 34: the network is still fitting the image there.
    script = [np.inf, *np.linspace(1.0, 0.5, 9), *[0.6] * 19, 0.45, *np.linspace(0.6, 2.0, 20)]
    plain = watched(script, patience=5)
    assert run_scripted(plain, 50, residual=(40, 36.0)).index(True) + 1 == 15 and plain.best_iterations == [10]
    held = watched(script, patience=5, hold=1.0)
    done = run_scripted(held, 50, residual=(40, 36.0))
    # Its patience ends it only once the residual is down to the noise: the new lowest is kept.
    assert held.best_iterations == [30] and done.index(True) + 1 == 35
    assert float(held.best_average[0, 0]) == 30
    # A residual that never comes down to the hold: the patience never ends the member.
    far = watched(script, patience=5, hold=1.0)
    assert not any(run_scripted(far, 50, residual=(500, 36.0))) and far.best_iterations == [30]
    # Without the noise variance (NaN) or with hold 0 there is no hold.
    for hold, variance in ((1.0, float("nan")), (0, 36.0)):
        assert run_scripted(watched(script, patience=5, hold=hold), 50, residual=(40, variance)).index(True) + 1 == 15
    with pytest.raises(ValueError, match="hold"):
        watched(script, hold=-1.0)


def test_settle_lets_a_rise_count_only_once_the_lowest_statistic_lies_flat():
    # The statistic halves from iteration 4 to 500 (24 % in PLATEAU_SPAN iterations) with a
    # 30 % wobble at 350, lies at its lowest to 799, and rises 25 % at 800.
    falling = np.exp(np.linspace(0.0, np.log(0.5), 497))
    falling[346] = 1.3 * falling[345]
    script = [np.inf] * 3 + list(falling) + [0.5] * 299 + [0.625] * 100
    plain = watched(script, patience=1000, rise=0.2)
    assert run_scripted(plain, 899).index(True) + 1 == 350 and plain.best_iterations == [350]
    settled = watched(script, patience=1000, rise=0.2, settle=True)
    done = run_scripted(settled, 899)
    assert done.index(True) + 1 == 800 and settled.best_iterations == [800]
    # Without a rise, settle changes nothing: the lowest is kept, the patience ends it.
    alone = watched(script, patience=50, settle=True)
    assert run_scripted(alone, 899).index(True) + 1 == 849 and alone.best_iterations == [799]


def test_the_photon_settings_wait_for_the_statistic_to_settle():
    assert photon_options(0.05)["rule_options"]["settle"] is PHOTON_SETTLE is True
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    common = {"width": 4, "iterations": 2, "device": "cpu", "stopping": "emv", "noise_variance": 0.01}
    assert Fit("denoise", image, **common, **photon_options(0.05)).rule.settle
    assert not Fit("denoise", image, **common, **photon_options(0.05, stabilised=True)).rule.settle  # no rise
    assert not Fit("denoise", image, **common).rule.settle


def test_region_grid_cuts_planes_of_two_sides_or_more():
    whole = [(slice(0, 255), slice(0, 200))]
    assert region_grid((255, 200), 128) == whole and region_grid((3, 255, 200), None) == whole
    assert region_grid((256, 256), 128) == [(slice(0, 128), slice(a, a + 128)) for a in (0, 128)] + [
        (slice(128, 256), slice(a, a + 128)) for a in (0, 128)
    ]
    grid = region_grid((1, 383, 520), 128)  # a volume's planes: Y and X only
    assert (
        len(grid) == 2 * 4
        and grid[0] == (slice(0, 191), slice(0, 130))
        and grid[-1] == (slice(191, 383), slice(390, 520))
    )
    assert region_grid((300, 100), 128) == [(slice(0, 150), slice(0, 100)), (slice(150, 300), slice(0, 100))]


def test_regions_stop_apart_and_each_keeps_its_own_output():
    # One member, two regions (the left and right halves of a 1 x 4 canvas): the left's
    # statistic is lowest at 5, then flat above it; the right's keeps falling.
    left = [np.inf, 2.0, 1.5, 1.2, 1.0, *[1.1] * 35]
    right = [np.inf, *np.linspace(2.0, 0.1, 39)]
    rule = Scripted(np.stack([left, right], axis=1), patience=10)
    rule.attach(torch.zeros(1, 1, 1, 4), torch.tensor([[0], [2]]), region_map=torch.tensor([[0, 0, 1, 1]]))
    done = []
    for i in range(1, 41):
        average = torch.full((1, 1, 1, 4), float(i))
        if i == 3:
            assert rule.kept(average).flatten().tolist() == [2, 2, 2, 2]  # kept the 2nd everywhere
        rule.update(i, average, average)
        done.append(rule.done(i))
    assert rule.best_iterations == [5, 40] and rule.best_average.flatten().tolist() == [5, 5, 40, 40]
    assert not any(done)  # the right half still improves
    # A region with nothing kept yet takes the latest average.
    fresh = Scripted(np.stack([left, [np.inf] * 40], axis=1), patience=10)
    fresh.attach(torch.zeros(1, 1, 1, 4), torch.tensor([[0], [2]]), region_map=torch.tensor([[0, 0, 1, 1]]))
    for i in range(1, 8):
        average = torch.full((1, 1, 1, 4), float(i))
        fresh.update(i, average, average)
    assert fresh.kept(average).flatten().tolist() == [5, 5, 7, 7]


def test_region_settings_are_checked():
    for bad in (16, 0, 128.0, True):
        with pytest.raises(ValueError, match="region"):
            ExponentialVariance(region=bad)
    with pytest.raises(ValueError, match="whole image"):
        make_rule("validation", region=128)
    image = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="super-resolution"):
        Fit("super-resolve", image, width=4, iterations=2, stopping="emv", rule_options={"region": 32}, device="cpu")
    rule = ExponentialVariance()
    with pytest.raises(ValueError, match="region_map"):
        rule.attach(torch.zeros(1, 1, 1, 4), torch.tensor([[0], [2]]))


def test_the_photon_settings_stop_large_planes_per_region(noisy_camera, camera64):
    # 32-pixel regions of a 64² image (2 x 2), two members: each member's region keeps the
    # averaged output of its own best iteration, and the composite beats the noisy image.
    assert photon_options(0.05)["rule_options"]["region"] == PHOTON_REGION == 128
    assert "region" not in photon_options(0.05, stabilised=True)["rule_options"]  # not measured there
    assert WARM_RULE["region"] is None
    image = (noisy_camera / 255.0).astype(np.float32)[None]
    options = {**photon_options(0.1), "ema": 0.99}  # a shorter average: an earlier end
    options["rule_options"] = {**options["rule_options"], "region": 32, "patience": 100}
    fit = Fit(
        "denoise",
        image,
        width=16,
        iterations=1500,
        stopping="emv",
        noise_variance=(25 / 255) ** 2,
        ensemble=2,
        device="cpu",
        **options,
    )
    averages = {}
    for record in fit:
        averages[record.iteration] = fit.average.clone()
    kept = fit.rule.best_iterations
    assert fit.rule.regions == 4 and len(kept) == 8 and 0 < min(kept)
    assert len(set(kept)) > 1  # the regions stopped apart
    for index, iteration in enumerate(kept):
        member, (rows, cols) = index // 4, region_grid((64, 64), 32)[index % 4]
        where = (
            member,
            slice(None),
            *(slice(r.start + o.start, r.stop + o.start) for r, o in zip((rows, cols), fit.output_region, strict=True)),
        )
        np.testing.assert_array_equal(fit.rule.best_average[where].numpy(), averages[iteration][where].numpy())
    assert psnr(fit.result()[0] * 255, camera64) - psnr(noisy_camera, camera64) >= 4.0
    # What people are told: every member's regions, from the last record and the fit alike.
    assert record.best_iterations == fit.best_iterations == (tuple(kept[:4]), tuple(kept[4:]))
    assert record.best_iteration == max(kept)
    said = f"best outputs at iterations {min(kept)}–{max(kept)} (2 members × 4 regions)"
    assert describe_best(fit.best_iterations) == said


def test_describe_best_says_one_iteration_or_the_span():
    assert describe_best(None) is None and describe_best(((0,),)) is None  # no rule; nothing kept yet
    assert describe_best(((850,),)) == describe_best(((850,), (850,))) == "best output at iteration 850"
    assert describe_best(((800,), (0,))) == "best output at iteration 800"  # a member still watching
    assert describe_best(((800,), (950,))) == "best outputs at iterations 800–950 (2 members)"
    assert describe_best(((800, 1200),)) == "best outputs at iterations 800–1200 (2 regions)"


def test_the_stabilised_fit_of_bright_images_holds_its_patience():
    assert photon_options(0.05, stabilised=True, bright=True)["rule_options"] == {"hold": STABILISED_HOLD}
    assert photon_options(0.05, stabilised=True)["rule_options"] == {}  # dim: measured without it
    assert "hold" not in photon_options(0.05, bright=True)["rule_options"]  # the plain loss: not measured
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    options = photon_options(0.05, stabilised=True, bright=True)
    fit = Fit("denoise", image, width=4, iterations=10, device="cpu", stopping="emv", **options)
    assert fit.rule.hold == STABILISED_HOLD == 1.0


def test_fit_ends_at_the_residual_floor_given_the_noise_variance():
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    common = {"width": 4, "iterations": 400, "device": "cpu", "preview_every": None}
    # A variance as large as the image's own: its average is that close from the start.
    fit = Fit("denoise", image, stopping="emv", noise_variance=1.0, **common)
    list(fit)
    assert fit.stopped_early and fit.iteration == 25 and fit.best_iteration == 1
    fit = Fit("denoise", image, stopping="emv", noise_variance=1e-6, **common)
    list(fit)
    assert fit.iteration > 100  # out of reach: the variance rule decides


def test_emv_takes_its_tolerance_floor_and_growth_by_default_and_checks_them():
    assert ExponentialVariance().tolerance == 0.01 and WindowedVariance().tolerance == 0.0
    assert ExponentialVariance(tolerance=0).tolerance == 0.0
    assert ExponentialVariance().floor == 0.35 and WindowedVariance().floor is None
    assert ExponentialVariance().growth == 2.5 and WindowedVariance().growth is None
    assert ExponentialVariance(growth=0).growth is None
    assert ExponentialVariance().ceiling == 1.0 and WindowedVariance().ceiling is None
    assert ExponentialVariance().plateau == 0.75 and WindowedVariance().plateau is None
    assert ExponentialVariance(plateau=0).plateau is None
    for bad in (-0.01, float("inf"), "1%"):
        with pytest.raises(ValueError, match="tolerance"):
            ExponentialVariance(tolerance=bad)
        with pytest.raises(ValueError, match="floor"):
            ExponentialVariance(floor=bad)
    for bad in (1.0, 0.5, -2, float("inf"), "2x"):
        with pytest.raises(ValueError, match="growth"):
            ExponentialVariance(growth=bad)
    for bad in (-1, float("inf"), "1x"):
        with pytest.raises(ValueError, match="ceiling"):
            ExponentialVariance(ceiling=bad)
        with pytest.raises(ValueError, match="plateau"):
            ExponentialVariance(plateau=bad)


def test_flat_pixels_are_the_fraction_farthest_from_edges():
    # A noisy step: the columns near the step are not flat, those far from it are.
    rng = np.random.default_rng(0)
    step = np.zeros((2, 40, 60), np.float32)
    step[:, :, 30:] = 1.0
    step[1] *= 0.5  # each channel its own
    flat = flat_pixels(torch.from_numpy(step + rng.normal(0, 0.05, step.shape).astype(np.float32)), 0.5)
    assert flat.shape == step.shape and flat.dtype == torch.bool
    assert abs(float(flat.float().mean()) - 0.5) < 0.01
    columns = flat.float().mean(dim=(0, 1))
    assert float(columns[25:35].max()) == 0.0  # within 5 px of the step: never flat
    assert float(columns[:20].mean()) > 0.55 and float(columns[40:].mean()) > 0.55  # the half, away from it
    # Volumes (C, D, H, W) and every fraction.
    volume = torch.from_numpy(rng.random((1, 4, 16, 16)).astype(np.float32))
    assert int(flat_pixels(volume, 0.25).sum()) == 256 and bool(flat_pixels(volume, 1.0).all())


def test_flat_statistics_watch_the_flat_values_and_the_residual_all():
    # A bright disc on a dark ground: the photon settings' statistic samples only values far
    # from its rim, the residual (ceiling, floor) samples any.
    yy, xx = np.mgrid[:64, :64]
    disc = (((yy - 32) ** 2 + (xx - 32) ** 2) < 15**2).astype(np.float32) * 0.6 + 0.2
    common = {"width": 4, "iterations": 1, "device": "cpu", "stopping": "emv", "noise_variance": 0.01}
    fit = Fit("denoise", disc[None], **common, **photon_options(0.05))
    assert photon_options(0.05)["flat"] == 0.5 and fit.rule.flat == 0.5
    watched_values = fit.rule._statistic_index[0]
    assert watched_values.numel() == 2048  # half of 64², all of them
    flat = flat_pixels(torch.from_numpy(disc[None]), 0.5).flatten()
    rows, cols = np.divmod(watched_values.numpy() % (fit.canvas[0] * fit.canvas[1]), fit.canvas[1])
    image_rows, image_cols = rows - fit.output_region[0].start, cols - fit.output_region[1].start
    assert bool(flat[torch.from_numpy(image_rows * 64 + image_cols)].all())
    radius = np.hypot(image_rows - 32, image_cols - 32)
    assert np.abs(radius - 15).min() > 3  # nothing near the rim
    assert fit.rule._index.numel() == 4096 and fit.rule._growth_window.ring.shape[-1] == 2048
    # Without it, the statistic and the residual watch the same values.
    plain = Fit("denoise", disc[None], **common)
    assert plain.rule.flat is None and plain.rule._statistic_index is plain.rule._index
    for bad in (-0.1, 1.5, "half"):
        with pytest.raises(ValueError, match="flat"):
            ExponentialVariance(flat=bad)
    with pytest.raises(ValueError, match="flat"):
        Fit("super-resolve", disc[None, :32, :32], factor=2, **{**common, "noise_variance": None}, flat=0.5)


def _smooth(image, passes=3):
    """A few 3 × 3 box passes (mirrored edges): a low-pass of ``image``."""
    for _ in range(passes):
        image = uniform_filter(image, 3, mode="mirror")
    return image


def _run_watching_whiteness(script, noisy, average_at, **kwargs):
    """A scripted rule (patience 100, rise 10 %) watching the whiteness of ``noisy`` (48²)
    minus ``average_at(i)`` at each iteration i: (the iteration it is done or None, kept)."""
    rule = Scripted(np.array(script)[:, None], patience=100, rise=0.1, **kwargs)
    rule.attach(torch.zeros(1, 1, 48, 48), torch.arange(48 * 48))
    rule.watch_whiteness(torch.from_numpy(noisy)[None], None, (slice(0, 48), slice(0, 48)))
    for i in range(1, len(script) + 1):
        average = torch.from_numpy(average_at(i)).float()[None, None]
        rule.update(i, average, average)
        if rule.done(i):
            return i, rule.best_iterations
    return None, rule.best_iterations


def test_white_lets_no_output_count_until_the_residual_has_lost_its_structure():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    clean = (0.3 + 0.4 * ((yy // 12 + xx // 12) % 2)).astype(np.float32)  # a checkerboard of 12 px squares
    noise = rng.normal(0, 0.05, clean.shape).astype(np.float32)
    noisy = clean + noise

    def correlation(average, known=None):
        residual = torch.from_numpy(noisy - average)[None, None]
        return float(residual_correlation(residual, None if known is None else known.float())[0])

    # Structure missed (a blurred or an empty fit): neighbouring residual values agree.
    assert correlation(_smooth(clean)) > 0.2 and correlation(np.zeros_like(clean)) > 0.5
    assert abs(correlation(clean)) < 0.05  # the noise itself: white
    # The noise's low frequencies fitted too: a high-passed residual.
    overfit = (clean + _smooth(noise, 1)).astype(np.float32)
    assert correlation(overfit) < -0.1
    # Unknown values (hot pixels) are left out of it: 20 wild ones do not move it.
    wild = overfit.copy()
    wild[rng.integers(0, 48, 20), rng.integers(0, 48, 20)] -= 50.0
    known = torch.from_numpy(wild == overfit)[None, None]
    assert correlation(wild, known) == pytest.approx(correlation(overfit), abs=0.02)
    assert correlation(wild) > -0.1  # counted, they would

    # In a rule: the statistic's lowest comes at 10 and it rises 10 % by 11, but the average
    # turns from blurred to overfitted at iteration 30: nothing counts before, the lowest
    # after it (45) is kept, and the rise over that one ends the member.
    script = [np.inf, *np.linspace(1.0, 0.5, 9), *np.linspace(0.55, 1.0, 10), *np.linspace(0.95, 0.3, 25)]
    script += [0.3 * (1 + 0.02 * k) for k in range(1, 36)]

    def run(**kwargs):
        return _run_watching_whiteness(script, noisy, lambda i: _smooth(clean) if i < 30 else overfit, **kwargs)

    assert run() == (11, [11])  # without it: the early rise
    assert run(white=0.0) == (50, [50])
    assert WARM_RULE["white"] is None and photon_options(0.05)["white"] == 0.0
    for bad in (-1.5, 1.0, "0"):
        with pytest.raises(ValueError, match="white"):
            ExponentialVariance(white=bad)


def test_overfit_ends_a_member_whose_statistic_keeps_falling_once_the_residual_is_high_passed():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    clean = (0.3 + 0.4 * ((yy // 12 + xx // 12) % 2)).astype(np.float32)
    noise = rng.normal(0, 0.05, clean.shape).astype(np.float32)
    noisy = clean + noise
    # Blurred until 30, then a little of the noise fitted (a white residual: the gate opens),
    # then from 60 on much of its low frequencies; the statistic falls all the way (sparse
    # spots on a dark background), so no rise, growth or patience would end the member.
    stages = [_smooth(clean), clean + 0.1 * _smooth(noise, 1), clean + _smooth(noise, 1)]
    correlations = [float(residual_correlation(torch.from_numpy(noisy - s)[None, None])[0]) for s in stages]
    assert correlations[0] > 0.2 and -0.05 < correlations[1] <= 0 and correlations[2] < -0.1
    script = [np.inf, *np.geomspace(1.0, 0.1, 119)]

    def run(**kwargs):
        return _run_watching_whiteness(script, noisy, lambda i: stages[(i >= 30) + (i >= 60)], **kwargs)

    assert run(white=0.0) == (None, [120])  # runs to the cap, keeping the last
    assert run(white=0.0, overfit=-0.05) == (60, [59])  # done at the first check after 60, its best so far
    assert run(overfit=-0.05) == (60, [59])  # without the gate too
    assert WARM_RULE["overfit"] is None and photon_options(0.05)["overfit"] == PHOTON_OVERFIT < 0
    for bad in (0.0, 0.2, -1.5, "-0.1"):
        with pytest.raises(ValueError, match="overfit"):
            ExponentialVariance(overfit=bad)
    with pytest.raises(ValueError, match="overfit"):
        ExponentialVariance(white=-0.2, overfit=-0.1)  # must come after the gate opens


def test_rise_must_be_a_positive_fraction():
    for bad in (0, -0.1, float("inf"), "10%"):
        with pytest.raises(ValueError, match="rise"):
            ExponentialVariance(rise=bad)


def test_variance_rules_keep_a_small_sample_not_full_images():
    image = np.random.default_rng(0).random((3, 200, 300)).astype(np.float32)
    fit = Fit("denoise", image, width=4, iterations=1, stopping="wmv", device="cpu")
    assert fit.rule._window.ring.shape == (100, 1, 4096)  # 100 x 4096 values (one member), not 100 x 180,000


def test_validation_rule_leaves_five_percent_out_of_the_loss():
    image = np.random.default_rng(0).random((2, 40, 50)).astype(np.float32)
    fit = Fit("denoise", image, width=4, iterations=3, stopping="validation", device="cpu")
    known = fit.operator.known[0, 0].numpy()
    assert known.size - known.sum() == int(0.05 * 40 * 50)
    held = ~known.astype(bool)
    np.testing.assert_array_equal(fit.rule.measured.numpy(), image[:, held].reshape(-1))
    list(fit)
    region = (0, slice(None), *fit.output_region)
    expected = ((fit.average[region].numpy()[:, held] - image[:, held]) ** 2).mean()
    assert fit.statistics[-1] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("rule", RULES)
def test_fit_stops_by_itself_and_returns_the_best_average(rule, noisy_camera):
    image = (noisy_camera / 255.0).astype(np.float32)[None]
    best = {}
    fit = Fit("denoise", image, width=16, iterations=2000, stopping=make_rule(rule, patience=100), device="cpu")
    for record in fit:
        best[record.iteration] = fit.average.clone()
    assert fit.stopped_early and fit.iteration < 2000
    assert 0 < fit.best_iteration < fit.iteration
    region = (0, slice(None), *fit.output_region)
    assert fit.statistics.shape == (fit.iteration,)
    np.testing.assert_allclose(fit.result(), best[fit.best_iteration][region].numpy(), atol=1e-6)


def test_denoise_stops_automatically_by_default(camera64, noisy_camera):
    seen = []
    out = napari_dip.denoise(noisy_camera, callback=lambda step: seen.append(step.record), **FAST)
    last = seen[-1]
    assert last.iterations == 6000 and last.iteration < 3000  # stopped well before the cap
    assert last.best_iteration is not None and last.preview is not None
    assert psnr(out, camera64) - psnr(noisy_camera, camera64) >= 5.0
    assert DEFAULT_RULE in RULES


def test_a_fixed_count_switches_automatic_stopping_off(noisy_camera):
    seen = []
    napari_dip.denoise(noisy_camera, iterations=30, callback=lambda step: seen.append(step.record), **FAST)
    assert seen[-1].iteration == 30 and seen[-1].statistics is None
