"""Fit settings of ``denoise`` tried on quality.py's cases (issue 12): each run is the
default fit (automatic stopping, width 32) with some Fit options changed, scored against
the clean image every 25 iterations, so one run gives both the stopped result's PSNR
and the peak its trajectory reached before it stopped. Results are scored as float32
("psnr") and rounded to whole counts ("psnr_int", integer inputs).

    python benchmarks/denoise_settings.py --split tune --kind photon \\
        --label lr0.005 --fit '{"lr": 0.005}'
    python benchmarks/denoise_settings.py report

The first rows of the results file come from before the normalised average (column
"average": first-output, the paper's code) and were scored as uint16 counts ("scored").

--fit goes to napari_dip.fit.Fit (lr, input_noise, ema, ensemble, ...); --api to
napari_dip.denoise (noise, ensemble, ...); --net to the skip network's constructor
(levels, skip: ``networks.Skip``) in place of its defaults. Rows are appended to results/denoise_settings.jsonl.
Run one at a time: two torch processes on 2 cores slow each other many times over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
from jsonl import append, emit

OUT = quality.HERE / "results" / "denoise_settings.jsonl"
EVERY = 25


def run_case(case: quality.Case, size: int, api: dict[str, Any], fit: dict[str, Any]) -> dict[str, Any]:
    clean, noisy = quality.make(case, size)
    curve: list[float] = []

    def score(step: Any) -> None:
        if step.plane_preview is not None and step.record.iteration % EVERY == 0:
            curve.append(quality.psnr(case, clean, job.plane_to_user(step.plane_preview)))

    # Scored as floats; "psnr_int" rounds the result to whole counts, as dtype="input" would.
    job = quality.prepare_denoise(noisy, preview_every=EVERY, **{"dtype": "float32", **api})
    job.schedule.options.update(fit)
    start = time.perf_counter()
    last: list[Any] = [None]

    def both(step: Any) -> None:
        score(step)
        last[0] = step.record

    result = job.run(both)
    seconds = time.perf_counter() - start
    integer = np.issubdtype(noisy.dtype, np.integer)
    return {
        "case": case.name,
        "psnr": round(quality.psnr(case, clean, result), 3),
        "psnr_int": round(quality.psnr(case, clean, np.rint(result)), 3) if integer else None,
        "peak": round(max(curve), 3),
        "peak_iteration": EVERY * (int(np.argmax(curve)) + 1),
        "stopped_at": last[0].iteration,
        "seconds": round(seconds, 1),
    }


def report(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_label: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        by_label[r["label"]][r["case"]] = r
    cases = sorted({r["case"] for r in rows}, key=lambda c: [x.name for x in quality.all_cases()].index(c))
    base = by_label.get("base", {})
    print("| label | average | " + " | ".join(cases) + " | mean Δ vs base (n) | same, rounded to counts | mean s |")
    print("| --- | --- |" + " --- |" * (len(cases) + 3))
    for label, got in by_label.items():
        cells = [f"{got[c]['psnr']:.2f} ({got[c]['peak']:.2f})" if c in got else "" for c in cases]
        deltas = [got[c]["psnr"] - base[c]["psnr"] for c in got if c in base]
        rounded = [got[c]["psnr_int"] - base[c]["psnr"] for c in got if c in base and got[c].get("psnr_int")]
        secs = np.mean([g["seconds"] for g in got.values()])
        mean = f"{np.mean(deltas):+.2f} ({len(deltas)})" if deltas else ""
        mean_int = f"{np.mean(rounded):+.2f}" if rounded else ""
        first = next(iter(got.values()))
        how = f"{first.get('average', 'normalised')}, {first.get('scored', 'float32')}"
        print(f"| {label} | {how} | " + " | ".join(cells) + f" | {mean} | {mean_int} | {secs:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--split", choices=quality.SPLITS)
    parser.add_argument("--kind", choices=("photon", "gaussian"))
    parser.add_argument("--cases", nargs="*")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--label", default="base")
    parser.add_argument("--api", default="{}", help="JSON keywords for napari_dip.denoise")
    parser.add_argument("--fit", default="{}", help="JSON keywords for napari_dip.fit.Fit")
    parser.add_argument("--net", default="{}", help="JSON keywords for networks.Skip (levels, skip)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.command == "report":
        report(args.out)
        return
    net = json.loads(args.net)
    if net:
        from napari_dip import networks

        skip = {"levels": 5, "skip": 4, **net}
        networks._BUILDERS["skip"] = lambda i, o, w: networks.Skip(i, o, w, **skip)
    cases = [
        c
        for c in quality.all_cases()
        if (args.split is None or c.split == args.split)
        and (args.kind is None or c.kind == args.kind)
        and (not args.cases or c.name in args.cases)
    ]
    api, fit = json.loads(args.api), json.loads(args.fit)
    for case in cases:
        row = {
            "label": args.label,
            "size": args.size,
            "api": api,
            "fit": fit,
            "net": net,
            **run_case(case, args.size, api, fit),
        }
        emit(row)
        append(args.out, [row])


if __name__ == "__main__":
    main()
