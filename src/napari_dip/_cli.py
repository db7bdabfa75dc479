"""Command line: ``napari-dip denoise|inpaint|super-resolve|flash-no-flash|example``.

Translates arguments and files into calls of the numpy API; Ctrl-C stops the fit
and still writes the result so far. Errors print one line and exit 1. TIFF stacks
(Z, Y, X), (T, Z, Y, X) are restored plane by plane, or as volumes with
``--volumetric``; OME-TIFF and ImageJ axis metadata say which axis is which.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._io import TIFF, ImageFile, check_writable, read_image, read_image_file, write_image
from .networks import NETWORKS
from .stopping import RULES

PROG = "napari-dip"
#: napari sample key -> the task it demonstrates.
SAMPLE_TASKS = {
    "noisy": "denoise",
    "damaged": "inpaint",
    "low-resolution": "super-resolve",
    "flash": "flash-no-flash",
    "fluorescence-stack": "denoise",
}


def _common(parser: argparse.ArgumentParser, iterations_help: str) -> None:
    parser.add_argument("--iterations", type=int, default=None, help=iterations_help)
    parser.add_argument("--network", default="skip", choices=NETWORKS, help="the prior (default: skip)")
    parser.add_argument("--width", type=int, default=128, help="channels per level (default: 128; 32-64 is faster)")
    parser.add_argument(
        "--lr", type=float, default=None, help="Adam learning rate (default: the task's: 0.01, 0.1 for flash-no-flash)"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
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
        type=_tile_size,
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
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _tile_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'auto', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deep Image Prior restoration of one image, no training data needed.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("denoise", help="remove noise", description="Denoise IN and write OUT.")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    _common(p, "Adam steps (default: stop automatically, at most 6000)")

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
        "demo",
        help="open napari with a sample and the Deep Image Prior widget",
        description="Open napari with a bundled sample loaded and the widget docked, "
        "set up for the sample's task. Needs napari with a Qt backend.",
    )
    p.add_argument("--sample", choices=SAMPLE_TASKS, default="noisy", help="which sample (default: noisy)")
    return parser


class _Progress:
    """tqdm bar on stderr plus Ctrl-C handling, as a schedule callback: iterations
    for one image, planes (or tiles) for a stack."""

    def __init__(self, quiet: bool) -> None:
        self.stop_requested = False
        self.quiet = quiet
        self.bar: Any = None

    def _open(self, total: int, unit: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)

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
                self.bar.update(step.done + (record.iteration >= record.iterations) - self.bar.n)
                self.bar.set_postfix_str(f"{step.unit + 1}/{step.units} it {record.iteration}", refresh=False)
            else:
                if self.bar.total != record.iterations:
                    self.bar.total = record.iterations
                self.bar.update(record.iteration - self.bar.n)
            if record.losses is not None:
                self.bar.set_postfix(loss=f"{float(record.losses[-1]):.2e}", refresh=False)
        return not self.stop_requested

    def interrupt(self, *_: object) -> None:
        if self.stop_requested:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.stop_requested = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fit_message(summary: Any, rule: str) -> str:
    """How one fit ended, from a ``schedule.UnitSummary``."""
    n, seconds, best = summary.iterations, f"{summary.seconds:.1f} s", summary.best_iteration
    if summary.stopped_early:
        return f"stopped automatically at iteration {n} ({rule} rule, {seconds}); best output at iteration {best}"
    if best:
        return f"reached the cap of {n} iterations ({seconds}); best output at {best}"
    return f"finished after iteration {n} ({seconds})"


def _run(task: str, args: argparse.Namespace, image: np.ndarray, **kwargs: Any) -> np.ndarray:
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
        volumetric=getattr(args, "volumetric", False),
        tile_size=getattr(args, "tile_size", None),
        warm_start=getattr(args, "warm_start", True),
        **kwargs,
    )
    schedule = job.schedule
    progress = _Progress(args.quiet)
    previous = signal.signal(signal.SIGINT, progress.interrupt)
    start = time.perf_counter()
    try:
        result = job.run(progress)
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.close()
    seconds = time.perf_counter() - start
    rule = schedule.options.get("stopping") or ""
    fitted = [s for s in schedule.summaries if not s.skipped]
    if len(schedule.units) == 1:
        if progress.stop_requested:
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
        if progress.stop_requested:
            message += "; stopped by Ctrl-C, the planes not reached are 0"
    print(message, file=sys.stderr)
    return result


def _channel_axis(args: argparse.Namespace, file: ImageFile) -> int | None:
    """--channel-axis, else the file's C axis, else RGB(A) on the last axis, else none."""
    if args.channel_axis is not None:
        return args.channel_axis
    image = file.data
    if file.axes is not None and "C" in file.axes:
        return file.axes.index("C")
    if image.ndim >= 3 and image.shape[-1] in (3, 4):
        return -1
    return None


def _spacing(args: argparse.Namespace, file: ImageFile) -> tuple[float, float, float] | None:
    if not args.volumetric:
        return None
    if args.spacing is not None:
        return tuple(args.spacing)
    if file.spacing and all(k in file.spacing for k in "ZYX"):
        return tuple(file.spacing[k] for k in "ZYX")
    return None


def _check_axes(args: argparse.Namespace, file: ImageFile, axis: int | None) -> None:
    """With axis metadata, the fitted axes must be (Z,) Y, X."""
    if file.axes is None or args.channel_axis is not None:
        return
    spatial = [a for i, a in enumerate(file.axes) if axis is None or i != axis % len(file.axes)]
    wanted = "ZYX" if args.volumetric else "YX"
    if "".join(spatial[-len(wanted) :]) != wanted:
        raise ValueError(
            f"the file's axes are {file.axes}: the last axes must be {', '.join(wanted)}"
            + (" (no Z axis for --volumetric)" if args.volumetric else "")
        )


def _channels_last_shape(image: np.ndarray, axis: int | None) -> tuple[int, ...]:
    return image.shape if axis is None else np.moveaxis(image, axis, -1).shape


def _known_or_missing(mask: np.ndarray, known: bool) -> np.ndarray:
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):  # an RGB(A) mask image: any colour counts
        mask = mask[..., :3].max(axis=-1)
    return (mask == 0) if known else mask


def _example(args: argparse.Namespace) -> None:
    from ._sample_data import noisy_pair

    clean, noisy = noisy_pair()
    check_writable(args.output, np.uint8, (1, 1, 3))
    restored = _run("denoise", args, noisy, channel_axis=-1)

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - clean) ** 2)))

    gap = np.full((clean.shape[0], 8, 3), 255, np.uint8)
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


def _demo(sample: str) -> None:
    try:
        import napari
    except ImportError as err:
        raise ValueError(f"the demo needs napari with a Qt backend: pip install 'napari-dip[all]' ({err})") from err
    open_demo(sample)
    napari.run()


def _main(args: argparse.Namespace) -> None:
    if args.command == "example":
        _example(args)
        return
    if args.command == "demo":
        _demo(args.sample)
        return
    file = read_image_file(args.flash if args.command == "flash-no-flash" else args.input)
    image = file.data
    axis = _channel_axis(args, file)
    _check_axes(args, file, axis)
    check_writable(args.output, image.dtype, _channels_last_shape(image, axis))
    options: dict[str, Any] = {"channel_axis": axis, "spacing": _spacing(args, file)}
    if args.command == "denoise":
        result = _run("denoise", args, image, **options)
    elif args.command == "inpaint":
        mask = _known_or_missing(read_image(args.mask), args.mask_known)
        result = _run("inpaint", args, image, mask=mask, **options)
    elif args.command == "super-resolve":
        result = _run("super-resolve", args, image, scale=args.scale, **options)
    else:
        no_flash = read_image(args.no_flash)
        check_writable(args.output, no_flash.dtype, _channels_last_shape(no_flash, axis))
        result = _run("flash-no-flash", args, no_flash, flash=image, **options)
    suffix = Path(args.output).suffix.lower()
    if suffix in TIFF:
        spacing = dict(file.spacing)
        if args.command == "super-resolve":  # smaller pixels, same field of view
            spacing.update({k: v / args.scale for k, v in spacing.items() if k in "YX"})
        axes = file.axes if file.axes is not None and len(file.axes) == result.ndim else None
        ome = file.ome or str(args.output).lower().endswith((".ome.tif", ".ome.tiff"))
        write_image(args.output, result, axes=axes, spacing=spacing if axes else None, ome=ome and axes is not None)
    else:
        if axis is not None:
            result = np.moveaxis(result, axis, -1)  # PNG and JPEG hold channels last
        write_image(args.output, result)
    shape = "x".join(map(str, result.shape))
    print(f"wrote {args.output} ({shape} {result.dtype})", file=sys.stderr)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _main(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # torch failures, e.g. out of memory
        message = _one_line(err)
        if "out of memory" in message.lower():
            message += " (try a smaller --width, --device cpu or a smaller image)"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
