"""Which pixels the photon settings' stopping statistic should watch (issue 12, point 3).

``run`` fits each photon case with the default settings (width 32, one network, the rule
only watching, to a cap) and saves every iteration's raw output and, every 25 iterations,
the averaged output and its PSNR, as one ``.npz`` per case in ``--dir`` (~35 MB each, not
kept in the repository). ``report`` replays the engine's photon rule
(``stopping_replay.photon_default``: ES-EMV, rise 20 % once settled, ceiling 1.5, ...) on
the statistic taken over different sets of pixels: all (the default before), the flat half
(``napari_dip.stopping.flat_pixels``, the default now) and other fractions; with the gate of
a white residual and the end at a high-passed one (``stopping.Rule``'s ``white`` and
``overfit``, the default now; recomputed from the saved averages), with a rise that need not
wait for the statistic to settle (``settle``, the default before), without that end, and
without either; and prints how far each keeps its output under the trace's peak.

``run --stack SEED`` saves each plane of the 16-bit ``fluorescence_stack`` fitted from
scratch instead; ``run --photons N ...`` the 40-photon cases' images and cameras at N photons;
``run --dip-kwargs '{"noise": "poisson"}'`` another fit (quality.py's ``--dip-kwargs``).

    python benchmarks/flat_statistic.py run --split check --dir /tmp/flat   # ~70 s a case, 2 cores
    python benchmarks/flat_statistic.py run --split blind --size 128 --dir /tmp/flat128
    python benchmarks/flat_statistic.py run --stack 2 --iterations 4000 --dir /tmp/stack  # ~90 s a plane
    python benchmarks/flat_statistic.py report --dir /tmp/flat
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
import stopping_replay

EVERY = 25
SAMPLES = 4096
WINDOW = 100  # ES-EMV's and the growth guard's (stopping.Rule's default)
#: (name, fraction of the values the statistic watches, blur std); None: all values.
SELECTIONS = (("all", None, 0.0), ("flat half", 0.5, 2.0), ("flat half, blur 3", 0.5, 3.0), ("flat 40 %", 0.4, 2.0))


class _Run:
    """One fit saved: every iteration's raw output and, every ``EVERY`` iterations, its
    averaged output and the PSNR ``score`` gives it in the user's units."""

    def __init__(self, job: Any, score: Callable[[np.ndarray], float]) -> None:
        self.job, self.score = job, score
        self.raw: list[np.ndarray] = []
        self.averages: list[np.ndarray] = []
        self.psnr: list[float] = []
        self.fit: Any = None  # the schedule lets go of a finished fit: kept here
        self.start = time.perf_counter()

    def add(self, fit: Any, iteration: int) -> None:
        import torch

        region = (slice(None), *fit.output_region)
        with torch.no_grad():
            self.raw.append(fit.output[0][region].numpy().astype(np.float16))
            if iteration % EVERY == 0:
                average = fit.average[0][region].float().numpy().copy()  # the fit updates it in place
                self.averages.append(average)
                self.psnr.append(self.score(self.job.plane_to_user(average).astype(np.float64)))
        self.fit = fit

    def save(self, path: Path, variance: float) -> None:
        """The ``.npz`` that ``trace`` reads; ``known`` False at pixels the fit left out (hot)."""
        fit = self.fit
        known = np.ones(fit._image.shape, bool) if fit._known is None else fit._known.expand(fit._image.shape).numpy()
        np.savez(
            path,
            raw=np.array(self.raw),
            average=np.array(self.averages),
            psnr=np.array(self.psnr),
            target=fit._image.numpy(),
            known=known,
            variance=variance,
        )
        print(f"{path.stem}: {time.perf_counter() - self.start:.0f} s, peak {max(self.psnr):.2f} dB", flush=True)


def _watching(job: Any, iterations: int) -> float:
    """Set ``job`` to run ``iterations`` under a rule that only watches; the noise variance
    the default rule would get."""
    job.schedule.options.update(iterations=iterations, stopping=stopping_replay.watching_rule(), preview_every=None)
    return float(job.schedule.options.get("noise_variance", float("nan")))


def run(case: quality.Case, iterations: int, folder: Path, kwargs: dict[str, Any], size: int = 96) -> None:
    clean, noisy = quality.make(case, size)
    job = quality.prepare_denoise(noisy, **{"dtype": "float32", "ensemble": 1, **kwargs})
    variance = _watching(job, iterations)
    saved = _Run(job, lambda restored: quality.psnr(case, clean, restored))
    for step in job.schedule:
        saved.add(job.fit if job.fit is not None else saved.fit, step.record.iteration)
    saved.save(folder / f"{case.name}.npz", variance)


def run_stack(seed: int, iterations: int, folder: Path, planes: int = 8, size: int = 64) -> None:
    """As ``run`` for each plane of ``fluorescence_stack`` (16-bit sCMOS counts with hot
    pixels), fitted from scratch with the default settings; PSNR in counts with the plane's
    range as the peak (stopping_traces.py's stack measure)."""
    from skimage.metrics import peak_signal_noise_ratio

    from napari_dip._api import prepare
    from napari_dip._sample_data import fluorescence_stack

    clean, noisy = fluorescence_stack((planes, size, size), seed=seed)
    job = prepare("denoise", noisy, width=quality.WIDTH, device="cpu", seed=0, ensemble=1, warm_start=False)
    variance = _watching(job, iterations)
    saved, plane = None, -1
    for step in job.schedule:
        if step.plane != plane:
            if saved is not None:
                saved.save(folder / f"stack{seed}-plane{plane}.npz", variance)
            plane, c = step.plane, clean[step.plane]
            saved = _Run(job, lambda restored, c=c: peak_signal_noise_ratio(c, restored, data_range=c.max() - c.min()))
        saved.add(job.fit if job.fit is not None else saved.fit, step.record.iteration)
    saved.save(folder / f"stack{seed}-plane{plane}.npz", variance)


def _statistics(values: np.ndarray) -> tuple[list[float], list[float]]:
    """ES-EMV's statistic and the growth guard's windowed variance of (T, S) values, by the
    engine's own code (``stopping.ExponentialVariance``, ``stopping._Window``); inf while
    they warm up."""
    import torch

    from napari_dip.stopping import ExponentialVariance, _Window

    samples = values.shape[1]
    rule = ExponentialVariance(window=WINDOW)
    rule.attach(torch.zeros(1, samples), torch.arange(samples))
    window = _Window(WINDOW, (1, samples), torch.device("cpu"))
    emv, windowed = [], []
    for iteration, row in enumerate(torch.from_numpy(values.astype(np.float32)), start=1):
        output = row[None]
        emv.append(float(rule.statistic(iteration, output, output)[0]))
        variance = window.push(iteration, output)
        windowed.append(math.inf if variance is None else float(variance[0]))
    return emv, windowed


def _whiteness(saved: Any) -> list[float]:
    """The residual correlation of each saved average, by the engine's own code
    (``stopping.residual_correlation``, the rule's ``white``)."""
    import torch

    from napari_dip.stopping import residual_correlation

    target = torch.from_numpy(saved["target"])
    known = torch.from_numpy(saved["known"]).float() if "known" in saved else None
    residual = target - torch.from_numpy(saved["average"])  # (records, C, *shape): one "member" each
    return residual_correlation(residual, None if known is None else known[None]).tolist()


def load(path: Path) -> dict[str, np.ndarray]:
    """A saved run's arrays, read once (``np.load`` reads an array again at every access)."""
    with np.load(path) as saved:
        return dict(saved)


def _region(saved: dict[str, np.ndarray], region: tuple[slice, ...]) -> dict[str, np.ndarray]:
    """The arrays of a saved run over one region of its plane (the PSNR stays the whole's)."""
    plane, series = (slice(None), *region), (slice(None), slice(None), *region)
    cut = {"raw": series, "average": series, "target": plane, "known": plane}
    return {k: np.ascontiguousarray(v[cut[k]]) if k in cut else v for k, v in saved.items()}


def trace(
    saved: Path | dict[str, np.ndarray], fraction: float | None, sigma: float, region: tuple[slice, ...] | None = None
) -> dict:
    """A ``stopping_replay`` trace of a saved run (a path, or its ``load``ed arrays), the
    statistic over the chosen values and the residual (ceiling, floor) over random values of
    all, as the engine samples them; with ``region`` (slices of Y and X), of that region alone
    (its ``psnr`` stays the whole image's)."""
    import torch

    from napari_dip.stopping import flat_pixels

    saved = load(saved) if isinstance(saved, Path) else saved
    if region is not None:
        saved = _region(saved, region)
    raw = saved["raw"].reshape(len(saved["raw"]), -1).astype(np.float64)
    target = saved["target"]
    rng = np.random.default_rng(0)
    known = saved["known"].reshape(-1) if "known" in saved else np.ones(raw.shape[1], bool)  # hot pixels: False
    pool = np.arange(raw.shape[1])
    if fraction is not None:
        pool = pool[flat_pixels(torch.from_numpy(target), fraction, sigma).flatten().numpy() & known]
    watched = rng.choice(pool, min(SAMPLES, len(pool)), replace=False)
    sampled = rng.choice(raw.shape[1], min(SAMPLES, raw.shape[1]), replace=False)
    sampled = sampled[known[sampled]]  # as the engine weighs them: unknown values 0
    averages = saved["average"].reshape(len(saved["average"]), -1)
    residual = ((averages[:, sampled] - target.reshape(-1)[sampled]) ** 2).mean(1)
    emv, windowed = _statistics(raw[:, watched])
    return {
        "emv": emv,
        "wmv100": windowed,
        "residual": list(residual),
        "whiteness": _whiteness(saved),
        "expected_residual": float(saved["variance"]),
        "psnr": list(saved["psnr"]),
        "every": EVERY,
    }


def report(
    folder: Path, stabilised: bool = False, fractions: list[float] | None = None, ceilings: list[float] | None = None
) -> None:
    selections = SELECTIONS
    if fractions or ceilings:  # the stabilised rule's patience as fractions of the best's iteration, flat half only
        selections = tuple(s for s in SELECTIONS if s[0] == "flat half")
        rules = {
            f", patience {f:g}": stopping_replay.stabilised_default(patience_fraction=f)
            for f in (0.0, *(fractions or ()))
        }
        for c in ceilings or ():
            rules[f", patience above {c:g} var"] = stopping_replay.stabilised_default(patience_ceiling=c)
    elif stabilised:  # runs of the variance-stabilised fit (noise="poisson", bright images)
        rules = {
            "": stopping_replay.stabilised_default(),
            ", white gate at 0": stopping_replay.stabilised_default(white=0.0),
        }
    else:
        rules = {
            "": stopping_replay.photon_default(),
            ", rise unsettled": stopping_replay.photon_default(settle=False),
            ", no high-pass end": stopping_replay.photon_default(overfit=None),
            ", no white gate": stopping_replay.photon_default(white=None, overfit=None),
        }
    columns = [
        (name + gated, fraction, sigma, rule) for gated, rule in rules.items() for name, fraction, sigma in selections
    ]
    paths = sorted(folder.glob("*.npz"))
    gaps: dict[str, list[float]] = {name: [] for name, _, _, _ in columns}
    print("| case | peak (iteration) | " + " | ".join(name for name, _, _, _ in columns) + " |")
    print("| --- | --- |" + " --- |" * len(columns))
    for path in paths:
        cells = []
        saved = load(path)
        traces = {(fraction, sigma): trace(saved, fraction, sigma) for _, fraction, sigma in selections}
        for name, fraction, sigma, rule in columns:
            gap, kept, _ = stopping_replay.score(traces[fraction, sigma], rule)
            gaps[name].append(gap)
            cells.append(f"{gap:.2f} ({kept})")
        psnr = saved["psnr"]
        print(f"| {path.stem} | {psnr.max():.2f} ({EVERY * (int(psnr.argmax()) + 1)}) | " + " | ".join(cells) + " |")
    print("\n| statistic over | mean / worst dB under the peak | cases > 0.6 dB |\n| --- | --- | --- |")
    for name, values in gaps.items():
        g = np.array(values)
        print(f"| {name} | {g.mean():.2f} / {g.max():.2f} | {int((g > 0.6).sum())} of {len(g)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--split", choices=quality.SPLITS, nargs="+", default=["check", "blind", "unseen"])
    parser.add_argument("--cases", nargs="*", help="only these cases")
    parser.add_argument("--iterations", type=int, default=1800)
    parser.add_argument("--size", type=int, default=96, help="run: crop size of the photon cases (quality.py's)")
    parser.add_argument("--dir", type=Path, required=True, help="where the runs' .npz files go")
    parser.add_argument("--stack", type=int, nargs="*", help="run: fluorescence_stack planes of these seeds instead")
    parser.add_argument(
        "--photons", type=int, nargs="*", help="run: the 40-photon cases at these photon levels instead (same cameras)"
    )
    parser.add_argument("--dip-kwargs", default="{}", help="run: settings for the fit, as quality.py's")
    parser.add_argument("--bm3d-truth", action="store_true", help="run: clean images BM3D-cleaned first")
    parser.add_argument(
        "--patience-fractions",
        type=float,
        nargs="*",
        help="report: the stabilised rule with its patience also these fractions of the best's iteration",
    )
    parser.add_argument(
        "--patience-ceilings",
        type=float,
        nargs="*",
        help="report: the stabilised rule's patience also held while the residual is above these noise variances",
    )
    parser.add_argument(
        "--stabilised", action="store_true", help="report: replay the variance-stabilised fit's rule instead"
    )
    args = parser.parse_args()
    if args.command == "report":
        report(args.dir, args.stabilised, args.patience_fractions, args.patience_ceilings)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    for seed in args.stack or ():
        run_stack(seed, args.iterations, args.dir)
    for case in quality.all_cases():
        if args.stack or case.kind != "photon" or case.split not in args.split:
            continue
        if args.photons:  # brighter images: the 40-photon case's image and camera, more photons
            if case.params["peak"] != 40:
                continue
            cases = [quality.brighter(case, n) for n in args.photons]
        else:
            cases = [case]
        if args.bm3d_truth:
            cases = [quality.bm3d_cleaned(c) for c in cases]
        for case in cases:
            if not args.cases or case.name in args.cases:
                run(case, args.iterations, args.dir, quality.dip_kwargs(case, args), args.size)


if __name__ == "__main__":
    main()
