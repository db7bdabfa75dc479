"""Command line: ``napari-dip denoise|inpaint|super-resolve|flash-no-flash|example|demo``.

Translates arguments and files into calls of the numpy API. TIFF stacks (Z, Y, X),
(T, Z, Y, X) are restored plane by plane, or as volumes with ``--volumetric``;
OME-TIFF and ImageJ axis metadata say which axis is which.

A user's files are safe: the output is checked (not an input, not an existing file
without ``--overwrite``, its folder writable, its format able to hold the result)
before anything slow starts, and written to a temporary file renamed into place.
Errors print one line and exit 1; Ctrl-C exits 130 at any moment without a
traceback, and writes nothing unless ``--keep-partial``. Only the commands that fit
import torch (and numpy), so ``--help`` and argument errors are instant.
"""

# ruff: noqa: E402 (the Ctrl-C handler goes in before the slower imports)
from __future__ import annotations

import _signal  # the builtin: `signal` first imports enum and functools, time Ctrl-C could hit
import os
import sys

#: Exit status after Ctrl-C, as shells report a process ended by SIGINT.
INTERRUPTED = 130
PROG = "napari-dip"


def _quit_at_once(*_: object) -> None:
    os.write(2, f"{PROG}: interrupted\n".encode())
    os._exit(INTERRUPTED)


# Run as the command (not imported): Ctrl-C is quiet from the first moment, imports included.
if os.path.basename(sys.argv[0]) == PROG and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _quit_at_once)

import argparse
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._names import NETWORKS, NOISE_MODELS, PRECISIONS, RULES

if TYPE_CHECKING:
    import numpy as np

#: napari sample key -> the task it demonstrates.
SAMPLE_TASKS = {
    "noisy": "denoise",
    "damaged": "inpaint",
    "low-resolution": "super-resolve",
    "flash": "flash-no-flash",
    "fluorescence-stack": "denoise",
}


def _common(parser: argparse.ArgumentParser, iterations_help: str, batch: bool = False) -> None:
    parser.add_argument("--iterations", type=int, default=None, help=iterations_help)
    parser.add_argument("--network", default="skip", choices=NETWORKS, help="the prior (default: skip)")
    parser.add_argument("--width", type=int, default=128, help="channels per level (default: 128; 32-64 is faster)")
    parser.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default: the task's: 0.01, 0.1 for flash-no-flash)"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="the network's arithmetic (default auto: on CPUs with AMX or AVX-512 BF16, bfloat16 "
        "from width 64 and mixed below, the largest convolutions in bfloat16; else float32)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--ensemble",
        type=_number_or_auto(int, "networks"),
        default="auto",
        help="fit N networks at once (one batched call) and average them (default auto: "
        "for denoising 2 for small images (256² at width 32), else 1)",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "input", "float32", "float64"),
        help="the output's dtype: input keeps the input's (integers rounded); auto (default) does too, "
        "except float32 when denoising integer data with noise under 9 counts std (a few tens of photons), "
        "which rounding would spoil, and the input's for PNG/JPEG outputs",
    )
    parser.add_argument(
        "--channel-axis",
        type=int,
        default=None,
        help="axis of the channels (default: the file's C axis, else the last axis when it has 3 or 4 "
        "values (RGB/RGBA), else none: axes before Y, X are planes)",
    )
    parser.add_argument(
        "--volumetric",
        action="store_true",
        help="fit one 3-D network over the last three axes (Z, Y, X) instead of plane by plane",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=None,
        help="voxel size for --volumetric (default: from the file's metadata, else isotropic)",
    )
    parser.add_argument(
        "--tile-size",
        default=None,
        type=_number_or_auto(int, "pixels"),
        help="restore each plane in overlapping tiles of this side (pixels), or 'auto' for tiles only "
        "when the image would not fit in memory (default: whole planes)",
    )
    parser.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_false",
        help="fit every plane from scratch instead of from the previous plane's weights",
    )
    parser.add_argument(
        "--stopping",
        default="auto",
        choices=("auto", *RULES, "none"),
        help="automatic early stopping: auto (default: on for denoise when --iterations is not "
        "given), a rule (--iterations is then the cap) or none",
    )
    if batch:
        parser.add_argument("--overwrite", action="store_true", help="restore again files whose output exists")
    else:
        parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
        parser.add_argument(
            "--keep-partial",
            action="store_true",
            help="on Ctrl-C, stop the fit and write the result so far (default: write nothing)",
        )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _noise(parser: argparse.ArgumentParser) -> None:
    """Options of the denoising noise model."""
    parser.add_argument(
        "--noise",
        default="auto",
        choices=NOISE_MODELS,
        help="noise model: auto (default: measured from the image; a 2-D image with 50 photons or more "
        "at its bright end is fitted as poisson), gaussian, or poisson (camera photon + read noise; the "
        "fit then runs on the variance-stabilised image)",
    )
    parser.add_argument(
        "--gain", type=float, default=None, help="photon noise: camera counts per photon (default: estimated)"
    )
    parser.add_argument(
        "--offset", type=float, default=None, help="photon noise: counts at zero light (default: estimated)"
    )
    parser.add_argument(
        "--tv",
        type=_number_or_auto(float, "noise stds"),
        default="auto",
        help="weight of a total-variation term in the loss, in noise stds: flatter backgrounds, cleaner "
        "edges (default auto: 0.3 for photon-limited images and 16-bit counts, 0.1 for other images with strong "
        "Gaussian noise, none with weak; 0: the paper's loss alone)",
    )


def _number_or_auto(kind: Callable[[str], float], what: str) -> Callable[[str], float | str]:
    """An argparse type: a number of ``what`` (``kind``: int or float), or 'auto'."""

    def parse(text: str) -> float | str:
        if text == "auto":
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {what} or 'auto', got {text!r}") from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deep Image Prior restoration of one image, no training data needed.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("denoise", help="remove noise", description="Denoise IN and write OUT.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    _common(p, "Adam steps (default: stop automatically, at most 6000)")
    _noise(p)

    p = sub.add_parser(
        "inpaint",
        help="fill masked pixels",
        description=("Fill the pixels of IN that MASK marks (nonzero = missing) and write OUT."),
    )
    p.add_argument("input", metavar="IN")
    p.add_argument("mask", metavar="MASK")
    p.add_argument("output", metavar="OUT")
    p.add_argument(
        "--mask-known",
        action="store_true",
        help="MASK marks the known pixels instead (as the paper's *_mask.png files do)",
    )
    _common(p, "Adam steps (default: 5000)")

    p = sub.add_parser("super-resolve", help="upsample", description="Upsample IN by --scale and write OUT.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--scale", type=int, default=4, help="integer factor >= 2 (default: 4)")
    _common(p, "Adam steps (default: 2000, 4000 from x8)")

    p = sub.add_parser(
        "flash-no-flash",
        help="restore a no-flash photo guided by a flash photo",
        description="Restore NOFLASH using FLASH as the network input and write OUT.",
    )
    p.add_argument("flash", metavar="FLASH")
    p.add_argument("no_flash", metavar="NOFLASH")
    p.add_argument("output", metavar="OUT")
    _common(p, "Adam steps (default: 600)")

    p = sub.add_parser(
        "example",
        help="headless demo: denoise a bundled sample, write a before/after PNG",
        description="Denoise a noisy sample that ships with the package and write a "
        "side-by-side PNG (noisy | restored | clean). No display needed.",
    )
    p.add_argument("--output", default="napari-dip-example.png", help="PNG to write")
    _common(p, "Adam steps (default: stop automatically)")
    p.set_defaults(width=48)

    p = sub.add_parser(
        "batch",
        help="restore many files on a Dask cluster",
        description="Restore every image in INPUT (files, or folders searched recursively) into "
        "OUTPUT_DIR, mirroring the folders, one task per file on a Dask distributed cluster: a "
        "local one by default, or --scheduler's. Outputs that exist are skipped, so running the "
        "command again after an interruption continues where it stopped. Formats: TIFF, OME-TIFF, "
        "PNG, JPEG; CZI, ND2, LIF and OME-Zarr with pip install 'napari-dip[formats]'.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="where the results go (created if missing)")
    p.add_argument(
        "--task", default="denoise", choices=("denoise", "inpaint", "super-resolve"), help="(default: denoise)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: one per GPU, else one per CPU core, as memory allows)",
    )
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--pattern", default="*", help="file names to take from folders (default: *, every image)")
    p.add_argument(
        "--mask-suffix",
        default="_mask",
        help="inpainting: IMAGE.tif takes IMAGE<suffix>.* beside it as its mask (default: _mask)",
    )
    p.add_argument("--mask-known", action="store_true", help="inpainting masks mark the known pixels instead")
    p.add_argument("--scale", type=int, default=4, help="super-resolution factor (default: 4)")
    _common(p, "Adam steps (default: the task's; denoise stops automatically)", batch=True)
    _noise(p)

    p = sub.add_parser(
        "demo",
        help="open napari with a sample and the Deep Image Prior widget",
        description="Open napari with a bundled sample loaded and the widget docked, "
        "set up for the sample's task. Needs napari with a Qt backend.",
    )
    p.add_argument("--sample", choices=SAMPLE_TASKS, default="noisy", help="which sample (default: noisy)")
    return parser


class _Interrupts:
    """What Ctrl-C does. Where no file is being written (start-up, reading, the fit)
    it ends the process at once, without a traceback: nothing has been written yet.
    With ``--keep-partial`` the first press during a fit asks it to stop instead, so
    the result so far is written. While a file is written it raises KeyboardInterrupt,
    so the temporary file is removed before the exit. ``enabled`` is False when the
    process started with Ctrl-C ignored (nohup, a background job): it stays ignored."""

    def __init__(self) -> None:
        self.enabled = True
        self.keep_partial = False
        self.in_fit = False
        self.stop_requested = False
        self.bar_open = False

    def quit(self, *_: object) -> None:
        if self.bar_open:
            os.write(2, b"\n")
        os.write(2, f"{PROG}: interrupted; nothing written\n".encode())
        os._exit(INTERRUPTED)

    def __call__(self, *_: object) -> None:
        if not (self.in_fit and self.keep_partial) or self.stop_requested:
            self.quit()
        self.stop_requested = True

    def handle(self, signum: int, handler: Any) -> Any:
        """Install ``handler`` for ``signum``; the previous one, or None where it cannot
        (off the main thread, or Ctrl-C ignored since start-up)."""
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return None
        return signal.signal(signum, handler)


class _Interrupted(BaseException):
    """Ctrl-C or SIGTERM while a file was written (BaseException: no handler on the way
    swallows it); ``written``: the rename had happened, so the new file is in place."""

    def __init__(self, signum: int, path: str, written: bool) -> None:
        super().__init__(signum, path, written)
        self.signum, self.path, self.written = signum, path, written


class _Progress:
    """tqdm bar on stderr, as a schedule callback: iterations for one image, planes
    (or tiles) for a stack. Returns False once Ctrl-C asked the fit to stop."""

    def __init__(self, quiet: bool, interrupts: _Interrupts) -> None:
        self.quiet = quiet
        self.interrupts = interrupts
        self.bar: Any = None

    def _open(self, total: int, unit: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)
        self.interrupts.bar_open = True

    def __call__(self, step: Any) -> bool:
        record = step.record
        if not self.quiet:
            stack = step.units > 1
            if self.bar is None:
                self._open(
                    step.units if stack else record.iterations,
                    ("tile" if step.tiles > 1 else "plane") if stack else "it",
                )
            if stack:
                self.bar.update(step.done - self.bar.n)  # done counts the unit this record ends
                self.bar.set_postfix_str(f"{step.unit + 1}/{step.units} it {record.iteration}", refresh=False)
            else:
                if self.bar.total != record.iterations:
                    self.bar.total = record.iterations
                self.bar.update(record.iteration - self.bar.n)
            if record.losses is not None and len(record.losses):
                self.bar.set_postfix(loss=f"{float(record.losses[-1]):.2e}", refresh=False)
        return not self.interrupts.stop_requested

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.interrupts.bar_open = False


def _fit_message(summary: Any, rule: str) -> str:
    """How one fit ended, from a ``schedule.UnitSummary``."""
    from .stopping import describe_best

    n, seconds, best = summary.iterations, f"{summary.seconds:.1f} s", describe_best(summary.best_iterations)
    if summary.stopped_early:
        return f"stopped automatically at iteration {n} ({rule} rule, {seconds}); {best}"
    if best:
        return f"reached the cap of {n} iterations ({seconds}); {best}"
    return f"finished after iteration {n} ({seconds})"


def _run(task: str, args: argparse.Namespace, interrupts: _Interrupts, image: np.ndarray, **kwargs: Any) -> np.ndarray:
    from ._api import prepare

    stopping = None if args.stopping == "none" else args.stopping
    job = prepare(
        task,
        image,
        iterations=args.iterations,
        network=args.network,
        width=args.width,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        stopping=stopping,
        precision=args.precision,
        ensemble=getattr(args, "ensemble", "auto"),
        volumetric=getattr(args, "volumetric", False),
        tile_size=getattr(args, "tile_size", None),
        warm_start=getattr(args, "warm_start", True),
        **kwargs,
    )
    schedule = job.schedule
    if job.noise is not None:
        print(f"noise: {job.describe_noise()}", file=sys.stderr)
    if schedule.options.get("ensemble", 1) > 1:
        print(f"ensemble: {schedule.options['ensemble']} networks, their results averaged", file=sys.stderr)
    if job.float_reason is not None:
        print(job.float_reason, file=sys.stderr)
    if (precision := job.describe_precision()) is not None:
        print(f"precision: {precision}", file=sys.stderr)
    progress = _Progress(args.quiet, interrupts)
    interrupts.keep_partial, interrupts.in_fit = args.keep_partial, True
    start = time.perf_counter()
    try:
        result = job.run(progress)
    finally:
        interrupts.in_fit = False
        progress.close()
    seconds = time.perf_counter() - start
    rule = schedule.options.get("stopping") or ""
    fitted = [s for s in schedule.summaries if not s.skipped]
    if len(schedule.units) == 1:
        if interrupts.stop_requested:
            message = f"stopped by Ctrl-C at iteration {job.fit.iteration if job.fit else 0} ({seconds:.1f} s)"
        else:
            message = _fit_message(fitted[0], rule) if fitted else "nothing to restore"
    else:
        what = (
            "tiles"
            if len(schedule.tiles) > 1
            else ("volumes" if image.ndim > 3 and kwargs.get("volumetric") else "planes")
        )
        iterations = [s.iterations for s in fitted]
        message = f"restored {schedule.done} of {len(schedule.units)} {what} in {seconds:.1f} s"
        if iterations:
            message += f"; iterations per fit {min(iterations)}-{max(iterations)}"
            warm = [s.seconds for s in fitted if s.warm]
            if warm:
                message += (
                    f" (first {fitted[0].seconds:.1f} s, warm-started ones {sum(warm) / len(warm):.1f} s on average)"
                )
        if interrupts.stop_requested:
            message += "; stopped by Ctrl-C, the planes not reached are 0"
    print(message, file=sys.stderr)
    return result


class _Terminated(BaseException):
    """SIGTERM while a file is written (a BaseException: nothing on the way swallows it)."""


def _terminate(*_: object) -> None:
    raise _Terminated


def _file_identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def _writing(path: str, interrupts: _Interrupts) -> Iterator[None]:
    """Around an atomic write: Ctrl-C or SIGTERM meanwhile raise (instead of ending the
    process at once) so the temporary file is removed and ``path`` stays as it was — or,
    when they come after the rename, say that the new file is complete. A failed write
    says that nothing was lost. Once written, Ctrl-C is ignored: the work is done."""
    previous = interrupts.handle(signal.SIGINT, signal.default_int_handler)
    previous_term = interrupts.handle(signal.SIGTERM, _terminate)
    before = _file_identity(path)
    try:
        yield
    except (KeyboardInterrupt, _Terminated) as err:
        signum = signal.SIGINT if isinstance(err, KeyboardInterrupt) else signal.SIGTERM
        after = _file_identity(path)
        raise _Interrupted(signum, path, written=after is not None and after != before) from None
    except OSError as err:  # a full disk, a quota, a file-size limit
        kept = "the existing file is unchanged" if before is not None else "no file was left behind"
        raise OSError(f"writing {path} failed ({_one_line(err)}); {kept}") from err
    else:
        interrupts.handle(signal.SIGINT, signal.SIG_IGN)
        previous = None  # main restores its own handler on the way out
    finally:
        if previous is not None:
            interrupts.handle(signal.SIGINT, previous)
        if previous_term is not None:
            interrupts.handle(signal.SIGTERM, previous_term)


def _example(args: argparse.Namespace, interrupts: _Interrupts) -> None:
    import numpy as np

    from ._io import check_writable, write_image
    from ._sample_data import noisy_pair

    clean, noisy = noisy_pair()
    check_writable(args.output, np.uint8, (1, 1, 3))
    restored = _run("denoise", args, interrupts, noisy, channel_axis=-1, dtype="input")  # a uint8 PNG

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - clean) ** 2)))

    gap = np.full((clean.shape[0], 8, 3), 255, np.uint8)
    with _writing(args.output, interrupts):
        write_image(args.output, np.concatenate([noisy, gap, restored, gap, clean], axis=1))
    print(
        f"noisy {psnr(noisy):.2f} dB -> restored {psnr(restored):.2f} dB; "
        f"wrote {args.output} (noisy | restored | clean)"
    )


def open_demo(sample: str = "noisy", show: bool = True) -> Any:
    """A napari viewer with ``sample`` loaded and the widget docked, set for its task."""
    import napari

    viewer = napari.Viewer(title=f"napari-dip demo: {sample}", show=show)
    viewer.open_sample("napari-dip", sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    widget.task.value = SAMPLE_TASKS[sample]
    if sample == "flash":
        widget.flash.value, widget.image.value = viewer.layers[0], viewer.layers[1]
    else:
        widget.image.value = viewer.layers[0]
    return viewer, widget


def _display_missing() -> str | None:
    """Why no window can open here (Linux without X11 or Wayland), or None."""
    if not sys.platform.startswith("linux"):
        return None  # macOS and Windows sessions have a desktop
    platform = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0]
    if platform in ("offscreen", "minimal"):
        return f"QT_QPA_PLATFORM={platform} shows no window"
    display, wayland = os.environ.get("DISPLAY", ""), os.environ.get("WAYLAND_DISPLAY", "")
    if not (display or wayland):
        return "no DISPLAY or WAYLAND_DISPLAY is set"
    if display.startswith(":") and not wayland:  # a local X server listens on its socket
        number = display[1:].split(".")[0]
        if not os.path.exists(f"/tmp/.X11-unix/X{number}"):
            return f"no X server is running at DISPLAY={display}"
    return None


def _demo(sample: str) -> None:
    reason = _display_missing()
    if reason is not None:
        raise ValueError(
            f"the demo opens a napari window and needs a display ({reason}); "
            f"'{PROG} example' runs headless and writes a before/after PNG"
        )
    try:
        import napari
    except ImportError as err:
        raise ValueError(f"the demo needs napari with a Qt backend: pip install 'napari-dip[all]' ({err})") from err
    open_demo(sample)
    napari.run()


def _inputs(args: argparse.Namespace) -> list[str]:
    return [getattr(args, k) for k in ("input", "mask", "flash", "no_flash") if getattr(args, k, None)]


def _batch(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    from ._batch import ProgressBar, find_images, has_dashboard, restore_files, start_client

    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"OUTPUT_DIR {output_dir} is a file; name a folder")
    items = find_images(args.inputs, output_dir, pattern=args.pattern, task=args.task, mask_suffix=args.mask_suffix)
    if not items:
        raise ValueError(f"no images found in {', '.join(args.inputs)} (pattern {args.pattern!r})")
    output_dir.mkdir(parents=True, exist_ok=True)
    from ._io import check_output

    check_output(output_dir / ".napari-dip-probe", overwrite=True)  # the folder takes new files
    options: dict[str, Any] = {
        "iterations": args.iterations,
        "network": args.network,
        "width": args.width,
        "lr": args.lr,
        "device": args.device,
        "seed": args.seed,
        "precision": args.precision,
        "ensemble": args.ensemble,
        "dtype": args.dtype,
        "stopping": None if args.stopping == "none" else args.stopping,
        "channel_axis": args.channel_axis,
        "volumetric": args.volumetric,
        "spacing": args.spacing,
        "tile_size": args.tile_size,
        "warm_start": args.warm_start,
        "mask_suffix": args.mask_suffix,
    }
    from ._api import check_noise, tv_strength

    check_noise(args.task, args.noise, args.gain, args.offset)  # once, before any file is read
    tv_strength(args.task, args.tv)
    if args.task == "denoise":
        options.update(noise=args.noise, gain=args.gain, offset=args.offset, tv=args.tv)
    if args.task == "super-resolve":
        options["scale"] = args.scale
    if args.task == "inpaint":
        options["mask_known"] = args.mask_known
    # Ctrl-C now raises, so that the cluster is shut down; finished files stay.
    interrupts.handle(signal.SIGINT, signal.default_int_handler)
    client, cluster = start_client(args.workers, args.scheduler)
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        where = args.scheduler or "a local cluster"
        print(f"{len(items)} file(s), {workers} worker(s) on {where}", file=sys.stderr)
        if cluster is not None and has_dashboard():
            print(f"Dask dashboard: {cluster.dashboard_link}", file=sys.stderr)
        progress = ProgressBar(args.quiet)
        try:
            report = restore_files(client, items, args.task, args.overwrite, progress, options)
        finally:
            progress.close()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished files are kept: run the same command again to go on", file=sys.stderr)
        return INTERRUPTED
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    print(report.table())
    return 0 if report.ok else 1


def _main(args: argparse.Namespace, interrupts: _Interrupts) -> int:
    if args.command == "demo":
        _demo(args.sample)
        return 0
    if args.command == "batch":
        return _batch(args, interrupts)
    from ._io import check_output

    # First the output, in a blink: a long fit must not end in an error, nor overwrite anything.
    check_output(args.output, _inputs(args), args.overwrite, hint="pass --overwrite")
    if args.command == "example":
        _example(args, interrupts)
        return INTERRUPTED if interrupts.stop_requested else 0

    from ._files import check_format, dtype_for, known_or_missing, open_source, write_result
    from ._io import read_image

    volumetric = getattr(args, "volumetric", False)
    source = open_source(
        args.flash if args.command == "flash-no-flash" else args.input,
        channel_axis=args.channel_axis,
        volumetric=volumetric,
        spacing=args.spacing,
    )
    image, axis = source.data, source.channel_axis
    dtype = dtype_for(args.output, args.dtype)
    options: dict[str, Any] = {"channel_axis": axis, "spacing": source.spacing, "dtype": dtype}
    # The measured image: the restored one has its dtype (by default) and layout.
    measured = read_image(args.no_flash) if args.command == "flash-no-flash" else image
    check_format(args.output, measured, axis, dtype)
    if args.command == "denoise":
        result = _run(
            "denoise",
            args,
            interrupts,
            image,
            noise=args.noise,
            gain=args.gain,
            offset=args.offset,
            tv=args.tv,
            **options,
        )
    elif args.command == "inpaint":
        mask = known_or_missing(read_image(args.mask), args.mask_known)
        result = _run("inpaint", args, interrupts, image, mask=mask, **options)
    elif args.command == "super-resolve":
        result = _run("super-resolve", args, interrupts, image, scale=args.scale, **options)
    else:
        result = _run("flash-no-flash", args, interrupts, measured, flash=image, **options)
    with _writing(args.output, interrupts):
        write_result(args.output, result, source, scale=args.scale if args.command == "super-resolve" else 1)
    shape = "x".join(map(str, result.shape))
    if interrupts.stop_requested:
        print(f"wrote the result so far to {args.output} ({shape} {result.dtype})", file=sys.stderr)
        return INTERRUPTED
    print(f"wrote {args.output} ({shape} {result.dtype})", file=sys.stderr)
    return 0


def _one_line(err: BaseException) -> str:
    from ._io import one_line

    return one_line(err)


def main(argv: Sequence[str] | None = None) -> int:
    interrupts = _Interrupts()
    # Started with Ctrl-C ignored (nohup, a background job): it stays ignored.
    interrupts.enabled = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    previous = interrupts.handle(signal.SIGINT, interrupts)  # from here on, no traceback on Ctrl-C
    try:
        args = build_parser().parse_args(argv)
        return _main(args, interrupts)
    except _Interrupted as stop:
        what = "interrupted" if stop.signum == signal.SIGINT else "terminated"
        if stop.written:
            print(f"{PROG}: {what} after {stop.path} was written in full", file=sys.stderr)
        else:
            print(f"{PROG}: {what} while writing; no file was changed", file=sys.stderr)
        return 128 + stop.signum
    except BrokenPipeError:  # stdout closed early (| head): nothing more to say
        sys.stdout = open(os.devnull, "w")  # else Python complains again at exit
        return 1
    except MemoryError as err:  # the engine's estimate, with advice
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # torch failures, e.g. out of memory
        message = _one_line(err)
        if "out of memory" in message.lower():
            message += " (try a smaller --width, --device cpu, --tile-size or a smaller image)"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug: still one line, and how to report it
        print(f"{PROG}: internal error: {type(err).__name__}: {_one_line(err)} (please report it)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            interrupts.handle(signal.SIGINT, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
