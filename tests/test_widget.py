"""The napari dock widget under Xvfb: layers in, worker thread, preview, Stop, faults."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_dip import _widget
from napari_dip._sample_data import damage_mask

TIMEOUT = 60_000  # ms: a tiny fit takes a second or two, CI machines vary


@pytest.fixture
def messages(monkeypatch):
    """Notifications shown by the widget, as (kind, text)."""
    seen = []
    monkeypatch.setattr(_widget, "show_error", lambda text: seen.append(("error", text)))
    monkeypatch.setattr(_widget, "show_info", lambda text: seen.append(("info", text)))
    return seen


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    assert isinstance(widget, _widget.DeepImagePriorWidget)
    widget.width.value = 8
    widget.device.value = "cpu"
    return viewer, widget


def settle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def run(qtbot, widget, iterations=4):
    widget.iterations.value = iterations
    widget.run()
    settle(qtbot, widget)


def gradient(shape=(32, 32), dtype=np.uint16):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (100 + 10 * x + 5 * y + np.random.default_rng(0).normal(0, 12, shape)).astype(dtype)


def test_fine_photon_noise_lands_as_float32_and_the_status_says_why(dock, qtbot):
    viewer, widget = dock
    rng = np.random.default_rng(0)
    rate = np.linspace(1, 8, 48)[None, :] * np.ones((48, 1))
    counts = np.rint(0.5 * rng.poisson(rate) + 100 + rng.normal(0, 0.5, rate.shape)).astype(np.uint16)
    viewer.add_image(counts, name="dim")
    widget.reset_choices()
    run(qtbot, widget)
    assert viewer.layers["dim denoised"].data.dtype == np.float32
    assert viewer.layers["dim denoised"].metadata["napari_dip"]["tv_weight"] > 0  # photon data: TV on
    assert "float32 output: the noise is fine" in widget.status.value
    widget.dtype.value = "input"
    run(qtbot, widget)
    assert viewer.layers["dim denoised [1]"].data.dtype == np.uint16


@pytest.mark.parametrize("native", [True, False])
def test_the_status_and_the_layer_say_when_auto_chose_bfloat16(dock, qtbot, monkeypatch, native):
    import napari_dip.fit

    monkeypatch.setattr(napari_dip.fit, "_cpu_has_bfloat16", lambda: native)
    viewer, widget = dock
    viewer.add_image(gradient(), name="cells")
    widget.reset_choices()
    widget.width.value = 64  # bfloat16 from this width on CPUs that multiply it natively
    run(qtbot, widget, iterations=2)
    assert viewer.layers["cells denoised"].metadata["napari_dip"]["precision"] == ("bfloat16" if native else "float32")
    assert ("bfloat16 layers" in widget.status.value) == native, widget.status.value
    widget.width.value = 32  # below: only the largest convolutions
    run(qtbot, widget, iterations=2)
    assert viewer.layers["cells denoised [1]"].metadata["napari_dip"]["precision"] == ("mixed" if native else "float32")
    assert ("bfloat16 in the largest convolutions" in widget.status.value) == native, widget.status.value


def test_denoise_adds_a_layer_with_the_inputs_geometry_and_dtype(dock, qtbot):
    viewer, widget = dock
    data = gradient()
    original = data.copy()
    layer = viewer.add_image(data, name="cells", scale=(0.5, 0.25), translate=(10, -3), metadata={"um": 1})
    widget.reset_choices()
    assert widget.image.value is layer
    run(qtbot, widget)
    out = viewer.layers["cells denoised"]
    assert out.data.shape == data.shape and out.data.dtype == np.uint16
    assert tuple(out.scale) == (0.5, 0.25) and tuple(out.translate) == (10, -3)
    assert out.metadata["um"] == 1 and tuple(out.contrast_limits) == tuple(layer.contrast_limits)
    # What the fit assumed travels with the result; the input's metadata is left as it was.
    # A small image on a CPU: two networks by default (fit.default_ensemble).
    assert out.metadata["napari_dip"]["task"] == "denoise" and out.metadata["napari_dip"]["ensemble"] == 2
    assert out.metadata["napari_dip"]["noise"]["kind"] in ("gaussian", "poisson")
    assert out.metadata["napari_dip"]["dtype"] == out.data.dtype.name == data.dtype.name
    assert out.metadata["napari_dip"]["tv_weight"] == 0  # too small to measure its noise: no TV weight
    assert layer.metadata == {"um": 1}
    np.testing.assert_array_equal(layer.data, original)
    assert "cells denoised (preview)" not in [lay.name for lay in viewer.layers]
    assert widget.run_button.text == "Run"
    assert widget.status.value.startswith("done: 4 iterations") and "; noise: " in widget.status.value


def test_layer_pickers_follow_the_viewer(dock):
    viewer, widget = dock
    assert widget.image.value is None
    a = viewer.add_image(np.zeros((8, 8)), name="a")
    viewer.add_labels(np.zeros((8, 8), int), name="m")
    assert [c for c in widget.image.choices] == [a]  # napari resets choices on insertion
    assert widget.mask.choices[0].name == "m"
    viewer.layers.remove(a)
    assert list(widget.image.choices) == []


def shown(widget):
    return not widget.native.isHidden()


def test_task_shows_only_its_inputs_and_defaults(dock):
    _, widget = dock
    widget.task.value = "inpaint"
    assert shown(widget.mask) and not shown(widget.flash) and not shown(widget.scale)
    assert widget.iterations.value == 5000
    widget.task.value = "flash-no-flash"
    assert shown(widget.flash) and widget.image.label == "No-flash image" and widget.lr.value == 0.1
    widget.task.value = "super-resolve"
    assert shown(widget.scale) and not shown(widget.mask)
    assert widget.iterations.value == 2000


def test_preview_layer_updates_live(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(gradient(), name="img")
    added = []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    updates = []
    widget.preview_every.value = 2
    previews = []
    widget._show_preview = (lambda original: lambda data, *a: (previews.append(data.copy()), original(data, *a)))(
        widget._show_preview
    )
    run(qtbot, widget, iterations=6)
    updates.extend(previews)
    assert added[0] == "img denoised (preview)" and added[-1] == "img denoised"
    assert len(updates) == 3 and all(u.dtype == np.uint16 and u.shape == (32, 32) for u in updates)
    assert widget.curve.getData()[0][-1] == 6  # the loss curve holds every iteration


def test_stop_mid_run_keeps_the_result_so_far(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(gradient(), name="img")
    widget.iterations.value = 100_000
    widget.preview_every.value = 1
    widget.run()
    qtbot.waitUntil(lambda: bool(widget._losses), timeout=TIMEOUT)
    assert widget.run_button.text == "Stop"
    widget.run_button.changed.emit(None)  # the user presses Stop
    settle(qtbot, widget)
    stopped = [lay for lay in viewer.layers if "(stopped at" in lay.name]
    assert len(stopped) == 1 and stopped[0].data.shape == (32, 32)
    assert int(stopped[0].name.split("stopped at ")[1].rstrip(")")) < 1000


def test_inpaint_from_a_labels_layer(dock, qtbot):
    viewer, widget = dock
    image = gradient(dtype=np.uint8)
    labels = np.zeros(image.shape, np.uint8)
    labels[10:20, 10:20] = 3
    viewer.add_image(image, name="img")
    viewer.add_labels(labels, name="holes")
    widget.task.value = "inpaint"
    run(qtbot, widget)
    out = viewer.layers["img inpainted"].data
    np.testing.assert_array_equal(out[labels == 0], image[labels == 0])


def test_super_resolve_overlays_the_input(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(gradient((16, 16)), name="small", scale=(2.0, 2.0), translate=(0.0, 0.0))
    widget.task.value = "super-resolve"
    widget.scale.value = 2
    run(qtbot, widget, iterations=2)
    out = viewer.layers["small super-resolved x2"]
    assert out.data.shape == (32, 32)
    assert tuple(out.scale) == (1.0, 1.0) and tuple(out.translate) == (-0.5, -0.5)


def test_flash_no_flash_with_rgb_layers(dock, qtbot):
    viewer, widget = dock
    rng = np.random.default_rng(0)
    flash = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    viewer.add_image(flash, name="flash", rgb=True)
    no_flash = viewer.add_image(flash // 3, name="dark", rgb=True)
    widget.task.value = "flash-no-flash"
    widget.reset_choices()
    widget.image.value = no_flash
    widget.flash.value = viewer.layers["flash"]
    run(qtbot, widget, iterations=2)
    out = viewer.layers["dark flash/no-flash"]
    assert out.rgb and out.data.shape == (32, 32, 3) and out.data.dtype == np.uint8


def stack(planes=3, shape=(32, 32), dtype=np.uint16):
    """Planes that differ (a gradient times 1, 2, 3, ...), each with its own noise."""
    return np.stack([gradient(shape, dtype) * (i + 1) for i in range(planes)]).astype(dtype)


@pytest.fixture
def prepared(monkeypatch):
    """The keywords of every ``prepare`` call the widget makes (the real one still runs)."""
    calls = []
    real = _widget.prepare

    def spy(task, image, **kwargs):
        calls.append({"task": task, "shape": np.shape(image), **kwargs})
        return real(task, image, **kwargs)

    monkeypatch.setattr(_widget, "prepare", spy)
    return calls


def record_statuses(widget):
    """Every progress status the widget shows (a magicgui Label does not signal its changes)."""
    statuses = []
    original = widget._status

    def spy(step, loss):
        statuses.append(original(step, loss))
        return statuses[-1]

    widget._status = spy
    return statuses


def fixed(widget, iterations):
    """No stopping rule: every unit runs ``iterations``."""
    widget.auto_stop.value = False
    widget.iterations.value = iterations


def test_mode_picker_shows_only_for_stacks(dock):
    viewer, widget = dock
    viewer.add_image(gradient(), name="flat")
    assert not shown(widget.mode)
    rgb = viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="rgb", rgb=True)
    widget.image.value = rgb
    assert not shown(widget.mode)
    widget.image.value = viewer.add_image(stack(), name="stack")
    assert shown(widget.mode)
    assert widget.mode.value == "planes"
    assert [widget.mode.native.itemText(i) for i in range(3)] == ["this plane", "every plane", "whole volume"]
    widget.image.value = rgb
    assert not shown(widget.mode)


def test_this_plane_sits_at_its_own_position(dock, qtbot):
    viewer, widget = dock
    data = np.stack([stack(), stack() // 2])  # (T, Z, Y, X) = (2, 3, 32, 32)
    original = data.copy()
    viewer.add_image(data, name="stack", scale=(5, 2, 0.5, 0.5), translate=(100, 10, 1, 1))
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 2)
    widget.mode.value = "plane"
    run(qtbot, widget, iterations=3)
    out = viewer.layers["stack denoised [plane 1, 2]"]
    assert out.data.shape == (1, 1, 32, 32) and out.data.dtype == np.uint16
    assert tuple(out.scale) == (5, 2, 0.5, 0.5) and tuple(out.translate) == (105, 14, 1, 1)
    assert out.data.any()
    np.testing.assert_array_equal(data, original)
    assert widget.status.value.startswith("done: 3 iterations")


def test_every_plane_restores_the_whole_stack(dock, qtbot):
    viewer, widget = dock
    data = stack()
    viewer.add_image(data, name="stack", scale=(2, 0.5, 0.5), translate=(5, 1, 1))
    assert widget.mode.value == "planes"  # the default for a stack
    fixed(widget, 3)
    widget.preview_every.value = 1
    statuses, previews = record_statuses(widget), []
    original = widget._show_preview

    def spy(plane_data, plane=0):
        original(plane_data, plane)
        previews.append((plane, plane_data.shape, widget._preview_layer.data.shape, widget._preview_layer.translate[0]))

    widget._show_preview = spy
    widget.run()
    settle(qtbot, widget)
    out = viewer.layers["stack denoised"]
    assert out.data.shape == data.shape and out.data.dtype == data.dtype
    assert tuple(out.scale) == (2, 0.5, 0.5) and tuple(out.translate) == (5, 1, 1)
    assert all(plane.any() for plane in out.data)  # every plane restored, none left at 0
    # The preview is the plane being fitted, where that plane lies in the stack.
    assert {p for p, *_ in previews} == {0, 1, 2}
    assert all(shape == (32, 32) and layer == (1, 32, 32) and z == 5 + 2 * p for p, shape, layer, z in previews)
    print(statuses)
    assert any(s.startswith("plane 2 of 3 · iteration 2/3") and "left" in s for s in statuses)
    assert widget.status.value.startswith("done: 3 planes, 9 iterations")
    assert widget.curve.getData()[0][-1] == 3  # the loss curve shows the current plane only
    assert not [lay for lay in viewer.layers if "preview" in lay.name]


def test_whole_volume_fits_one_3d_network(dock, qtbot, prepared):
    viewer, widget = dock
    data = stack(8, (64, 64))
    viewer.add_image(data, name="volume", scale=(2, 1, 1), translate=(0, 3, 3))
    widget.mode.value = "volume"
    fixed(widget, 2)
    widget.run()
    settle(qtbot, widget)
    assert prepared[-1]["volumetric"] is True and prepared[-1]["spacing"] == (2, 1, 1)
    out = viewer.layers["volume denoised"]
    assert out.data.shape == data.shape and out.data.dtype == data.dtype
    assert tuple(out.scale) == (2, 1, 1) and tuple(out.translate) == (0, 3, 3)
    assert widget.status.value.startswith("done: 2 iterations")


def test_stop_mid_stack_keeps_the_planes_done(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(stack(4), name="stack")
    fixed(widget, 40)
    widget.preview_every.value = 1
    widget.run()
    qtbot.waitUntil(lambda: widget._job is not None and widget._job.schedule.done >= 1, timeout=TIMEOUT)
    widget.run_button.changed.emit(None)  # the user presses Stop
    settle(qtbot, widget)
    (out,) = [lay for lay in viewer.layers if lay.name.startswith("stack denoised")]
    done = out.data.any(axis=(1, 2))
    k = int(done.sum())
    assert 1 <= k < 4 and done[:k].all() and not done[k:].any()  # the planes done, then zeros
    assert out.data.shape == (4, 32, 32)
    assert out.name == (f"stack denoised (planes 1-{k} of 4)" if k > 1 else "stack denoised (plane 1 of 4)")
    assert widget.status.value.startswith(f"stopped: {k} of 4 planes restored")


def test_stop_within_the_first_plane_keeps_it_as_it_is(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(stack(), name="stack")
    fixed(widget, 100_000)
    widget.preview_every.value = 1
    widget.run()
    qtbot.waitUntil(lambda: bool(widget._losses), timeout=TIMEOUT)
    widget.stop()
    settle(qtbot, widget)
    (out,) = [lay for lay in viewer.layers if lay.name.startswith("stack denoised")]
    assert out.name.startswith("stack denoised (plane 1 of 3, stopped at ")
    assert out.data.shape == (3, 32, 32) and out.data[0].any() and not out.data[1:].any()
    assert widget.status.value.startswith("stopped: 0 of 3 planes restored; plane 1 kept")


def test_plane_ranges_and_kept_planes():
    from napari_dip._layers import Output, plane_ranges

    assert plane_ranges(np.array([1, 1, 1, 0, 1, 0], bool)) == "1-3, 5"
    output = Output("x", {"scale": (1, 1, 1, 1), "translate": (0, 0, 0, 0)}, plane_shape=(2, 2))
    kept = output.keep_planes(np.ones((2, 2, 4, 4), np.uint16), np.array([1, 1, 0, 0], bool))
    assert kept.dtype == np.uint16 and kept[0].all() and not kept[1].any()
    data, kwargs = output.plane_layer(np.ones((4, 4)), plane=3)
    assert data.shape == (1, 1, 4, 4) and kwargs["translate"] == (1, 1, 0, 0)


def test_tiles_pass_through(dock, qtbot, prepared):
    viewer, widget = dock
    viewer.add_image(gradient((48, 48)), name="big")
    fixed(widget, 2)
    widget.preview_every.value = 1
    statuses = record_statuses(widget)
    widget.run()
    settle(qtbot, widget)
    assert prepared[-1]["tile_size"] == "auto"  # 0: whole planes unless memory requires tiles
    widget.tile_size.value = 32
    widget.run()
    settle(qtbot, widget)
    assert prepared[-1]["tile_size"] == 32
    assert any("tile 2 of 4" in s for s in statuses)
    assert widget.status.value.startswith("done: 8 iterations")  # 4 tiles of 2
    assert viewer.layers[-1].data.shape == (48, 48)


def test_inpaint_every_plane_with_a_2d_mask(dock, qtbot):
    viewer, widget = dock
    data = stack(2, dtype=np.uint8)
    labels = np.zeros((32, 32), np.uint8)
    labels[10:20, 10:20] = 1
    viewer.add_image(data, name="img")
    viewer.add_labels(labels, name="holes")
    widget.task.value = "inpaint"
    widget.reset_choices()
    widget.image.value = viewer.layers["img"]
    run(qtbot, widget, iterations=2)
    out = viewer.layers["img inpainted"].data
    assert out.shape == data.shape
    np.testing.assert_array_equal(out[:, labels == 0], data[:, labels == 0])


def test_memory_error_is_a_notification(dock, messages, monkeypatch):
    viewer, widget = dock

    def too_large(*args, **kwargs):
        raise MemoryError("this fit needs ~40 GiB; set a tile size of 256 or less")

    monkeypatch.setattr(_widget, "prepare", too_large)
    viewer.add_image(stack(), name="stack")
    widget.run()
    assert messages[-1] == ("error", "Deep Image Prior: this fit needs ~40 GiB; set a tile size of 256 or less")
    assert not widget.running


@pytest.mark.parametrize("key", ["noisy", "damaged", "low-resolution", "flash", "fluorescence-stack"])
def test_each_sample_loads(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dip", key)
    assert len(viewer.layers) == {"damaged": 2, "flash": 2}.get(key, 1)
    if key == "damaged":
        assert viewer.layers[1].data.max() > 0 and viewer.layers[1].data.shape == viewer.layers[0].data.shape[:2]
        np.testing.assert_array_equal(viewer.layers[1].data, damage_mask((128, 128)))


def test_bad_input_becomes_a_notification(dock, qtbot, messages):
    viewer, widget = dock
    widget.run()
    assert messages and "choose an Image layer" in messages[-1][1]
    viewer.add_image(gradient(), name="img")
    viewer.add_labels(np.zeros((32, 32), int), name="empty")
    widget.task.value = "inpaint"
    widget.run()
    assert "mask is empty" in messages[-1][1] and not widget.running


def test_out_of_memory_is_caught_with_advice(dock, qtbot, messages, monkeypatch):
    import torch

    from napari_dip.fit import Fit

    def explode(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        yield  # pragma: no cover

    monkeypatch.setattr(Fit, "__iter__", explode)
    viewer, widget = dock
    viewer.add_image(gradient(), name="img")
    run(qtbot, widget)
    assert messages[-1][0] == "error" and "smaller width" in messages[-1][1] and "cpu" in messages[-1][1]
    assert widget._job is None and widget.run_button.text == "Run"
    assert [lay.name for lay in viewer.layers] == ["img"]
    monkeypatch.undo()
    run(qtbot, widget)  # the widget keeps working
    assert "img denoised" in viewer.layers


def test_second_run_is_refused_while_one_is_going(dock, qtbot, messages):
    viewer, widget = dock
    viewer.add_image(gradient(), name="img")
    widget.iterations.value = 100_000
    widget.run()
    widget.run()
    assert messages[-1] == ("info", "Deep Image Prior is already running: press Stop first.")
    job = widget._job  # stopped after an iteration, the result so far is kept
    qtbot.waitUntil(lambda: job.fit is not None and job.fit.iteration > 0, timeout=TIMEOUT)
    widget.stop()
    settle(qtbot, widget)
    assert len([lay for lay in viewer.layers if "denoised" in lay.name]) == 1


def test_removing_the_input_mid_run_does_not_crash(dock, qtbot):
    viewer, widget = dock
    layer = viewer.add_image(gradient(), name="img", scale=(3, 3))
    widget.iterations.value = 100_000
    widget.preview_every.value = 1
    widget.run()
    qtbot.waitUntil(lambda: bool(widget._losses), timeout=TIMEOUT)
    viewer.layers.remove(layer)
    widget.stop()
    settle(qtbot, widget)
    (result,) = [lay for lay in viewer.layers if "stopped" in lay.name]
    assert tuple(result.scale) == (3, 3)


def test_closing_the_viewer_stops_the_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    viewer.add_image(gradient(), name="img")
    widget.width.value, widget.device.value, widget.iterations.value = 8, "cpu", 100_000
    widget.run()
    worker = widget._worker
    qtbot.waitUntil(lambda: worker.is_running, timeout=TIMEOUT)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT)
    assert widget._worker is None


@pytest.mark.parametrize(
    ("sample", "task"),
    [
        ("noisy", "denoise"),
        ("damaged", "inpaint"),
        ("low-resolution", "super-resolve"),
        ("flash", "flash-no-flash"),
        ("fluorescence-stack", "denoise"),
    ],
)
def test_demo_opens_each_sample_ready_to_run(sample, task, qtbot):
    from napari_dip._cli import open_demo

    viewer, widget = open_demo(sample, show=False)
    try:
        assert widget.task.value == task and widget.image.value is not None
        if task == "inpaint":
            assert widget.mask.value is viewer.layers["chelsea damage"]
        if task == "flash-no-flash":
            assert widget.flash.value is viewer.layers["coffee (flash)"]
            assert widget.image.value is viewer.layers["coffee (no flash)"]
        if sample == "fluorescence-stack":  # a Z-stack: the stack modes are offered, every plane first
            assert shown(widget.mode) and widget.mode.value == "planes"
    finally:
        viewer.close()


def test_automatic_stopping_shows_the_statistic_and_marks_the_best(dock, qtbot):
    viewer, widget = dock
    rng = np.random.default_rng(0)
    viewer.add_image((gradient() + rng.normal(0, 30, (32, 32))).astype(np.float32), name="noisy")
    assert widget.auto_stop.value and shown(widget.rule) and widget.iterations.label == "Max iterations"
    assert widget.iterations.value == 6000
    widget.preview_every.value = 25
    widget.ensemble.value = 1  # one network: the test is about the curve, not the members
    widget.run()
    settle(qtbot, widget)
    assert widget.status.value.startswith("stopped automatically, best output at iteration")
    best = int(widget.status.value.split("iteration ")[1].split(":")[0])
    x, y = widget.statistic_curve.getData()
    assert len(x) > 0 and np.all(np.isfinite(y))  # log10 values: the plot is in log mode
    assert all(line.isVisible() and line.value() == best for line in widget.best_lines)
    assert "noisy denoised" in viewer.layers


def test_unticking_automatic_stopping_runs_a_fixed_count(dock, qtbot):
    viewer, widget = dock
    viewer.add_image(gradient(), name="img")
    widget.auto_stop.value = False
    assert not shown(widget.rule) and widget.iterations.label == "Iterations" and widget.iterations.value == 3000
    run(qtbot, widget, iterations=5)
    assert widget.status.value.startswith("done: 5 iterations")
    assert widget.statistic_curve.getData()[0] is None or len(widget.statistic_curve.getData()[0]) == 0


def test_multiscale_layers_are_refused_with_advice(dock, messages):
    viewer, widget = dock
    base = gradient((64, 64))
    viewer.add_image([base, base[::2, ::2]], name="pyramid", multiscale=True)
    widget.run()
    assert "multiscale" in messages[-1][1] and not widget.running
