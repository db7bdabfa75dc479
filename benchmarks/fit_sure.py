"""Stein's unbiased risk estimate of a whole DIP fit, by a twin fit (not adopted, BENCHMARKS.md):

    python benchmarks/fit_sure.py filaments-p40 nuclei-e-p40 --eps 0.1 --iterations 1500
    python benchmarks/fit_sure.py filaments-p40 --dip-kwargs '{"tv": 0.1}'

A DIP result depends on the noisy image y only through the fit's trajectory, so its
divergence (the degrees of freedom SURE needs) has no closed form. Here it is estimated
the Monte Carlo way (Ramani, Blu & Unser, IEEE TIP 17(9), 2008): a twin of the default
fit (quality.py's width, same seed, so the same z, input noise and initial weights) is fitted
to y + eps·b, b a fixed standard normal image and eps a fraction (--eps) of the noise std
at the median level, and ``Σ v_i b_i (f'_i - f_i) / eps`` stands for ``Σ v_i ∂f_i/∂y_i``;
SURE for noise of per-pixel variance v is ``(‖f - y‖² - Σ v + 2 Σ v ∂f/∂y) / n``. The two
fits run in lockstep and every --every iterations the averaged output of each (the
result the fit would return there) is scored: true MSE against the expected counts, PSNR as
quality.py scores it, and SURE with the variance the fit measured (``gain · f + baseline``
at the output) and with the true variance (oracle knowledge: tells the estimator's own
error from the noise model's). Fits that run on the variance-stabilised image (bright
photon cases under ``noise="auto"``) are left out. Rows go to results/fit_sure.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import napari_dip.fit as fit_module
import quality
from jsonl import append

SIZE = 96  # quality.py's default
RESULTS = Path(__file__).parent / "results" / "fit_sure.jsonl"


class _Perturbed:
    """While active, every Fit created adds ``unit`` (the perturbation in the fit's units)
    to its target: the twin's fits are created inside its schedule's iteration."""

    unit: torch.Tensor | None = None

    def __init__(self) -> None:
        original = fit_module.Fit.__init__

        def init(fit: Any, *args: Any, **kwargs: Any) -> None:
            original(fit, *args, **kwargs)
            if self.unit is not None:
                fit._measured = (fit._measured + self.unit.to(fit._measured)).contiguous()

        fit_module.Fit.__init__ = init


def probe(
    case: quality.Case,
    perturbed: _Perturbed,
    eps: float,
    iterations: int,
    every: int,
    dip_kwargs: dict,
    seed: int = 123,
) -> dict:
    clean, noisy = quality.make(case, SIZE)
    if noisy.ndim != 2:
        raise ValueError("grey cases only")
    settings = {"iterations": iterations, "stopping": None, "preview_every": every, **dip_kwargs}
    job = quality.prepare_denoise(noisy, **settings)
    value_map, model = job.value_map, job.noise
    if value_map.noise is not None:
        raise ValueError(f"{case.name}: the fit runs on the stabilised image; not handled")
    scale, offset = float(np.ravel(value_map.scale)[0]), float(np.ravel(value_map.offset)[0])
    unit_of_count = 2.0**-value_map.exponent / scale

    def counts(unit: np.ndarray) -> np.ndarray:
        return np.asarray(unit, np.float64)[0] / unit_of_count + offset * 2.0**value_map.exponent

    y = noisy.astype(np.float64)
    std = float(np.sqrt(max(model.variance_at(float(np.median(y))), 1e-12)))
    step = eps * std
    b = np.random.default_rng(seed).standard_normal(y.shape)
    p = case.params
    if case.kind == "photon":
        truth = p["gain"] * clean + p["offset"]
        true_variance = p["gain"] ** 2 * clean + (p["read_noise"] * p["gain"]) ** 2 + 1 / 12
    else:
        truth, true_variance = clean, np.full(y.shape, p["sigma"] ** 2)
    unit = torch.from_numpy((step * b * unit_of_count).astype(np.float32))[None, None]
    twin = quality.prepare_denoise(noisy, **settings)
    rows, start = [], time.perf_counter()
    steps = iter(twin.schedule)
    for first in job.schedule:
        perturbed.unit = unit
        second = next(steps)
        perturbed.unit = None
        if first.plane_preview is None or first.record.iteration % every:
            continue
        f, f_twin = counts(first.plane_preview), counts(second.plane_preview)
        variance = np.maximum(np.broadcast_to(model.variance_at(f), f.shape), 1e-9)  # at the output's level
        residual = float(np.mean((f - y) ** 2))
        row = {"iteration": first.record.iteration, "psnr": round(quality.psnr(case, clean, f), 3)}
        row["mse"] = float(np.mean((f - truth) ** 2))
        for key, v in (("sure", variance), ("sure_true_variance", true_variance)):
            divergence = float(np.sum(v * b * (f_twin - f)) / step) / y.size
            row[key] = residual - float(np.mean(v)) + 2 * divergence
        rows.append(row)
    oracle = max(rows, key=lambda r: r["psnr"])
    summary = {
        "case": case.name,
        "split": case.split,
        "dip_kwargs": dip_kwargs,
        "eps": eps,
        "probe_seed": seed,
        "noise": model.describe(),
        "oracle": [oracle["psnr"], oracle["iteration"], oracle["mse"]],
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    for key in ("sure", "sure_true_variance"):
        pick = min(rows, key=lambda r: r[key])
        summary[f"by_{key}"] = [pick["psnr"], pick["iteration"], pick["mse"], pick[key]]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+")
    parser.add_argument("--eps", type=float, default=0.1, help="perturbation, in noise stds at the median level")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--probe-seed", type=int, default=123, help="seed of the perturbation b")
    parser.add_argument("--dip-kwargs", default="{}", help="JSON keywords for the fit (both twins)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    cases = {c.name: c for c in quality.all_cases()}
    perturbed = _Perturbed()  # Fit.__init__ wrapped once for all cases
    for name in args.cases:
        s = probe(
            cases[name], perturbed, args.eps, args.iterations, args.every, json.loads(args.dip_kwargs), args.probe_seed
        )
        print(
            f"{name} {s['dip_kwargs']}: oracle {s['oracle'][0]:.2f} dB at {s['oracle'][1]} (MSE {s['oracle'][2]:.3f}); "
            f"SURE's pick {s['by_sure'][0]:.2f} at {s['by_sure'][1]} (SURE {s['by_sure'][3]:.3f}, MSE "
            f"{s['by_sure'][2]:.3f}); with the true variance {s['by_sure_true_variance'][0]:.2f} at "
            f"{s['by_sure_true_variance'][1]} (SURE {s['by_sure_true_variance'][3]:.3f}); {s['seconds']} s",
            flush=True,
        )
        append(args.out, [s])


if __name__ == "__main__":
    main()
