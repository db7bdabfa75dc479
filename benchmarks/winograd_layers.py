"""One convolution layer of our networks, forward and both gradients, with and without
Winograd's algorithm (``networks._Winograd``), per channel count and size: where it pays.

    python benchmarks/winograd_layers.py --out results/winograd_layers.jsonl
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/winograd_layers.py   # as an AVX2-only CPU runs it
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from jsonl import append, emit


def _median_ms(step, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", nargs="+", default=["36:32", "64:64", "132:128", "128:128"], help="in:out")
    p.add_argument("--sizes", type=int, nargs="+", default=[12, 24, 48, 96, 192])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import torch

    from napari_dip import networks

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", networks._cpu_capability())
    default_work, default_channels = networks.WINOGRAD_WORK, networks.WINOGRAD_CHANNELS
    rows = []
    for pair in args.channels:
        c_in, c_out = (int(c) for c in pair.split(":"))
        for size in args.sizes:
            torch.manual_seed(0)
            conv = networks._conv(c_in, c_out, 3).to(memory_format=torch.channels_last)
            x = torch.randn(1, c_in, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
            grad = torch.randn(1, c_out, size, size).contiguous(memory_format=torch.channels_last)

            def step(conv=conv, x=x, grad=grad):
                torch.autograd.grad(conv(x), (x, conv.weight, conv.bias), grad)

            ms = {}
            for key, work in (("direct", None), ("winograd", 0)):  # 0 (and no channel floor): forced
                networks.WINOGRAD_WORK, networks.WINOGRAD_CHANNELS = work, 0
                step()
                ms[key] = _median_ms(step, max(3, args.repeats // 3) if size >= 192 else args.repeats)
            networks.WINOGRAD_WORK, networks.WINOGRAD_CHANNELS = default_work, default_channels
            row = {
                "benchmark": "winograd_layers",
                "isa": isa,
                "in": c_in,
                "out": c_out,
                "size": size,
                "direct_ms": round(ms["direct"], 2),
                "winograd_ms": round(ms["winograd"], 2),
                "ratio": round(ms["winograd"] / ms["direct"], 2),
                "taken_by_default": networks._winograd_rows(x, conv.weight, 1) is not None,
            }
            emit(row)
            rows.append(row)
    append(args.out, rows)


if __name__ == "__main__":
    main()
