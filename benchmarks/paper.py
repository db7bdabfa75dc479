"""The Deep Image Prior paper's experiments, reproduced through napari-dip's numpy API.

Each experiment runs on the paper's images in ``../shared/data/dip`` with the settings
of the paper's code (``SETTINGS``; where ours differ, ``DEPARTURES`` says how), and
writes one JSON line per result (PSNR, iterations, seconds, device, the paper's number
where it gives one) and one figure PNG. ``report`` prints the tables for BENCHMARKS.md.

    python benchmarks/paper.py run --device cuda --out benchmarks/results/paper   # the paper's sizes: a GPU
    python benchmarks/paper.py run --preset cpu --device cpu --only prior flash f16 kate_text library drop50  # crops
    python benchmarks/paper.py run --preset smoke --device cpu --out /tmp/paper  # 64 px crops, a few steps
    python benchmarks/paper.py report benchmarks/results/paper/paper.jsonl

``--only`` picks experiments (``EXPERIMENTS``); ``--limit`` gives each a time limit in
seconds, after which the rest of it is skipped (the rows written so far stay).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jsonl import append, emit

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("DIP_SHARED", HERE.parents[1] / "shared" / "data" / "dip"))

#: Numbers the paper (CVPR 2018) prints for these images, dB. It prints none for F16 alone
#: (its 9 colour images at σ = 25 average 29.22 for one run, 30.43 with the moving average,
#: 31.00 averaging two runs, CBM3D 31.42), none for kate, and no per-image super-resolution
#: numbers (Set14 x4 averages: 27.00 against bicubic 26.05, Y channel, 4 px border trimmed).
PAPER: dict[str, float] = {"drop50/barbara/skip": 32.22}


@dataclass
class Preset:
    """How big a run is: the paper's (``full``) or a quick check of the script (``smoke``)."""

    name: str
    #: Images are centre-cropped to at most this many pixels a side (None: whole).
    crop: int | None
    #: Fraction of the paper's iterations run.
    iterations: float
    #: Width of every network (None: the paper's).
    width: int | None


#: ``cpu``: the paper's iterations and widths on 128-pixel crops (flash/no-flash: the whole
#: scene downscaled), for a CPU without a GPU at hand (0.1-0.2 s an iteration at width 128).
PRESETS = {
    "full": Preset("full", None, 1.0, None),
    "cpu": Preset("cpu", 128, 1.0, None),
    "smoke": Preset("smoke", 64, 0.02, 16),
}


@dataclass
class Context:
    preset: Preset
    device: str
    device_name: str
    out: Path
    figures: Path
    limit: float
    started: float = 0.0

    def iterations(self, paper: int) -> int:
        return max(round(paper * self.preset.iterations), 10)

    def width(self, paper: int) -> int:
        return self.preset.width or paper

    def crop(self, image: np.ndarray, multiple: int = 1, centre: tuple[int, int] | None = None) -> np.ndarray:
        """A crop of at most ``preset.crop`` a side around ``centre`` (default: the image's),
        trimmed to a multiple of ``multiple``."""
        h, w = image.shape[:2]
        side_h = min(h, self.preset.crop or h) // multiple * multiple
        side_w = min(w, self.preset.crop or w) // multiple * multiple
        cy, cx = centre or (h // 2, w // 2)
        y = min(max(cy - side_h // 2, 0), h - side_h)
        x = min(max(cx - side_w // 2, 0), w - side_w)
        return image[y : y + side_h, x : x + side_w]

    def shrink(self, image: np.ndarray, multiple: int = 1) -> np.ndarray:
        """The whole image downscaled by a whole factor to at most twice ``preset.crop`` a
        side (unchanged without a crop), trimmed to a multiple of ``multiple``."""
        from PIL import Image

        if self.preset.crop is not None:
            factor = -(-max(image.shape[:2]) // (2 * self.preset.crop))
            image = _resized(image, (image.shape[1] // factor, image.shape[0] // factor), Image.Resampling.LANCZOS)
        h, w = (side // multiple * multiple for side in image.shape[:2])
        return image[:h, :w]

    def time_left(self) -> bool:
        return time.perf_counter() - self.started < self.limit


def _load(path: str) -> np.ndarray:
    """A float32 image in [0, 1], (H, W) or (H, W, 3)."""
    image = iio.imread(SHARED / path)
    if image.ndim == 3:
        image = image[..., :3]
    return image.astype(np.float32) / 255.0


def _resized(image: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """An image in [0, 1] resized by PIL to ``size`` (width, height) through 8 bits, as the
    paper's code loads and resizes its images."""
    from PIL import Image

    pil = Image.fromarray((image * 255).round().astype(np.uint8))
    return np.asarray(pil.resize(size, resample), np.float32) / 255


def _with_mask(ctx: Context, name: str, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """An inpainting image and where it is missing (black in the paper's mask), cropped
    together; a smoke crop is centred on a missing pixel so that it has some to fill."""
    mask = iio.imread(SHARED / f"inpainting/{name}_mask.png")
    missing = (mask if mask.ndim == 2 else mask[..., 0]) < 128
    centre = tuple(np.argwhere(missing)[missing.sum() // 2])
    return ctx.crop(_load(f"inpainting/{name}.png"), multiple, centre), ctx.crop(missing, multiple, centre)


def _blanked(clean: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """``clean`` with its missing pixels set to 0 (what the fit is given)."""
    return np.where(missing[..., None] if clean.ndim == 3 else missing, 0, clean).astype(np.float32)


def _inpaint(ctx: Context, damaged: np.ndarray, missing: np.ndarray, iterations: int, **kwargs: Any) -> Run:
    """The paper's inpainting run: a fixed count (no stopping rule), width 128 unless given."""
    kwargs.setdefault("width", 128)
    kwargs["width"] = ctx.width(kwargs["width"])
    return Run("inpaint", damaged, ctx, mask=missing, iterations=ctx.iterations(iterations), stopping=None, **kwargs)


def gaussian_noisy(clean: np.ndarray, sigma: float = 25.0, seed: int = 0) -> np.ndarray:
    """``clean`` with Gaussian noise of ``sigma`` (8-bit units), clipped to [0, 1]: the draw
    every script that compares with this one's F16 rows makes."""
    rng = np.random.default_rng(seed)
    return np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1).astype(np.float32)


def psnr(clean: np.ndarray, restored: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR for values in [0, 1], over ``where`` (a pixel mask) when given."""
    err = (np.clip(restored, 0, 1).astype(np.float64) - clean) ** 2
    if where is not None:
        err = err[where]
    return float(10 * np.log10(1.0 / err.mean()))


def psnr_y(clean: np.ndarray, restored: np.ndarray, border: int = 4) -> float:
    """PSNR of the luma (ITU-R BT.601, as the paper's super-resolution scores), ``border``
    pixels trimmed on every side."""
    weights = np.array([65.481, 128.553, 24.966]) / 255

    def luma(image: np.ndarray) -> np.ndarray:
        return (np.clip(image, 0, 1) @ weights)[border:-border, border:-border]

    return psnr(luma(clean), luma(restored))


class Run:
    """One fit through ``napari_dip._api.prepare``: time, iterations and optional losses."""

    def __init__(
        self, task: str, image: np.ndarray, ctx: Context, losses: bool = False, fit: dict | None = None, **kwargs: Any
    ) -> None:
        from napari_dip._api import prepare

        self.losses: list[float] = []
        self.keep_losses = losses
        self.curve: list[tuple[int, np.ndarray]] = []
        self.job = prepare(
            task, image, channel_axis=-1 if image.ndim == 3 else None, device=ctx.device, seed=0, **kwargs
        )
        self.job.schedule.options.update(fit or {})  # Fit settings the API does not take (input_noise)
        self.iterations = 0
        start = time.perf_counter()
        self.result = self.job.run(self._step)
        _sync(ctx.device)
        self.seconds = time.perf_counter() - start

    def _step(self, step: Any) -> None:
        self.iterations = step.record.iteration
        if self.keep_losses and step.record.losses is not None:
            self.losses.extend(float(v) for v in step.record.losses)
        if step.plane_preview is not None:
            self.curve.append((step.record.iteration, self.job.plane_to_user(step.plane_preview)))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _row(ctx: Context, experiment: str, case: str, method: str, psnr_db: float | None, **extra: Any) -> dict:
    row = {
        "experiment": experiment,
        "case": case,
        "method": method,
        "psnr": None if psnr_db is None else round(psnr_db, 2),
        "paper_psnr": PAPER.get(f"{experiment}/{case}/{method}"),
        "preset": ctx.preset.name,
        "device": ctx.device_name,
        **extra,
    }
    emit(row)
    append(ctx.out / "paper.jsonl", [row])
    return row


def _figure(ctx: Context, name: str, panels: list[tuple[str, np.ndarray]], columns: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    ctx.figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(ctx.figures / f"{name}.png", dpi=80)
    plt.close(fig)


# --- The experiments ------------------------------------------------------------------------------


def f16(ctx: Context) -> Iterator[None]:
    """F16, Gaussian noise σ = 25: 3000 fixed iterations (the paper's figure) and ``denoise``'s
    automatic stopping."""
    clean = ctx.crop(_load("denoising/F16_GT.png"), 32)
    noisy = gaussian_noisy(clean, 25)
    noisy_db = psnr(clean, noisy)
    width = ctx.width(128)
    fixed = Run("denoise", noisy, ctx, iterations=ctx.iterations(3000), stopping=None, width=width, preview_every=100)
    peak_it, peak = max(((i, psnr(clean, im)) for i, im in fixed.curve), key=lambda t: t[1])
    _row(
        ctx,
        "f16",
        "F16 σ25",
        "fixed",
        psnr(clean, fixed.result),
        iterations=fixed.iterations,
        seconds=round(fixed.seconds, 1),
        noisy_psnr=round(noisy_db, 2),
        peak=round(peak, 2),
        peak_iteration=peak_it,
    )
    yield
    auto = Run("denoise", noisy, ctx, width=width)
    _row(
        ctx,
        "f16",
        "F16 σ25",
        "automatic stopping",
        psnr(clean, auto.result),
        iterations=auto.iterations,
        seconds=round(auto.seconds, 1),
        noisy_psnr=round(noisy_db, 2),
    )
    try:  # the paper's baseline, where the benchmarks' extra is installed
        import bm3d
    except ImportError:
        bm3d = None
    if bm3d is not None:
        start = time.perf_counter()
        cbm3d = bm3d.bm3d_rgb(noisy, 25 / 255)
        _row(
            ctx,
            "f16",
            "F16 σ25",
            "CBM3D",
            psnr(clean, cbm3d),
            seconds=round(time.perf_counter() - start, 1),
            note="on the CPU",
        )
    _figure(
        ctx,
        "paper_f16",
        [
            (f"noisy {noisy_db:.2f} dB", noisy),
            (f"{fixed.iterations} iterations {psnr(clean, fixed.result):.2f} dB", fixed.result),
            (f"automatic stop ({auto.iterations} it.) {psnr(clean, auto.result):.2f} dB", auto.result),
            ("ground truth", clean),
        ],
    )


def drop50(ctx: Context) -> Iterator[None]:
    """kate and barbara with half of their pixels dropped at random (the paper's restoration)."""
    panels = []
    for name, path in (("kate", "restoration/kate.png"), ("barbara", "restoration/barbara.png")):
        clean = ctx.crop(_load(path), 32)
        rng = np.random.default_rng(0)
        missing = rng.random(clean.shape[:2]) < 0.5
        damaged = _blanked(clean, missing)
        run = _inpaint(ctx, damaged, missing, SETTINGS["drop50"]["iterations"], lr=SETTINGS["drop50"]["lr"])
        _row(
            ctx,
            "drop50",
            name,
            "skip",
            psnr(clean, run.result),
            iterations=run.iterations,
            seconds=round(run.seconds, 1),
            damaged_psnr=round(psnr(clean, damaged), 2),
        )
        panels += [
            (f"{name}: 50 % dropped", damaged),
            (f"ours {psnr(clean, run.result):.2f} dB", run.result),
            ("ground truth", clean),
        ]
        yield
    _figure(ctx, "paper_drop50", panels, columns=3)


def library(ctx: Context) -> Iterator[None]:
    """The library image's large hole filled by each architecture, at lr 0.01 and 1e-4."""
    clean, missing = _with_mask(ctx, "library", 64)
    damaged = _blanked(clean, missing)
    panels = [("input", damaged)]
    s = SETTINGS["library"]
    for network, width in s["widths"].items():
        for lr in (0.01, 1e-4):
            no_noise = {"input_noise": s["input_noise"]}
            run = _inpaint(ctx, damaged, missing, s["iterations"], network=network, width=width, lr=lr, fit=no_noise)
            db = psnr(clean, run.result, missing)
            _row(
                ctx,
                "library",
                f"{network}, lr {lr:g}",
                network,
                db,
                iterations=run.iterations,
                seconds=round(run.seconds, 1),
                scored="hole only",
                lr=lr,
            )
            panels.append((f"{network}, lr {lr:g}: {db:.2f} dB", run.result))
            yield
    _figure(ctx, "paper_library", panels, columns=3)


def kate_text(ctx: Context) -> Iterator[None]:
    """kate under a text overlay (the paper's text inpainting)."""
    clean, missing = _with_mask(ctx, "kate", 32)
    damaged = _blanked(clean, missing)
    run = _inpaint(ctx, damaged, missing, SETTINGS["kate_text"]["iterations"], lr=SETTINGS["kate_text"]["lr"])
    db = psnr(clean, run.result)
    _row(
        ctx,
        "kate_text",
        "kate",
        "skip",
        db,
        iterations=run.iterations,
        seconds=round(run.seconds, 1),
        damaged_psnr=round(psnr(clean, damaged), 2),
    )
    _figure(
        ctx, "paper_kate_text", [("text overlay", damaged), (f"ours {db:.2f} dB", run.result), ("ground truth", clean)]
    )
    yield


def zebra(ctx: Context) -> Iterator[None]:
    """zebra super-resolved x4 and x8 from its Lanczos-downsampled image, against bicubic."""
    from PIL import Image

    panels = []
    for factor in (4, 8):
        clean = ctx.crop(_load("sr/zebra_GT.png"), 32)  # the paper's code crops to a multiple of 32
        low = _resized(clean, (clean.shape[1] // factor, clean.shape[0] // factor), Image.Resampling.LANCZOS)
        bicubic = _resized(low, clean.shape[1::-1], Image.Resampling.BICUBIC)
        s = SETTINGS["zebra"][factor]
        run = Run(
            "super-resolve",
            low,
            ctx,
            scale=factor,
            iterations=ctx.iterations(s["iterations"]),
            stopping=None,
            width=ctx.width(128),
        )
        _row(ctx, "zebra", f"x{factor}", "bicubic", psnr(clean, bicubic), psnr_y=round(psnr_y(clean, bicubic), 2))
        _row(
            ctx,
            "zebra",
            f"x{factor}",
            "ours",
            psnr(clean, run.result),
            iterations=run.iterations,
            seconds=round(run.seconds, 1),
            psnr_y=round(psnr_y(clean, run.result), 2),
        )
        panels += [
            (f"x{factor} bicubic {psnr(clean, bicubic):.2f} dB", bicubic),
            (f"x{factor} ours {psnr(clean, run.result):.2f} dB", run.result),
            ("ground truth", clean),
        ]
        yield
    _figure(ctx, "paper_zebra", panels, columns=3)


def flash(ctx: Context) -> Iterator[None]:
    """Flash/no-flash: the flash image drives the network, the no-flash image is the target."""
    with_flash = ctx.shrink(_load("flash_no_flash/cave01_00_flash.jpg"), 32)
    no_flash = ctx.shrink(_load("flash_no_flash/cave01_01_noflash.jpg"), 32)
    s = SETTINGS["flash"]
    run = Run(
        "flash-no-flash",
        no_flash,
        ctx,
        flash=with_flash,
        iterations=ctx.iterations(s["iterations"]),
        stopping=None,
        width=ctx.width(128),
    )
    _row(
        ctx,
        "flash",
        "cave01",
        "ours",
        None,
        iterations=run.iterations,
        seconds=round(run.seconds, 1),
        note="no ground truth: judged by eye (figure)",
        shape=list(no_flash.shape),
    )
    _figure(ctx, "paper_flash", [("flash", with_flash), ("no flash", no_flash), ("ours", run.result)])
    yield


def prior(ctx: Context) -> Iterator[None]:
    """The paper's Figure 2: the fitting loss against iterations for a natural image, the same
    with noise, its pixels shuffled, and uniform noise; structure is fitted fastest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = ctx.crop(_load("denoising/F16_GT.png"), 32)
    rng = np.random.default_rng(0)
    targets = {
        "image": clean,
        "image + noise": np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1),
        "image, pixels shuffled": rng.permutation(clean.reshape(-1, clean.shape[-1])).reshape(clean.shape),
        "U(0, 1) noise": rng.random(clean.shape),
    }
    s = SETTINGS["prior"]
    curves = {}
    for name, target in targets.items():
        run = Run(
            "denoise",
            target.astype(np.float32),
            ctx,
            losses=True,
            iterations=ctx.iterations(s["iterations"]),
            stopping=None,
            width=ctx.width(128),
            preview_every=50,
            noise="gaussian",
        )
        curves[name] = run.losses
        _row(
            ctx,
            "prior",
            name,
            "loss",
            None,
            iterations=run.iterations,
            seconds=round(run.seconds, 1),
            loss_at={str(i): round(run.losses[i - 1], 6) for i in (100, 500, 1000, 2400) if i <= len(run.losses)},
        )
        yield
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, losses in curves.items():
        ax.plot(np.arange(1, len(losses) + 1), losses, label=name)
    ax.set(xscale="log", yscale="log", xlabel="iteration", ylabel="MSE (loss)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    ctx.figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(ctx.figures / "paper_prior.png", dpi=80)
    plt.close(fig)


#: The paper's code's settings, per experiment (the rest are napari-dip's task defaults).
SETTINGS: dict[str, Any] = {
    "drop50": {"iterations": 11000, "lr": 0.001},
    # Each network at its width in the paper's code (its ResNet: 8 blocks of 32), no input noise.
    "library": {
        "iterations": 3000,
        "input_noise": 0.0,
        "widths": {"skip": 128, "encoder-decoder": 128, "unet": 128, "resnet": 32},
    },
    "kate_text": {"iterations": 6000, "lr": 0.01},
    "zebra": {4: {"iterations": 2000}, 8: {"iterations": 4000}},
    "flash": {"iterations": 600},
    "prior": {"iterations": 2400},
}

EXPERIMENTS: dict[str, Callable[[Context], Iterator[None]]] = {
    "f16": f16,
    "drop50": drop50,
    "library": library,
    "kate_text": kate_text,
    "zebra": zebra,
    "flash": flash,
    "prior": prior,
}


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return "CPU"


def run(args: argparse.Namespace) -> None:
    import torch

    device = args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"{_cpu_model()} ({os.cpu_count()} cores)"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(PRESETS[args.preset], device, name, out, Path(args.figures or out), args.limit)
    for experiment in args.only or EXPERIMENTS:
        ctx.started = time.perf_counter()
        for _ in EXPERIMENTS[experiment](ctx):
            if not ctx.time_left():
                print(f"{experiment}: over its {args.limit:.0f} s limit, the rest skipped", flush=True)
                break


def report(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    print("| experiment | case | method | PSNR dB | paper dB | iterations | seconds | device |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [
            r["experiment"],
            r["case"],
            r["method"],
            "" if r["psnr"] is None else f"{r['psnr']:.2f}",
            "" if r.get("paper_psnr") is None else f"{r['paper_psnr']:.2f}",
            str(r.get("iterations", "")),
            str(r.get("seconds", "")),
            r["device"],
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("results", nargs="?", type=Path, help="report: the paper.jsonl to read")
    parser.add_argument("--only", nargs="*", choices=tuple(EXPERIMENTS))
    parser.add_argument("--preset", choices=tuple(PRESETS), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="benchmarks/results/paper")
    parser.add_argument("--figures", help="where the figure PNGs go (default: --out)")
    parser.add_argument("--limit", type=float, default=float("inf"), help="seconds per experiment")
    args = parser.parse_args()
    if args.command == "report":
        report(args.results or Path(args.out) / "paper.jsonl")
    else:
        run(args)


if __name__ == "__main__":
    main()
