"""Which pixels the photon settings' stopping statistic should watch (issue 12, point 3).

``run`` fits each photon case with the default settings (width 32, one network, the rule
only watching, to a cap) and saves every iteration's raw output and, every 25 iterations,
the averaged output and its PSNR, as one ``.npz`` per case in ``--dir`` (~35 MB each, not
kept in the repository). ``report`` replays the engine's photon rule
(``stopping_replay.photon_default``: ES-EMV, rise 20 %, ceiling 1.5, ...) on the statistic
taken over different sets of pixels: all (the default before), the flat half
(``napari_dip.stopping.flat_pixels``, the default now) and other fractions, and prints how
far each keeps its output under the trace's peak.

    python benchmarks/flat_statistic.py run --split check --dir /tmp/flat   # ~70 s a case, 2 cores
    python benchmarks/flat_statistic.py report --dir /tmp/flat
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
import stopping_replay

EVERY = 25
SAMPLES = 4096
WINDOW = 100  # ES-EMV's and the growth guard's (stopping.Rule's default)
#: (name, fraction of the values the statistic watches, blur std); None: all values.
SELECTIONS = (("all", None, 0.0), ("flat half", 0.5, 2.0), ("flat half, blur 3", 0.5, 3.0), ("flat 40 %", 0.4, 2.0))


def run(case: quality.Case, iterations: int, folder: Path) -> None:
    import torch

    from napari_dip.stopping import make_rule

    clean, noisy = quality.make(case, 96)
    job = quality.prepare_denoise(noisy, preview_every=None, dtype="float32", ensemble=1)
    variance = float(job.schedule.options.get("noise_variance", float("nan")))
    rule = make_rule("emv", patience=10**9, floor=0, growth=0, ceiling=0)  # only watches
    job.schedule.options.update(iterations=iterations, stopping=rule)
    raw, averages, psnr = [], [], []
    fit, start = None, time.perf_counter()
    for step in job.schedule:
        fit = job.fit if job.fit is not None else fit
        with torch.no_grad():
            raw.append(fit.output[0][(slice(None), *fit.output_region)].numpy().astype(np.float16))
            if step.record.iteration % EVERY == 0:
                average = fit.average[0][(slice(None), *fit.output_region)].float().numpy()
                averages.append(average)
                psnr.append(quality.psnr(case, clean, job.plane_to_user(average).astype(np.float64)))
    np.savez(
        folder / f"{case.name}.npz",
        raw=np.array(raw),
        average=np.array(averages),
        psnr=np.array(psnr),
        target=fit._image.numpy(),
        variance=variance,
    )
    print(f"{case.name}: {time.perf_counter() - start:.0f} s, peak {max(psnr):.2f} dB", flush=True)


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


def trace(path: Path, fraction: float | None, sigma: float) -> dict:
    """A ``stopping_replay`` trace of a saved run, the statistic over the chosen values and
    the residual (ceiling, floor) over random values of all, as the engine samples them."""
    import torch

    from napari_dip.stopping import flat_pixels

    saved = np.load(path)
    raw = saved["raw"].reshape(len(saved["raw"]), -1).astype(np.float64)
    target = saved["target"]
    rng = np.random.default_rng(0)
    pool = np.arange(raw.shape[1])
    if fraction is not None:
        pool = pool[flat_pixels(torch.from_numpy(target), fraction, sigma).flatten().numpy()]
    watched = rng.choice(pool, min(SAMPLES, len(pool)), replace=False)
    sampled = rng.choice(raw.shape[1], min(SAMPLES, raw.shape[1]), replace=False)
    averages = saved["average"].reshape(len(saved["average"]), -1)
    residual = ((averages[:, sampled] - target.reshape(-1)[sampled]) ** 2).mean(1)
    emv, windowed = _statistics(raw[:, watched])
    return {
        "emv": emv,
        "wmv100": windowed,
        "residual": list(residual),
        "expected_residual": float(saved["variance"]),
        "psnr": list(saved["psnr"]),
        "every": EVERY,
    }


def report(folder: Path) -> None:
    rule = stopping_replay.photon_default()
    paths = sorted(folder.glob("*.npz"))
    gaps: dict[str, list[float]] = {name: [] for name, _, _ in SELECTIONS}
    print("| case | peak (iteration) | " + " | ".join(name for name, _, _ in SELECTIONS) + " |")
    print("| --- | --- |" + " --- |" * len(SELECTIONS))
    for path in paths:
        cells = []
        for name, fraction, sigma in SELECTIONS:
            t = trace(path, fraction, sigma)
            gap, kept, _ = stopping_replay.score(t, rule)
            gaps[name].append(gap)
            cells.append(f"{gap:.2f} ({kept})")
        psnr = np.load(path)["psnr"]
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
    parser.add_argument("--dir", type=Path, required=True, help="where the runs' .npz files go")
    args = parser.parse_args()
    if args.command == "report":
        report(args.dir)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    for case in quality.all_cases():
        if case.kind == "photon" and case.split in args.split and (not args.cases or case.name in args.cases):
            run(case, args.iterations, args.dir)


if __name__ == "__main__":
    main()
