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
    return (100 + 10 * x + 5 * y + np.random.default_rng(0).normal(0, 8, shape)).astype(dtype)


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
    assert out.metadata == {"um": 1} and tuple(out.contrast_limits) == tuple(layer.contrast_limits)
    np.testing.assert_array_equal(layer.data, original)
    assert "cells denoised (preview)" not in [lay.name for lay in viewer.layers]
    assert widget.run_button.text == "Run"
    assert widget.status.value.startswith("done: 4 iterations")


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
    widget._show_preview = (lambda original: lambda data: (previews.append(data.copy()), original(data)))(
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


def test_stack_restores_the_plane_on_display(dock, qtbot):
    viewer, widget = dock
    stack = np.stack([gradient() * 0, gradient(), gradient() * 2])
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 1)
    run(qtbot, widget, iterations=2)
    out = viewer.layers["stack denoised [plane 1]"]
    assert out.data.shape == (32, 32)


@pytest.mark.parametrize("key", ["noisy", "damaged", "low-resolution", "flash"])
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
    [("noisy", "denoise"), ("damaged", "inpaint"), ("low-resolution", "super-resolve"), ("flash", "flash-no-flash")],
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
    finally:
        viewer.close()


def test_automatic_stopping_shows_the_statistic_and_marks_the_best(dock, qtbot):
    viewer, widget = dock
    rng = np.random.default_rng(0)
    viewer.add_image((gradient() + rng.normal(0, 30, (32, 32))).astype(np.float32), name="noisy")
    assert widget.auto_stop.value and shown(widget.rule) and widget.iterations.label == "Max iterations"
    assert widget.iterations.value == 6000
    widget.preview_every.value = 25
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
