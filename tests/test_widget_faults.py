"""Fault injection in the napari dock widget: GPU out-of-memory at set-up, mid-fit and
mid-stack, Stop mid-fit. After each the viewer must stay usable, the input layer must be
exactly as it was, and no worker, progress bar or preview layer may be left behind."""

import gc
import weakref

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import torch

import test_widget
from napari_dip import _widget
from napari_dip.fit import Fit
from napari_dip.schedule import Schedule
from test_widget import TIMEOUT, fixed, gradient, run, settle, stack

# The widget's fixtures, shared (assigned, not imported, so that no linter takes the
# test arguments for redefinitions).
dock = test_widget.dock
messages = test_widget.messages
OOM = "CUDA out of memory. Tried to allocate 20.00 GiB"


def oom() -> BaseException:
    return torch.cuda.OutOfMemoryError(OOM)


class Snapshot:
    """What a layer holds now, to check later that a run left it exactly so."""

    def __init__(self, layer):
        self.layer, self.data = layer, layer.data
        self.copy = np.array(layer.data, copy=True)
        self.scale, self.translate = tuple(layer.scale), tuple(layer.translate)

    def assert_untouched(self, viewer):
        layer = self.layer
        assert layer in viewer.layers
        assert layer.data is self.data  # not replaced ...
        assert layer.data.dtype == self.copy.dtype and layer.data.shape == self.copy.shape
        assert layer.data.tobytes() == self.copy.tobytes()  # ... nor written to: bit for bit
        assert tuple(layer.scale) == self.scale and tuple(layer.translate) == self.translate


def started_worker(widget):
    """Start a run and return its worker (None when it was refused at set-up)."""
    widget.run()
    return widget._worker


def assert_idle(widget, worker=None):
    """The run is over and nothing of it is left running or open."""
    assert not widget.running and widget._worker is None and widget._job is None
    assert widget._progress is None and widget._preview_layer is None
    assert widget.run_button.text == "Run"
    if worker is not None:
        assert not worker.is_running


def assert_oom_reported(widget, messages):
    errors = [text for kind, text in messages if kind == "error"]
    assert len(errors) == 1, errors  # once, not once per signal
    assert errors[0] == _widget.OOM_ADVICE
    assert all(advice in errors[0] for advice in ("smaller width", "'cpu'", "tiles"))
    assert widget.status.value == "out of GPU memory"


def previews(viewer):
    return [lay.name for lay in viewer.layers if "preview" in lay.name]


class Calls(list):
    widget = None


@pytest.fixture
def gpu_frees(monkeypatch):
    """Each call of ``_free_gpu_memory``; set ``.widget`` to record whether its job was dropped."""
    calls = Calls()

    def spy():
        calls.append(calls.widget is None or calls.widget._job is None)

    monkeypatch.setattr(_widget, "_free_gpu_memory", spy)
    return calls


@pytest.fixture
def fits(monkeypatch):
    """Weak references to every ``Fit`` made, in order."""
    refs = []
    real = Fit.__init__

    def counted(self, *args, **kwargs):
        real(self, *args, **kwargs)
        refs.append(weakref.ref(self))

    monkeypatch.setattr(Fit, "__init__", counted)
    return refs


def assert_released(qtbot, refs):
    """No fit outlives its run: nothing (job, worker, traceback) holds its network and
    tensors, so that the GPU memory can be given back."""
    assert refs

    def released():
        gc.collect()
        return all(ref() is None for ref in refs)

    qtbot.waitUntil(released, timeout=5000)


def raise_on_call(monkeypatch, cls, name="__init__"):
    def explode(self, *args, **kwargs):
        raise oom()

    monkeypatch.setattr(cls, name, explode)


@pytest.mark.parametrize("where", ["Schedule.__init__", "Fit.__init__"])
def test_out_of_memory_at_set_up(dock, qtbot, messages, gpu_frees, monkeypatch, where):
    """Schedule.__init__ runs in the GUI thread (in ``prepare``), Fit.__init__ in the
    worker (the first unit's set-up): both are reported with advice and leave nothing."""
    viewer, widget = dock
    gpu_frees.widget = widget
    layer = viewer.add_image(gradient(), name="img", scale=(0.5, 0.25), translate=(10, -3))
    before = Snapshot(layer)
    with monkeypatch.context() as patch:
        raise_on_call(patch, Schedule if where == "Schedule.__init__" else Fit)
        widget.iterations.value = 4
        worker = started_worker(widget)
        settle(qtbot, widget)
    assert (worker is None) == (where == "Schedule.__init__")  # refused before any thread started
    assert_idle(widget, worker)
    assert_oom_reported(widget, messages)
    assert gpu_frees and all(gpu_frees)
    assert [lay.name for lay in viewer.layers] == ["img"]
    before.assert_untouched(viewer)

    run(qtbot, widget, iterations=3)  # the viewer and the widget still work
    assert widget.status.value.startswith("done: 3 iterations")
    assert "img denoised" in viewer.layers and len([m for m in messages if m[0] == "error"]) == 1
    before.assert_untouched(viewer)


def test_out_of_memory_mid_fit(dock, qtbot, messages, gpu_frees, fits, monkeypatch):
    viewer, widget = dock
    gpu_frees.widget = widget
    layer = viewer.add_image(gradient(), name="img", scale=(2, 2), translate=(1, 1))
    before = Snapshot(layer)
    added = []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    fixed(widget, 50)
    widget.preview_every.value = 1
    real = Fit._advance

    def fail_on_fifth(self):
        if self.iteration == 4:  # four iterations done: the fifth runs out of memory
            raise oom()
        real(self)

    with monkeypatch.context() as patch:
        patch.setattr(Fit, "_advance", fail_on_fifth)
        worker = started_worker(widget)
        settle(qtbot, widget)
    assert added == ["img denoised (preview)"]  # a preview was shown ...
    assert previews(viewer) == []  # ... and is gone
    assert widget.curve.getData()[0][-1] == 4  # the iterations before the fault did run
    assert_idle(widget, worker)
    assert_oom_reported(widget, messages)
    assert gpu_frees and all(gpu_frees)  # freed, and only once the job was dropped
    assert_released(qtbot, fits)
    assert [lay.name for lay in viewer.layers] == ["img"]
    before.assert_untouched(viewer)

    run(qtbot, widget, iterations=3)
    assert widget.status.value.startswith("done: 3 iterations")
    out = viewer.layers["img denoised"]
    assert out.data.shape == (32, 32) and tuple(out.scale) == (2, 2)
    before.assert_untouched(viewer)


def test_stop_mid_fit_keeps_the_result_and_the_input(dock, qtbot, messages, fits):
    viewer, widget = dock
    layer = viewer.add_image(gradient(), name="img", scale=(0.5, 0.5), translate=(4, 4))
    before = Snapshot(layer)
    fixed(widget, 100_000)
    widget.preview_every.value = 1
    worker = started_worker(widget)
    qtbot.waitUntil(lambda: len(widget._losses) >= 2, timeout=TIMEOUT)
    widget.run_button.changed.emit(None)  # the user presses Stop
    settle(qtbot, widget)
    assert_idle(widget, worker)
    (stopped,) = [lay for lay in viewer.layers if lay.name.startswith("img denoised (stopped at ")]
    assert stopped.data.shape == (32, 32) and stopped.data.dtype == np.uint16 and stopped.data.any()
    assert tuple(stopped.scale) == (0.5, 0.5) and tuple(stopped.translate) == (4, 4)
    assert previews(viewer) == [] and widget.status.value.startswith("stopped: ")
    assert not messages
    assert_released(qtbot, fits)
    before.assert_untouched(viewer)

    run(qtbot, widget, iterations=3)
    assert widget.status.value.startswith("done: 3 iterations") and "img denoised" in viewer.layers
    before.assert_untouched(viewer)


def test_out_of_memory_on_the_second_plane_of_a_stack(dock, qtbot, messages, gpu_frees, fits, monkeypatch):
    viewer, widget = dock
    gpu_frees.widget = widget
    layer = viewer.add_image(stack(3), name="stack", scale=(2, 0.5, 0.5), translate=(5, 1, 1))
    assert layer.data.dtype == np.uint16 and layer.data.shape == (3, 32, 32)
    before = Snapshot(layer)
    assert widget.mode.value == "planes"  # every plane
    fixed(widget, 3)
    widget.preview_every.value = 1
    real_advance = Fit._advance
    reached = []

    def fail_in_second_plane(self):
        if len(fits) == 2 and fits[1]() is self and self.iteration == 2:
            reached.append(self.iteration)
            raise oom()
        real_advance(self)

    with monkeypatch.context() as patch:
        patch.setattr(Fit, "_advance", fail_in_second_plane)
        worker = started_worker(widget)
        job = widget._job
        settle(qtbot, widget)
        planes_done = job.schedule.planes_done.tolist()
    assert len(fits) == 2 and reached == [2]
    assert planes_done == [True, False, False]  # the fault came in plane 2, with plane 1 restored
    assert_idle(widget, worker)
    errors = [text for kind, text in messages if kind == "error"]
    assert errors == [_widget.OOM_ADVICE]
    assert widget.status.value == "out of GPU memory; 1 of 3 planes restored before it are kept"
    # As Stop does: the plane finished before the fault is kept, in place; the rest are 0.
    (kept,) = [lay for lay in viewer.layers if "before the error" in lay.name]
    assert kept.name == "stack denoised (plane 1 of 3, before the error)"
    assert kept.data.dtype == np.uint16 and kept.data[0].any() and not kept.data[1:].any()
    assert tuple(kept.scale) == (2, 0.5, 0.5) and tuple(kept.translate) == (5, 1, 1)
    assert gpu_frees and all(gpu_frees)
    del job
    assert_released(qtbot, fits)
    assert previews(viewer) == []
    before.assert_untouched(viewer)

    # Still usable: browse the stack, then restore every plane.
    viewer.dims.set_current_step(0, 2)
    assert viewer.dims.current_step[0] == 2
    fixed(widget, 2)
    widget.run()
    settle(qtbot, widget)
    out = viewer.layers["stack denoised"]
    assert out.data.shape == (3, 32, 32) and out.data.dtype == np.uint16 and all(p.any() for p in out.data)
    assert tuple(out.scale) == (2, 0.5, 0.5) and tuple(out.translate) == (5, 1, 1)
    assert widget.status.value.startswith("done: 3 planes, 6 iterations")
    before.assert_untouched(viewer)


def test_normal_runs_leave_the_image_and_labels_untouched(dock, qtbot, messages):
    viewer, widget = dock
    image = viewer.add_image(gradient(dtype=np.uint8), name="img", scale=(3, 3), translate=(-1, 2))
    labels = np.zeros((32, 32), np.uint8)
    labels[10:20, 10:20] = 3
    holes = viewer.add_labels(labels, name="holes", scale=(3, 3), translate=(-1, 2))
    floats = viewer.add_image(gradient().astype(np.float32) / 1000 - 0.2, name="floats")  # outside [0, 1]
    snapshots = [Snapshot(layer) for layer in (image, holes, floats)]

    widget.reset_choices()
    widget.image.value = image
    run(qtbot, widget, iterations=2)
    assert "img denoised" in viewer.layers
    widget.image.value = floats
    run(qtbot, widget, iterations=2)
    assert "floats denoised" in viewer.layers
    widget.task.value = "inpaint"
    widget.image.value, widget.mask.value = image, holes
    run(qtbot, widget, iterations=2)
    out = viewer.layers["img inpainted"].data
    np.testing.assert_array_equal(out[labels == 0], image.data[labels == 0])
    assert not messages
    for snapshot in snapshots:
        snapshot.assert_untouched(viewer)
