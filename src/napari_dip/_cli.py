"""Command line: ``napari-dip denoise|inpaint|super-resolve|flash-no-flash|example``.

Translates arguments and files into calls of the numpy API; Ctrl-C stops the fit
and still writes the averaged result so far. Errors print one line and exit 1.
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
from ._io import TIFF, check_writable, guess_channel_axis, read_image, write_image
from .networks import NETWORKS
from .stopping import RULES

PROG = "napari-dip"
#: napari sample key -> the task it demonstrates.
SAMPLE_TASKS = {"noisy": "denoise", "damaged": "inpaint", "low-resolution": "super-resolve", "flash": "flash-no-flash"}


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
        "--channel-axis", type=int, default=None, help="axis of the channels (default: none for 2-D, last for RGB/RGBA)"
    )
    parser.add_argument(
        "--stopping",
        default="auto",
        choices=("auto", *RULES, "none"),
        help="automatic early stopping: auto (default: on for denoise when --iterations is not "
        "given), a rule (--iterations is then the cap) or none",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


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
    """tqdm bar on stderr plus Ctrl-C handling, as a fit callback."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.stop_requested = False
        self.last = 0
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="it", file=sys.stderr, dynamic_ncols=True, leave=True)

    def __call__(self, record: Any) -> bool:
        self.last = record.iteration
        if self.bar is not None:
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
        **kwargs,
    )
    fit = job.fit
    progress = _Progress(fit.iterations, args.quiet)
    previous = signal.signal(signal.SIGINT, progress.interrupt)
    start = time.perf_counter()
    try:
        result = job.run(progress)
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.close()
    seconds = f"{time.perf_counter() - start:.1f} s"
    if progress.stop_requested:
        message = f"stopped by Ctrl-C at iteration {fit.iteration} ({seconds})"
    elif fit.stopped_early:
        message = (
            f"stopped automatically at iteration {fit.iteration} ({fit.rule.name} rule, {seconds}); "
            f"best output at iteration {fit.best_iteration}"
        )
    elif fit.rule is not None and fit.best_iteration:
        message = f"reached the cap of {fit.iterations} iterations ({seconds}); best output at {fit.best_iteration}"
    elif fit.rule is not None:
        message = f"reached the cap of {fit.iterations} iterations ({seconds}) before the rule had a statistic"
    else:
        message = f"finished after iteration {fit.iteration} ({seconds})"
    print(message, file=sys.stderr)
    return result


def _channel_axis(args: argparse.Namespace, image: np.ndarray) -> int | None:
    return args.channel_axis if args.channel_axis is not None else guess_channel_axis(image)


def _channels_last_shape(image: np.ndarray, axis: int | None) -> tuple[int, ...]:
    return image.shape if axis is None or image.ndim != 3 else np.moveaxis(image, axis, -1).shape


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
    image = read_image(args.flash if args.command == "flash-no-flash" else args.input)
    axis = _channel_axis(args, image)
    check_writable(args.output, image.dtype, _channels_last_shape(image, axis))
    if args.command == "denoise":
        result = _run("denoise", args, image, channel_axis=axis)
    elif args.command == "inpaint":
        mask = _known_or_missing(read_image(args.mask), args.mask_known)
        result = _run("inpaint", args, image, mask=mask, channel_axis=axis)
    elif args.command == "super-resolve":
        result = _run("super-resolve", args, image, scale=args.scale, channel_axis=axis)
    else:
        no_flash = read_image(args.no_flash)
        check_writable(args.output, no_flash.dtype, _channels_last_shape(no_flash, axis))
        result = _run("flash-no-flash", args, no_flash, flash=image, channel_axis=axis)
    if axis is not None and Path(args.output).suffix.lower() not in TIFF:
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
