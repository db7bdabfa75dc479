"""GPU speed and quality: napari_dip against the plain eager reference.

One script for a short lease of a GPU machine. Writes results.json and prints a
Markdown table. Run: python benchmarks/gpu_benchmark.py --out DIR
  A. ms per iteration at 256² and 512² RGB, width 128 (the paper's net), for the
     reference and for napari_dip in float32 and bfloat16.
  B. The paper's denoising run (512² RGB, σ = 25, 3000 iterations) with each:
     PSNR of the averaged output and wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data

sys.path.insert(0, str(Path(__file__).parent))
from napari_dip.fit import Fit
from reference_dip import reference_dip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1).astype(np.float64) - b) ** 2)))


DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_reference(target: np.ndarray, n: int, width: int) -> float:
    """ms per iteration of the reference, after 10 warm-up steps."""
    start = {}

    def on_step(i: int, _average: torch.Tensor) -> None:
        if i == 10:
            sync()
            start["t"] = time.perf_counter()

    reference_dip(target, n + 10, width=width, device=DEVICE, on_step=on_step)
    sync()
    return (time.perf_counter() - start["t"]) / n * 1e3


def time_ours(target: np.ndarray, n: int, width: int, cuda_graph: bool) -> float:
    fit = Fit("denoise", target, width=width, iterations=n + 10, device=DEVICE, cuda_graph=cuda_graph)
    it = iter(fit)
    for _ in range(10):
        next(it)
    sync()
    t = time.perf_counter()
    for _ in it:
        pass
    sync()
    return (time.perf_counter() - t) / n * 1e3


def check_tasks(clean: np.ndarray) -> list[dict]:
    """Each task, CUDA graph against eager steps: same quality (200 iterations, 128² RGB)."""
    rng = np.random.default_rng(1)
    known = rng.random(clean.shape[1:]) > 0.5
    low = clean.reshape(3, 32, 4, 32, 4).mean(axis=(2, 4))
    dark = np.clip(clean * 0.5 + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    cases = {
        "inpaint": ({"image": clean * known, "known": known}, clean),
        "super-resolve": ({"image": low, "factor": 4}, clean),
        "flash-no-flash": ({"image": dark, "guide": clean}, clean * 0.5),
    }
    rows = []
    for task, (kwargs, truth) in cases.items():
        row = {"task": task}
        for graph in (False, True):
            fit = Fit(task, **kwargs, width=64, iterations=200, device=DEVICE, cuda_graph=graph)
            for _ in fit:
                pass
            row["graph_psnr" if graph else "eager_psnr"] = psnr(fit.result(), truth)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--timing-iterations", type=int, default=100)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    global DEVICE
    DEVICE = args.device
    out = Path(args.out)
    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    results: dict = {"gpu": gpu, "torch": torch.__version__, "width": args.width, "speed": [], "quality": []}
    print(f"# {results['gpu']}, torch {results['torch']}", flush=True)

    astronaut = np.moveaxis(data.astronaut(), -1, 0).astype(np.float32) / 255
    if DEVICE == "cuda":  # no host synchronisation inside the loop between previews
        fit = Fit(
            "denoise", astronaut[:, :128, :128].copy(), width=16, iterations=30, device=DEVICE, preview_every=1000
        )
        it = iter(fit)
        for _ in range(5):  # eager warm-up and graph capture
            next(it)
        results["graph_captured"] = fit._graph is not None
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(20):
                next(it)
            results["syncs_in_loop"] = "none"
        except RuntimeError as err:
            results["syncs_in_loop"] = str(err).splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode(0)
        print("host syncs inside the loop:", results["syncs_in_loop"], "graph:", results["graph_captured"], flush=True)
        results["tasks"] = check_tasks(astronaut[:, 100:228, 180:308].copy())
    for side in args.sizes:
        target = np.ascontiguousarray(astronaut[:, :side, :side])
        row = {"size": side, "reference_ms": time_reference(target, args.timing_iterations, args.width)}
        for graph in (False, True):
            key = "ours_graph_ms" if graph else "ours_eager_ms"
            row[key] = time_ours(target, args.timing_iterations, args.width, graph)
        results["speed"].append(row)
        print(json.dumps(row), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))

    rng = np.random.default_rng(0)
    side = max(args.sizes)
    astronaut = np.ascontiguousarray(astronaut[:, :side, :side])
    noisy = np.clip(astronaut + rng.normal(0, 25 / 255, astronaut.shape), 0, 1).astype(np.float32)
    n = args.iterations
    t = time.perf_counter()
    ref, _ = reference_dip(noisy, n, width=args.width, device=DEVICE)
    sync()
    runs = {"reference": (ref, time.perf_counter() - t)}
    t = time.perf_counter()
    fit = Fit("denoise", noisy, width=args.width, iterations=n, device=DEVICE)
    for _ in fit:
        pass
    runs["ours"] = (fit.result(), time.perf_counter() - t)
    for name, (img, seconds) in runs.items():
        row = {
            "run": name,
            "iterations": n,
            "psnr": psnr(img, astronaut),
            "noisy_psnr": psnr(noisy, astronaut),
            "seconds": seconds,
        }
        results["quality"].append(row)
        print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
