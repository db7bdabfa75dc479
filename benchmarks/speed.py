"""One speed script: our fit against the plain eager reference (and deepinv's
DeepImagePrior where it is installed), side by side, on one device.

For each size (grey and RGB) it measures, each in a fresh subprocess so that peak
memory is the run's own:
- set-up seconds (building, first step: cuDNN autotuning, CUDA graph capture or a
  torch.compile are in there), reported apart from the steady state;
- steady-state milliseconds per iteration over ``--iterations`` steps;
- time to result: set-up plus ``--result-iterations`` steps (the paper's 3000 by default);
- peak memory: CUDA's max allocated bytes, or the process's peak resident set on CPU; on
  CUDA also the timed steps' own peak (``steady_peak_memory_mb``), apart from set-up's
  cuDNN autotuning, whose trial workspaces dominated the whole peak on an H200.
Then it prints the ratios ours / reference. ``--ensembles 2 4 8`` also times our fit with
that many members in one batched call (``ensemble=K``): the cost of an ensemble per
device, from which ``fit.default_ensemble`` is chosen. One run does every measurement;
results go to ``--out`` as JSON lines. Meant to run unchanged on a CPU and on an H100/H200:

    python benchmarks/speed.py --device cpu --sizes 128 256 --width 32 --out results/speed_cpu.jsonl
    python benchmarks/speed.py --device cuda --sizes 128 256 512 --width 128 --out $OUT/speed_gpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from jsonl import append, emit

IMPLEMENTATIONS = ("reference", "ours", "deepinv")


def _image(size: int, channels: int):
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    clean = 0.5 + 0.3 * np.sin(12 * xx + channels * np.arange(channels)[:, None, None]) * np.cos(9 * yy)
    return np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _steps_ours(
    image, width: int, device: str, precision: str, ensemble: int = 1, compile: bool = False, autotune: bool = True
):
    import torch

    from napari_dip.fit import Fit

    fit = Fit(
        "denoise",
        image,
        width=width,
        iterations=10**9,
        device=device,
        preview_every=10**9,
        precision=precision,
        ensemble=ensemble,
        stopping="emv",  # as denoise runs: the rule's per-member bookkeeping is part of the cost
        compile=compile,
    )
    if not autotune:  # cuDNN's heuristics instead of timing every algorithm (the fit turns that on)
        torch.backends.cudnn.benchmark = False
    steps = iter(fit)
    return lambda: next(steps)


def _steps_reference(image, width: int, device: str, precision: str, ensemble: int = 1, **_):
    import torch

    from reference_dip import skip_net

    c = image.shape[0]
    net = skip_net(32, c, width).to(device)
    z = (torch.rand(1, 32, *image.shape[1:], device=device) * 0.1).detach()
    target = torch.from_numpy(image)[None].to(device)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    state = {"avg": None}

    def step() -> None:
        opt.zero_grad()
        out = net(z + torch.randn_like(z) / 30)
        loss = torch.nn.functional.mse_loss(out, target)
        loss.backward()
        opt.step()
        loss.item()  # as the paper's notebooks do every step
        state["avg"] = out.detach() if state["avg"] is None else state["avg"] * 0.99 + 0.01 * out.detach()

    return step


def _steps_deepinv(image, width: int, device: str, precision: str, ensemble: int = 1, **_):
    """deepinv's DeepImagePrior with the ConvDecoder its documentation recommends, one Adam
    step per call (it builds its optimiser and draws z in each call, as its loop starts)."""
    import inspect

    import deepinv
    import torch

    c, h, w = image.shape
    backbone = deepinv.models.ConvDecoder(img_size=(c, h, w), in_size=[4, 4], channels=width).to(device)
    # The size of z: ``img_size`` since deepinv 0.4, ``input_size`` before.
    size = "img_size" if "img_size" in inspect.signature(deepinv.models.DeepImagePrior).parameters else "input_size"
    model = deepinv.models.DeepImagePrior(backbone, learning_rate=0.01, iterations=1, **{size: [width, 4, 4]})
    physics = deepinv.physics.Denoising()
    y = torch.from_numpy(image)[None].to(device)
    return lambda: model(y, physics)


def run_one(args: argparse.Namespace) -> dict:
    """Runs in the subprocess: one implementation at one size."""
    import torch

    torch.manual_seed(0)
    image = _image(args.size, args.channels)
    make = {"ours": _steps_ours, "reference": _steps_reference, "deepinv": _steps_deepinv}[args.implementation]
    start = time.perf_counter()
    options = {"compile": args.compile, "autotune": args.autotune}
    step = make(image, args.width, args.device, args.precision, args.ensemble, **options)
    for _ in range(args.warmup):
        step()
    _sync(args.device)
    setup = time.perf_counter() - start
    peak_setup = _peak(args.device)
    if args.device.startswith("cuda"):  # the steady state's own peak, apart from cuDNN's autotuning trials
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iterations):
        step()
    _sync(args.device)
    per_iteration = (time.perf_counter() - start) / args.iterations
    return {
        "setup_s": round(setup, 3),
        "ms_per_iteration": round(1e3 * per_iteration, 3),
        "time_to_result_s": round(setup + per_iteration * (args.result_iterations - args.warmup), 2),
        "peak_memory_mb": round(max(peak_setup, _peak(args.device)) / 2**20, 1),
        # CUDA: the peak over the timed steps alone (what memory.estimate_fit_bytes predicts);
        # on CPU the process's peak resident set cannot be reset: the same number.
        "steady_peak_memory_mb": round(_peak(args.device) / 2**20, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--channels", type=int, nargs="+", default=[1, 3])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--iterations", type=int, default=50, help="timed steady-state steps")
    p.add_argument("--warmup", type=int, default=10, help="steps counted as set-up")
    p.add_argument("--result-iterations", type=int, default=3000, help="iterations of a 'time to result'")
    p.add_argument("--precision", default="auto", help="ours: auto, float32 or bfloat16")
    p.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS))
    p.add_argument("--ensembles", type=int, nargs="*", default=[], help="also time ours with K members")
    p.add_argument("--ensemble", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument(
        "--precisions",
        nargs="*",
        default=[],
        metavar="PRECISION",
        help="also time ours, eager, at these precisions (e.g. bfloat16 on a GPU)",
    )
    p.add_argument(
        "--compiled",
        nargs="*",
        default=[],
        metavar="PRECISION",
        help="also time ours through torch.compile at these precisions (float32, bfloat16); "
        "its set-up holds the compilation",
    )
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--heuristics",
        action="store_true",
        help="also time ours with cuDNN's algorithm heuristics instead of its autotuning (set-up against steady state)",
    )
    p.add_argument("--no-autotune", dest="autotune", action="store_false", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    p.add_argument("--out", default=None)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--implementation", help=argparse.SUPPRESS)
    p.add_argument("--channel-count", dest="channel_count", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.implementation:  # the subprocess
        args.channels = args.channel_count
        print(json.dumps(run_one(args)))
        return

    import torch

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {args.device} ({name}), {torch.get_num_threads()} threads, width {args.width}")
    for size in args.sizes:
        for channels in args.channels:
            row = {
                "benchmark": "speed",
                "device": args.device,
                "device_name": name,
                "torch": torch.__version__,
                "size": size,
                "channels": channels,
                "width": args.width,
                "precision": args.precision,
            }
            # (key, implementation, members, precision, extra flags)
            runs = [(impl, impl, 1, args.precision, []) for impl in args.implementations]
            if "ours" in args.implementations:
                runs += [(f"ours_k{k}", "ours", k, args.precision, []) for k in args.ensembles]
                runs += [(f"ours_{p}", "ours", 1, p, []) for p in args.precisions]
                runs += [(f"ours_compiled_{p}", "ours", 1, p, ["--compile"]) for p in args.compiled]
                runs += [("ours_heuristics", "ours", 1, args.precision, ["--no-autotune"])] if args.heuristics else []
            for key, impl, members, precision, flags in runs:
                command = [sys.executable, __file__, "--implementation", impl, "--size", str(size)]
                command += ["--ensemble", str(members)]
                command += ["--channel-count", str(channels), "--device", args.device, "--width", str(args.width)]
                command += ["--iterations", str(args.iterations), "--warmup", str(args.warmup)]
                command += ["--result-iterations", str(args.result_iterations), "--precision", precision]
                command += flags
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    row[key] = {"skipped": f"over {args.timeout:.0f} s"}
                    continue
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["failed"])[-1]
                    row[key] = {"skipped": last[:200]}  # e.g. deepinv not installed
                    continue
                row[key] = json.loads(done.stdout.strip().splitlines()[-1])
                if key != impl and "ms_per_iteration" in row[key] and "ms_per_iteration" in row.get("reference", {}):
                    row[key]["ratio_to_reference"] = round(
                        row[key]["ms_per_iteration"] / row["reference"]["ms_per_iteration"], 3
                    )
                emit({"size": size, "channels": channels, key: row[key]})  # progress, in case a later run hangs
                if members > 1 and "ms_per_iteration" in row[key] and "ms_per_iteration" in row.get("ours", {}):
                    # Cost of the ensemble over one network: K means K networks' arithmetic.
                    row[key]["ratio_to_one"] = round(row[key]["ms_per_iteration"] / row["ours"]["ms_per_iteration"], 3)
            ours, ref = row.get("ours", {}), row.get("reference", {})
            if "ms_per_iteration" in ours and "ms_per_iteration" in ref:
                row["ratio_per_iteration"] = round(ours["ms_per_iteration"] / ref["ms_per_iteration"], 3)
                row["ratio_time_to_result"] = round(ours["time_to_result_s"] / ref["time_to_result_s"], 3)
                row["ratio_peak_memory"] = round(ours["peak_memory_mb"] / ref["peak_memory_mb"], 3)
            emit(row)
            append(args.out, [row])  # row by row: a run cut short keeps what it measured


if __name__ == "__main__":
    main()
