"""Would the slow regions of a per-region fit end sooner if the finished ones left the loss?
(issue 12; ``stopping.Rule``'s ``region``; an experiment, not adopted: BENCHMARKS.md, "A
stopping time per region at 512², and finished regions out of the loss".)

Runs the default denoising fit of a photon case (width 32) and, with ``--drop``, sets the
data term's residual to zero in every member's regions the rule has finished (checked every
25 iterations), so that the network's capacity goes to the regions still fitting. Prints a
JSON row: PSNR, where the fit stopped, each member's kept iteration per region, and which
regions had finished every 100 iterations.

    python benchmarks/region_drop.py nuclei-d-p40 --size 256 --drop
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jsonl
import quality

CHECK_EVERY = 25
TRACE_EVERY = 100


class DropFinished(torch.nn.Module):
    """The fit's operator, its output replaced by the measured values where ``mask`` is 0."""

    def __init__(self, operator: torch.nn.Module, measured: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.operator, self.measured, self.mask = operator, measured, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.lerp(self.measured, self.operator(x), self.mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--drop", action="store_true", help="finished regions leave the loss")
    parser.add_argument("--out", type=Path, help="append the row to this JSONL file")
    args = parser.parse_args()
    case = next(c for c in quality.all_cases() if c.name == args.case)
    clean, noisy = quality.make(case, args.size)
    job = quality.prepare_denoise(noisy)
    mask: torch.Tensor | None = None
    trace = []

    def watch(step: object) -> None:
        nonlocal mask
        fit, i = job.schedule.fit, step.record.iteration
        if fit is None or fit.rule is None:
            return
        rule, crop = fit.rule, (slice(None), slice(None), *fit.output_region)
        if args.drop and i % CHECK_EVERY == 0:
            live = rule._per_pixel(~rule._finished)[crop].float()  # (M, 1, H, W): 1 where still fitting
            if mask is None:
                mask = live.clone()
                fit.operator = DropFinished(fit.operator, fit._measured, mask)
            mask.copy_(live)
        if i % TRACE_EVERY == 0:
            trace.append((i, rule._finished.tolist(), rule.best_iterations))

    start = time.perf_counter()
    restored = job.run(watch)
    summary = job.schedule.summaries[-1]
    row = {
        "case": args.case,
        "size": args.size,
        "drop": args.drop,
        "psnr": round(quality.psnr(case, clean, restored), 3),
        "stopped": summary.iterations,
        "kept": summary.best_iterations,
        "seconds": round(time.perf_counter() - start, 1),
        "trace": trace,
    }
    jsonl.emit(row)
    jsonl.append(args.out, [row])


if __name__ == "__main__":
    main()
