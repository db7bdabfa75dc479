"""The napari dock widget: pick a task and layers, run the fit in a worker thread.

The fit is the engine's generator (``napari_dip.fit.Fit``) wrapped in napari's
``thread_worker``; this module only translates between layers, widgets and it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ._api import AUTO_STOP_CAP, AUTO_STOP_TASKS, Job, prepare
from ._layers import DEFAULT_MODE, MODE_LABELS, Output, companion, modes_for, output_for, plane_ranges, select
from ._names import NOISE_MODELS
from .fit import TASKS, task_defaults
from .networks import NETWORKS
from .stopping import DEFAULT_RULE, RULES, describe_best

if TYPE_CHECKING:
    import napari

    from .fit import Progress
    from .schedule import Step

TASK_LABELS = {
    "denoise": "Denoise",
    "inpaint": "Inpaint",
    "super-resolve": "Super-resolve",
    "flash-no-flash": "Flash / no-flash",
}
OOM_ADVICE = (
    "Out of GPU memory. Try a smaller width (e.g. 32 or 64), device 'cpu', "
    "or a smaller image (crop it, or restore it in tiles)."
)


class FitFailed(Exception):
    """An exception raised inside the fit, re-raised under a type that is not a
    RuntimeError: superqt's worker drops RuntimeErrors (torch's CUDA out-of-memory
    among them) with a warning instead of emitting ``errored``."""


def _steps(schedule: Any) -> Iterator[Step]:
    try:
        yield from schedule
    except Exception as err:
        raise FitFailed(str(err)) from err


def _relay(steps: Iterator[Step]) -> Iterator[Step]:
    """The worker's generator: ``steps``, which the widget closes when the run ends.
    A stopped worker leaves its generator suspended, holding the schedule and its fit
    (network, optimiser, device tensors), and napari keeps every worker it made (its
    task status registry holds ``worker.quit``): closing ``steps`` lets them go."""
    yield from steps


def _devices() -> list[str]:
    import torch

    names = ["auto", "cpu"]
    names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def _is_out_of_memory(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _free_gpu_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _number(text: str, what: str, empty: str = "to estimate it") -> float | None:
    """A number typed into a field; empty: None (estimated, or the default)."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, or empty {empty}; got {text!r}") from None


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _seconds_left(step: Step) -> float | None:
    """Time left for the whole run: the schedule's estimate once a unit has finished;
    before that, the first unit's own pace (unknown under a stopping rule)."""
    left = step.seconds_left
    record = step.record
    if left is not None or record.statistics is not None or record.iteration == 0:
        return left
    per_unit = record.elapsed / record.iteration * record.iterations
    return per_unit - record.elapsed + per_unit * (step.units - step.done - 1)


class DeepImagePriorWidget(QWidget):
    """Deep Image Prior restoration of the selected layer (dock widget)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._worker: Any = None
        self._steps: Iterator[Step] | None = None  # the run's generator, closed when it ends
        self._job: Job | None = None
        self._output: Output | None = None
        self._preview_layer: Image | None = None
        self._progress: progress | None = None
        self._unit = -1  # the unit (plane, tile) whose loss the curve shows
        self._losses: list[np.ndarray] = []
        self._statistics: list[np.ndarray] = []
        self._iterations_default = 3000
        self._started = 0.0
        self._watched_window: QObject | None = None
        self._close_filter = _CloseFilter(self.stop_and_discard)

        devices = _devices()
        cuda = any(d.startswith("cuda") for d in devices)
        self.task = ComboBox(label="Task", choices=[(TASK_LABELS[t], t) for t in TASKS], value="denoise")
        self.image = ComboBox(label="Image", choices=self._layer_choices(Image), nullable=False)
        self.mode = ComboBox(
            label="Planes",
            choices=[(MODE_LABELS[m], m) for m in MODE_LABELS],
            value=DEFAULT_MODE,
            tooltip="for a stack: restore the plane on display, every plane in turn (each warm-started "
            "from the previous one), or the whole volume with one 3-D network",
        )
        self.mask = ComboBox(
            label="Mask (labels)", choices=self._layer_choices(Labels), tooltip="label > 0 marks pixels to fill"
        )
        self.flash = ComboBox(label="Flash image", choices=self._layer_choices(Image))
        self.scale = SpinBox(label="Scale", value=4, min=2, max=8, tooltip="upsampling factor per axis")
        self.network = ComboBox(label="Network", choices=list(NETWORKS), value="skip")
        self.width = SpinBox(
            label="Width",
            value=128 if cuda else 32,
            min=4,
            max=512,
            step=4,
            tooltip="channels per level: 128 is the paper's; 32-64 is much faster on a CPU",
        )
        self.noise = ComboBox(
            label="Noise",
            choices=list(NOISE_MODELS),
            value="auto",
            tooltip="auto: measured from the image (a 2-D image with 50 photons or more at its bright end: "
            "as poisson); "
            "poisson: a camera's photon + read noise (the fit runs on the variance-stabilised image); "
            "gaussian: the same noise everywhere",
        )
        self.gain = LineEdit(label="Gain (counts/photon)", value="", tooltip="empty: estimated from the image")
        self.offset = LineEdit(label="Offset (counts)", value="", tooltip="empty: estimated from the image")
        self.tv = LineEdit(
            label="Total variation (noise stds)",
            value="",
            tooltip="weight of a total-variation term in the loss, in noise stds: flatter backgrounds, cleaner "
            "edges; empty: the default (0.3 for photon-limited images and 16-bit counts, 0.1 for other images "
            "with strong Gaussian noise, none with weak); "
            "0: the paper's loss alone",
        )
        self.ensemble = SpinBox(
            label="Ensemble (0 = auto)",
            value=0,
            min=0,
            max=16,
            tooltip="fit this many networks at once and average them: less noise, about K times the time; "
            "0: the default (2 for small images, else 1)",
        )
        self.dtype = ComboBox(
            label="Output dtype",
            choices=["auto", "input", "float32"],
            value="auto",
            tooltip="input: the image's dtype (integers rounded); auto: the same, except float32 when denoising "
            "integer data with noise under 9 counts std (a few tens of photons), which rounding would spoil",
        )
        self.auto_stop = CheckBox(
            text="Stop automatically", value=True, tooltip="end the fit when its output is at its best"
        )
        self.rule = ComboBox(label="Stopping rule", choices=list(RULES), value=DEFAULT_RULE)
        self.iterations = SpinBox(label="Iterations", value=3000, min=1, max=100_000, step=100)
        self.lr = FloatSpinBox(label="Learning rate", value=0.01, min=1e-5, max=1.0, step=0.001)
        self.device = ComboBox(label="Device", choices=devices, value="auto")
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self.tile_size = SpinBox(
            label="Tile size (0 = auto)",
            value=0,
            min=0,
            max=16_384,
            step=64,
            tooltip="restore each plane in overlapping tiles of this side (>= 16 pixels), blended without "
            "seams; 0: whole planes, in tiles only when memory requires",
        )
        self.preview_every = SpinBox(
            label="Preview every (0 = 1 s)",
            value=0,
            min=0,
            max=100_000,
            tooltip="update the preview every this many iterations; 0 = about once a second",
        )
        self.run_button = PushButton(text="Run")
        self.status = Label(value="")
        self.form = Container(
            widgets=[
                self.task,
                self.image,
                self.mode,
                self.mask,
                self.flash,
                self.scale,
                self.network,
                self.width,
                self.noise,
                self.gain,
                self.offset,
                self.tv,
                self.ensemble,
                self.dtype,
                self.auto_stop,
                self.rule,
                self.iterations,
                self.lr,
                self.device,
                self.seed,
                self.tile_size,
                self.preview_every,
                self.run_button,
                self.status,
            ]
        )
        self.lr.native.setDecimals(4)
        self.task.changed.connect(self._task_changed)
        self.image.changed.connect(self._image_changed)
        self.auto_stop.changed.connect(self._auto_stop_changed)
        self.noise.changed.connect(self._noise_changed)
        self.scale.changed.connect(self._task_changed)
        self.run_button.changed.connect(self._run_clicked)

        import pyqtgraph

        self.plot = pyqtgraph.PlotWidget(background=None)
        self.plot.setLogMode(y=True)
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setLabel("left", "loss")
        self.plot.setLabel("bottom", "iteration")
        self.plot.setMinimumHeight(160)
        self.curve = self.plot.plot(pen=pyqtgraph.mkPen(width=2))
        # The stopping rule's statistic below, sharing the iteration axis; a dashed
        # line in both marks the iteration whose output the rule keeps.
        self.statistic_plot = pyqtgraph.PlotWidget(background=None)
        self.statistic_plot.setLogMode(y=True)
        self.statistic_plot.getAxis("left").enableAutoSIPrefix(False)
        self.statistic_plot.setLabel("left", "stopping statistic")
        self.statistic_plot.setMinimumHeight(120)
        self.statistic_plot.setXLink(self.plot)
        self.statistic_curve = self.statistic_plot.plot(pen=pyqtgraph.mkPen((255, 170, 0), width=2))
        self.best_lines = []
        for plot in (self.plot, self.statistic_plot):
            line = pyqtgraph.InfiniteLine(
                angle=90, movable=False, pen=pyqtgraph.mkPen((255, 170, 0), style=Qt.PenStyle.DashLine)
            )
            line.setVisible(False)
            plot.addItem(line)
            self.best_lines.append(line)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.plot)
        layout.addWidget(self.statistic_plot)
        layout.addStretch()
        self._task_changed()
        self._image_changed()

    def sizeHint(self) -> QSize:  # leave the canvas most of the window
        return QSize(380, 640)

    # -- layer pickers follow the viewer ---------------------------------------------
    def _layer_choices(self, kind: type) -> Any:
        def choices(_widget: Any) -> list[tuple[str, Any]]:
            return [(layer.name, layer) for layer in self.viewer.layers if type(layer) is kind]

        return choices

    def reset_choices(self, *_: Any) -> None:
        """napari calls this when layers are added, removed or reordered."""
        self.form.reset_choices()

    def _image_changed(self, *_: Any) -> None:
        """The mode picker shows only for a layer with more than two spatial axes."""
        self.mode.visible = bool(modes_for(self.image.value))

    def _task_changed(self, *_: Any) -> None:
        task = self.task.value
        self.mask.visible = task == "inpaint"
        self.flash.visible = task == "flash-no-flash"
        self.scale.visible = task == "super-resolve"
        self.image.label = "No-flash image" if task == "flash-no-flash" else "Image"
        defaults = task_defaults(task, self.scale.value)
        self.lr.value = defaults.lr
        self._iterations_default = defaults.iterations
        self.auto_stop.value = task in AUTO_STOP_TASKS
        self._auto_stop_changed()
        self._noise_changed()

    def _noise_changed(self, *_: Any) -> None:
        denoise = self.task.value == "denoise"
        self.noise.visible = self.tv.visible = denoise
        self.gain.visible = self.offset.visible = denoise and self.noise.value != "gaussian"

    def _auto_stop_changed(self, *_: Any) -> None:
        auto = self.auto_stop.value
        self.rule.visible = auto
        self.statistic_plot.setVisible(auto)
        self.iterations.label = "Max iterations" if auto else "Iterations"
        self.iterations.value = self._iterations_default * (AUTO_STOP_CAP if auto else 1)

    # -- running ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def _run_clicked(self, *_: Any) -> None:
        if self.running:
            self.stop()
        else:
            self.run()

    def run(self) -> None:
        """Start a fit with the current settings (refused while one is running)."""
        if self.running:
            show_info("Deep Image Prior is already running: press Stop first.")
            return
        try:
            job, output = self._prepare()
        except (ValueError, TypeError) as err:
            show_error(f"Deep Image Prior: {err}")
            return
        except MemoryError as err:  # the engine's estimate: its message says what to change
            self._too_large(err)
            return
        except RuntimeError as err:  # setting up allocates on the device already
            if not _is_out_of_memory(err):
                raise
            self._out_of_memory()
            return
        self._job, self._output = job, output
        self._new_unit(-1)
        self._started = time.perf_counter()
        schedule = job.schedule
        units = len(schedule.units)
        # Several units: count those (under a stopping rule a unit's length is unknown);
        # one: count its iterations.
        self._progress = progress(
            total=units if units > 1 else self.iterations.value, desc=f"Deep Image Prior: {output.name}"
        )
        self._steps = _steps(schedule)
        worker = create_worker(
            _relay,
            self._steps,
            _start_thread=False,
            _ignore_errors=True,  # _on_error reports them, once
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_done)
        worker.aborted.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_button.text = "Stop"
        device = schedule.options.get("device", self.device.value)
        what = f" {output.planes} {output.unit}s" if output.planes > 1 else ""
        noise = f"; noise: {job.describe_noise()}" if job.noise is not None else ""
        members = schedule.options.get("ensemble", 1)
        ensemble = f" ({members} networks)" if members > 1 else ""
        bfloat16 = job.describe_precision()
        precision = f"; {bfloat16}" if bfloat16 is not None else ""
        self.status.value = f"starting{what} on {device}{ensemble} …{noise}{precision}"
        self._watch_window()
        worker.start()

    def stop(self) -> None:
        """Stop after the current iteration and keep what is restored so far."""
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "stopping …"

    def stop_and_discard(self) -> None:
        """The viewer is closing: stop the worker and touch no widget or layer again."""
        worker, self._worker = self._worker, None
        if worker is not None:
            for signal in (worker.yielded, worker.returned, worker.aborted, worker.errored, worker.finished):
                signal.disconnect()
            worker.quit()
        self._close_progress()
        self._job = None

    def _prepare(self) -> tuple[Job, Output]:
        task, layer = self.task.value, self.image.value
        if layer is None:
            raise ValueError("choose an Image layer to restore (open one, or File > Open Sample > napari-dip)")
        point = self.viewer.dims.point
        selection = select(layer, self.mode.value, point)
        extra: dict[str, Any] = {}
        if task == "inpaint":
            if self.mask.value is None:
                raise ValueError("choose a Labels layer marking the pixels to fill (add one and paint on it)")
            # Same shape as the image, or a 2-D labels layer that the engine broadcasts over the planes.
            extra["mask"] = companion(self.mask.value, selection, point) > 0
        elif task == "super-resolve":
            extra["scale"] = self.scale.value
        elif task == "denoise":
            extra["noise"] = self.noise.value
            if self.noise.value != "gaussian":
                extra["gain"] = _number(self.gain.value, "gain (camera counts per photon)")
                extra["offset"] = _number(self.offset.value, "offset (counts at zero light)")
            tv = _number(self.tv.value, "total variation (noise stds)", "for the default")
            extra["tv"] = "auto" if tv is None else tv
        elif task == "flash-no-flash":
            if self.flash.value is None:
                raise ValueError("choose the flash Image layer")
            if bool(getattr(self.flash.value, "rgb", False)) != (selection.channel_axis is not None):
                raise ValueError("flash and no-flash layers must both be RGB or both be grey")
            extra["flash"] = companion(self.flash.value, selection, point)
        job = prepare(
            task,
            selection.data,
            channel_axis=selection.channel_axis,
            volumetric=selection.volumetric,
            spacing=selection.spacing,
            tile_size=self.tile_size.value or "auto",
            iterations=self.iterations.value,
            network=self.network.value,
            width=self.width.value,
            lr=self.lr.value,
            device=self.device.value,
            seed=self.seed.value,
            preview_every=self.preview_every.value or None,
            stopping=self.rule.value if self.auto_stop.value else None,
            ensemble=self.ensemble.value or "auto",
            dtype=None if self.dtype.value == "auto" else self.dtype.value,
            **extra,
        )
        output = output_for(layer, task, selection, self.scale.value if task == "super-resolve" else 1)
        # What the fit assumed travels with the result.
        report: dict[str, Any] = {
            "task": task,
            "ensemble": job.schedule.options.get("ensemble", 1),
            "tv_weight": job.schedule.options.get("tv", 0.0),  # against the mean squared error in [0, 1]
            "dtype": job.value_map.dtype.name,
            "precision": job.precision,
        }
        if job.noise is not None:
            report["noise"] = {**job.noise.as_dict(), "stabilised": job.stabilised}
        output.kwargs["metadata"] = {**output.kwargs.get("metadata", {}), "napari_dip": report}
        return job, output

    # -- worker signals (GUI thread) --------------------------------------------------
    def _on_progress(self, step: Step) -> None:
        record = step.record
        if record.preview is None or self._job is None or self._output is None:
            return
        if step.unit != self._unit:  # the curves show the unit being fitted
            self._new_unit(step.unit)
        self._losses.append(record.losses)
        losses = np.concatenate(self._losses)
        self.curve.setData(np.arange(1, len(losses) + 1), np.maximum(losses, 1e-12))
        if step.plane_preview is not None:
            self._show_preview(self._preview_data(step.plane_preview), step.plane)
        if record.statistics is not None:
            self._show_statistic(record)
        self.status.value = self._status(step, float(losses[-1]))
        # Last: napari's progress bar processes pending events when it moves, which may
        # run the handlers of later steps, or of the end of the run, right here.
        self._advance_progress(step)

    def _new_unit(self, unit: int) -> None:
        self._unit = unit
        self._losses, self._statistics = [], []
        self.curve.setData([], [])
        self.statistic_curve.setData([], [])
        for line in self.best_lines:
            line.setVisible(False)

    def _preview_data(self, plane: np.ndarray) -> np.ndarray:
        job, output = self._job, self._output
        if not output.plane_shape:
            # One unit: the whole result, with an inpainting's known pixels put back.
            return job.to_user(plane[None])
        return job.plane_to_user(plane)

    def _status(self, step: Step, loss: float) -> str:
        record = step.record
        parts = []
        if step.planes > 1:
            parts.append(f"{self._output.unit} {step.plane + 1} of {step.planes}")
        if step.tiles > 1:
            parts.append(f"tile {step.tile + 1} of {step.tiles}")
        parts += [f"iteration {record.iteration}/{record.iterations}", f"{_duration(step.elapsed)} elapsed"]
        if record.statistics is not None:
            parts.append(describe_best(record.best_iterations) or "watching")
        left = _seconds_left(step)
        if left is not None:
            parts.append(f"~{_duration(left)} left")
        parts.append(f"loss {loss:.2e}")
        return " · ".join(parts)

    def _advance_progress(self, step: Step) -> None:
        bar, job = self._progress, self._job
        if bar is None or job is None:
            return
        # The schedule's own count of finished units is current; the step may lag behind it.
        n = job.schedule.done if step.units > 1 else step.record.iteration
        if n > bar.n:
            bar.update(n - bar.n)

    def _close_progress(self) -> None:
        bar, self._progress = self._progress, None
        if bar is not None:
            bar.close()

    def _show_statistic(self, record: Progress) -> None:
        self._statistics.append(record.statistics)
        values = np.concatenate(self._statistics)
        finite = np.isfinite(values) & (values > 0)
        iterations = np.arange(1, len(values) + 1)
        self.statistic_curve.setData(iterations[finite], values[finite])
        for line in self.best_lines:
            line.setVisible(bool(record.best_iteration))
            line.setValue(record.best_iteration or 0)

    def _show_preview(self, data: np.ndarray, plane: int = 0) -> None:
        """Show ``data``, one plane (or the single unit) in the input's dtype, at the
        position of plane ``plane`` of the stack."""
        data, kwargs = self._output.plane_layer(data, plane)
        layer = self._preview_layer
        if layer is not None and layer in self.viewer.layers:
            layer.data = data
            if not np.allclose(layer.translate, kwargs["translate"]):
                layer.translate = kwargs["translate"]  # the next plane: follow it
            return
        kwargs["name"] = f"{self._output.name} (preview)"
        self._preview_layer = self.viewer.add_image(data, **kwargs)

    def _on_done(self, *_: Any) -> None:
        job, output = self._job, self._output
        if job is None or output is None:
            return
        seconds = time.perf_counter() - self._started
        self._remove_preview()
        if job.schedule.planes > 1:
            self._finish_stack(job, output, seconds)
        else:
            self._finish_one(job, output, seconds)
        if job.noise is not None:  # what the fit assumed stays in view after the run
            self.status.value += f"; noise: {job.describe_noise()}"
        if job.float_reason is not None:
            self.status.value += f"; {job.float_reason}"
        if (bfloat16 := job.describe_precision()) is not None:
            self.status.value += f"; {bfloat16}"

    def _finish_one(self, job: Job, output: Output, seconds: float) -> None:
        """One image (or volume), maybe in tiles: finished, or stopped with its result so far."""
        schedule, fit = job.schedule, job.fit
        summaries, units = schedule.summaries, len(schedule.units)
        iterations = sum(s.iterations for s in summaries) + (fit.iteration if fit is not None else 0)
        name = output.name
        if schedule.planes_done.all():
            early = [s for s in summaries if s.stopped_early]
            state = "done"
            if units == 1 and early:
                state = f"stopped automatically, {describe_best(early[0].best_iterations)}"
            elif early:
                state = f"done ({len(early)} of {units} tiles stopped automatically)"
        elif iterations == 0:
            self.status.value = "stopped before the first iteration: nothing to keep"
            return
        else:
            state = "stopped"
            if units == 1:
                name += f" (stopped at {fit.iteration})"
            else:
                name += f" (stopped at tile {schedule.done + (fit is not None)} of {units})"
        self.viewer.add_image(output.full(job.result()), name=name, **output.kwargs)
        self.status.value = f"{state}: {iterations} iterations in {_duration(seconds)}"

    def _finish_stack(self, job: Job, output: Output, seconds: float) -> None:
        """Planes (or volumes) one after another: all restored, or stopped: the finished
        ones are kept and the rest are 0."""
        schedule, fit = job.schedule, job.fit
        summaries, planes, unit = schedule.summaries, schedule.planes, output.unit
        done = schedule.planes_done
        iterations = sum(s.iterations for s in summaries)
        took = _duration(seconds)
        if done.all():
            early = sum(s.stopped_early for s in summaries)
            automatic = f" ({early} stopped automatically)" if early else ""
            self.viewer.add_image(output.full(job.result()), name=output.name, **output.kwargs)
            self.status.value = f"done: {planes} {unit}s{automatic}, {iterations} iterations in {took}"
            return
        if done.any():
            # The plane being fitted is half done: leave it out, as the planes not reached.
            kept = output.keep_planes(job.result(), done)
            label = f"{unit}s" if done.sum() > 1 else unit
            self.viewer.add_image(
                kept, name=f"{output.name} ({label} {plane_ranges(done)} of {planes})", **output.kwargs
            )
            self.status.value = f"stopped: {done.sum()} of {planes} {unit}s restored in {took}"
            return
        if fit is None or fit.iteration == 0:
            self.status.value = f"stopped: 0 of {planes} {unit}s restored, nothing to keep"
            return
        # Stopped within the first plane: keep it as it is, as for a single image.
        current = schedule.units[schedule.done].plane  # units run in order: the next unfinished one
        only = np.arange(planes) == current
        kept = output.keep_planes(job.result(), only)
        name = f"{output.name} ({unit} {current + 1} of {planes}, stopped at {fit.iteration})"
        self.viewer.add_image(kept, name=name, **output.kwargs)
        self.status.value = f"stopped: 0 of {planes} {unit}s restored; {unit} {current + 1} kept as it was"

    def _on_error(self, err: BaseException) -> None:
        err = err.__cause__ or err
        self._remove_preview()
        kept = self._keep_finished_planes()
        if isinstance(err, MemoryError):
            self._too_large(err)
        elif _is_out_of_memory(err):
            self._out_of_memory()
        else:
            show_error(f"Deep Image Prior failed: {err}")
            self.status.value = f"failed: {err}"
        if kept:
            self.status.value += f"; {kept}"

    def _keep_finished_planes(self) -> str:
        """After a failure mid-stack, the planes restored before it, as a layer (as Stop
        keeps them); says what was kept, or "" when nothing was."""
        job, output = self._job, self._output
        if job is None or output is None or job.schedule.planes <= 1:
            return ""
        done = job.schedule.planes_done
        if not done.any() or done.all():
            return ""
        try:
            kept = output.keep_planes(job.result(), done)
        except Exception:  # the failure may have left the current fit unreadable: keep nothing
            return ""
        unit, planes = output.unit, job.schedule.planes
        label = f"{unit}s" if done.sum() > 1 else unit
        name = f"{output.name} ({label} {plane_ranges(done)} of {planes}, before the error)"
        self.viewer.add_image(kept, name=name, **output.kwargs)
        return f"{done.sum()} of {planes} {unit}s restored before it are kept"

    def _too_large(self, err: MemoryError) -> None:
        show_error(f"Deep Image Prior: {err}")
        self.status.value = "too large for memory: see the message"

    def _out_of_memory(self) -> None:
        self._job = None
        _free_gpu_memory()
        show_error(OOM_ADVICE)
        self.status.value = "out of GPU memory"

    def _on_finished(self) -> None:
        self._worker = None
        self._job = None
        steps, self._steps = self._steps, None
        if steps is not None:  # the worker's thread is done with it
            steps.close()
        self._close_progress()
        self.run_button.text = "Run"
        self._unwatch_window()
        # The worker still holds the fit until superqt discards it after this signal:
        # free the memory once that has happened.
        QTimer.singleShot(0, _free_gpu_memory)

    def _remove_preview(self) -> None:
        layer, self._preview_layer = self._preview_layer, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    # -- closing the viewer stops the fit ---------------------------------------------
    def _watch_window(self) -> None:
        window = self.window()
        if window is not None and window is not self:
            window.installEventFilter(self._close_filter)
            self._watched_window = window

    def _unwatch_window(self) -> None:
        if self._watched_window is not None:
            try:
                self._watched_window.removeEventFilter(self._close_filter)
            except RuntimeError:  # the window is already deleted
                pass
            self._watched_window = None


class _CloseFilter(QObject):
    """Calls ``on_close`` when the watched window closes."""

    def __init__(self, on_close: Any) -> None:
        super().__init__()
        self._on_close = on_close

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            self._on_close()
        return False
