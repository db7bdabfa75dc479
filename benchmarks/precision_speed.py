"""float32 against bfloat16 layers (autocast) for configurations ``compare_reference.py``
does not cover: grouped ensembles, a volume, and the other networks. The two fits step in
turns in one process (a shared VM's speed drifts within a minute); ratio of summed times.

    python benchmarks/precision_speed.py > results/precision_speed_cpu.txt
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from compare_reference import _images, _noisy
from napari_dip.fit import Fit

PRECISIONS = ("float32", "bfloat16")


def in_turns(make: Callable[[str], Fit], label: str, turns: int, block: int, warm: int = 4) -> None:
    fits = {p: iter(make(p)) for p in PRECISIONS}
    for steps in fits.values():  # set-up and first calls apart
        for _ in range(warm):
            next(steps)
    ms: dict[str, list[float]] = {p: [] for p in fits}
    for turn in range(turns):
        for p in PRECISIONS if turn % 2 else PRECISIONS[::-1]:
            t = time.perf_counter()
            for _ in range(block):
                next(fits[p])
            ms[p].append(1e3 * (time.perf_counter() - t) / block)
    f32, bf16 = (np.array(ms[p]) for p in PRECISIONS)
    print(
        f"{label}: float32 {np.median(f32):.1f} ms/it, bfloat16 {np.median(bf16):.1f}, "
        f"ratio {bf16.sum() / f32.sum():.2f}",
        flush=True,
    )


def main() -> None:
    common = {"iterations": 10**6, "stopping": None, "seed": 0}
    for size, width in [(64, 128), (96, 64), (96, 32)]:
        noisy = _noisy(_images(size)["camera"], 0)
        in_turns(
            lambda p, noisy=noisy, width=width: Fit("denoise", noisy, width=width, precision=p, ensemble=2, **common),
            f"{size}² width {width} ensemble 2",
            turns=16,
            block=3,
            warm=10,
        )
    volume = np.random.default_rng(0).random((1, 8, 32, 32)).astype(np.float32)
    in_turns(lambda p: Fit("denoise", volume, width=128, precision=p, **common), "volume 8x32x32 width 128", 8, 2)
    noisy = _noisy(_images(64)["camera"], 0)
    for net in ("encoder-decoder", "unet", "resnet", "deep-decoder"):
        in_turns(
            lambda p, net=net: Fit("denoise", noisy, network=net, width=128, precision=p, **common),
            f"{net} 64² width 128",
            8,
            2,
        )


if __name__ == "__main__":
    main()
