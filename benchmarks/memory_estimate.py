"""Estimated vs measured peak memory of CPU fits (napari_dip.memory).

For each network, size and width: ``estimate_fit_bytes`` (and its raw simulated
peak, before ``DEVICE_OVERHEAD``) against the peak RSS growth of a real ``Fit``
running a few denoising steps in a fresh subprocess (``ru_maxrss`` minus the RSS
after imports and a tiny warm-up fit). Run from the repository root:

    python benchmarks/memory_estimate.py [--quick] [--steps 3] [--precision bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys
import numpy as np
from napari_dip.fit import Fit

network, size, width, steps, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
image = np.random.default_rng(0).random((3, size, size), dtype=np.float32)
# Warm-up: oneDNN primitives, thread pools and lazy imports are not the fit's memory.
for _ in Fit("denoise", image[:, :128, :128], network=network, width=8, iterations=2, device="cpu"):
    pass
with open("/proc/self/statm") as statm:
    base = int(statm.read().split()[1]) * resource.getpagesize()
fit = Fit("denoise", image, network=network, width=width, iterations=steps, device="cpu", precision=precision)
for _ in fit:
    pass
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"canvas": list(fit.canvas), "bytes": peak - base}))
"""

FULL = [
    *(("skip", s, w) for s in (128, 256, 512, 1024) for w in (32, 64, 128)),
    *((n, s, w) for n in ("encoder-decoder", "unet", "deep-decoder") for s in (256, 512, 1024) for w in (64, 128)),
    *(("resnet", s, w) for s in (128, 256, 512) for w in (32, 64)),
]
QUICK = [("skip", 128, 32), ("skip", 256, 64), ("skip", 512, 64), ("unet", 256, 64), ("deep-decoder", 256, 64)]


def measure(network: str, size: int, width: int, steps: int, precision: str) -> tuple[tuple[int, ...], int]:
    """Canvas and peak RSS growth of a real fit, in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, network, str(size), str(width), str(steps), precision],
        check=True,
        capture_output=True,
        text=True,
    )
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return tuple(record["canvas"]), int(record["bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few small cases only")
    parser.add_argument("--steps", type=int, default=3, help="fit iterations per measurement")
    parser.add_argument(
        "--precision",
        default="float32",
        help="the real fits' (the estimate counts float32 layers; 'auto' may take bfloat16 on this CPU)",
    )
    parser.add_argument("--cache", help="JSON file of measurements to reuse and extend (to re-tune the model)")
    args = parser.parse_args()
    cache: dict[str, list] = {}
    if args.cache and os.path.exists(args.cache):
        with open(args.cache) as file:
            cache = json.load(file)

    from napari_dip import memory
    from napari_dip.networks import input_channels

    print(f"{'network':16} {'canvas':>10} {'width':>5} {'sim MB':>9} {'est MB':>9} {'RSS MB':>9} "
          f"{'est/RSS':>7} {'sim/RSS':>7} {'est s':>6}")  # fmt: skip
    for network, size, width in QUICK if args.quick else FULL:
        key = f"{network} {size} {width} {args.steps}" + ("" if args.precision == "float32" else f" {args.precision}")
        if key not in cache:
            cache[key] = measure(network, size, width, args.steps, args.precision)
            if args.cache:
                with open(args.cache, "w") as file:
                    json.dump(cache, file)
        canvas, measured = tuple(cache[key][0]), cache[key][1]
        in_ch = input_channels(network, width)
        start = time.perf_counter()
        estimate = memory.estimate_fit_bytes(network, width, in_ch, 3, canvas, "cpu")
        seconds = time.perf_counter() - start
        # The bare simulation: tensor bytes of the step and the buffers, no device overhead.
        calibrated, memory.DEVICE_OVERHEAD["cpu"] = memory.DEVICE_OVERHEAD["cpu"], memory.Overhead(1.0, 0)
        simulated = memory.estimate_fit_bytes(network, width, in_ch, 3, canvas, "cpu")
        memory.DEVICE_OVERHEAD["cpu"] = calibrated
        print(
            f"{network:16} {'x'.join(map(str, canvas)):>10} {width:5d} {simulated / 1e6:9.1f} {estimate / 1e6:9.1f} "
            f"{measured / 1e6:9.1f} {estimate / measured:7.2f} {simulated / measured:7.2f} {seconds:6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
