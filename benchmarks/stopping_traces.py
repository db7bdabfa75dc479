"""Stopping traces of the default ``denoise`` fit on quality.py's cases (issue 12, point 3).

Each case runs the default fit (width 32, the photon settings where they apply) to a
cap with the default rule only watching, and records per iteration the loss, the
rule's statistic and windowed/exponential variances of sampled raw outputs for several
windows, and every ``EVERY`` iterations the PSNR of the averaged output and its mean
squared residual against the noisy image next to the noise model's expected residual.
Stopping rules are then replayed offline (``report``), tuned on the tune split and
checked on the held-out one, so one run per case serves every rule.

    python benchmarks/stopping_traces.py run [--split tune] [--kind photon]   # ~45 s a case, 2 cores
    python benchmarks/stopping_traces.py report
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
from jsonl import append

OUT = quality.HERE / "results" / "stopping_traces.jsonl"
EVERY = 5
SAMPLES = 4096
WINDOWS = (50, 100, 200)


def _windowed(values: np.ndarray, window: int) -> np.ndarray:
    """Mean over the samples of their variance over the last ``window`` rows (NaN before)."""
    csum = np.cumsum(np.vstack([np.zeros((1, values.shape[1])), values]), axis=0)
    csq = np.cumsum(np.vstack([np.zeros((1, values.shape[1])), values**2]), axis=0)
    out = np.full(len(values), np.nan)
    n = window
    mean = (csum[n:] - csum[:-n]) / n
    var = (csq[n:] - csq[:-n]) / n - mean**2
    out[n - 1 :] = var.mean(axis=1)
    return out


def run_case(
    case: quality.Case, size: int, iterations: int, watch: str = "emv", settings: str = "default"
) -> dict[str, Any]:
    import torch

    from napari_dip.fit import photon_options
    from napari_dip.stopping import make_rule

    clean, noisy = quality.make(case, size)
    job = quality.prepare_denoise(noisy, preview_every=None, dtype="float32")
    # The rule only watches. "validation" leaves its pixels out of the loss: another fit.
    rule = make_rule(watch, patience=10**9, floor=0, growth=0, ceiling=0)  # replayed from the records
    job.schedule.options.update(iterations=iterations, stopping=rule)
    model = job.noise
    applied = "photon" if "ema" in job.schedule.options else "gaussian"  # the API's choice
    user_noisy = np.asarray(noisy, np.float64)
    # As the fit sees it: the noise std at the median level over the value range.
    relative = float(np.sqrt(model.variance_at(float(np.median(user_noisy))))) / float(np.mean(job.value_map.scale))
    if settings == "photon":  # the photon settings whatever the noise (the rise is replayed offline)
        job.schedule.options.update(photon_options(relative, None))
    elif settings == "average":  # only their long average
        job.schedule.options["ema"] = photon_options(relative, None)["ema"]
    level = np.clip(user_noisy, model.offset or 0.0, None) if model.kind == "poisson" else user_noisy
    expected = model.variance_at(float(level.mean()))  # the variance is linear in the level
    rng = np.random.default_rng(0)
    raw: list[np.ndarray] = []
    psnr, residual = [], []
    index = last = None
    start = time.perf_counter()
    for step in job.schedule:
        fit = job.fit if job.fit is not None else last  # the schedule lets go of a finished fit
        with torch.no_grad():
            out = fit.output[0][(slice(None), *fit.output_region)].reshape(-1)
            if index is None:
                index = torch.from_numpy(rng.choice(out.numel(), min(SAMPLES, out.numel()), replace=False))
            raw.append(out[index].numpy().copy())
            if step.record.iteration % EVERY == 0:
                avg = fit.average[(slice(None), slice(None), *fit.output_region)].float().mean(dim=0).numpy()
                restored = job.plane_to_user(avg).astype(np.float64)
                psnr.append(round(quality.psnr(case, clean, restored), 4))
                residual.append(float(np.mean((restored - user_noisy) ** 2)))
        last = fit
    seconds = time.perf_counter() - start
    values = np.asarray(raw, np.float64)
    return {
        "case": case.name,
        "split": case.split,
        "kind": case.kind,
        "size": size,
        "noise": model.as_dict(),
        "relative_noise": round(relative, 5),
        "settings": applied if settings == "default" else settings,
        "expected_residual": expected,
        "every": EVERY,
        "seconds": round(seconds, 1),
        "loss": [float(f"{v:.6g}") for v in last.losses],
        "watched": watch,
        watch: [float(f"{v:.6g}") if np.isfinite(v) else None for v in last.statistics],
        **{f"wmv{w}": [float(f"{v:.6g}") if np.isfinite(v) else None for v in _windowed(values, w)] for w in WINDOWS},
        "psnr": psnr,
        "residual": [float(f"{v:.6g}") for v in residual],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--split", choices=quality.SPLITS)
    parser.add_argument("--kind", choices=("photon", "gaussian"))
    parser.add_argument("--cases", nargs="*")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=1600)
    parser.add_argument("--watch", choices=("emv", "validation"), default="emv", help="the rule to record")
    parser.add_argument(
        "--settings",
        choices=("default", "photon", "average"),
        default="default",
        help="photon: the photon settings on every case; average: only their 0.995 average",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.command == "report":
        import stopping_replay

        stopping_replay.report(args.out)
        return
    for case in quality.all_cases():
        if (args.split and case.split != args.split) or (args.kind and case.kind != args.kind):
            continue
        if args.cases and case.name not in args.cases:
            continue
        row = run_case(case, args.size, args.iterations, args.watch, args.settings)
        print(case.name, row["seconds"], "s; peak", max(row["psnr"]), flush=True)
        append(args.out, [row])


if __name__ == "__main__":
    main()
