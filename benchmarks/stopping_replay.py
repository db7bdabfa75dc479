"""Replay stopping rules on the traces of stopping_traces.py: where each rule would
keep the averaged output, and how far that lands under the trace's peak (the oracle).

Each rule is a function of one trace returning (kept iteration, stop iteration); the
PSNR kept is the trace's at the nearest recorded iteration. Tables per split and kind:
mean and worst gap to the peak, and mean stop iteration (the cost).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CHECK = 25  # the fit asks the rule every 25 iterations (fit.STOP_CHECK_EVERY)

Trace = dict
RuleFn = Callable[[Trace], tuple[int, int]]


def watching_rule(name: str = "emv", **settings: float | None) -> Any:
    """A rule that only watches a fit, so that its statistic is recorded for the replays here:
    every end off (ES-EMV's default plateau end too, which cut recorded runs short), with the
    ``settings`` (``flat``, ``window``) of the rule it stands in for."""
    from napari_dip.stopping import make_rule

    return make_rule(name, patience=10**9, floor=0, growth=0, ceiling=0, plateau=0, **settings)


def _series(trace: Trace, key: str) -> np.ndarray:
    return np.array([np.inf if v is None else v for v in trace[key]], np.float64)


def variance_minimum(
    key: str = "emv",
    patience: int = 200,
    tolerance: float = 0.0,
    rise: float | None = None,
    warmup: int = 100,
    floor: float | None = None,
    growth: float | None = None,
    growth_key: str = "wmv100",
    ceiling: float | None = None,
    plateau: tuple[float, float, int] | None = None,
    white: float | None = None,
    overfit: float | None = None,
    patience_fraction: float = 0.0,
    patience_ceiling: float | None = None,
    settle: bool = False,
    rise_white: float | None = None,
) -> RuleFn:
    """The engine's rule (``napari_dip.stopping.Rule``): the lowest statistic so far is the
    best, and with ``tolerance`` a later value within (1 + tolerance) of it also counts
    (and resets the patience); with ``rise``, the first value at (1 + rise) times the
    lowest is kept and ends the fit; with ``floor``, the fit ends (keeping its best so far,
    or this output if none) where the averaged output's residual has fallen to ``floor``
    times the noise model's variance (recorded every ``every`` iterations); with
    ``growth``, where the raw outputs' windowed variance (``growth_key``) has grown to
    ``growth`` times its lowest, keeping this output with ``rise``, else as the floor
    does; with ``ceiling``, nothing counts (statistic, rise, growth) while the residual
    (the nearest record) is above ``ceiling`` times the variance, and the patience counts
    from the last such iteration. With ``plateau`` = (level, drop, span), the fit also ends
    (as by the floor) where the residual is down to ``level`` times the variance while the
    lowest statistic has fallen by less than ``drop`` (a fraction) over the last ``span``
    iterations. With ``white``, nothing counts either (as above the ceiling) before the first
    record where the residual's neighbour correlation (``whiteness``) has fallen to
    ``white``; traces without that record (recorded before it) are replayed without it.
    With ``overfit``, the fit also ends (as by the floor) at the first record where that
    correlation has fallen to ``overfit`` (< 0: the output fits the noise's low frequencies).
    Without these: the fit ends ``patience`` iterations after the best, or with
    ``patience_fraction``, after that fraction of the best's iteration where that is longer;
    with ``patience_ceiling``, not while the residual is above that many variances. With
    ``settle``, a rise counts only once the lowest statistic has fallen by less than 5 % over
    the last 200 iterations (``stopping.PLATEAU_DROP``, ``PLATEAU_SPAN``); with ``rise_white``,
    only from the first record whose residual correlation is at or under it."""

    from napari_dip.stopping import PLATEAU_DROP, PLATEAU_SPAN  # the engine's settled statistic

    def rule(trace: Trace) -> tuple[int, int]:
        stat = _series(trace, key)
        ratio = np.asarray(trace["residual"]) / trace["expected_residual"]
        windowed = _series(trace, growth_key) if growth is not None else None

        def first_record(level: float | None, otherwise: int) -> int:
            """The first recorded iteration whose residual correlation is at or under ``level``."""
            if level is None or "whiteness" not in trace:
                return otherwise
            below = np.nonzero(np.asarray(trace["whiteness"]) <= level)[0]
            return trace["every"] * (int(below[0]) + 1) if len(below) else len(stat) + 1

        def settled(i: int) -> bool:
            """The lowest statistic fell by less than ``PLATEAU_DROP`` over ``PLATEAU_SPAN``."""
            return (
                i > PLATEAU_SPAN
                and np.isfinite(bests[i - PLATEAU_SPAN])
                and bests[i] > (1 - PLATEAU_DROP) * bests[i - PLATEAU_SPAN]
            )

        opens = first_record(white, 0)  # the first iteration the residual is white enough
        rises = first_record(rise_white, 0)  # ... and high-passed enough for a rise to count
        overfitted = first_record(overfit, len(stat) + 1)  # ... and high-passed to ``overfit``
        best, kept, lowest, since = np.inf, 0, np.inf, warmup
        bests = np.full(len(stat) + 1, np.inf)  # the lowest statistic after each iteration
        for i, s in enumerate(stat, start=1):
            bests[i] = bests[i - 1]
            nearest = ratio[min(max(i // trace["every"] - 1, 0), len(ratio) - 1)]  # the residual's last record
            above = ceiling is not None and nearest > ceiling
            if above or i < opens:
                since = max(since, i)  # not fitted yet: as if warming up
                continue
            if np.isfinite(s):
                bests[i] = min(bests[i], s)
            if i >= overfitted:
                return (kept or i), i
            if floor is not None and i % trace["every"] == 0 and ratio[i // trace["every"] - 1] <= floor:
                return (kept or i), i
            if plateau is not None and i % trace["every"] == 0 and i > plateau[2]:
                level, drop, span = plateau
                flat = np.isfinite(bests[i - span]) and bests[i] > (1 - drop) * bests[i - span]
                if flat and ratio[i // trace["every"] - 1] <= level:
                    return (kept or i), i
            if windowed is not None and np.isfinite(windowed[i - 1]):
                lowest = min(lowest, windowed[i - 1])
                if windowed[i - 1] >= growth * lowest:  # kept as by the rise, else as by the floor
                    return (i if rise is not None else (kept or i)), i
            if np.isfinite(s) and (s < best or s <= best * (1 + tolerance)):
                kept = i
            elif rise is not None and np.isfinite(best) and s >= (1 + rise) * best and i >= rises:
                if not settle or settled(i):
                    return i, i
            best = min(best, s)
            anchor = max(kept, since)
            fitting = patience_ceiling is not None and nearest > patience_ceiling
            if i % CHECK == 0 and not fitting and i - anchor >= max(patience, patience_fraction * anchor):
                return kept, i
        return (kept or len(stat)), len(stat)  # no best: the fit returns its last average

    return rule


def rise(ratio: float, patience: int = 200) -> RuleFn:
    """ES-EMV keeping the output where the statistic has risen ``ratio`` over its lowest."""
    return variance_minimum("emv", patience, rise=ratio)


def discrepancy(factor: float, fallback: RuleFn | None = None) -> RuleFn:
    """The first recorded iteration where the averaged output's residual against the noisy
    image falls to ``factor`` times the noise model's expected residual; with ``fallback``,
    the later of the two rules' choices."""

    def rule(trace: Trace) -> tuple[int, int]:
        every = trace["every"]
        residual = np.array(trace["residual"])
        below = np.nonzero(residual <= factor * trace["expected_residual"])[0]
        kept = every * (int(below[0]) + 1) if len(below) else every * len(residual)
        stop = kept
        if fallback is not None:
            other, other_stop = fallback(trace)
            kept, stop = max(kept, other), max(stop, other_stop)
        return kept, stop

    return rule


def score(trace: Trace, rule: RuleFn) -> tuple[float, int, int]:
    """(gap to the peak in dB, kept iteration, stop iteration)."""
    kept, stop = rule(trace)
    psnr = np.array(trace["psnr"])
    at = min(max(round(kept / trace["every"]) - 1, 0), len(psnr) - 1)
    return float(psnr.max() - psnr[at]), kept, stop


def by_noise(photon: RuleFn, gaussian: RuleFn) -> RuleFn:
    """``photon`` where the fit ran with the photon settings, else ``gaussian``. Traces
    without a "settings" entry predate camera counts taking them: they had them where the
    noise was measured as Poisson–Gaussian."""

    def rule(trace: Trace) -> tuple[int, int]:
        settings = trace.get("settings", "photon" if trace["noise"]["kind"] == "poisson" else "gaussian")
        return (photon if settings == "photon" else gaussian)(trace)

    return rule


def photon_default(
    rise: float | None = 0.20,
    white: float | None = 0.0,
    overfit: float | None = -0.05,
    settle: bool = True,
    **patience: float | None,
) -> RuleFn:
    """The engine's rule under the photon settings (``fit.PHOTON_RISE``, ``PHOTON_CEILING``,
    ``PHOTON_WHITE``, ``PHOTON_OVERFIT``, ``PHOTON_SETTLE``) with this ``rise``, ``white``,
    ``overfit`` and ``settle`` (and ``variance_minimum``'s ``patience_fraction`` or
    ``patience_ceiling``)."""
    return variance_minimum(
        tolerance=0.01,
        rise=rise,
        floor=0.35,
        growth=2.5,
        ceiling=1.5,
        white=white,
        overfit=overfit,
        settle=settle,
        **patience,
    )


def stabilised_default(white: float | None = -0.015, **patience: float | None) -> RuleFn:
    """The engine's rule on the variance-stabilised fit (``fit.STABILISED_RISE``: none,
    ``STABILISED_WHITE``, no end at a high-passed residual) with this ``white`` (and
    ``patience_fraction`` or ``patience_ceiling``, as ``photon_default``)."""
    return photon_default(rise=None, white=white, overfit=None, **patience)


#: The engine's rule outside the photon settings (``stopping.PLATEAU_DROP``, ``PLATEAU_SPAN``).
GAUSSIAN_DEFAULT = variance_minimum(tolerance=0.01, floor=0.35, growth=2.5, ceiling=1.0, plateau=(0.75, 0.05, 200))
#: ... and before its plateau end.
GAUSSIAN_NO_PLATEAU = variance_minimum(tolerance=0.01, floor=0.35, growth=2.5, ceiling=1.0)

RULES: dict[str, RuleFn] = {
    "default: emv, 1 % tolerance, floor 0.35, growth 2.5; rise 20 %, ceiling 1.5 (photon settings), "
    "else ceiling 1, plateau 0.75": by_noise(photon_default(), GAUSSIAN_DEFAULT),
    "the same without the plateau (the default before)": by_noise(photon_default(), GAUSSIAN_NO_PLATEAU),
    "the same with a rise of 10 % (the default before)": by_noise(photon_default(0.10), GAUSSIAN_NO_PLATEAU),
    "emv, 1 % tolerance, floor 0.35, growth 2.5; rise 10 % with the photon settings": by_noise(
        variance_minimum(tolerance=0.01, rise=0.10, floor=0.35, growth=2.5),
        variance_minimum(tolerance=0.01, floor=0.35, growth=2.5),
    ),
    "emv, 1 % tolerance, floor 0.35; rise 10 % with the photon settings": by_noise(
        variance_minimum(tolerance=0.01, rise=0.10, floor=0.35), variance_minimum(tolerance=0.01, floor=0.35)
    ),
    "emv, 1 % tolerance; rise 10 % with the photon settings": by_noise(
        variance_minimum(tolerance=0.01, rise=0.10), variance_minimum(tolerance=0.01)
    ),
    "emv, rise 10 % with the photon settings (the default before)": by_noise(rise(0.10), variance_minimum()),
    "emv, rise 5 % with the photon settings": by_noise(rise(0.05), variance_minimum()),
    "emv": variance_minimum(),
    "emv p300": variance_minimum(patience=300),
    "emv, 1 % tolerance": variance_minimum(tolerance=0.01),
    "emv, 2 % tolerance": variance_minimum(tolerance=0.02),
    "emv, 5 % tolerance": variance_minimum(tolerance=0.05),
    "emv, rise 5 %": rise(0.05),
    "emv, rise 10 %": rise(0.10),
    "emv, rise 15 %": rise(0.15),
    "emv, rise 20 %": rise(0.20),
    "wmv100 p300": variance_minimum("wmv100", 300),
    "wmv200 p300": variance_minimum("wmv200", 300, warmup=200),
    "discrepancy 1.00": discrepancy(1.00),
    "discrepancy 1.02": discrepancy(1.02),
    "max(emv, discrepancy 1.02)": discrepancy(1.02, variance_minimum()),
}


def report(path: Path, rules: dict[str, RuleFn] = RULES) -> None:
    traces = [json.loads(line) for line in path.read_text().splitlines()]
    groups = sorted({(t["split"], t["kind"]) for t in traces})
    print("| rule | " + " | ".join(f"{s} {k} (n)" for s, k in groups) + " |")
    print("| --- |" + " --- |" * len(groups))
    for name, rule in rules.items():
        cells = []
        for split, kind in groups:
            rows = [score(t, rule) for t in traces if t["split"] == split and t["kind"] == kind]
            gaps = [g for g, _, _ in rows]
            stops = [s for _, _, s in rows]
            cells.append(f"{np.mean(gaps):.2f} / {max(gaps):.2f} @ {np.mean(stops):.0f} ({len(rows)})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def cases(path: Path, rules: dict[str, RuleFn] = RULES) -> None:
    """Per-case gaps and kept iterations, with the peak's iteration."""
    for line in path.read_text().splitlines():
        t = json.loads(line)
        psnr = np.array(t["psnr"])
        peak_at = t["every"] * (int(psnr.argmax()) + 1)
        parts = [f"{name.split()[0]}:{score(t, r)[0]:.2f}@{score(t, r)[1]}" for name, r in rules.items()]
        print(f"{t['case']:<14} peak {psnr.max():.2f}@{peak_at:<5}", " ".join(parts))


#: Rules for the member traces: the photon settings' rule where the fit ran with them.
MEMBER_RULES: dict[str, RuleFn] = {
    "default: emv, 1 % tolerance, floor 0.35, growth 2.5; rise 20 %, ceiling 1.5 (photon settings), "
    "else ceiling 1, plateau 0.75": by_noise(photon_default(), GAUSSIAN_DEFAULT),
    "the same without the plateau (the default before)": by_noise(photon_default(), GAUSSIAN_NO_PLATEAU),
    "the same, plateau 0.75 with a 3 % drop": by_noise(
        photon_default(),
        variance_minimum(tolerance=0.01, floor=0.35, growth=2.5, ceiling=1.0, plateau=(0.75, 0.03, 200)),
    ),
    "the same, rise 15 %": by_noise(photon_default(0.15), GAUSSIAN_DEFAULT),
    "the same, rise 10 % (the default before)": by_noise(photon_default(0.10), GAUSSIAN_DEFAULT),
}


def rule_grid() -> dict[str, RuleFn]:
    """Variants of the photon default for ``report --members --grid``: rise, ceiling, growth
    guard, tolerance and patience (160 rules), and the discrepancy principle alone (keep the
    first output whose residual is down to 0.85-1.2 noise variances)."""
    import itertools

    rules: dict[str, RuleFn] = {}
    for rise_, ceiling, growth, tolerance, patience in itertools.product(
        (0.2, 0.3, 0.5, 1.0, None), (1.5, 1.2, 1.1, 1.05), (2.5, None), (0.01, 0.05), (200, 400)
    ):
        name = f"rise {rise_}, ceiling {ceiling}, growth {growth}, tolerance {tolerance}, patience {patience}"
        rules[name] = variance_minimum(
            patience=patience, tolerance=tolerance, rise=rise_, floor=0.35, growth=growth, ceiling=ceiling
        )
    for factor in (0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2):
        rules[f"discrepancy {factor}"] = discrepancy(factor)
    return rules


def member_traces(row: Trace) -> list[Trace]:
    """A ``stopping_traces.py run --members`` row as one trace per member, for the rules."""
    shared = {k: row[k] for k in ("every", "expected_residual", "noise", "settings") if k in row}
    keys = ("emv", "wmv100", "residual", "psnr")
    return [{**shared, **{k: row[k][m] for k in keys}} for m in range(row["members"])]


def members_score(row: Trace, rule: RuleFn) -> tuple[float, int, list[int]]:
    """A rule replayed on each member of a two-member trace: (PSNR of the mean of the
    averaged outputs the members keep, the fit's stop iteration, the kept iterations)."""
    kept, stops = zip(*(rule(t) for t in member_traces(row)), strict=True)
    first, second = (min(max(round(k / row["every"]) - 1, 0), len(row["pairs"]) - 1) for k in kept)
    return row["pairs"][first][second], max(stops), list(kept)


def members_report(path: Path, rules: dict[str, RuleFn], per_case: bool = False, best: int | None = None) -> None:
    """Replay ``rules`` on the member traces of ``stopping_traces.py run --members`` (``path``):
    the ensemble's PSNR under each rule against its peak (the best common iteration); with
    ``best``, only that many rules, the closest to the peaks on average."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    gaps: dict[str, list[float]] = {name: [] for name in rules}
    stops: dict[str, list[int]] = {name: [] for name in rules}
    for row in rows:
        curve = [row["pairs"][a][a] for a in range(len(row["pairs"]))]
        peak = max(curve)
        parts = []
        for name, rule in rules.items():
            psnr, stop, kept = members_score(row, rule)
            gaps[name].append(peak - psnr)
            stops[name].append(stop)
            parts.append(f"{name}: {psnr:.2f} @{'/'.join(map(str, kept))}")
        if per_case:
            peak_at = row["every"] * (int(np.argmax(curve)) + 1)
            print(f"{row['case']:<20} peak {peak:.2f} @{peak_at}; " + "; ".join(parts))
    print("| rule | mean / worst dB under the peak | cases > 0.6 dB | mean stop |")
    print("| --- | --- | --- | --- |")
    names = sorted(rules, key=lambda n: (np.mean(gaps[n]), np.max(gaps[n])))[:best] if best else rules
    for name in names:
        g = np.array(gaps[name])
        print(f"| {name} | {g.mean():.2f} / {g.max():.2f} | {int((g > 0.6).sum())} | {np.mean(stops[name]):.0f} |")
