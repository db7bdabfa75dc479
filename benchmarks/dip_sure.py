"""DIP fitted with SURE instead of the squared loss (not adopted; BENCHMARKS.md).

After Jo, Chun & Choi, "Rethinking Deep Image Prior for Denoising" (ICCV 2021): the network's
input is the noisy image itself (plus fresh noise of a std drawn up to ``--sigma-z`` noise
stds each step), and the loss is Stein's unbiased estimate of the mean squared error,
``mean((f(x) - y)^2) - s^2 + 2 s^2 div f / N``, with the divergence estimated by a finite
difference along a random direction (step ``--eps`` noise stds; ``--separate``: the
perturbed input in its own forward pass, else batched with the first, sharing BatchNorm's
statistics). Run on quality.py's photon cases in the generalized Anscombe domain with the
true camera parameters (noise std 1 there), skip net, Adam; the best PSNR of the normalised
0.99 average every ``--every`` iterations (an oracle peak) and the raw output's.

    python benchmarks/dip_sure.py ihc-p40 ... --separate [--eps 0.5] [--iterations 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q
from jsonl import append
from napari_dip.networks import seeded_network

OUT = Path(__file__).resolve().parent / "results" / "dip_sure.jsonl"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cases", nargs="+")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--eps", type=float, default=0.5)  # x sigma
    p.add_argument("--sigma-z", type=float, default=0.5)  # input noise up to this x sigma
    p.add_argument("--loss", default="sure")  # or "mse" (noisy input, plain DIP loss)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--separate", action="store_true")
    p.add_argument("--ema", type=float, default=0.99)
    a = p.parse_args()
    torch.manual_seed(0)
    cases = {c.name: c for c in q.all_cases()}
    for name in a.cases:
        case = cases[name]
        clean, noisy = q.make(case, 96)
        pr, read = case.params, q._electrons_read(case)
        v = q.anscombe((noisy.astype(np.float64) - pr["offset"]) / pr["gain"], read)
        lo, hi = v.min(), v.max()
        y = torch.tensor((v - lo) / (hi - lo), dtype=torch.float32)[None, None]
        sigma = 1.0 / (hi - lo)
        net = seeded_network("skip", 1, 1, a.width, seed=0).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=a.lr)
        g = torch.Generator().manual_seed(1)
        avg, w = torch.zeros_like(y), 0.0
        best, trace, t0 = (-1, 0), [], time.perf_counter()
        N = y.numel()
        for i in range(1, a.iterations + 1):
            sz = float(torch.rand((), generator=g)) * a.sigma_z * sigma
            x = y + sz * torch.randn(y.shape, generator=g)
            if a.loss == "sure":
                eps = a.eps * sigma
                b = torch.randn(y.shape, generator=g)
                if a.separate:
                    out = net(x.contiguous(memory_format=torch.channels_last))
                    out2 = net((x + eps * b).contiguous(memory_format=torch.channels_last))
                else:
                    both = net(torch.cat([x, x + eps * b]).contiguous(memory_format=torch.channels_last))
                    out, out2 = both[:1], both[1:]
                div = (b * (out2 - out)).sum() / eps
                loss = ((out - y) ** 2).mean() - sigma**2 + 2 * sigma**2 * div / N
            else:
                out = net(x.contiguous(memory_format=torch.channels_last))
                loss = ((out - y) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                w = a.ema * w + (1 - a.ema)
                avg.lerp_(out.detach(), (1 - a.ema) / w)
            if i % a.every == 0:
                res = []
                for o in (out.detach(), avg):
                    photons = q.inverse_anscombe(o[0, 0].double().numpy() * (hi - lo) + lo, read)
                    res.append(q.psnr(case, clean, pr["offset"] + pr["gain"] * photons))
                trace.append((i, round(res[0], 3), round(res[1], 3), round(float(loss.detach()), 6)))
                if res[1] > best[1]:
                    best = (i, res[1])
        row = {
            "benchmark": "dip_sure",
            "case": name,
            "loss": a.loss,
            "lr": a.lr,
            "eps": a.eps,
            "sigma_z": a.sigma_z,
            "width": a.width,
            "separate": a.separate,
            "iterations": a.iterations,
            "best_avg": best,
            "final_raw": trace[-1][1],
            "final_avg": trace[-1][2],
            "seconds": round(time.perf_counter() - t0, 1),
            "trace": trace,
        }
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
        print("  ", [t for t in trace if t[0] % 250 == 0], flush=True)
        append(OUT, [row])


if __name__ == "__main__":
    main()
