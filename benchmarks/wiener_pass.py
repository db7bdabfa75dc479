"""A Wiener pass after denoising, measured on quality.py's cases (not adopted, BENCHMARKS.md):

    python benchmarks/wiener_pass.py pilots --split tune          # fits, cached (CPU, width 32)
    python benchmarks/wiener_pass.py report --split tune --blocks 8 12 16 --scales 0.7 1
    python benchmarks/wiener_pass.py report --split check blind   # the defaults only
    python benchmarks/wiener_pass.py report --split blind --bm3d-stage  # and BM3D's own stage
    python benchmarks/wiener_pass.py report --split check blind --sure --radii 0 4 8  # blended by SURE

The pass: in every ``block`` x ``block`` window of the noisy image (all shifts) the
orthonormal 2-D DCT coefficients ``Y`` are shrunk by ``P² / (P² + s·σ²)``, ``P`` the
network output's coefficients (the pilot), ``σ²`` the noise variance averaged over the
window and ``s`` the variance scale; the windows are put back weighed by the inverse of their
estimated residual variance, as BM3D's second stage does with its groups (Dabov et al., IEEE
TIP 16(8), 2007), but without grouping similar blocks.

``pilots`` runs the default ``denoise`` (width 32, seed 0, automatic stopping) with
``dtype=float32`` on each case and caches the noisy image, the output
(the pass's pilot) and the noise model the fit measured (``--cache``, one .npz a case;
fits already cached are skipped). ``report`` applies the pass to the cached pilots with
each block size and variance scale, as ``denoise`` would (the measured noise model's
variance at the pilot's level, in the image's units), and prints the PSNR gained over the
network's output per case and per split (PSNR as quality.py scores it: photons for photon
cases). The fits are the slow part (1-4 min a case on 2 cores); the pass takes
milliseconds, so a grid costs nothing once the pilots are cached.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
from jsonl import append, emit

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "wiener_pilots"
OUT = HERE / "results" / "wiener_pass.jsonl"
BLOCK = 12
STRIP_BYTES = 64 * 2**20  # coefficient tensors of one strip of window rows, roughly


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n): row k is the k-th basis vector."""
    i = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi * (i[None, :] + 0.5) * i[:, None] / n) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


def wiener(
    noisy: torch.Tensor, pilot: torch.Tensor, variance: torch.Tensor, block: int = BLOCK, diagonal: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The pass on (N, H, W) images (variance the same shape): separable convolutions give
    every window's coefficients (b³ multiplications a pixel, not b⁴), their adjoints put the
    windows back; strips of window rows bound the memory. With ``diagonal`` also the diagonal
    of the pass as a linear map of the noisy image (the pilot fixed): ∂out_i/∂noisy_i, for SURE."""
    n, h, w = noisy.shape
    if h < block or w < block:
        return (pilot.clone(), torch.zeros_like(pilot)) if diagonal else pilot.clone()
    d = dct_matrix(block)
    rows = d[:, None, :, None].contiguous()  # (b, 1, b, 1): along H
    cols = d[:, None, None, :].repeat(block, 1, 1, 1)  # (b², 1, 1, b): along W, per H frequency
    ones = torch.ones(1, 1, block, block)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, rows), cols, groups=block)

    def back(c: torch.Tensor, r: torch.Tensor = rows, k: torch.Tensor = cols) -> torch.Tensor:
        return F.conv_transpose2d(F.conv_transpose2d(c, k, groups=block), r)

    squares = rows.square(), cols.square()  # a window's map is Dᵀ diag(shrink) D: its diagonal takes D's squares
    out = torch.empty(n, h, w)
    diag = torch.empty(n, h, w)
    strip = max(1, STRIP_BYTES // (16 * block * block * (w - block + 1)))
    for i in range(n):
        y, p, v = (t[i][None, None] for t in (noisy, pilot, variance))
        total, weight, on_diag = torch.zeros(1, 1, h, w), torch.zeros(1, 1, h, w), torch.zeros(1, 1, h, w)
        for top in range(0, h - block + 1, strip):
            bottom = min(top + strip, h - block + 1) + block - 1
            cy, cp = forward(y[..., top:bottom, :]), forward(p[..., top:bottom, :])
            sigma2 = F.avg_pool2d(v[..., top:bottom, :], block, stride=1).clamp_min(1e-12)
            shrink = cp.square() / (cp.square() + sigma2)
            trust = 1.0 / (sigma2 * shrink.square().sum(dim=1, keepdim=True)).clamp_min(1e-12)
            total[..., top:bottom, :] += back(shrink * cy * trust)
            weight[..., top:bottom, :] += F.conv_transpose2d(trust, ones)
            if diagonal:
                on_diag[..., top:bottom, :] += back(shrink * trust, *squares)
        out[i] = (total / weight)[0, 0]
        if diagonal:
            diag[i] = (on_diag / weight)[0, 0]
    return (out, diag) if diagonal else out


def selected(args: argparse.Namespace) -> list[quality.Case]:
    return [
        c
        for c in quality.all_cases()
        if ("all" in args.split or c.split in args.split)
        and args.kind in ("all", c.kind)
        and (not args.cases or any(s in c.name for s in args.cases))
    ]


def pilots(args: argparse.Namespace) -> None:
    args.cache.mkdir(parents=True, exist_ok=True)
    for case in selected(args):
        path = args.cache / f"{case.name}.npz"
        if path.exists():
            continue
        clean, noisy = quality.make(case, args.size)
        start = time.perf_counter()
        job = quality.prepare_denoise(noisy, "cpu", 0, dtype=np.float32)  # denoise's defaults at WIDTH
        out = job.run()
        seconds = time.perf_counter() - start
        noise = json.dumps(job.noise.as_dict())
        np.savez(path, clean=clean, noisy=noisy, pilot=out, noise=noise, seconds=seconds)
        print(f"{case.name}: {quality.psnr(case, clean, out):.3f} dB in {seconds:.0f} s", flush=True)


def noise_variance(pilot: np.ndarray, noise: dict) -> np.ndarray:
    """The measured noise model's variance at the pilot's level, ``gain · pilot + baseline``."""
    gain = noise["gain"] if noise["kind"] == "poisson" else 0.0
    return np.maximum(gain * pilot.astype(np.float64) + noise["baseline"], 0.0)


def passed(
    noisy: np.ndarray, pilot: np.ndarray, noise: dict, block: int, scale: float, diagonal: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The pass in the image's units (and with ``diagonal`` its map's diagonal)."""
    variance = noise_variance(pilot, noise) * scale
    planes = [np.asarray(a, np.float32) for a in (noisy, pilot, variance)]
    if noisy.ndim == 3:  # colour last: one plane a channel
        planes = [np.moveaxis(a, -1, 0) for a in planes]
    else:
        planes = [a[None] for a in planes]
    with torch.no_grad():
        got = wiener(*(torch.from_numpy(np.ascontiguousarray(a)) for a in planes), block=block, diagonal=diagonal)
    outs = [t.numpy() for t in got] if diagonal else [got.numpy()]
    outs = [np.moveaxis(o, 0, -1) if noisy.ndim == 3 else o[0] for o in outs]
    return tuple(outs) if diagonal else outs[0]


def sure_blend(
    noisy: np.ndarray, pilot: np.ndarray, out: np.ndarray, diag: np.ndarray, variance: np.ndarray, radius: float = 0
) -> tuple[np.ndarray, float]:
    """``pilot + λ (out − pilot)`` with λ in [0, 1] minimising SURE, the pilot taken as fixed
    (its own divergence left out): over the image, or per pixel over a Gaussian window."""
    from scipy.ndimage import gaussian_filter

    r, d = noisy - pilot, out - pilot
    terms = [r * d - variance * diag, d * d]
    if radius:
        sig = (radius, radius, 0) if noisy.ndim == 3 else radius
        num, den = (gaussian_filter(t, sig) for t in terms)
        lam = np.clip(num / np.maximum(den, 1e-12), 0, 1)
        return pilot + lam * d, float(lam.mean())
    lam = float(np.clip(terms[0].sum() / max(terms[1].sum(), 1e-12), 0, 1))
    return pilot + lam * d, lam


def bm3d_stage(case: quality.Case, noisy: np.ndarray, pilot: np.ndarray) -> np.ndarray:
    """BM3D's own second stage guided by the pilot (grey only), with the case's true noise:
    on the Anscombe-stabilised counts for photon cases, as quality.py's BM3D+GAT."""
    if case.kind == "photon":
        p, read = case.params, quality._electrons_read(case)
        z = quality.anscombe((noisy - p["offset"]) / p["gain"], read)
        guide = quality.anscombe(np.maximum((pilot - p["offset"]) / p["gain"], 0), read)
        return p["offset"] + p["gain"] * quality.inverse_anscombe(quality._bm3d(z, 1.0, guide), read)
    return quality._bm3d(noisy, case.params["sigma"], pilot)


def report(args: argparse.Namespace) -> None:
    rows = []
    for case in selected(args):
        path = args.cache / f"{case.name}.npz"
        if not path.exists():
            continue
        cached = np.load(path)
        noise = json.loads(str(cached["noise"]))
        clean, noisy, pilot = cached["clean"], cached["noisy"].astype(np.float64), cached["pilot"]
        before = quality.psnr(case, clean, pilot)
        if args.bm3d_stage and noisy.ndim == 2:
            after = quality.psnr(case, clean, bm3d_stage(case, noisy, pilot.astype(np.float64)))
            print(f"{case.name}: BM3D's second stage {before:.3f} -> {after:.3f} ({after - before:+.3f})")
        if args.sure:
            variance = noise_variance(pilot, noise)
            out, diag = passed(noisy, pilot, noise, args.blocks[0], args.scales[0], diagonal=True)
            alone = quality.psnr(case, clean, out) - before
            line = [f"{case.name:22} {case.split:8} dip {before:7.3f} pass {alone:+.3f}"]
            for radius in args.radii:
                blended, lam = sure_blend(noisy, pilot.astype(np.float64), out, diag, variance, radius)
                gain = quality.psnr(case, clean, blended) - before
                line.append(f"r{radius:g} {gain:+.3f} (λ {lam:.2f})")
                rows.append(
                    {
                        "case": case.name,
                        "split": case.split,
                        "kind": case.kind,
                        "radius": radius,
                        "gain": round(gain, 3),
                        "lambda": round(lam, 3),
                    }
                )
            print("  ".join(line), flush=True)
            continue
        for block in args.blocks:
            for scale in args.scales:
                after = quality.psnr(case, clean, passed(noisy, pilot, noise, block, scale))
                row = {
                    "benchmark": "wiener_pass",
                    "case": case.name,
                    "split": case.split,
                    "kind": case.kind,
                    "block": block,
                    "variance_scale": scale,
                    "dip": round(before, 3),
                    "dip_wiener": round(after, 3),
                    "gain": round(after - before, 3),
                }
                rows.append(row)
                if args.verbose:
                    emit(row)
    if args.sure:
        for radius in args.radii:
            for kind in ("photon", "gaussian"):
                g = [r["gain"] for r in rows if r["radius"] == radius and r["kind"] == kind]
                if g:
                    print(f"radius {radius:g} {kind}: {len(g)} cases, mean {np.mean(g):+.3f}, worst {min(g):+.3f}")
        return
    append(args.out, rows)
    print(f"{'block':>5} {'scale':>5} {'split':9} {'kind':8} {'cases':>5} {'mean':>7} {'worst':>7}")
    for block in args.blocks:
        for scale in args.scales:
            groups: dict[tuple[str, str], list[float]] = {}
            for r in rows:
                if r["block"] == block and r["variance_scale"] == scale:
                    groups.setdefault((r["split"], r["kind"]), []).append(r["gain"])
                    groups.setdefault(("all", "all"), []).append(r["gain"])
            for (split, kind), gains in sorted(groups.items()):
                mean, worst = np.mean(gains), min(gains)
                print(f"{block:5} {scale:5} {split:9} {kind:8} {len(gains):5} {mean:+7.3f} {worst:+7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("pilots", "report"))
    parser.add_argument("--split", nargs="+", default=["all"], choices=(*quality.SPLITS, "all"))
    parser.add_argument("--kind", choices=("photon", "gaussian", "all"), default="all")
    parser.add_argument("--cases", nargs="+", help="keep cases whose name contains any of these")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--blocks", type=int, nargs="+", default=[BLOCK])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, help=f"append the rows here (e.g. {OUT.relative_to(HERE.parent)})")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every row")
    parser.add_argument("--sure", action="store_true", help="report: blend the pass in by SURE (the pilot fixed)")
    parser.add_argument("--radii", type=float, nargs="+", default=[0], help="SURE's window (0: the whole image)")
    parser.add_argument("--bm3d-stage", action="store_true", help="report: also BM3D's own second stage (grey)")
    args = parser.parse_args()
    pilots(args) if args.command == "pilots" else report(args)


if __name__ == "__main__":
    main()
