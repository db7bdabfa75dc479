"""Early-stopping benchmark: how close does each rule get to the oracle peak?

For every case (image crop x noise x network width) the fit runs to a cap with
the rules watching (none stops it) and records, per iteration, the PSNR of the
averaged output against the clean image and each rule's statistic. A second run
leaves 5 % of the pixels out of the loss for the held-out validation rule. The
stopping decisions are then replayed offline for several patience values, so
one run per case serves every rule and patience.

    python benchmarks/early_stopping.py run       # writes results/early_stopping_runs.jsonl (~30 min, 2 cores)
    python benchmarks/early_stopping.py report    # prints the tables for BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np

HERE = Path(__file__).resolve().parent
RUNS = HERE / "results" / "early_stopping_runs.jsonl"
SHARED = Path(os.environ.get("DIP_SHARED", HERE.parents[1] / "shared" / "data" / "dip"))
DEVICE = os.environ.get("EARLY_STOPPING_DEVICE", "cpu")
CAP = int(os.environ.get("EARLY_STOPPING_CAP", 3000))  # a small cap for a smoke test
SIDE = 64
WIDTHS = (32, 64)
NOISES = ("gauss15", "gauss25", "gauss50", "poisson30+gauss10")
PATIENCES = (100, 200, 300, 500, 1000)
RULE_WINDOW = 100


def images() -> dict[str, np.ndarray]:
    """(C, 64, 64) float crops in [0, 1]: two grey, two RGB; shared DIP data and scikit-image."""
    from skimage import data

    f16 = iio.imread(SHARED / "denoising" / "F16_GT.png")[200:264, 230:294]
    barbara = iio.imread(SHARED / "restoration" / "barbara.png")[300:364, 40:104]
    crops = {
        "F16 (RGB)": f16,
        "barbara (grey)": barbara,
        "camera (grey)": data.camera()[60:124, 200:264],
        "chelsea (RGB)": data.chelsea()[60:124, 150:214],
    }
    return {k: (np.moveaxis(v, -1, 0) if v.ndim == 3 else v[None]).astype(np.float32) / 255 for k, v in crops.items()}


def corrupt(clean: np.ndarray, noise: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if noise.startswith("gauss"):
        noisy = clean + rng.normal(0, float(noise[5:]) / 255, clean.shape)
    else:  # Poisson with a peak of 30 photons, plus Gaussian read noise of 10/255
        noisy = rng.poisson(clean * 30) / 30 + rng.normal(0, 10 / 255, clean.shape)
    return np.clip(noisy, 0, 1).astype(np.float32)


def _rounded(values: np.ndarray) -> list:
    """Six significant digits: plenty for the decisions, half the file."""
    return [float(f"{v:.6g}") if np.isfinite(v) else None for v in values]


def run_case(job: tuple[str, str, int, bool]) -> dict:
    import torch

    from napari_dip.fit import Fit, _canvas_indices
    from napari_dip.stopping import ExponentialVariance, HeldOutPixels, WindowedVariance

    torch.set_num_threads(1)
    name, noise, width, validation = job
    clean = images()[name]
    noisy = corrupt(clean, noise, seed=zlib.crc32(f"{name}/{noise}".encode()))
    never = 10**9  # observe only: no rule stops the fit here
    rule = HeldOutPixels(patience=never, window=RULE_WINDOW) if validation else None
    fit = Fit("denoise", noisy, width=width, iterations=CAP, stopping=rule, device=DEVICE, preview_every=CAP)
    observers = []
    if not validation:
        observers = [
            WindowedVariance(patience=never, window=RULE_WINDOW),
            ExponentialVariance(patience=never, window=RULE_WINDOW),
        ]
        flat = _canvas_indices(fit.canvas, fit.output_region, clean.shape[0])
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:4096]].to(DEVICE)
        for observer in observers:
            observer.attach(fit.average, flat)
    region = (slice(None), slice(None), *fit.output_region)
    truth = torch.from_numpy(clean)[None].to(DEVICE)
    psnr = torch.zeros(CAP, device=DEVICE)
    stats = torch.zeros(len(observers), CAP, device=DEVICE)
    start = time.perf_counter()
    for record in fit:
        i = record.iteration
        with torch.no_grad():
            psnr[i - 1] = -10 * torch.log10((fit.average[region] - truth).square().mean())
            for k, observer in enumerate(observers):
                stats[k, i - 1] = observer.update(i, fit.output, fit.average)
    row = {
        "image": name,
        "noise": noise,
        "width": width,
        "validation_run": validation,
        "seconds": time.perf_counter() - start,
        "noisy_psnr": float(-10 * np.log10(np.mean((noisy - clean) ** 2))),
        "psnr": psnr.cpu().numpy().round(4).tolist(),
        "device": DEVICE,
    }
    if validation:
        row["statistics"] = {"validation": _rounded(fit.statistics)}
    else:
        row["statistics"] = {o.name: _rounded(stats[k].cpu().numpy()) for k, o in enumerate(observers)}
    print(f"{name:16} {noise:18} w{width:<3} {'val' if validation else 'var'}  {row['seconds']:.0f} s", flush=True)
    return row


def replay(statistic: np.ndarray, patience: int, window: int = RULE_WINDOW) -> tuple[int, int]:
    """(stop iteration, chosen iteration) of a rule with ``patience`` on a recorded statistic,
    exactly as ``Rule.done`` decides every STOP_CHECK_EVERY iterations."""
    from napari_dip.fit import STOP_CHECK_EVERY

    best, best_i = np.inf, 0
    for i, value in enumerate(statistic, start=1):
        if value < best:
            best, best_i = value, i
        if i % STOP_CHECK_EVERY == 0 and i - max(best_i, window) >= patience:
            return i, best_i
    return len(statistic), best_i


def report() -> None:
    from napari_dip.stopping import DEFAULT_RULE, make_rule

    rows = [json.loads(line) for line in RUNS.read_text().splitlines()]
    summary: dict[tuple[str, int], list] = {}
    table = []
    for row in sorted(rows, key=lambda r: (r["image"], r["noise"], r["width"])):
        psnr = np.asarray(row["psnr"])
        peak_i = int(psnr.argmax()) + 1
        for rule, stat in row["statistics"].items():
            stat = np.asarray([np.inf if s is None or np.isnan(s) else s for s in stat])
            for patience in sorted({*PATIENCES, make_rule(rule).patience}):
                stop, chosen = replay(stat, patience)
                gap = psnr.max() - psnr[chosen - 1]
                summary.setdefault((rule, patience), []).append((gap, stop / peak_i))
                if rule == DEFAULT_RULE and patience == make_rule(rule).patience:
                    table.append(
                        (
                            row["image"],
                            row["noise"],
                            row["width"],
                            row.get("device", "cpu"),
                            row["noisy_psnr"],
                            psnr.max(),
                            peak_i,
                            psnr[chosen - 1],
                            chosen,
                            stop,
                        )
                    )
    print("| rule | patience | cases | mean gap to oracle (dB) | worst gap (dB) | mean stop / oracle iteration |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (rule, patience), values in sorted(summary.items()):
        gaps, ratios = np.asarray(values).T
        default = " (default)" if patience == make_rule(rule).patience else ""
        print(
            f"| {rule} | {patience}{default} | {len(gaps)} | {gaps.mean():.2f} | {gaps.max():.2f} | "
            f"{ratios.mean():.2f} |"
        )
    print()
    print(f"Per case, default rule ({DEFAULT_RULE}, patience {make_rule(DEFAULT_RULE).patience}):")
    print()
    print("| image | noise | width | ran on | noisy dB | oracle dB | oracle it | rule dB | kept it | stopped at |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t in table:
        print(
            f"| {t[0]} | {t[1]} | {t[2]} | {t[3]} | {t[4]:.2f} | {t[5]:.2f} | {t[6]} | {t[7]:.2f} | {t[8]} | {t[9]} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    parser.add_argument("--out", type=Path, default=RUNS)
    args = parser.parse_args()
    if args.command == "report":
        report()
        return
    done = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["image"], r["noise"], r["width"], r["validation_run"]))
    jobs = [(i, n, w, v) for w in args.widths for i in images() for n in NOISES for v in (False, True)]
    jobs = [j for j in jobs if j not in done]
    args.out.parent.mkdir(exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool, args.out.open("a") as out:
        for row in pool.imap_unordered(run_case, jobs):
            out.write(json.dumps(row) + "\n")
            out.flush()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    main()
