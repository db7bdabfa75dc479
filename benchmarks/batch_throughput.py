"""Batch throughput: files per minute through `napari_dip.batch` on a LocalCluster, with
1, 2, ... worker processes sharing this machine's cores (start_client's split), on
small synthetic uint16 images. Every run starts a fresh cluster and a fresh output
folder, so worker start-up (importing torch) is included, as a user would see it.

    python benchmarks/batch_throughput.py --files 8 --size 64 --workers 1 2 \
        --out benchmarks/results/batch_throughput.jsonl
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).parent))
from jsonl import append, emit


def make_files(folder: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = np.full((size, size), 20.0)
        for _ in range(6):
            cy, cx = rng.uniform(0, size, 2)
            image += 400 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(2, 6) ** 2))
        tifffile.imwrite(folder / f"cell{i:03d}.tif", rng.poisson(image).astype(np.uint16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from napari_dip._batch import _cpu_count, batch, start_client

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        make_files(src, args.files, args.size)
        for workers in args.workers:
            start = time.perf_counter()
            client, cluster = start_client(workers)
            ready = time.perf_counter() - start
            report = batch(
                [src],
                Path(tmp) / f"out{workers}",
                client=client,
                iterations=args.iterations,
                width=args.width,
                device="cpu",
                stopping=None,
            )
            total = time.perf_counter() - start
            client.close()
            cluster.close()
            assert report.ok, report.table()
            per_file = [f.seconds for f in report.files]
            row = {
                "benchmark": "batch_throughput",
                "machine": platform.processor() or platform.machine(),
                "cores": _cpu_count(),
                "workers": workers,
                "files": args.files,
                "size": args.size,
                "iterations": args.iterations,
                "width": args.width,
                "cluster_start_s": round(ready, 2),
                "total_s": round(total, 2),
                "files_per_minute": round(60 * args.files / total, 2),
                "mean_file_s": round(float(np.mean(per_file)), 2),
            }
            emit(row)
            rows.append(row)
    append(args.out, rows)


if __name__ == "__main__":
    main()
