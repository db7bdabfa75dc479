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
    python benchmarks/stopping_traces.py run --members --out results/stopping_traces_members.jsonl ...
    python benchmarks/stopping_traces.py report --members --out results/stopping_traces_members.jsonl
    python benchmarks/stopping_traces.py run --members --dip-kwargs '{"noise": "poisson"}' --out ...
    python benchmarks/stopping_traces.py report --members --grid 10 --out ...   # the 10 best of a grid
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
import stopping_replay
from jsonl import append

OUT = quality.HERE / "results" / "stopping_traces.jsonl"
EVERY = 5
SAMPLES = 4096
WINDOWS = (50, 100, 200)
MEMBER_EVERY = 25  # --members: the averaged outputs kept for replay (the fit checks its rule as often)


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
    case: quality.Case, size: int, iterations: int, watch: str = "emv", settings: str = "default", ensemble: int = 1
) -> dict[str, Any]:
    from napari_dip.fit import photon_options

    clean, noisy = quality.make(case, size)
    # One network: each member of an ensemble stops by its own statistic, so a single
    # network's trace is what the rule sees (the mean of two members' would smooth it).
    job = quality.prepare_denoise(noisy, preview_every=None, dtype="float32", ensemble=ensemble)
    model = job.noise
    applied = "photon" if "ema" in job.schedule.options else "gaussian"  # the API's choice
    user_noisy = np.asarray(noisy, np.float64)
    # As the fit sees it: the noise std at the median level over the value range.
    relative = float(np.sqrt(model.variance_at(float(np.median(user_noisy))))) / float(np.mean(job.value_map.scale))
    if settings == "photon":  # the photon settings whatever the noise (the rise is replayed offline)
        job.schedule.options.update(photon_options(relative, None))
    elif settings == "average":  # only their long average
        job.schedule.options["ema"] = photon_options(relative, None)["ema"]
    # The rule only watches (the values the default's watches). "validation" leaves its
    # pixels out of the loss: another fit.
    flat = job.schedule.options.get("flat") if watch != "validation" else None
    rule = stopping_replay.watching_rule(watch, flat=flat)  # replayed from the records
    job.schedule.options.update(iterations=iterations, stopping=rule)
    level = np.clip(user_noisy, model.offset or 0.0, None) if model.kind == "poisson" else user_noisy
    expected = model.variance_at(float(level.mean()))  # the variance is linear in the level
    recorder = _Recorder(job, lambda restored: quality.psnr(case, clean, restored), user_noisy)
    start = time.perf_counter()
    for step in job.schedule:
        recorder.add(job.fit if job.fit is not None else recorder.fit, step.record.iteration)
    return recorder.row(
        watch,
        case=case.name,
        split=case.split,
        kind=case.kind,
        size=size,
        noise=model.as_dict(),
        relative_noise=round(relative, 5),
        settings=applied if settings == "default" else settings,
        ensemble=ensemble,
        tv=job.schedule.options.get("tv", 0.0),
        expected_residual=expected,
        seconds=round(time.perf_counter() - start, 1),
    )


def run_members(case: quality.Case, size: int, iterations: int, **dip: Any) -> dict[str, Any]:
    """The default fit of ``case`` (its default ensemble, two members on a CPU) traced per
    member: each member's statistic (the default rule's, only watching), its raw outputs'
    windowed variance (the growth guard's) and, every ``MEMBER_EVERY`` iterations, its
    averaged output's PSNR and residual; and the PSNR of the mean of the two members'
    averaged outputs for every pair of those iterations (``pairs[a][b]``: member 0's at
    iteration ``(a + 1) · every``, member 1's at ``(b + 1) · every``), so that a rule replayed
    on each member is scored on what the ensemble returns (``stopping_replay.members_report``).
    ``dip``: ``denoise`` keywords (``noise="poisson"``: the variance-stabilised fit). The
    residual is the fit's own, in its units (the stabilised image's under "poisson"), against
    the noise variance the fit was given, as the rule's ceiling and floor see it."""
    import torch

    from napari_dip.stopping import _Window

    clean, noisy = quality.make(case, size)
    job = quality.prepare_denoise(noisy, preview_every=None, dtype="float32", **dip)
    rule = stopping_replay.watching_rule(flat=job.schedule.options.get("flat"))
    variance = float(job.schedule.options.get("noise_variance", math.nan))
    job.schedule.options.update(iterations=iterations, stopping=rule)
    model = job.noise
    stats: list[torch.Tensor] = []
    windowed: list[torch.Tensor] = []
    psnr: list[list[float]] = []
    residual: list[list[float]] = []
    averages: list[np.ndarray] = []
    watch = rule.update
    window: list[_Window] = []

    def update(iteration: int, output: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        stat = watch(iteration, output, average)
        if not window:  # the growth guard's window (the rule's own); the rule is attached by now
            window.append(_Window(rule.window, rule._statistic_index.shape, output.device))
        stats.append(stat.clone())
        windowed.append(rule._windowed_variance(window[0], iteration, output))
        return stat

    rule.update = update  # type: ignore[method-assign]
    start = time.perf_counter()
    fit = None
    for step in job.schedule:
        fit = job.fit if job.fit is not None else fit
        if step.record.iteration % MEMBER_EVERY:
            continue
        with torch.no_grad():
            members = fit.average[(slice(None), slice(None), *fit.output_region)].float()
            outs = [job.plane_to_user(m.numpy()).astype(np.float32) for m in members]
        if len(outs) != 2:  # before the rest of the fit
            raise ValueError(f"--members traces two-member fits; this one has {len(outs)}")
        averages.append(np.stack(outs))
        psnr.append([round(quality.psnr(case, clean, o), 4) for o in outs])
        # The rule's residual: mean over channels and pixels the fit uses (hot ones left out).
        known = torch.ones(members.shape[2:], dtype=torch.bool) if fit._known is None else fit._known
        squared = (members - fit._image).square()
        residual.append([float(squared[m][..., known].mean()) for m in range(len(outs))])
    seconds = round(time.perf_counter() - start, 1)
    return {
        "case": case.name,
        "split": case.split,
        "kind": case.kind,
        "size": size,
        "members": len(psnr[0]),
        "noise": model.as_dict(),
        "settings": "photon" if "ema" in job.schedule.options else "gaussian",
        "expected_residual": variance,
        "seconds": seconds,
        "every": MEMBER_EVERY,
        "emv": [_rounded(column) for column in torch.stack(stats).T.numpy().astype(np.float64)],
        f"wmv{rule.window}": [_rounded(column) for column in torch.stack(windowed).T.numpy().astype(np.float64)],
        "psnr": [list(column) for column in zip(*psnr, strict=True)],
        "residual": [[float(f"{v:.6g}") for v in column] for column in zip(*residual, strict=True)],
        "pairs": pair_psnr(np.stack(averages), lambda restored: quality.psnr(case, clean, restored)),
    }


def pair_psnr(averages: np.ndarray, score: Any) -> list[list[float]]:
    """``score`` of the mean of member 0's and member 1's averaged outputs for every pair of
    snapshots; ``averages`` is (snapshot, member, ...)."""
    first, second = averages[:, 0].astype(np.float64), averages[:, 1].astype(np.float64)
    return [[round(score((a + b) / 2), 3) for b in second] for a in first]


def _rounded(values: np.ndarray) -> list[float | None]:
    return [float(f"{v:.6g}") if np.isfinite(v) else None for v in values]


class _Recorder:
    """One fit's trace: sampled raw outputs every iteration, and every ``EVERY`` iterations
    the PSNR of its averaged output (``score`` of it in the user's units) and its mean
    squared residual against ``user_noisy`` (where ``quiet``: hot pixels left out)."""

    def __init__(self, job: Any, score: Any, user_noisy: np.ndarray, quiet: np.ndarray | None = None) -> None:
        self.job, self.score, self.user_noisy = job, score, user_noisy
        self.quiet = np.ones(user_noisy.shape, bool) if quiet is None else quiet
        self.fit: Any = None  # the schedule lets go of a finished fit: keep it here
        self.raw: list[np.ndarray] = []
        self.psnr: list[float] = []
        self.residual: list[float] = []
        self._index = None

    def add(self, fit: Any, iteration: int) -> None:
        import torch

        with torch.no_grad():
            out = fit.output[0][(slice(None), *fit.output_region)].reshape(-1)
            if self._index is None:
                rng = np.random.default_rng(0)
                self._index = torch.from_numpy(rng.choice(out.numel(), min(SAMPLES, out.numel()), replace=False))
            self.raw.append(out[self._index].numpy().copy())
            if iteration % EVERY == 0:
                avg = fit.average[(slice(None), slice(None), *fit.output_region)].float().mean(dim=0).numpy()
                restored = self.job.plane_to_user(avg).astype(np.float64)
                self.psnr.append(round(self.score(restored), 4))
                self.residual.append(float(np.mean(((restored - self.user_noisy) ** 2)[self.quiet])))
        self.fit = fit

    def row(self, watch: str, **fields: Any) -> dict[str, Any]:
        values = np.asarray(self.raw, np.float64)
        return {
            **fields,
            "every": EVERY,
            "loss": [float(f"{v:.6g}") for v in self.fit.losses],
            "watched": watch,
            watch: _rounded(self.fit.statistics),
            **{f"wmv{w}": _rounded(_windowed(values, w)) for w in WINDOWS},
            "psnr": self.psnr,
            "residual": [float(f"{v:.6g}") for v in self.residual],
        }


def run_stack(seed: int, planes: int, size: int, iterations: int, warm: bool) -> list[dict[str, Any]]:
    """Traces of every plane of ``fluorescence_stack`` (sCMOS counts with hot pixels, the
    stack's own value map and noise model), fitted separately or warm-started from the
    previous plane (then watched with the warm units' window, ``schedule.WARM_RULE``).
    PSNR in counts, the plane's range as the peak (stack_warm_start.py's measure)."""
    from skimage.metrics import peak_signal_noise_ratio

    from napari_dip import schedule
    from napari_dip._api import prepare
    from napari_dip._sample_data import fluorescence_stack

    clean, noisy = fluorescence_stack((planes, size, size), seed=seed)
    job = prepare("denoise", noisy, width=quality.WIDTH, device="cpu", seed=0, ensemble=1, warm_start=warm)
    window = {"window": schedule.WARM_RULE["window"]} if warm and schedule.WARM_RULE else {}
    flat = {"flat": job.schedule.options.get("flat")} if not warm else {}  # warm units: WARM_RULE's
    watch = stopping_replay.watching_rule(**window, **flat)
    job.schedule.options.update(iterations=iterations, stopping=watch, preview_every=None)
    settings = "photon" if "ema" in job.schedule.options else "gaussian"
    rows: list[dict[str, Any]] = []
    recorder, plane, start = None, -1, time.perf_counter()

    def finish() -> None:
        counts = noisy[plane].astype(np.float64)
        level = np.clip(counts[counts - clean[plane] < 1000], job.noise.offset or 0.0, None)
        rows.append(
            recorder.row(
                "emv",
                case=f"stack{seed}-plane{plane}" + ("-warm" if warm and plane else ""),
                split="stack-warm" if warm and plane else "stack",
                kind="photon",
                size=size,
                noise=job.noise.as_dict(),
                settings=settings,
                ensemble=1,
                tv=job.schedule.options.get("tv", 0.0),
                expected_residual=job.noise.variance_at(float(level.mean())),
                seconds=round(time.perf_counter() - start, 1),
            )
        )

    for step in job.schedule:
        if step.plane != plane:
            if recorder is not None:
                finish()
            plane, start = step.plane, time.perf_counter()
            c = clean[plane]

            def score(restored: np.ndarray, c: np.ndarray = c) -> float:
                return float(peak_signal_noise_ratio(c, restored, data_range=c.max() - c.min()))

            counts = noisy[plane].astype(np.float64)
            recorder = _Recorder(job, score, counts, quiet=counts - c < 1000)
        recorder.add(job.fit if job.fit is not None else recorder.fit, step.record.iteration)
    finish()
    return rows


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
    parser.add_argument("--ensemble", type=int, default=1, help="members (the trace: their mean statistic)")
    parser.add_argument("--members", action="store_true", help="trace each member of the default (two-member) ensemble")
    parser.add_argument("--grid", type=int, help="report --members: the N best of stopping_replay.rule_grid()")
    parser.add_argument(
        "--dip-kwargs", default="{}", help='--members: JSON keywords for denoise ("$gain": the case\'s, as quality.py)'
    )
    parser.add_argument("--stack", type=int, nargs="*", help="trace fluorescence_stack planes of these seeds instead")
    parser.add_argument("--warm", action="store_true", help="--stack: warm-start each plane from the previous")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.command == "report":
        if args.members and args.grid:
            stopping_replay.members_report(args.out, stopping_replay.rule_grid(), best=args.grid)
        elif args.members:
            stopping_replay.members_report(args.out, stopping_replay.MEMBER_RULES, per_case=True)
        else:
            stopping_replay.report(args.out)
        return
    for seed in args.stack or ():
        for row in run_stack(seed, 8, 64, args.iterations, args.warm):
            print(row["case"], row["seconds"], "s; peak", max(row["psnr"]), flush=True)
            append(args.out, [row])
    if args.stack:
        return
    for case in quality.all_cases():
        if (args.split and case.split != args.split) or (args.kind and case.kind != args.kind):
            continue
        if args.cases and case.name not in args.cases:
            continue
        if args.members:
            row = run_members(case, args.size, args.iterations, **quality.dip_kwargs(case, args))
        else:
            row = run_case(case, args.size, args.iterations, args.watch, args.settings, args.ensemble)
        print(case.name, row["seconds"], "s; peak", np.max(row["psnr"]), flush=True)
        append(args.out, [row])


if __name__ == "__main__":
    main()
