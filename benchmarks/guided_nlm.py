"""A non-local term after or under the fit, measured on quality.py's photon cases (not adopted,
BENCHMARKS.md, "A non-local pass guided by the fit"):

    python benchmarks/wiener_pass.py pilots --kind photon --cases p40   # the default fits, cached
    python benchmarks/guided_nlm.py pass --cases p40                    # the pass, a grid
    python benchmarks/guided_nlm.py refit --cases filaments-p40 --blend 1 --tv 0.15 --iterations 2500

The pass: non-local means of the noisy image with the weights taken from the network's output
(the pilot), both in the generalized Anscombe domain of the case's true camera (unit noise):
``t_i = Σ_j w_ij y_j / Σ_j w_ij`` over a ``(2·radius + 1)²`` search window, ``w_ij =
exp(−d²(P_i, P_j) / h²)``, ``d²`` the mean squared difference of the pilot's
``(2·patch + 1)²`` patches around i and j, the pixel's own weight the largest of its
neighbours' (as in Buades, Coll & Morel's NL-means). The result is ``pilot + blend·(t − pilot)``,
taken back to counts by the exact unbiased inverse. BM3D's strength on filaments and spots is
that it averages along repeated structure; here the groups come from the fit, not the noise.

``refit``: the default fit again, with no rule, on the target ``(y + blend·t) / (1 + blend)``
(rounded to counts; the gain and offset the first fit measured are given), its averaged
output scored every 25 iterations, the peak printed: a fit pulled to the non-local estimate
(a RED-like term ``blend·‖x − t‖²`` with ``t`` held fixed), as an oracle.

The pilots come from ``wiener_pass.py pilots`` (the default ``denoise``, width 32, seed 0,
automatic stopping, float output), one .npz a case in its cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
import wiener_pass
from jsonl import append, emit

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "guided_nlm.jsonl"


def guided_nlm(noisy: np.ndarray, pilot: np.ndarray, h2: float, patch: int = 1, radius: int = 10) -> np.ndarray:
    """Non-local means of ``noisy`` (H, W) with weights from ``pilot``'s patches (see above)."""
    y, p = (torch.from_numpy(np.ascontiguousarray(a, np.float64))[None, None] for a in (noisy, pilot))
    yp, pp = (F.pad(a, (radius,) * 4, mode="reflect") for a in (y, p))
    h, w = noisy.shape
    num, den, top = torch.zeros_like(y), torch.zeros_like(y), torch.zeros_like(y)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx == 0:
                continue
            window = (..., slice(radius + dy, radius + dy + h), slice(radius + dx, radius + dx + w))
            d2 = F.avg_pool2d(F.pad((p - pp[window]) ** 2, (patch,) * 4, mode="reflect"), 2 * patch + 1, 1)
            weight = torch.exp(-d2 / h2)
            num += weight * yp[window]
            den += weight
            top = torch.maximum(top, weight)
    return ((num + top * y) / (den + top))[0, 0].numpy()


def stabilised(case: quality.Case, noisy: np.ndarray, pilot: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The noisy counts and the pilot in the Anscombe domain of the true camera; the pilot
    mapped so that the unbiased inverse gives it back (a round trip within 0.003 dB)."""
    p, read = case.params, quality._electrons_read(case)
    y = quality.anscombe((noisy - p["offset"]) / p["gain"], read)
    photons = np.maximum((pilot - p["offset"]) / p["gain"], 0)
    grid = np.linspace(1.0, 2 * np.sqrt(photons.max() + 50), 20000)
    return y, np.interp(photons, quality.inverse_anscombe(grid, read), grid), read


def to_counts(case: quality.Case, d: np.ndarray, read: float) -> np.ndarray:
    return case.params["offset"] + case.params["gain"] * quality.inverse_anscombe(d, read)


def cached(args: argparse.Namespace) -> list[tuple[quality.Case, dict]]:
    found = []
    for case in wiener_pass.selected(args):
        path = args.cache / f"{case.name}.npz"
        if case.kind == "photon" and path.exists():
            found.append((case, dict(np.load(path))))
    if not found:
        raise SystemExit(f"no cached pilots in {args.cache}: run wiener_pass.py pilots first")
    return found


def run_pass(args: argparse.Namespace) -> None:
    rows = []
    for case, c in cached(args):
        clean, noisy, pilot = c["clean"], c["noisy"].astype(np.float64), c["pilot"].astype(np.float64)
        before = quality.psnr(case, clean, pilot)
        y, guide, read = stabilised(case, noisy, pilot)
        for h2 in args.h2:
            for patch in args.patches:
                t = guided_nlm(y, guide, h2, patch)
                for blend in args.blends:
                    after = quality.psnr(case, clean, to_counts(case, guide + blend * (t - guide), read))
                    row = {"benchmark": "guided_nlm", "case": case.name, "split": case.split, "h2": h2, "patch": patch}
                    row |= {"blend": blend, "dip": round(before, 3), "after": round(after, 3)}
                    rows.append(row | {"gain": round(after - before, 3)})
        print(f"{case.name}: dip {before:.2f}, best {max(r['gain'] for r in rows if r['case'] == case.name):+.2f}")
    append(args.out, rows)
    settings = sorted({(r["h2"], r["patch"], r["blend"]) for r in rows})
    print(f"{'h²':>5} {'patch':>5} {'blend':>5} {'mean':>7} {'worst':>7}  per case")
    for s in settings:
        gains = [(r["case"], r["gain"]) for r in rows if (r["h2"], r["patch"], r["blend"]) == s]
        mean, worst = np.mean([g for _, g in gains]), min(g for _, g in gains)
        print(f"{s[0]:5} {s[1]:5} {s[2]:5} {mean:+7.3f} {worst:+7.3f}  " + " ".join(f"{n} {g:+.2f}" for n, g in gains))


def refit_case(case: quality.Case, c: dict, args: argparse.Namespace) -> dict:
    """The default fit, no rule, on the target pulled to the pass; its peak (see above)."""
    clean, noisy, pilot = c["clean"], c["noisy"].astype(np.float64), c["pilot"].astype(np.float64)
    noise = json.loads(str(c["noise"]))
    y, guide, read = stabilised(case, noisy, pilot)
    t = to_counts(case, guided_nlm(y, guide, args.h2[0], args.patches[0]), read)
    target = np.clip(np.round((noisy + args.blend * t) / (1 + args.blend)), 0, 65535).astype(np.uint16)
    kwargs = {"tv": args.tv, "gain": noise["gain"], "offset": noise["offset"]}
    oracle_args = argparse.Namespace(
        dip_kwargs=json.dumps(kwargs), oracle_iterations=args.iterations, device="cpu", seed=0, dip_input="native"
    )
    start = time.perf_counter()
    peak, extra = quality.dip_oracle(case, target, clean, oracle_args)  # the target is the "noisy" image here
    row = {"benchmark": "guided_nlm_refit", "case": case.name, "split": case.split, "blend": args.blend}
    row |= {"tv": args.tv, "iterations": args.iterations, "h2": args.h2[0], "patch": args.patches[0]}
    row |= {"dip": round(quality.psnr(case, clean, pilot), 3), "peak": round(quality.psnr(case, clean, peak), 3)}
    return row | {"peak_iteration": extra["oracle_iteration"], "seconds": round(time.perf_counter() - start, 1)}


def refit(args: argparse.Namespace) -> None:
    for case, c in cached(args):
        row = refit_case(case, c, args)
        emit(row)
        append(args.out, [row])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("pass", "refit"))
    parser.add_argument("--split", nargs="+", default=["all"], choices=(*quality.SPLITS, "all"))
    parser.add_argument("--cases", nargs="+", help="keep cases whose name contains any of these")
    parser.add_argument("--h2", type=float, nargs="+", help="h², unit noise (pass: 0.02 0.05 0.1 0.3; refit: 0.1)")
    parser.add_argument("--patches", type=int, nargs="+", help="patch radius (pass: 1 2 3; refit: 1)")
    parser.add_argument("--blends", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--blend", type=float, default=1.0, help="refit: the target's weight of t")
    parser.add_argument("--tv", type=float, default=0.3, help="refit: TV strength in the first fit's noise stds")
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--cache", type=Path, default=wiener_pass.CACHE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.kind = "photon"
    if args.command == "pass":
        args.h2, args.patches = args.h2 or [0.02, 0.05, 0.1, 0.3], args.patches or [1, 2, 3]
    else:
        args.h2, args.patches = args.h2 or [0.1], args.patches or [1]
    (run_pass if args.command == "pass" else refit)(args)


if __name__ == "__main__":
    main()
