"""Three variants of the photon-limited fit, measured on quality.py's cases (CPU, width 32):

    python benchmarks/photon_loss_variants.py weighted --iterations 1500 ihc-p40 ...
    python benchmarks/photon_loss_variants.py stabilised-linear ihc-p40 ...
    python benchmarks/photon_loss_variants.py flipped --iterations 1500 ihc-p40 ...

``weighted``: the default fit with its squared loss weighted by the inverse of the noise
model's variance (the Gaussian approximation of the Poisson–Gaussian likelihood), the
variance taken at a smoothed copy of the noisy image (``--smooth`` pixels); no stopping
rule, the best PSNR every 25 iterations (an oracle peak, as quality.py's dip-oracle).

``stabilised-linear``: ``noise="poisson"`` (the fit sees the variance-stabilised image)
with the stopping rule's output statistics (the outputs' exponential variance and the
growth guard's windowed variance) taken in the linear space, through the stabilising
transform's algebraic inverse, ``(v / 2)²``: the stabilised outputs' variance is flat while
their PSNR climbs (BENCHMARKS.md). End to end, default settings otherwise.

``flipped``: the default two-member ensemble with the second member's output turned by 180°
(both image axes flipped) before the loss, so that its strided convolutions sample the other
phase of the pixel grid and the members' grid biases differ, not only their seeds; oracle
peaks of the flipped and the plain ensemble, same seed, side by side.

All three patch the engine from outside (neither is an option of the package). One JSON line
per case (``--out`` appends it to a results file too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import napari_dip.fit as fit_module
import napari_dip.stopping as stopping
import quality
from jsonl import append, emit


def _oracle_settings(iterations: int) -> argparse.Namespace:
    """quality.dip_oracle's settings: the default fit on the uint16 counts, seed 0, CPU."""
    return argparse.Namespace(dip_kwargs="{}", oracle_iterations=iterations, dip_input="uint16", device="cpu", seed=0)


def weighted(case: quality.Case, args: argparse.Namespace) -> dict:
    clean, noisy = quality.make(case, 96)
    model = quality.prepare_denoise(noisy, "cpu", 0).noise  # the fit's own noise model
    variance = np.maximum(model.gain * gaussian_filter(noisy.astype(np.float64), args.smooth) + model.baseline, 1e-9)
    weight = torch.from_numpy((1 / variance / np.mean(1 / variance)).astype(np.float32))[None, None]
    plain = fit_module.data_loss
    fit_module.data_loss = lambda prediction, measured: ((prediction - measured).square() * weight).mean()
    oracle = _oracle_settings(args.iterations)
    try:
        start = time.perf_counter()
        _, extra = quality.dip_oracle(case, noisy, clean, oracle)
    finally:
        fit_module.data_loss = plain
    curve = extra["curve"]
    return {
        "peak": max(curve),
        "peak_iteration": extra["oracle_iteration"],
        "smooth": args.smooth,
        "seconds": round(time.perf_counter() - start),
        "noise": model.describe(),
        "curve": curve,
    }


def stabilised_linear(case: quality.Case, args: argparse.Namespace) -> dict:
    clean, noisy = quality.make(case, 96)
    job = quality.prepare_denoise(noisy, "cpu", 0, noise="poisson")
    scale, offset = float(job.value_map.scale[0]), float(job.value_map.offset[0])  # unit -> stabilised

    def linear(output: torch.Tensor) -> torch.Tensor:
        return ((output * scale + offset) * 0.5).square()

    emv, windowed = stopping.ExponentialVariance.statistic, stopping.Rule._windowed_variance
    stopping.ExponentialVariance.statistic = lambda self, i, output, average: emv(self, i, linear(output), average)
    stopping.Rule._windowed_variance = lambda self, window, i, output: windowed(self, window, i, linear(output))
    last: list = [None]
    try:
        start = time.perf_counter()
        restored = job.run(lambda step: last.__setitem__(0, step.record))
    finally:
        stopping.ExponentialVariance.statistic, stopping.Rule._windowed_variance = emv, windowed
    return {
        "psnr": round(quality.psnr(case, clean, restored), 3),
        "stopped_at": last[0].iteration,
        "kept_iteration": last[0].best_iteration,
        "seconds": round(time.perf_counter() - start),
        "noise": job.noise.describe(),
    }


class _Flipped(torch.nn.Module):
    """An ensemble whose odd members' outputs are turned by 180° (input noise is i.i.d.,
    so only the output needs turning)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.inner = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.inner(z)
        return torch.cat([o if k % 2 == 0 else o.flip((-2, -1)) for k, o in enumerate(out.split(1))])


def flipped(case: quality.Case, args: argparse.Namespace) -> dict:
    clean, noisy = quality.make(case, 96)
    oracle = _oracle_settings(args.iterations)
    row: dict = {}
    plain_init = fit_module.Fit.__init__

    def turned_init(self: fit_module.Fit, *a: object, **kw: object) -> None:
        plain_init(self, *a, **kw)
        self.net = _Flipped(self.net)

    for name, init in (("plain", plain_init), ("flipped", turned_init)):
        fit_module.Fit.__init__ = init
        try:
            start = time.perf_counter()
            _, extra = quality.dip_oracle(case, noisy, clean, oracle)
        finally:
            fit_module.Fit.__init__ = plain_init
        row[name] = {
            "peak": max(extra["curve"]),
            "peak_iteration": extra["oracle_iteration"],
            "seconds": round(time.perf_counter() - start),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=("weighted", "stabilised-linear", "flipped"))
    parser.add_argument("cases", nargs="+")
    parser.add_argument("--iterations", type=int, default=1500, help="weighted, flipped: oracle iterations")
    parser.add_argument("--smooth", type=float, default=1.5, help="weighted: Gaussian sigma of the level, pixels")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cases = {case.name: case for case in quality.all_cases()}
    run = {"weighted": weighted, "stabilised-linear": stabilised_linear, "flipped": flipped}[args.variant]
    for name in args.cases:
        row = {"benchmark": "photon_loss_variants", "variant": args.variant, "case": name, **run(cases[name], args)}
        emit(row)
        append(args.out, [row])


if __name__ == "__main__":
    main()
