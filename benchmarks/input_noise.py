"""How the std of the noise added to z each step ("reg_noise_std", 1/30 in the paper's
denoising code) changes the default denoise on quality.py's cases (CPU, width 32):

    python benchmarks/input_noise.py 0.0333,0.1,0.2 nuclei-a-p15 hubble-p5 nuclei-a-p40

One JSON line per (case, setting): PSNR as quality.py scores it, seconds, iterations.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality
from napari_dip._api import prepare


def main() -> None:
    settings = [float(v) for v in sys.argv[1].split(",")]
    cases = {case.name: case for case in quality.all_cases()}
    for name in sys.argv[2:]:
        case = cases[name]
        clean, noisy = quality.make(case, 96)
        for value in settings:
            job = prepare("denoise", noisy, width=quality.WIDTH, device="cpu", seed=0)
            job.schedule.options["input_noise"] = value  # not a public option: the fit's own knob
            start = time.perf_counter()
            restored = job.run()
            row = {
                "case": name,
                "input_noise": value,
                "psnr": round(quality.psnr(case, clean, restored), 3),
                "seconds": round(time.perf_counter() - start, 1),
                "iterations": job.schedule.summaries[0].iterations,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
