"""Automatic stopping against a plain reference DIP run to its oracle peak (CPU).

For images and noise levels that are not in the early-stopping benchmark, runs
the eager reference (benchmarks/reference_dip.py) for a fixed count, finds the
iteration where its averaged output peaks (the oracle, which needs the clean
image), and compares napari_dip.denoise with its default automatic stopping:
PSNR and wall time. Run: python benchmarks/auto_stop_walltime.py [--set fresh96]
[--out results.jsonl]; ``fresh96`` holds 96² crops of images no other benchmark here
uses (the paper's library and zebra, scikit-image's page, text, logo and colour wheel);
``judge96`` its grey library, zebra and page crops at the other noise levels of
``quality.py``'s judge split (on whose traces the rule's plateau end was chosen).

``--set photon`` asks the same of the photon-limited uint16 cases of ``quality.py``'s check
and blind splits (``--splits``): the reference fits the counts scaled to [0, 1] by their own minimum and
maximum (as a plain user would), scored in photons as ``quality.py`` scores; our default's
result is that script's row for ``--ours-label`` (``results/quality.jsonl``; run it there
first), so only the reference runs here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from skimage import data

sys.path.insert(0, str(Path(__file__).parent))
import napari_dip
import quality
from jsonl import append, read
from reference_dip import reference_dip

WIDTH = 32
REFERENCE_ITERATIONS = 2500
#: The paper's settings peak by ~1100 iterations on the 40-photon cases (BENCHMARKS.md).
PHOTON_REFERENCE_ITERATIONS = 2000


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def reference_curve(noisy: np.ndarray, clean: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """PSNR of the reference's averaged output at every iteration, and seconds per iteration."""
    truth = torch.from_numpy(clean)[None]
    curve = []

    def on_step(_i: int, average: torch.Tensor) -> None:
        curve.append(float(-10 * torch.log10((average - truth).square().mean())))

    start = time.perf_counter()
    reference_dip(noisy, REFERENCE_ITERATIONS, width=WIDTH, seed=seed, on_step=on_step)
    return np.asarray(curve), (time.perf_counter() - start) / REFERENCE_ITERATIONS


def photon_reference_curve(case: quality.Case, counts: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, float]:
    """The reference on ``counts`` scaled to [0, 1] by their range: PSNR in photons at every
    iteration (``quality.psnr``, as our rows are scored), and seconds per iteration."""
    lo, hi = float(counts.min()), float(counts.max())
    scaled = ((counts.astype(np.float32) - lo) / (hi - lo))[None]
    curve = []

    def on_step(_i: int, average: torch.Tensor) -> None:
        curve.append(quality.psnr(case, clean, average[0, 0].double().numpy() * (hi - lo) + lo))

    start = time.perf_counter()
    reference_dip(scaled, PHOTON_REFERENCE_ITERATIONS, width=WIDTH, on_step=on_step)
    return np.asarray(curve), (time.perf_counter() - start) / PHOTON_REFERENCE_ITERATIONS


def photon(ours_label: str, out: Path | None, splits: tuple[str, ...] = ("check", "blind")) -> None:
    """``--set photon``: the reference's oracle peak against our default's row."""
    rows = {(r["case"], r["size"]): r for r in read(quality.OUT) if r.get("label") == ours_label}
    print(f"CPU, {torch.get_num_threads()} threads, width {WIDTH}; ours: quality.py rows {ours_label!r}")
    print("| case | split | reference peak dB | at iteration | ours (kept) | ours − peak |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in quality.all_cases():
        if case.kind != "photon" or case.split not in splits:
            continue
        ours = rows.get((case.name, 96))
        if ours is None:
            print(f"| {case.name} | {case.split} | no {ours_label!r} row in {quality.OUT.name} |")
            continue
        clean, counts = quality.make(case, 96)
        curve, per_iteration = photon_reference_curve(case, counts, clean)
        peak = int(curve.argmax()) + 1
        gap = ours["psnr"] - curve.max()
        print(
            f"| {case.name} | {case.split} | {curve.max():.2f} | {peak} | {ours['psnr']:.2f} "
            f"({ours.get('kept_iteration')}) | {gap:+.2f} |",
            flush=True,
        )
        row = {"benchmark": "auto_stop_walltime", "set": "photon", "case": case.name, "split": case.split}
        row |= {"reference_peak": round(float(curve.max()), 3), "reference_peak_iteration": peak}
        row |= {"reference_ms": round(1e3 * per_iteration, 1), "ours_label": ours_label, "psnr": ours["psnr"]}
        append(out, [row | {"width": WIDTH, "reference_iterations": PHOTON_REFERENCE_ITERATIONS}])


def _unit(image: np.ndarray, y: int, x: int, size: int = 96) -> np.ndarray:
    """The ``size``² crop from (y, x), in [0, 1] (RGBA: RGB)."""
    crop = quality._crop(image, (y + size // 2, x + size // 2), size)
    return (crop[..., :3] if crop.ndim == 3 else crop) / 255


def cases(name: str) -> dict[str, tuple[np.ndarray, float]]:
    """(clean image in [0, 1], (H, W) or (H, W, 3); noise σ in 8-bit units) by case name."""
    if name == "small64":
        return {
            "coffee grey 64², σ=30": (data.coffee()[150:214, 250:314].mean(axis=-1) / 255, 30),
            "coins 64², σ=20": (data.coins()[100:164, 100:164] / 255, 20),
            "rocket RGB 64², σ=40": (data.rocket()[200:264, 250:314] / 255, 40),
        }
    # The grey library, zebra and page crops are quality.py's "judge" images.
    library = iio.imread(quality.SHARED / "inpainting" / "library.png")
    zebra = iio.imread(quality.SHARED / "sr" / "zebra_GT.png")
    if name == "judge96":  # the same crops at the judge split's other noise levels
        return {
            "library grey, σ=15": (_unit(library, 200, 300).mean(axis=-1), 15),
            "zebra grey, σ=25": (_unit(zebra, 250, 100).mean(axis=-1), 25),
            "page, σ=25": (_unit(data.page(), 50, 150), 25),
        }
    return {
        "library grey, σ=25": (_unit(library, 200, 300).mean(axis=-1), 25),
        "library RGB, σ=50": (_unit(library, 120, 420), 50),
        "zebra RGB, σ=25": (_unit(zebra, 150, 250), 25),
        "zebra grey, σ=15": (_unit(zebra, 250, 100).mean(axis=-1), 15),
        "page, σ=15": (_unit(data.page(), 50, 150), 15),
        "text, σ=50": (_unit(data.text(), 40, 200), 50),
        "logo RGB, σ=15": (_unit(data.logo(), 200, 200), 15),
        "colour wheel RGB, σ=25": (_unit(data.colorwheel(), 140, 60), 25),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="small64", choices=("small64", "fresh96", "judge96", "photon"))
    parser.add_argument("--ours-label", default="dip-v16", help="--set photon: quality.py's label of our rows")
    parser.add_argument("--splits", nargs="+", default=["check", "blind"], help="--set photon: quality.py's splits")
    parser.add_argument("--out", type=Path, help="append one JSON line per case")
    args = parser.parse_args()
    if args.set == "photon":
        photon(args.ours_label, args.out, tuple(args.splits))
        return
    rng = np.random.default_rng(7)
    print(f"CPU, {torch.get_num_threads()} threads, width {WIDTH}")
    print(
        "| case | noisy dB | reference peak dB | at iteration | time to peak | napari-dip auto dB | stopped at "
        "| napari-dip time | time / (2 × time to peak) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (clean, sigma) in cases(args.set).items():
        chw = (np.moveaxis(clean, -1, 0) if clean.ndim == 3 else clean[None]).astype(np.float32)
        noisy = np.clip(chw + rng.normal(0, sigma / 255, chw.shape), 0, 1).astype(np.float32)
        curve, per_iteration = reference_curve(noisy, chw)
        peak = int(curve.argmax()) + 1
        seen = []
        start = time.perf_counter()
        layout = np.moveaxis(noisy, 0, -1) if chw.shape[0] == 3 else noisy[0]
        out = napari_dip.denoise(
            layout, channel_axis=-1 if chw.shape[0] == 3 else None, width=WIDTH, device="cpu", callback=seen.append
        )
        seconds = time.perf_counter() - start
        out = np.moveaxis(out, -1, 0) if chw.shape[0] == 3 else out[None]
        to_peak = peak * per_iteration
        print(
            f"| {name} | {psnr(noisy, chw):.2f} | {curve.max():.2f} | {peak} | {to_peak:.1f} s | "
            f"{psnr(out, chw):.2f} | {seen[-1].record.iteration} | {seconds:.1f} s | {seconds / (2 * to_peak):.2f} |",
            flush=True,
        )
        row = {"benchmark": "auto_stop_walltime", "set": args.set, "case": name, "noisy": round(psnr(noisy, chw), 3)}
        row |= {"reference_peak": round(float(curve.max()), 3), "reference_peak_iteration": peak}
        row |= {"reference_ms": round(1e3 * per_iteration, 1), "psnr": round(psnr(out, chw), 3)}
        row |= {"stopped_at": seen[-1].record.iteration, "kept_iteration": seen[-1].record.best_iteration}
        append(args.out, [row | {"seconds": round(seconds, 1), "width": WIDTH}])


if __name__ == "__main__":
    main()
