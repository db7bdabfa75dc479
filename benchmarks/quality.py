"""Denoising quality (issue 12): napari-dip against BM3D, BM3D after a variance-stabilising
transform, non-local means and Noise2Void, on photon-limited fluorescence and on Gaussian
natural images. Cases come in a "tune" split and a "held-out" split with different images,
so settings chosen on one are judged on the other; each later split ("fresh", "check",
"blind") was added after a change of the stopping rule, to judge it on images no choice
had seen (each was then looked at by the next change; "blind" is untouched so far).

Photon cases: clean photon rates (synthetic nuclei and spots from napari_dip._sample_data,
the Hubble deep field, coins, ..., blurred binary blobs, the Shepp-Logan phantom) scaled
to a peak of 5, 15 or 40 photons; counts = gain * Poisson(rate) + offset
+ Normal(0, read_noise * gain), rounded to uint16 (no hot pixels).
PSNR in photons, (restored - offset) / gain against the rate, data range = the rate's
max - min. Gaussian cases: crops of the DIP paper's images and scikit-image's, grey and
RGB, σ = 15, 25, 50 on 0..255, clipped to 0..255 as the DIP paper's code does (float32,
not rounded); PSNR on 0..255.

    python benchmarks/quality.py run                               # every case and method (long)
    python benchmarks/quality.py run --split tune --methods dip --label dip-vst \\
        --dip-kwargs '{"noise": "auto", "ensemble": 2}'
    python benchmarks/quality.py run --kind photon --methods dip --label dip-known \\
        --dip-kwargs '{"noise": "poisson", "gain": "$gain", "offset": "$offset"}'
    python benchmarks/quality.py report [--split held-out]
    python benchmarks/quality.py cases                             # list the cases

--dip-kwargs go to napari_dip.denoise untouched, except that a string value "$gain",
"$offset", "$read_noise", "$peak" or "$sigma" becomes the case's true value (a key whose
placeholder the case lacks is left out). dip-oracle runs the same keywords with no
stopping rule for --oracle-iterations and keeps the best PSNR of the output every 25
iterations (it needs the clean image: an upper bound for any stopping rule). Noise2Void
runs benchmarks/n2v_careamics.py in its own environment (--careamics-python).
--photons N takes the 40-photon cases' images and cameras to N photons (split "bright");
--smooth-truth S (Gaussian, S pixels) or --bm3d-truth (BM3D at the estimated σ) cleans the
clean image first, for photographs whose own camera noise rivals the photon noise there.
Rows are appended to --out; (case, label, size) pairs already there are skipped.
Photon cases give DIP the uint16 counts, so it returns whole counts: at gain 0.5 that alone
caps the PSNR near BM3D's (the report's "int ceiling"); --dip-input float32 gives it floats.
Two torch processes on 2 cores slow each other many times over: run one at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jsonl import append, emit, read

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "quality.jsonl"
SHARED = Path(os.environ.get("DIP_SHARED", HERE.parents[1] / "shared" / "data" / "dip"))
CAREAMICS_PYTHON = Path(os.environ.get("CAREAMICS_PYTHON", "/work/careamics-venv/bin/python"))
METHODS = ("bm3d-known", "bm3d-est", "bm3d-gat", "nlm", "n2v", "dip", "dip-oracle")
SPLITS = ("tune", "held-out", "fresh", "check", "blind", "judge", "unseen", "unseen-2", "probe", "bright")
PEAKS = (5, 15, 40)  # photons at the brightest pixel
#: (gain counts/e⁻, offset counts, read noise e⁻ rms); each photon image meets each camera once.
CAMERAS = ((0.5, 100, 1.0), (2.0, 400, 1.5), (4.5, 100, 2.0))
SIGMAS = (15, 25, 50)
ORACLE_EVERY = 25
WIDTH = 32


@dataclass(frozen=True)
class Case:
    name: str
    split: str
    kind: str  # "photon" or "gaussian"
    image: str
    params: dict[str, float] = field(hash=False)

    @property
    def seed(self) -> int:
        return zlib.crc32(self.name.encode())


def _crop(image: np.ndarray, centre: tuple[int, int], size: int) -> np.ndarray:
    """A size x size crop around ``centre``, moved inside the image."""
    y = min(max(centre[0] - size // 2, 0), image.shape[0] - size)
    x = min(max(centre[1] - size // 2, 0), image.shape[1] - size)
    if y < 0 or x < 0:
        raise ValueError(f"--size {size} is larger than an image of {image.shape[:2]}")
    return image[y : y + size, x : x + size]


def _grey(path: Path) -> np.ndarray:
    return iio.imread(path)[..., :3].mean(axis=-1)


def _nuclei(seed: int, size: int) -> np.ndarray:
    """Middle plane of the package's synthetic widefield stack, in relative photons. Its
    diffraction-limited spots are 6-12x brighter than the nuclei; scaled to the peak they
    would leave the nuclei at a fraction of a photon, so they are dimmed to 1.5x the
    brightest nucleus (still the brightest things in the image)."""
    from napari_dip._sample_data import _fluorescence_parts

    parts = _fluorescence_parts((16, size, size), seed)
    spots = parts["spots"][8]
    spots = spots * (1.5 * parts["nuclei"][8].max() / spots.max())
    return parts["background"][8] + parts["nuclei"][8] + spots


def _blobs(seed: int = 5) -> np.ndarray:
    """Blurred binary blobs (scikit-image), 256², a stand-in for labelled cells."""
    from skimage.filters import gaussian

    return gaussian(data.binary_blobs(256, blob_size_fraction=0.08, volume_fraction=0.3, rng=seed).astype(float), 2)


def _puncta(seed: int, size: int) -> np.ndarray:
    """Sparse diffraction-limited spots (vesicles, single molecules) of random brightness on
    a dim even background: mostly dark, as in many fluorescence images."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    image = np.zeros((size, size))
    n = size * size // 120
    ys, xs = rng.integers(2, size - 2, n), rng.integers(2, size - 2, n)
    np.add.at(image, (ys, xs), rng.uniform(0.3, 1.0, n))
    image = ndimage.gaussian_filter(image, 1.3)
    return 0.04 + image / image.max()


def _filaments(seed: int, size: int) -> np.ndarray:
    """Curved filaments (microtubules, actin) drawn as smooth random walks, blurred to the
    resolution limit, on a dim background lit unevenly."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    image = np.zeros((size, size))
    for _ in range(max(size // 8, 4)):
        y, x = rng.uniform(0, size, 2)
        angle, bright = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.0)
        for _ in range(4 * size):
            angle += rng.normal(0, 0.08)
            y, x = y + 0.5 * np.sin(angle), x + 0.5 * np.cos(angle)
            if not (0 <= y < size and 0 <= x < size):
                break
            image[int(y), int(x)] += bright
    image = ndimage.gaussian_filter(image, 1.0)
    yy, xx = np.mgrid[:size, :size] / size
    return 0.05 * (1 + yy + 0.5 * xx) + image / image.max()


#: Clean images: name -> (split, kind, loader(size) -> float array, grey or (H, W, 3)).
IMAGES: dict[str, tuple[str, str, Any]] = {
    "nuclei-a": ("tune", "photon", lambda s: _nuclei(0, s)),
    "hubble": ("tune", "photon", lambda s: _crop(data.hubble_deep_field().mean(axis=-1), (300, 450), s)),
    "nuclei-b": ("held-out", "photon", lambda s: _nuclei(1, s)),
    "coins": ("held-out", "photon", lambda s: _crop(data.coins(), (150, 190), s)),
    "barbara": ("tune", "gaussian", lambda s: _crop(iio.imread(SHARED / "restoration" / "barbara.png"), (332, 72), s)),
    "F16": ("tune", "gaussian", lambda s: _crop(iio.imread(SHARED / "denoising" / "F16_GT.png"), (232, 262), s)),
    "coffee": ("tune", "gaussian", lambda s: _crop(data.coffee(), (250, 330), s)),
    "camera": ("held-out", "gaussian", lambda s: _crop(data.camera(), (92, 232), s)),
    "kate": ("held-out", "gaussian", lambda s: _crop(iio.imread(SHARED / "restoration" / "kate.png"), (200, 275), s)),
    "chelsea": ("held-out", "gaussian", lambda s: _crop(data.chelsea(), (92, 182), s)),
    # Added after the stopping rule's rise was chosen (BENCHMARKS.md): never tuned on.
    "nuclei-c": ("fresh", "photon", lambda s: _nuclei(2, s)),
    "cell": ("fresh", "photon", lambda s: _crop(data.cell(), (330, 275), s)),
    "moon": ("fresh", "photon", lambda s: _crop(data.moon(), (300, 260), s)),
    "astronaut": ("fresh", "gaussian", lambda s: _crop(data.astronaut(), (140, 230), s)),
    "grass": ("fresh", "gaussian", lambda s: _crop(data.grass(), (256, 256), s)),
    "rocket": ("fresh", "gaussian", lambda s: _crop(data.rocket(), (200, 320), s)),
    # Added after camera counts took the photon settings and ES-EMV its 1 % tolerance
    # (chosen on all three splits above): the check of that choice, never tuned on.
    "nuclei-d": ("check", "photon", lambda s: _nuclei(3, s)),
    "microaneurysms": ("check", "photon", lambda s: _crop(data.microaneurysms(), (51, 51), s)),
    "ihc": ("check", "photon", lambda s: _crop(255.0 - data.immunohistochemistry().mean(axis=-1), (300, 200), s)),
    "gravel": ("check", "gaussian", lambda s: _crop(data.gravel(), (256, 256), s)),
    "clock": ("check", "gaussian", lambda s: _crop(data.clock(), (150, 220), s)),
    "retina": ("check", "gaussian", lambda s: _crop(data.retina(), (700, 560), s)),
    # Added after ES-EMV's growth guard was chosen (on all four splits above): its check.
    "nuclei-e": ("blind", "photon", lambda s: _nuclei(4, s)),
    "blobs": ("blind", "photon", lambda s: _crop(_blobs(), (128, 128), s)),
    "phantom": ("blind", "photon", lambda s: _crop(data.shepp_logan_phantom(), (230, 200), s)),
    "snail": ("blind", "gaussian", lambda s: _crop(iio.imread(SHARED / "denoising" / "snail.jpg"), (130, 250), s)),
    "brick": ("blind", "gaussian", lambda s: _crop(data.brick(), (256, 256), s)),
    "vase": ("blind", "gaussian", lambda s: _crop(iio.imread(SHARED / "inpainting" / "vase.png"), (200, 160), s)),
    # Grey textures on which auto_stop_walltime.py's fresh96 set found the rule running long
    # (0.7-1.0 dB under a plain reference's oracle peak): traced after that, so no blind split.
    "library": ("judge", "gaussian", lambda s: _crop(_grey(SHARED / "inpainting" / "library.png"), (248, 348), s)),
    "zebra": ("judge", "gaussian", lambda s: _crop(_grey(SHARED / "sr" / "zebra_GT.png"), (298, 148), s)),
    "page": ("judge", "gaussian", lambda s: _crop(data.page(), (98, 198), s)),
    # Added when every setting of the default had been chosen (2026-12-04): new draws of the
    # two synthetic photon images, to report the default once on cases nothing was tuned on.
    "nuclei-f": ("unseen", "photon", lambda s: _nuclei(5, s)),
    "blobs-b": ("unseen", "photon", lambda s: _crop(_blobs(11), (128, 128), s)),
    # Added when the photon rule's statistic moved to the flat half of the image, a change
    # found on blobs-b at 40 photons (2026-12-04): new draws again, to report it once.
    "nuclei-g": ("unseen-2", "photon", lambda s: _nuclei(6, s)),
    "blobs-c": ("unseen-2", "photon", lambda s: _crop(_blobs(13), (128, 128), s)),
    # Added after the variance-stabilised fit lost its rise (2026-12-05): kinds of image the
    # photon cases lacked (sparse spots on a dark background, filaments), to probe the default.
    "puncta": ("probe", "photon", lambda s: _puncta(21, s)),
    "filaments": ("probe", "photon", lambda s: _filaments(22, s)),
}


def all_cases() -> list[Case]:
    cases = []
    photon = [name for name, (_, kind, _) in IMAGES.items() if kind == "photon"]
    for name, (split, kind, _) in IMAGES.items():
        if kind == "photon":
            for j, peak in enumerate(PEAKS):
                gain, offset, read = CAMERAS[(photon.index(name) + j) % len(CAMERAS)]
                params = {"peak": peak, "gain": gain, "offset": offset, "read_noise": read}
                cases.append(Case(f"{name}-p{peak}", split, kind, name, params))
        else:
            cases += [Case(f"{name}-s{sigma}", split, kind, name, {"sigma": sigma}) for sigma in SIGMAS]
    return cases


def make(case: Case, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy): photon cases (rate in photons float64, counts uint16); Gaussian cases
    (0..255 float64, float32), (H, W) or (H, W, 3)."""
    image = np.asarray(IMAGES[case.image][2](size), np.float64)
    if case.params.get("smooth"):  # --smooth-truth: the source's own noise filtered out first
        from scipy import ndimage

        image = ndimage.gaussian_filter(image, case.params["smooth"])
    elif case.params.get("bm3d_truth"):  # --bm3d-truth: the same with BM3D, texture kept
        image = _bm3d(image, _estimated_sigma(image))
    rng = np.random.default_rng(case.seed)
    if case.kind == "photon":
        p = case.params
        rate = p["peak"] * image / image.max()
        counts = p["gain"] * rng.poisson(rate) + p["offset"] + rng.normal(0, p["read_noise"] * p["gain"], rate.shape)
        return rate, np.clip(np.round(counts), 0, 65535).astype(np.uint16)
    noisy = np.clip(image + rng.normal(0, case.params["sigma"], image.shape), 0, 255)
    return image, noisy.astype(np.float32)


def psnr(case: Case, clean: np.ndarray, restored: np.ndarray) -> float:
    restored = np.asarray(restored, np.float64)
    if case.kind == "photon":
        photons = (restored - case.params["offset"]) / case.params["gain"]
        return float(peak_signal_noise_ratio(clean, photons, data_range=clean.max() - clean.min()))
    return float(peak_signal_noise_ratio(clean, restored, data_range=255))


# --- Methods: each takes (case, noisy, args) and returns (restored, extra fields) -----------------


def _electrons_read(case: Case) -> float:
    """Read noise in e⁻ with the rounding to whole counts folded in (variance 1/12 count²):
    at gain 0.5 it adds a third of a photon² to the variance, as much as the read noise."""
    p = case.params
    return float(np.sqrt(p["read_noise"] ** 2 + 1 / (12 * p["gain"] ** 2)))


def _bm3d(noisy: np.ndarray, sigma: float, pilot: np.ndarray | None = None) -> np.ndarray:
    """BM3D (grey) or CBM3D (RGB), run on [0, 1]-scaled data as the package's examples do;
    with ``pilot`` (grey only), only BM3D's second (Wiener) stage, guided by it."""
    import bm3d

    scale = 255.0 if noisy.ndim == 3 else max(float(np.abs(noisy).max()), 1e-12)
    z = noisy.astype(np.float64) / scale
    if pilot is not None:
        return np.asarray(bm3d.bm3d(z, sigma / scale, stage_arg=pilot / scale)) * scale
    out = bm3d.bm3d_rgb(z, sigma / scale) if noisy.ndim == 3 else bm3d.bm3d(z, sigma / scale)
    return np.asarray(out) * scale


def _estimated_sigma(noisy: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    axis = -1 if noisy.ndim == 3 else None
    return float(estimate_sigma(noisy.astype(np.float64), channel_axis=axis, average_sigmas=True))


def bm3d_known(case: Case, noisy: np.ndarray, clean: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    if case.kind == "gaussian":
        sigma = float(case.params["sigma"])
    else:  # the true std of the counts at the mean photon level
        sigma = case.params["gain"] * float(np.sqrt(clean.mean() + _electrons_read(case) ** 2))
    return _bm3d(noisy, sigma), {"sigma": round(sigma, 4)}


def bm3d_est(case: Case, noisy: np.ndarray, clean: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    sigma = _estimated_sigma(noisy)
    return _bm3d(noisy, sigma), {"sigma": round(sigma, 4)}


def anscombe(photons: np.ndarray, read: float) -> np.ndarray:
    """Generalized Anscombe transform of Poisson(λ) + Normal(0, read²) (photons, gain 1):
    variance about 1 at every level."""
    return 2 * np.sqrt(np.maximum(photons + 3 / 8 + read**2, 0))


def inverse_anscombe(d: np.ndarray, read: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of the generalized Anscombe
    transform (Mäkitalo & Foi, IEEE TIP 22(1), 2013): E[λ | denoised D], not the algebraic
    inverse, which is biased low at a few photons."""
    d = np.maximum(d, 1.0)  # the expansion in 1/D diverges below 1; the inverse is 0 there anyway
    s = np.sqrt(1.5)
    exact = d**2 / 4 + s / (4 * d) - 11 / (8 * d**2) + 5 * s / (8 * d**3) - 1 / 8 - read**2
    return np.maximum(exact, 0)


def bm3d_gat(case: Case, noisy: np.ndarray, clean: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    p, read = case.params, _electrons_read(case)
    stabilised = anscombe((noisy.astype(np.float64) - p["offset"]) / p["gain"], read)
    photons = inverse_anscombe(_bm3d(stabilised, 1.0), read)
    return p["offset"] + p["gain"] * photons, {"read_noise_used": round(read, 4)}


def nlm(case: Case, noisy: np.ndarray, clean: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """scikit-image's documented example: h = 0.8 σ̂, fast mode, 5x5 patches, distance 6."""
    from skimage.restoration import denoise_nl_means

    sigma = _estimated_sigma(noisy)
    out = denoise_nl_means(
        noisy.astype(np.float64),
        h=0.8 * sigma,
        fast_mode=True,
        patch_size=5,
        patch_distance=6,
        channel_axis=-1 if noisy.ndim == 3 else None,
    )
    return out, {"sigma": round(sigma, 4)}


def n2v(case: Case, noisy: np.ndarray, clean: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "noisy.npy", Path(tmp) / "restored.npy"
        np.save(src, noisy.astype(np.float32))
        command = [str(args.careamics_python), str(HERE / "n2v_careamics.py"), str(src), str(dst)]
        command += ["--epochs", str(args.n2v_epochs), "--axes", "YXC" if noisy.ndim == 3 else "YX"]
        command += ["--no-batch-norm"] if args.n2v_no_batch_norm else []
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"n2v_careamics.py failed:\n{done.stderr[-2000:]}")
        settings = json.loads(done.stdout.strip().splitlines()[-1])
        return np.load(dst), {"n2v": {k: v for k, v in settings.items() if k not in ("method", "shape")}}


def dip_kwargs(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """--dip-kwargs with "$name" values replaced by the case's true parameters."""
    kwargs = {}
    for key, value in json.loads(args.dip_kwargs).items():
        if isinstance(value, str) and value.startswith("$"):
            if value[1:] not in case.params:
                continue
            value = case.params[value[1:]]
        kwargs[key] = value
    return kwargs


def dip(case: Case, noisy: np.ndarray, clean: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    import napari_dip

    kwargs = dip_kwargs(case, args)
    noisy = noisy.astype(np.float32) if args.dip_input == "float32" else noisy
    last: list[Any] = [None]

    def keep(step: Any) -> None:
        last[0] = step.record  # the final record: where the fit stopped, which iteration it kept

    out = napari_dip.denoise(
        noisy,
        channel_axis=-1 if noisy.ndim == 3 else None,
        device=args.device,
        seed=args.seed,
        callback=keep,
        **{"width": WIDTH, **kwargs},
    )
    record = last[0]
    extra = {
        "dip_kwargs": kwargs,
        "dip_input": str(noisy.dtype),
        "dip_output": str(out.dtype),
        "stopped_at": record.iteration,
        "kept_iteration": record.best_iteration,
        "kept_iterations": record.best_iterations,  # each member's, per region
    }
    return out, extra


def prepare_denoise(noisy: np.ndarray, device: str = "cpu", seed: int = 0, **kwargs: Any) -> Any:
    """``napari_dip._api.prepare`` of the default denoising fit at ``WIDTH`` for a case's
    noisy image (colour last); ``kwargs`` override or add settings."""
    from napari_dip._api import prepare

    channel_axis = -1 if noisy.ndim == 3 else None
    return prepare("denoise", noisy, channel_axis=channel_axis, device=device, seed=seed, **{"width": WIDTH, **kwargs})


def dip_oracle(case: Case, noisy: np.ndarray, clean: np.ndarray, args: argparse.Namespace) -> tuple[np.ndarray, dict]:
    """The same fit with no stopping rule, scored against the clean image every 25 iterations
    through the callback (as benchmarks/early_stopping.py scores every iteration); the best."""
    kwargs = {k: v for k, v in dip_kwargs(case, args).items() if k not in ("iterations", "stopping")}
    noisy = noisy.astype(np.float32) if args.dip_input == "float32" else noisy
    curve: list[float] = []
    best: dict[str, Any] = {"psnr": -np.inf}

    def score(step: Any) -> None:
        if step.plane_preview is None or step.record.iteration % ORACLE_EVERY:
            return
        restored = job.plane_to_user(step.plane_preview)
        curve.append(round(psnr(case, clean, restored), 3))
        if curve[-1] > best["psnr"]:
            best.update(psnr=curve[-1], iteration=step.record.iteration, image=restored)

    job = prepare_denoise(
        noisy,
        args.device,
        args.seed,
        iterations=args.oracle_iterations,
        stopping=None,
        preview_every=ORACLE_EVERY,
        **kwargs,
    )
    job.run(score)
    extra = {
        "dip_kwargs": kwargs,
        "dip_input": str(noisy.dtype),
        "oracle_iteration": best["iteration"],
        "curve_every": ORACLE_EVERY,
        "curve": curve,
    }
    return best["image"], extra


RUNNERS = {
    "bm3d-known": bm3d_known,
    "bm3d-est": bm3d_est,
    "bm3d-gat": bm3d_gat,
    "nlm": nlm,
    "n2v": n2v,
    "dip": dip,
    "dip-oracle": dip_oracle,
}


def label_of(method: str, args: argparse.Namespace) -> str:
    if method == "n2v":
        return args.n2v_label
    if args.label is None or method not in ("dip", "dip-oracle"):
        return method
    return args.label if method == "dip" else f"{args.label}-oracle"


def brighter(case: Case, photons: int) -> Case:
    """A photon ``case``'s image and camera at ``photons`` at the brightest pixel, in the split
    "bright" (a new noise draw: the seed follows the name)."""
    return dataclasses.replace(
        case, name=f"{case.image}-p{photons}", split="bright", params={**case.params, "peak": photons}
    )


def selected(args: argparse.Namespace) -> list[Case]:
    cases = [c for c in all_cases() if args.split in ("all", c.split) and args.kind in ("all", c.kind)]
    if args.photons:
        cases = [brighter(c, n) for c in cases if c.kind == "photon" and c.params["peak"] == 40 for n in args.photons]
    if args.smooth_truth:
        cases = [smoothed(c, args.smooth_truth) for c in cases if c.kind == "photon"]
    if args.bm3d_truth:
        cases = [bm3d_cleaned(c) for c in cases if c.kind == "photon"]
    return [c for c in cases if not args.cases or any(s in c.name for s in args.cases)]


def smoothed(case: Case, sigma: float) -> Case:
    """A photon ``case`` whose clean image is Gaussian-filtered (``sigma`` pixels) first: photographs
    (Hubble, coins, ihc) carry their own camera noise, which at hundreds of photons rivals the
    simulated photon noise and is scored as signal (a new noise draw: the seed follows the name)."""
    params = {**case.params, "smooth": sigma}
    return dataclasses.replace(case, name=f"{case.name}-g{sigma:g}", params=params)


def bm3d_cleaned(case: Case) -> Case:
    """As ``smoothed``, the clean image BM3D-denoised at its estimated σ instead: its texture kept."""
    return dataclasses.replace(case, name=f"{case.name}-bm3d", params={**case.params, "bm3d_truth": 1})


def run(args: argparse.Namespace) -> None:
    done = {(row["case"], row["label"], row["size"]) for row in read(args.out)}
    if "n2v" in args.methods and not args.careamics_python.exists():
        print(f"n2v skipped: no careamics environment at {args.careamics_python} (see n2v_careamics.py)")
        args.methods = [m for m in args.methods if m != "n2v"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for case in selected(args):
        clean, noisy = make(case, args.size)
        rounded_truth = None
        if case.kind == "photon":  # the exact answer in whole counts, as a uint16 output must be
            exact = case.params["offset"] + case.params["gain"] * clean
            rounded_truth = round(psnr(case, clean, np.round(exact)), 3)
        for method in args.methods:
            label = label_of(method, args)
            if (method == "bm3d-gat" and case.kind != "photon") or (case.name, label, args.size) in done:
                continue
            start = time.perf_counter()
            try:
                restored, extra = RUNNERS[method](case, noisy, clean, args)
            except Exception as err:  # one failing method must not lose the others' rows
                print(f"{case.name} {label}: FAILED {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                continue
            row = {
                "case": case.name,
                "split": case.split,
                "kind": case.kind,
                "image": case.image,
                "size": args.size,
                "channels": 3 if noisy.ndim == 3 else 1,
                "params": case.params,
                "method": method,
                "label": label,
                "psnr": round(psnr(case, clean, restored), 3),
                "noisy_psnr": round(psnr(case, clean, noisy), 3),
                "rounded_truth_psnr": rounded_truth,
                "seconds": round(time.perf_counter() - start, 2),
                "device": args.device if method.startswith("dip") else "cpu",
                **extra,
            }
            emit({k: v for k, v in row.items() if k != "curve"})
            append(args.out, [row])


# --- Report -------------------------------------------------------------------------------------


def _baseline(kind: str) -> str:
    return "bm3d-gat" if kind == "photon" else "bm3d-known"


def _mean(gaps: list[float]) -> str:
    return f"{np.mean(gaps):+.2f} ({len(gaps)})" if gaps else "–"


def report(args: argparse.Namespace) -> None:
    rows = [r for r in read(args.out) if r["size"] == args.size and (args.kind == "all" or r["kind"] == args.kind)]
    if not rows:
        sys.exit(f"no rows of size {args.size} in {args.out}")
    order = {c.name: i for i, c in enumerate(all_cases())}
    print(
        "PSNR in dB; photon cases in photons. 'int ceiling': the exact expected counts rounded to whole "
        "counts, the best any output in integer counts (uint16) can score.\n"
    )
    for split in SPLITS if args.split == "all" else (args.split,):
        table = {(r["case"], r["label"]): r for r in rows if r["split"] == split}
        if not table:
            continue
        first = {c: r for (c, _), r in reversed(table.items())}  # any row of each case
        cases = sorted(first, key=lambda c: order.get(c, len(order)))
        kinds = [k for k in ("photon", "gaussian") if any(first[c]["kind"] == k for c in cases)]
        labels = sorted({lab for _, lab in table}, key=lambda x: (METHODS.index(x) if x in METHODS else 99, x))
        print(f"### {split} (size {args.size})\n")
        print("| case | noisy | int ceiling | " + " | ".join(labels) + " |")
        print("| --- " * (len(labels) + 3) + "|")
        for case in cases:
            values = [table[(case, lab)]["psnr"] if (case, lab) in table else None for lab in labels]
            best = max(v for v in values if v is not None)
            cells = ["" if v is None else (f"**{v:.2f}**" if v == best else f"{v:.2f}") for v in values]
            ceiling = first[case].get("rounded_truth_psnr")
            ceiling = "" if ceiling is None else f"{ceiling:.2f}"
            print(f"| {case} | {first[case]['noisy_psnr']:.2f} | {ceiling} | " + " | ".join(cells) + " |")
        for kind in kinds if len(kinds) == 1 else [*kinds, "all"]:
            group = [c for c in cases if kind in ("all", first[c]["kind"])]
            means = []
            for lab in labels:
                v = [table[(c, lab)]["psnr"] for c in group if (c, lab) in table]
                partial = "" if len(v) == len(group) else f" ({len(v)}/{len(group)})"
                means.append(f"{np.mean(v):.2f}{partial}" if v else "")
            print(f"| **mean {kind}** | | | " + " | ".join(means) + " |")
        print()
        dips = [lab for lab in labels if any(r["method"] == "dip" and r["label"] == lab for r in table.values())]
        if not dips:
            continue
        print(
            "| DIP label | kind | cases | gap to bm3d-gat (photon) / bm3d-known (Gaussian), dB | worst | "
            "gap to oracle, dB | stopped / oracle iteration | seconds |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for lab in dips:
            oracle = f"{lab}-oracle" if any(lb == f"{lab}-oracle" for _, lb in table) else "dip-oracle"
            for kind in kinds:
                base, orc, ratio, secs = [], [], [], []
                for case in cases:
                    r = table.get((case, lab))
                    if r is None or r["kind"] != kind:
                        continue
                    secs.append(r["seconds"])
                    b = table.get((case, _baseline(kind)))
                    if b:
                        base.append(r["psnr"] - b["psnr"])
                    o = table.get((case, oracle))
                    if o:
                        orc.append(r["psnr"] - o["psnr"])
                        ratio.append(r["stopped_at"] / o["oracle_iteration"])
                if not secs:
                    continue
                worst = f"{min(base):+.2f}" if base else "–"
                stop = f"{np.mean(ratio):.2f}" if ratio else "–"
                print(
                    f"| {lab} | {kind} | {len(secs)} | {_mean(base)} | {worst} | {_mean(orc)} vs {oracle} | "
                    f"{stop} | {np.mean(secs):.0f} |"
                )
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "report", "cases"))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--label", help="name of this DIP variant (dip-oracle: LABEL-oracle)")
    parser.add_argument("--dip-kwargs", default="{}", help="JSON keywords for napari_dip.denoise")
    parser.add_argument(
        "--dip-input",
        choices=("native", "float32"),
        default="native",
        help="photon cases: DIP gets the uint16 counts (and returns uint16) or a float32 copy",
    )
    parser.add_argument("--oracle-iterations", type=int, default=2000)
    parser.add_argument("--n2v-epochs", type=int, default=500)
    parser.add_argument("--n2v-no-batch-norm", action="store_true", help="N2V's UNet without batch norm")
    parser.add_argument("--n2v-label", default="n2v", help="name of this Noise2Void variant")
    parser.add_argument("--careamics-python", type=Path, default=CAREAMICS_PYTHON)
    parser.add_argument("--cases", nargs="+", help="keep cases whose name contains any of these")
    parser.add_argument("--split", choices=(*SPLITS, "all"), default="all")
    parser.add_argument(
        "--photons", type=int, nargs="+", help="the 40-photon cases' images at these photon levels (split 'bright')"
    )
    parser.add_argument(
        "--smooth-truth", type=float, help="photon cases: Gaussian-filter the clean image first (sigma, pixels)"
    )
    parser.add_argument(
        "--bm3d-truth", action="store_true", help="photon cases: BM3D the clean image first (sigma estimated)"
    )
    parser.add_argument("--kind", choices=("photon", "gaussian", "all"), default="all")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="DIP's seed (the noise has its own, per case)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--photon-region",
        type=int,
        help="A/B runs: the photon settings' region side (fit.PHOTON_REGION; 0: the whole image stops as one)",
    )
    args = parser.parse_args()
    if args.photon_region is not None:
        import napari_dip.fit

        napari_dip.fit.PHOTON_REGION = args.photon_region
    if args.command == "cases":
        for c in selected(args):
            print(f"{c.name:14} {c.split:9} {c.kind:9} {json.dumps(c.params)}")
    elif args.command == "report":
        report(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
