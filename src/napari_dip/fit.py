"""The Deep Image Prior fit: one optimisation loop, written as a generator.

``Fit`` sets up one task (network, input z, operator, optimiser) on a device;
iterating over it runs Adam steps and yields a ``Progress`` record after each,
so any caller (numpy API, CLI, napari worker) can stop between two iterations
and take ``Fit.result()``: the exponential moving average of the outputs.

Images here are float32 arrays ``(C, H, W)`` scaled to [0, 1]; conversion from
and to user dtypes lives in the shells. torch only, no napari.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import math
import os
import platform
import random
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ._names import PRECISIONS, TASKS
from .networks import (
    Ensemble,
    GroupedEnsemble,
    Prior,
    full_precision_output,
    input_channels,
    large_convolutions_in_bfloat16,
    memory_format,
    seeded_network,
)
from .operators import Identity, LanczosDownsample, Mask, Masked, Region, data_loss, total_variation
from .stopping import DEFAULT_RULE, Rule, flat_pixels, make_rule, region_grid

Task = Literal["denoise", "inpaint", "super-resolve", "flash-no-flash"]
NET_INPUTS = ("noise", "meshgrid")
#: Device types whose fits compile their network by default (``Fit(compile=None)``). Not
#: the CPU: inductor's C++ step was slower there (35.4 against 28.5 ms at 96², width 32)
#: after a 77-174 s compilation (BENCHMARKS.md).
COMPILE_DEVICES: tuple[str, ...] = ()
#: Eager steps before a CUDA graph is captured (cuDNN autotuning, Adam state).
GRAPH_WARMUP = 3
#: On a CPU each step's input noise is a window of one bank of normal draws, at a random
#: offset of up to this many values: drawing ~300k normals took 1-2 ms of a 14-40 ms width-32
#: step at 96² (8 % on a 2-core EPYC; the reference's step draws them too); a window is a
#: view. A new offset moves every value to another channel or pixel, so each input still
#: sees fresh noise (measured level with fresh draws: BENCHMARKS.md). On CUDA the draw is
#: cheap, and a CUDA graph needs one buffer: fresh draws there (and on a CPU with 0).
NOISE_SHIFTS = 2**20
#: Iterations between two checks of the stopping rule (each one a host sync).
STOP_CHECK_EVERY = 25
#: Seconds between previews when ``preview_every`` is None.
PREVIEW_SECONDS = 1.0
#: Per-iteration values wait on the device in chunks of this many, then go to the host
#: in one copy: one sync per chunk, and no buffer sized by the planned iterations.
CHUNK = 256
#: Iterations whose loss (and statistic) the host keeps: ``Fit.losses``, the plots.
HISTORY = 2**16
#: Member ``k`` of an ensemble is seeded with ``seed + k * MEMBER_SEED_STEP``.
MEMBER_SEED_STEP = 7919
#: Most members one ensemble may have (each costs a network's memory and arithmetic).
MAX_ENSEMBLE = 64


@dataclass(frozen=True)
class TaskDefaults:
    """Settings of the paper's code for one task."""

    iterations: int
    lr: float
    #: Std of the Gaussian noise added to z at every step ("reg_noise_std").
    input_noise: float
    #: Weight of the (normalised) moving average of the outputs ("exp_weight").
    ema: float = 0.99


def task_defaults(task: Task, factor: int = 4) -> TaskDefaults:
    """The paper's defaults for ``task`` (and super-resolution ``factor``)."""
    if task == "denoise":
        return TaskDefaults(3000, 0.01, 1 / 30)
    if task == "inpaint":
        return TaskDefaults(5000, 0.01, 0.03)
    if task == "super-resolve":
        return TaskDefaults(4000, 0.01, 0.05) if factor >= 8 else TaskDefaults(2000, 0.01, 0.03)
    if task == "flash-no-flash":
        return TaskDefaults(600, 0.1, 0.0)
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


#: Photon-limited denoising (benchmarks/denoise_settings.py, BENCHMARKS.md "Quality"). The
#: fits stop after a few hundred steps, where a 0.99 average peaks 50-100 steps before the
#: stopping rule's best iteration (up to 0.7 dB under its peak); a 0.995 one reaches back
#: further. Dim images gain from more input noise (std up to 0.06 instead of 1/30), bright
#: ones lose from it: the std grows with the noise at the median level over the value range.
PHOTON_EMA = 0.995
PHOTON_INPUT_NOISE = (1 / 30, 0.06)
PHOTON_INPUT_NOISE_PER_NOISE = 0.55
#: The 0.995 average lags the raw outputs by ~200 iterations, so it peaks after the rule's
#: variance minimum (up to 350 iterations after, on textured images): the fit keeps the
#: output where the variance has risen 20 % over its minimum. 10 % came too early on
#: 40-photon and stack-plane fits: replayed per member on two-member fits of 12 photon cases,
#: 0.25 -> 0.19 dB under the peak (worst 1.18 -> 0.80), on 39 single-network traces 0.24 ->
#: 0.21, on 16-bit stack planes 1.43 -> 0.35 (benchmarks/stopping_traces.py; BENCHMARKS.md).
PHOTON_RISE = 0.20
#: ... but only once the averaged output's residual has fallen to 1.5 noise variances (the
#: rule's ``ceiling``, which also holds back its growth guard): until then the network is
#: still fitting the image. Planes of a 16-bit stack whose range is set by a few bright
#: spots fit slowly (residual 1.1-1.3 variances at 1500 iterations, peaks past 2500), and
#: the rise and growth guard stopped them 5.8 dB under the peak on average (worst 11.9);
#: with the ceiling 1.55 (worst 3.6). The 96² photon cases under TV peak at 0.85-1.38
#: estimated variances (the noise model's gain can be low): 1.5 changes none of them, 1.1
#: lost up to 3.8 dB there (benchmarks/stopping_traces.py; BENCHMARKS.md).
PHOTON_CEILING = 1.5
#: ... and its variance statistics watch the flatter half of the image (``stopping.flat_pixels``):
#: at edges the raw outputs of blurred piecewise-constant images keep settling long after the
#: peak, where flat regions already fit noise. Over all pixels the statistic lay flat there,
#: and the rule kept outputs 400-700 iterations after the peak (binary blobs at 40 photons,
#: 0.8-1.8 dB under it). Replayed on one network's traces of 24 photon cases: 0.31 -> 0.24 dB
#: under the peak on average, worst 2.12 -> 1.16 (benchmarks/flat_statistic.py); end to end
#: see BENCHMARKS.md ("The statistic over the flat half of the image"). Its cost: slow fits of
#: high-signal 16-bit stack planes end sooner (fitted from scratch to 4000 iterations, peaks at
#: the cap: 1.33 -> 2.60 dB under them, replayed; the white residual below mends it);
#: warm-started planes keep all pixels (``schedule.WARM_RULE``).
PHOTON_FLAT = 0.5
#: ... and no output counts until the averaged output's residual looks white: the correlation
#: of neighbouring residual values has fallen to 0 (``stopping.Rule``'s ``white``; it needs no
#: noise level). Replayed on one network's saved runs (benchmarks/flat_statistic.py): planes
#: of a 16-bit stack fitted from scratch 2.60 -> 0.22 dB under their peaks (worst 4.68 ->
#: 0.53; they end after ~3000-4000 iterations instead of 1100-2200), the 24 photon cases 0.24
#: -> 0.22 (worst 1.16 -> 0.73). End to end: 24 of 30 photon cases the same, nuclei-d at 40
#: photons +0.70 dB, microaneurysms at 5 -0.39; nuclei-d at 300 photons +4.2, ihc at 600 +3.7;
#: a stack's planes fitted separately +2.4 (BENCHMARKS.md, "A white residual").
PHOTON_WHITE = 0.0
#: ... and a member is done, keeping its best so far, once the residual's correlation has
#: fallen to this (``stopping.Rule``'s ``overfit``): the end for fits whose statistic never
#: turns (sparse spots on a dark background ran 1000 iterations past their peak). Replayed on
#: one network's saved runs of 36 photon cases: 0.19 -> 0.13 dB under the peak on average,
#: worst 1.79 -> 0.76; end to end +0.07 dB (spots at 15-40 photons +0.56 to +0.69, no case
#: below -0.06), stack planes unchanged (BENCHMARKS.md, "A high-passed residual").
PHOTON_OVERFIT = -0.05
#: ... and the rise counts only once the statistic has settled (``stopping.Rule``'s ``settle``:
#: its lowest fell by less than 5 % over the last 200 iterations): over the flat half it
#: wobbles by 20-60 % while it still falls, and on the phantom at 128² (40 photons) the rise
#: fired on a wobble at 750 iterations for a peak at 1625, 2.6 dB under it. Replayed on one
#: network's saved runs of 21 photon cases at 128²: 0.23 -> 0.10 dB under the peak on
#: average, worst 2.64 -> 0.40; of 24 at 96² 0.22 -> 0.20, worst 1.82 -> 1.16 (BENCHMARKS.md,
#: "A rise that waits for the statistic to settle", with the end-to-end rows).
PHOTON_SETTLE = True
#: ... and planes of 256² and more stop per region of 128² or more (``stopping.Rule``'s
#: ``region``): parts of one image peak hundreds of iterations apart, and the whole image's
#: statistic turned 700-1000 iterations before the peak on nuclei at 256². Replayed per 128²
#: quadrant on one network's saved runs of six photon cases at 256²: +0.25 dB on average over
#: the whole image's rule (nuclei +0.50 to +1.10, the phantom -0.18); end to end with two
#: members +0.29 dB (nuclei +0.75 and +0.82, now over BM3D+GAT; the others -0.08 to +0.17) at
#: 0.9-2.7x the time, at 384² nuclei +1.51 and the phantom +0.46 (BENCHMARKS.md, "A stopping time
#: per region, end to end at 256²"); at 96² smaller regions gained nothing (too few flat values).
PHOTON_REGION = 128
#: The variance-stabilised fit (``noise="poisson"``) keeps no rise: its raw outputs' variance
#: lies nearly flat while its PSNR still climbs, and a 20 % rise fired on a fluctuation once
#: the residual was white (the phantom at 40 photons kept 671 for a peak at 1600, 3.3 dB
#: under it). Replayed on one network's saved runs of 26 photon cases (5-40 photons; the
#: white gate on): 0.34 -> 0.21 dB under the peak on average, worst 3.33 -> 1.30; on the
#: linear fit a rise and none are level (0.22 / 0.21). End to end on ten 40-photon cases
#: +0.21 dB (the phantom +2.28, the others -0.22 to +0.12; BENCHMARKS.md, "The
#: variance-stabilised fit under the white gate").
STABILISED_RISE = None
#: ... and its outputs count only once the residual's neighbour correlation is down to
#: -0.015, not 0: on bright piecewise-constant images it hovers at -0.003 to -0.015 for
#: thousands of iterations while the PSNR climbs (the phantom at 150 photons: 32 dB at 800
#: iterations, its peak 41.0 at 3000), and the patience ended the fit at 1000, 8.8 dB under.
#: Replayed on one network's saved stabilised runs: 13 cases at 15-40 photons 0.18 -> 0.14 dB
#: under the peak (worst 0.56 either way), 5 at 150 photons 1.84 -> 0.10 (worst 8.84 -> 0.22;
#: BENCHMARKS.md, "Bright images").
STABILISED_WHITE = -0.015
#: ... and on bright images (``noise.AUTO_STABILISE_PHOTONS`` or more at the bright end) a
#: member's patience does not end it while its averaged output's residual is above this many
#: noise variances (``stopping.Rule``'s ``hold``): finely textured images (coins at 300-600
#: photons) fit slowly, their statistic finding a new lowest only every 200-700 iterations,
#: and the patience ended them with the residual at 1.4 variances, 1.5-2.3 dB under their
#: peaks and under the noisy input. Replayed on one network's saved stabilised runs of 24
#: bright cases (40-600 photons): 0.45 -> 0.29 dB under the peak on average. End to end on 25
#: bright cases: +0.21 dB on average, the coins +0.95 to +1.72 (now over the noisy input), the
#: phantom at 80 photons +2.01; binary blobs, whose gain reads low, lose 0.03-0.60 (still 1.3-1.9
#: over BM3D+GAT) and run 2-3x longer. A hold at 1.2 lost nothing but gained less (the coins
#: +0.5 to +0.9, none at 300 photons; BENCHMARKS.md, "Bright textured images").
STABILISED_HOLD = 1.0
#: Denoising's total-variation term (DIP-TV), as a multiple of the noise std: weight
#: 2 * DENOISE_TV * σ against the mean squared error, the MAP weight of a gradient prior
#: whose scale follows the noise. On photon-limited images (tune and held-out splits, one
#: network) 0.3 kept 0.7 dB more than the plain loss on average, 0.1 0.5 dB, 0.6 and 1.0
#: blurred (BENCHMARKS.md, "Total variation for photon-limited images").
DENOISE_TV = 0.3
#: Natural images under Gaussian noise take a weaker term, and only where the noise is
#: strong: at σ 25-50 (of 255) 0.1 gained 0.23 dB on average on 27 cases (−0.31 to +0.89;
#: +0.15 on the 21 outside the split where it was found), at σ 15 texture lost (barbara
#: −0.33, vase −0.55) as much as smooth images gained. So the strength ramps from 0 to
#: GAUSSIAN_TV as the noise std (in the fitted [0, 1] units, where σ 15 reads 0.054-0.076
#: and σ 25 0.088-0.096) goes over GAUSSIAN_TV_RAMP (BENCHMARKS.md, "A weak TV term for
#: Gaussian noise").
GAUSSIAN_TV = 0.1
GAUSSIAN_TV_RAMP = (0.05, 0.08)


def gaussian_tv(noise_std: float) -> float:
    """The TV strength (noise stds) for a natural image with Gaussian noise of this std in
    the fitted [0, 1] units: 0 up to the ramp's start, ``GAUSSIAN_TV`` from its end, linear
    between (so that a slightly stronger noise never changes the fit abruptly)."""
    start, end = GAUSSIAN_TV_RAMP
    if not math.isfinite(noise_std):
        return 0.0
    return GAUSSIAN_TV * min(max((noise_std - start) / (end - start), 0.0), 1.0)


def tv_weight(strength: float, noise_variance: float) -> float:
    """``Fit``'s ``tv`` weight for a strength in noise stds, given the noise variance in the
    fitted [0, 1] units; 0 when the variance is unknown."""
    if not (math.isfinite(noise_variance) and noise_variance > 0):
        return 0.0
    return 2.0 * strength * math.sqrt(noise_variance)


def photon_options(
    relative: float, rule: str | None = DEFAULT_RULE, *, stabilised: bool = False, bright: bool = False
) -> dict[str, object]:
    """Fit settings for a photon-limited image (measured so, or a camera's 16-bit counts)
    whose noise std at the median level is ``relative`` times its value range (the [0, 1]
    the network fits), stopped by ``rule`` (the rise was measured for the variance rules
    only); ``stabilised``: the fit sees the variance-stabilised image (``noise="poisson"``);
    ``bright``: its bright end holds ``noise.AUTO_STABILISE_PHOTONS`` photons or more."""
    low, high = PHOTON_INPUT_NOISE
    options: dict[str, object] = {
        "ema": PHOTON_EMA,
        "input_noise": min(max(PHOTON_INPUT_NOISE_PER_NOISE * relative, low), high),
    }
    if rule in ("wmv", "emv"):
        # No plateau: measured on Gaussian images only (slow photon fits, e.g. planes of
        # 16-bit stacks, lie flat long before their peak).
        options["rise"], options["ceiling"], options["plateau"] = PHOTON_RISE, PHOTON_CEILING, 0.0
        options["flat"], options["white"], options["overfit"] = PHOTON_FLAT, PHOTON_WHITE, PHOTON_OVERFIT
        options["rule_options"] = {"settle": PHOTON_SETTLE, "region": PHOTON_REGION or None}
        if stabilised:  # the end at a high-passed residual was not measured on this fit
            options["rise"], options["overfit"], options["white"] = STABILISED_RISE, None, STABILISED_WHITE
            options["rule_options"] = {"hold": STABILISED_HOLD} if bright else {}
    return options


@dataclass(frozen=True, eq=False)
class Progress:
    """What the fit reports after each iteration.

    ``loss`` is read from the device on access (a GPU sync): read it only when
    needed. ``preview`` and ``losses`` are filled every ``preview_every``
    iterations and at the last one.
    """

    #: Iterations done so far (1-based).
    iteration: int
    #: Iterations planned.
    iterations: int
    #: Seconds since the fit started.
    elapsed: float
    #: What ``Fit.result()`` returns now (the averaged output, or under a stopping
    #: rule its best one so far), float32 (C, H, W) in [0, 1]; or None.
    preview: np.ndarray | None = None
    #: Losses of the iterations since the previous preview, or None.
    losses: np.ndarray | None = None
    #: The stopping rule's statistic for the same iterations, or None (inf: warming up).
    statistics: np.ndarray | None = None
    #: Each member's kept iteration per region (``Fit.best_iterations``), or None.
    best_iterations: tuple[tuple[int, ...], ...] | None = None
    _loss: torch.Tensor | None = field(default=None, repr=False)

    @property
    def loss(self) -> float:
        """Data-term loss of this iteration."""
        return float(self._loss) if self._loss is not None else math.nan

    @property
    def best_iteration(self) -> int | None:
        """Iteration of the rule's best output so far (the latest, where members or regions
        kept different ones), or None."""
        return latest_kept(self.best_iterations)


def latest_kept(kept: tuple[tuple[int, ...], ...] | None) -> int | None:
    """The latest of every member's and region's kept iterations (``Fit.best_iterations``)."""
    return None if kept is None else max(max(member) for member in kept)


def canvas_length(n: int, multiple: int, min_size: int) -> int:
    """Smallest length >= max(n, min_size) that is a multiple of ``multiple``."""
    n = max(n, min_size)
    return -(-n // multiple) * multiple


def canvas_geometry(
    shape: tuple[int, ...], net: Prior, scales: tuple[int, ...] | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Canvas (in measured pixels) around an image of ``shape`` that ``net`` accepts
    once each axis is enlarged by ``scales`` (super-resolution), and where the image
    starts in it (centred)."""
    ndim = len(shape)
    scales = scales or (1,) * ndim
    multiples, min_sizes = _per_axis(net.multiple, ndim), _per_axis(net.min_size, ndim)
    canvas = tuple(
        canvas_length(n, m // math.gcd(m, f), -(-low // f))
        for n, m, low, f in zip(shape, multiples, min_sizes, scales, strict=True)
    )
    start = tuple((c - n) // 2 for c, n in zip(canvas, shape, strict=True))
    return canvas, start


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; others are checked."""
    if device == "auto" or device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: Apple MPS is not available on this machine; use device='auto' or 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


#: From this width on, "auto" takes bfloat16 on CPUs with bfloat16 arithmetic (AMX tiles or
#: AVX-512 BF16): there the convolutions dominate and a step runs 1.3-1.7x faster (width 64
#: and 128, one network or two grouped, volumes 2.2x), its oracle peak 0.03 (width 64) and
#: 0.11 dB (128) lower on average, less than another seed moves it. At width 32 a step gains
#: 0.9x at most with AMX and nothing, or loses, with AVX-512 BF16 on one network
#: (BENCHMARKS.md, "Precision on CPU").
BFLOAT16_MIN_WIDTH = 64
#: Under precision "mixed", stride-1 convolutions (not pointwise) of at least this many output pixels x
#: input x output channels run in bfloat16 (``networks.large_convolutions_in_bfloat16``).
MIXED_WORK = 10**6


#: The caps of oneDNN's instruction set (``ONEDNN_MAX_CPU_ISA``) that leave it bfloat16
#: arithmetic. Under a lower cap oneDNN emulates bfloat16 even on a CPU that has it: a 36→32
#: convolution at 96² took 15.4 ms against 1.9 in float32 under AVX2 (0.5 uncapped), and a
#: width-32 step 4.1x the eager reference's under "mixed" (AMD EPYC with AVX-512 BF16).
ONEDNN_BFLOAT16_CAPS = frozenset(
    {
        "ALL",
        "DEFAULT",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512",
        "AVX10_1_512_AMX",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
    }
)


def _cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX tiles or AVX-512 BF16) and oneDNN,
    which runs the convolutions, is there and not capped below it; elsewhere bfloat16 is
    emulated and slower. An unknown cap counts as a low one: float32 is at worst ~1.5x slower
    than native bfloat16, emulated bfloat16 up to 8x."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    native = any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")  # oneDNN's own order
    uncapped = cap is None or cap.strip().upper() in ONEDNN_BFLOAT16_CAPS
    return native and uncapped and torch.backends.mkldnn.is_available()


def resolve_precision(precision: str, device: torch.device, width: int = 128) -> str:
    """The precision "auto" stands for: on CPUs with native bfloat16 arithmetic, bfloat16
    for networks of ``BFLOAT16_MIN_WIDTH`` channels or more and "mixed" (the largest
    convolutions in bfloat16, ``MIXED_WORK``) below; float32 elsewhere (GPUs: until
    measured there)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type != "cpu" or not _cpu_has_bfloat16():
        return "float32"
    return "bfloat16" if width >= BFLOAT16_MIN_WIDTH else "mixed"


#: Members ``ensemble="auto"`` fits for small 2-D skip-family denoising fits (else one):
#: two members (one grouped network) cost 2.0-2.2x one on a CPU and added 0.25 dB on average
#: on the photon benchmark's check split. Members are not free on a GPU either: four cost
#: 3.7x one at 256² and 4.7x (and 4.1x the memory, 36.8 GB) at 512² RGB, width 128, on an
#: H200 (BENCHMARKS.md), so more than one is the default only where a fit is small.
SMALL_ENSEMBLE = 2
#: "Small": pixels per plane x width² up to this (256² at width 32, 64² at width 128),
#: where two members take minutes on a 2-core CPU and seconds on a GPU, not hours.
SMALL_WORK = 256**2 * 32**2
#: Device types where the members' cost above was measured (MPS: one network).
SMALL_ENSEMBLE_DEVICES = ("cpu", "cuda")


def default_ensemble(
    device: torch.device, pixels: int | None = None, width: int = 128, network: str = "skip", volumetric: bool = False
) -> int:
    """The members an automatic ensemble has on ``device``: ``SMALL_ENSEMBLE`` for a 2-D
    skip-family fit of ``pixels`` per plane whose work (pixels x width²) is at most
    ``SMALL_WORK`` on a CPU or GPU, else 1."""
    small = (
        device.type in SMALL_ENSEMBLE_DEVICES
        and pixels is not None
        and not volumetric
        and network in ("skip", "encoder-decoder")
        and pixels * width**2 <= SMALL_WORK
    )
    return SMALL_ENSEMBLE if small else 1


def _meshgrid(shape: tuple[int, ...]) -> torch.Tensor:
    """(1, n, *shape): coordinates in [0, 1], the last axis (x) first."""
    axes = [torch.linspace(0, 1, n) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1])[None]


def _random_subset(allowed: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A random ``fraction`` of the True pixels of ``allowed`` (at least one), as a mask."""
    candidates = allowed.flatten().nonzero().squeeze(1)
    n = max(1, int(fraction * candidates.numel()))
    chosen = torch.zeros(allowed.numel(), dtype=torch.bool)
    chosen[candidates[torch.randperm(candidates.numel(), generator=generator)[:n]]] = True
    return chosen.view(allowed.shape)


def _canvas_indices(
    canvas: tuple[int, ...], region: Region, channels: int, where: torch.Tensor | None = None
) -> torch.Tensor:
    """Flat indices into a (1, channels) + canvas tensor of the pixels of ``region``
    (only those where ``where`` is True, if given), channel by channel."""
    plane = torch.arange(math.prod(canvas)).view(canvas)[region].flatten()
    if where is not None:
        plane = plane[where.flatten()]
    offsets = torch.arange(channels)[:, None] * math.prod(canvas)
    return (offsets + plane[None, :]).flatten()


def _pad_into(image: np.ndarray, canvas: tuple[int, ...], start: tuple[int, ...]) -> np.ndarray:
    """Place ``image`` (C, *shape) at ``start`` in a canvas, reflecting at the edges."""
    pad = [(0, 0)] + [(s, c - n - s) for n, c, s in zip(image.shape[1:], canvas, start, strict=True)]
    return np.pad(image, pad, mode="symmetric")


def _per_axis(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple) else (value,) * n


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: While a CPU fit runs: blocks up to 32 MB (glibc's own ceiling for its adaptive
#: threshold) come from the heap, and up to 1 GB of free heap stays mapped. At rest:
#: 64 MB, the trim threshold glibc itself sets once it has seen a 32 MB block.
_HOST_MMAP, _HOST_TRIM_FITTING, _HOST_TRIM_AT_REST = 32 << 20, 1 << 30, 64 << 20
_host_lock = threading.Lock()
_host_fits = 0


@contextlib.contextmanager
def _host_memory_reused(device: torch.device) -> Iterator[None]:
    """Keep freed host memory mapped while a CPU fit runs (glibc only), and give it back
    to the system when the last one ends.

    A step allocates and frees the same activation buffers every iteration; glibc's
    defaults return them to the system and page-fault them back in: ~1,560 page faults
    and ~6 ms of system time per iteration of a width-32 fit at 96² on a 2-core CPU,
    against none with the buffers kept (BENCHMARKS.md). PyTorch's CPU tuning guide
    reaches the same end by preloading jemalloc or tcmalloc; this needs no preload.
    """
    global _host_fits
    libc = None
    if device.type == "cpu" and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None)
            libc.mallopt, libc.malloc_trim  # noqa: B018 (both must exist)
    if libc is None:
        yield
        return
    with _host_lock:
        _host_fits += 1
        if _host_fits == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _HOST_MMAP)
            libc.mallopt(_M_TRIM_THRESHOLD, _HOST_TRIM_FITTING)
    try:
        yield
    finally:
        with _host_lock:
            _host_fits -= 1
            if _host_fits == 0:
                libc.mallopt(_M_TRIM_THRESHOLD, _HOST_TRIM_AT_REST)
                libc.malloc_trim(0)


def _dense_view(t: torch.Tensor) -> torch.Tensor:
    """``t`` (dense) as a contiguous view: its axes in memory order (channels-last, or a
    grouped ensemble's input: members and channels last)."""
    return t if t.is_contiguous() else t.permute(*sorted(range(t.dim()), key=lambda d: -t.stride(d)))


def _flat_parameters(net: torch.nn.Module) -> torch.nn.Parameter:
    """Move every parameter of ``net`` into one flat buffer, and its gradient into another,
    as views that keep each tensor's layout; return the buffer as one parameter, with the
    gradient buffer as its ``.grad``.

    Adam then makes one fused call: per tensor, the optimiser's own overhead was about
    3 ms of a 45 ms width-32 step at 96² on a 2-core CPU (112 tensors). Each step copies
    the gradients into their views in place, so the buffers stay put, as CUDA graph
    replays need.
    """
    params = list(net.parameters())
    flat = torch.empty(sum(p.numel() for p in params), device=params[0].device, dtype=params[0].dtype)
    grads = torch.zeros_like(flat)
    offset = 0
    for p in params:
        if p.dtype != flat.dtype or p.device != flat.device:
            raise ValueError("all parameters of a network must share one dtype and device")
        # A dense tensor (plain or channels-last) spans exactly numel elements from its offset.
        view = flat.as_strided(p.shape, p.stride(), offset)
        view.copy_(p.detach())
        p.data = view
        p.grad = grads.as_strided(p.shape, p.stride(), offset)
        offset += p.numel()
    weights = torch.nn.Parameter(flat)
    weights.grad = grads
    return weights


class _History:
    """The loss (row 0) and the stopping rule's statistic (row 1) of each iteration,
    kept for the last ``HISTORY`` iterations whatever the planned count."""

    def __init__(self, rows: int, length: int, device: torch.device) -> None:
        self._chunk = torch.full((rows, max(1, min(length, CHUNK))), math.nan, device=device)
        self._filled = 0
        self._blocks: list[np.ndarray] = []  # (rows, n) host copies, oldest first
        self._kept = 0

    def append(self, loss: torch.Tensor, statistic: torch.Tensor | None = None) -> None:
        if self._filled == self._chunk.shape[1]:
            self._flush()
        self._chunk[0, self._filled] = loss
        if statistic is not None:
            self._chunk[1, self._filled] = statistic
        self._filled += 1

    def _flush(self) -> None:
        if self._filled:
            self._blocks.append(self._chunk[:, : self._filled].to("cpu", copy=True).numpy())
            self._kept += self._filled
            self._filled = 0
            while self._kept - self._blocks[0].shape[1] >= HISTORY:
                self._kept -= self._blocks.pop(0).shape[1]

    def last(self, n: int) -> np.ndarray:
        """The values of the last ``n`` iterations (fewer if not kept), (rows, n)."""
        self._flush()
        tail: list[np.ndarray] = []
        for block in reversed(self._blocks):
            if n <= 0:
                break
            tail.append(block[:, -n:])
            n -= block.shape[1]
        rows = self._chunk.shape[0]
        return np.concatenate(tail[::-1], axis=1) if tail else np.zeros((rows, 0), np.float32)


#: Warm-start state of a fit: network weights and Adam's moments, on its device.
Checkpoint = dict


class Fit:
    """One Deep Image Prior restoration, ready to iterate.

    Parameters
    ----------
    task : {"denoise", "inpaint", "super-resolve", "flash-no-flash"}
    image : ndarray, shape (C, h, w) or (C, d, h, w), float32 in [0, 1]
        The measured image: noisy, damaged, low-resolution or no-flash. Four axes
        make a volumetric fit: one 3-D network over (Z, Y, X).
    known : ndarray of bool, shape (h, w) or (d, h, w), optional
        True where the measured pixels are trusted; the others are left out of the
        loss. Inpainting needs it (False: the pixels to fill, returned from the
        network, the known ones as measured); for the other tasks it masks
        outliers such as a camera's hot pixels, which the network then fills in.
    factor : int
        Super-resolution only: the output is ``factor`` times larger along Y and X.
    guide : ndarray, shape (C', h, w) or (C', d, h, w), optional
        Flash/no-flash only: the flash image, used as the network input z.
    network, width : str, int
        The prior (see ``napari_dip.networks.NETWORKS``) and its channels per level.
    anisotropy : float
        Volumes only: Z step over XY pixel size; the 3-D network downsamples Z
        only where its sampling is not already coarser than Y and X.
    iterations, lr, input_noise, ema : optional
        ``None`` takes the task's defaults (``task_defaults``).
    net_input : {"noise", "meshgrid"}
        z: uniform noise U(0, 0.1) with 32 channels, or a coordinate grid.
    ema : float or None
        Weight of the exponential moving average of the outputs, normalised by its
        total weight so far as Adam's moments are (0 disables it).
    seed : int or None
        Seeds the weights, z and the per-step noise; CPU runs are reproducible.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    preview_every : int or None
        Progress records carry a preview every this many iterations; ``None``:
        about once a second (``PREVIEW_SECONDS``), whatever the speed.
    stopping : {"wmv", "emv", "validation"}, Rule or None
        Stop automatically when this rule (``napari_dip.stopping``) finds the
        output at its best, and return the averaged output of that iteration;
        ``iterations`` is then the cap. ``None`` runs all iterations.
    rise : float or None
        For a rule given by name: keep the output where its statistic has risen by
        this fraction over its lowest, and stop there (``napari_dip.stopping``);
        None keeps the lowest's. ``photon_options`` sets it with the long average.
    ceiling : float or None
        For a rule given by name: no output counts, nor any rise or growth, until the
        averaged output's residual has fallen to this many noise variances
        (``napari_dip.stopping``; needs ``noise_variance``). None: the rule's default,
        none under a TV term; 0: none. ``photon_options`` sets it.
    plateau : float or None
        For a rule given by name: a member is also done once its averaged output's
        residual is down to this many noise variances while its statistic lies flat
        (``napari_dip.stopping``; needs ``noise_variance``). None: the rule's default;
        0: none. ``photon_options`` sets 0.
    flat : float or None
        For a rule given by name: its variance statistics watch only this fraction of the
        image's values, where the noisy image changes least (``stopping.flat_pixels``).
        None or 0: all. ``photon_options`` sets it.
    white : float or None
        For a rule given by name, when denoising: no output counts, nor any rise or
        growth, until the correlation of neighbouring values of the averaged output's
        residual has fallen to this (0: white; ``napari_dip.stopping``). None: never
        asked. ``photon_options`` sets it.
    overfit : float or None
        For a rule given by name, when denoising: a member is also done, keeping its best
        so far, once that correlation has fallen to this (< 0: a high-passed residual,
        the noise's low frequencies fitted). None: never. ``photon_options`` sets it.
    rule_options : mapping, optional
        For a rule given by name: its settings (``make_rule`` keywords such as
        ``window``, ``patience``, ``growth``), over ``rise``, ``ceiling``, ``plateau``,
        ``flat``, ``white`` and ``overfit``: a warm-started plane's rule (``schedule.WARM_RULE``).
    noise_variance : float or None
        Denoising: the noise variance in the fitted [0, 1] units (from the noise model).
        A rule with a residual ``floor`` (ES-EMV) then also ends a member once its
        averaged output is that close to the noisy image, and one with a ``ceiling``
        counts no output before it is that close (``napari_dip.stopping``).
    tv : float
        Weight of the output's total variation (``operators.total_variation``) added to
        the loss, in its units (the data term is a mean squared error in [0, 1] units);
        0 leaves the paper's loss. ``tv_weight`` sets it from the noise.
    init : Checkpoint, optional
        Warm start: ``checkpoint()`` of a finished fit of the same network and
        canvas (a neighbouring plane or tile), whose weights and Adam moments
        this fit starts from instead of a random initialisation.
    precision : {"auto", "float32", "mixed", "bfloat16"}
        Arithmetic of the network's layers. "bfloat16" runs them under autocast (the
        output layer, the loss, Adam and the averaged output stay float32); "mixed" runs
        only the largest convolutions in bfloat16 (``MIXED_WORK``: at width 32, the
        full-resolution 3x3 ones). "auto" takes bfloat16 on CPUs with AMX tiles or AVX-512
        BF16 at width 64 and more, where oneDNN's bfloat16 convolutions make a step 1.3-1.7x
        faster, "mixed" there below width 64, and float32 elsewhere (BENCHMARKS.md). In
        float32 on a CPU, the 3x3 convolutions of width 128 from 24² on take Winograd's
        algorithm (``networks._Winograd``): a width-128 step 1.2-1.3x faster.
    ensemble : int
        Members: this many networks with their own seeds (weights and z) fitted at
        once in one batched call (skip networks on CPU: ``networks.GroupedEnsemble``, one
        grouped channels-last network; else ``networks.Ensemble``); each keeps its own averaged
        output and stopping point, and the result is their mean. 1: a single network.
    cuda_graph : bool
        On CUDA, capture the whole step in a CUDA graph after a few eager steps
        and replay it (2-3x faster for small images, where kernel launches
        dominate). Falls back to eager steps if capture fails.
    compile : bool or None
        Run the network through ``torch.compile`` (inductor), which fuses the memory-bound
        work between convolutions (BatchNorm, LeakyReLU, padding, upsampling) into fewer
        kernels; the first step pays the compilation (cached on disk for the next fit of
        the same shape). None: ``COMPILE_DEVICES`` decides by device type. Falls back to
        the eager network, with a warning, where compilation fails (no Triton, no compiler).
    """

    def __init__(
        self,
        task: Task,
        image: np.ndarray,
        *,
        known: np.ndarray | None = None,
        factor: int = 4,
        guide: np.ndarray | None = None,
        network: str = "skip",
        width: int = 128,
        anisotropy: float = 1.0,
        iterations: int | None = None,
        lr: float | None = None,
        input_noise: float | None = None,
        net_input: str = "noise",
        ema: float | None = None,
        seed: int | None = 0,
        device: str | torch.device = "auto",
        preview_every: int | None = 100,
        stopping: str | Rule | None = None,
        rise: float | None = None,
        ceiling: float | None = None,
        plateau: float | None = None,
        flat: float | None = None,
        white: float | None = None,
        overfit: float | None = None,
        rule_options: Mapping[str, float] | None = None,
        noise_variance: float | None = None,
        tv: float = 0.0,
        init: Checkpoint | None = None,
        precision: str = "auto",
        ensemble: int = 1,
        cuda_graph: bool = True,
        compile: bool | None = None,
    ) -> None:
        defaults = task_defaults(task, factor)
        if net_input not in NET_INPUTS:
            raise ValueError(f"unknown net_input {net_input!r}; choose one of {', '.join(NET_INPUTS)}")
        if task == "flash-no-flash" and guide is None:
            raise ValueError("flash-no-flash needs the flash image as guide")
        if image.ndim not in (3, 4):
            raise ValueError(f"image must be (C, H, W) or (C, D, H, W), got shape {image.shape}")
        if isinstance(ensemble, bool) or not isinstance(ensemble, int) or not 1 <= ensemble <= MAX_ENSEMBLE:
            raise ValueError(f"ensemble must be an integer from 1 to {MAX_ENSEMBLE}, got {ensemble!r}")
        self.members = members = ensemble
        self.task = task
        self.device = resolve_device(device)
        self.iterations = defaults.iterations if iterations is None else int(iterations)
        self.lr = defaults.lr if lr is None else float(lr)
        self.input_noise = defaults.input_noise if input_noise is None else float(input_noise)
        self.ema = defaults.ema if ema is None else float(ema)
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be from 0 (no averaging) to below 1, got {ema!r}")
        if isinstance(tv, bool) or not isinstance(tv, (int, float)) or not 0 <= tv < math.inf:
            raise ValueError(f"tv must be a weight >= 0 (0: no total variation term), got {tv!r}")
        self.tv = float(tv)
        self.preview_every = None if preview_every is None else max(int(preview_every), 1)
        self.iteration = 0
        self.seed = int(np.random.SeedSequence().entropy % 2**62) if seed is None else int(seed)

        channels, *shape = image.shape
        ndim = len(shape)
        if guide is not None:
            in_channels = guide.shape[0]
        elif net_input == "meshgrid":
            in_channels = ndim
        else:
            in_channels = input_channels(network, width)
        net_options = {} if ndim == 2 else {"spatial_dims": 3, "z_size": shape[0], "anisotropy": float(anisotropy)}
        self._spacing = (float(anisotropy),) * (ndim - 2) + (1.0, 1.0)  # in XY pixels, for ``tv``
        # The fit's own generators, never torch's global one: seeded fits hold in any thread.
        self.precision = resolve_precision(precision, self.device, width)
        nets = [
            seeded_network(network, in_channels, channels, width, self.seed + k * MEMBER_SEED_STEP, **net_options)
            for k in range(members)
        ]
        # Members side by side: grouped channels-last convolutions where that suits (skip
        # networks on CPU), else vmap over their stacked weights (Ensemble).
        grouped = members > 1 and GroupedEnsemble.suits(nets, self.device)
        net = GroupedEnsemble(nets) if grouped else nets[0]
        if self.precision == "bfloat16":
            for member in [net] if grouped else nets:
                full_precision_output(member)
        elif self.precision == "mixed":
            large_convolutions_in_bfloat16(net, MIXED_WORK)
        if members > 1 and not grouped:
            net = Ensemble(nets)
        cpu_gen = torch.Generator().manual_seed(self.seed + 1)
        if guide is not None and net.input_stride != 1:
            raise ValueError(f"network {network!r} takes no image input; use it for other tasks than flash-no-flash")

        # Super-resolution enlarges Y and X only (a volume keeps its planes).
        scale = factor if task == "super-resolve" else 1
        scales = (1,) * (ndim - 2) + (scale, scale)
        canvas, start = canvas_geometry(tuple(shape), net, scales)
        region: Region = tuple(slice(s, s + n) for s, n in zip(start, shape, strict=True))
        self.canvas = tuple(c * f for c, f in zip(canvas, scales, strict=True))
        self.output_region: Region = tuple(
            slice(s * f, (s + n) * f) for s, n, f in zip(start, shape, scales, strict=True)
        )

        self._image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        measured = self._image[None]
        self._known = None if known is None else torch.from_numpy(np.asarray(known, dtype=bool))
        if task == "inpaint" and known is None:
            raise ValueError("inpainting needs a mask of known pixels")
        if task == "super-resolve":
            operator = LanczosDownsample(scale, region)
            if self._known is not None:
                operator = Masked(operator, self._known)
        else:
            operator = Identity(region) if self._known is None else Mask(self._known, region)
        if self._known is not None:
            measured = measured * self._known

        # Under a TV term no default residual ceiling (0: none): the term keeps the output off
        # the noisy image, whose residual may then never fall to the noise variance (the fit
        # would run to its cap); the photon settings' ceiling is higher.
        if ceiling is None and self.tv:
            ceiling = 0.0
        settings = {
            "rise": rise,
            "ceiling": ceiling,
            "plateau": plateau,
            "flat": flat,
            "white": white,
            "overfit": overfit,
        }
        settings.update(rule_options or {})
        self.rule = None if stopping is None else make_rule(stopping, **settings)
        if self.rule is not None and (self.rule.flat or self.rule.region) and task == "super-resolve":
            raise ValueError(
                "'flat' and 'region' pick pixels in the image's own frame; leave them unset for super-resolution"
            )
        held_out = None
        if self.rule is not None and self.rule.held_out > 0:
            if task == "super-resolve":
                raise ValueError(
                    "the 'validation' rule needs the image and the output in one frame; "
                    "use 'wmv' or 'emv' for super-resolution"
                )
            usable = torch.ones(shape, dtype=torch.bool) if self._known is None else self._known
            held_out = _random_subset(usable, self.rule.held_out, cpu_gen)
            fit_known = usable & ~held_out
            operator = Mask(fit_known, region)
            measured = self._image[None] * fit_known

        s = net.input_stride
        if guide is not None:
            z = torch.from_numpy(_pad_into(np.asarray(guide, np.float32), self.canvas, start))[None]
        elif net_input == "meshgrid":
            z = _meshgrid(tuple(n // s for n in self.canvas))
        else:
            z = torch.rand(members, in_channels, *(n // s for n in self.canvas), generator=cpu_gen) * 0.1
        z = z.expand(members, *z.shape[1:])  # an image or grid input: the same for every member

        dev = self.device
        # networks.memory_format: channels-last for oneDNN on CPU (not for 3-D on AVX2), plain
        # on CUDA; stacked (5-D) ensemble weights take no channels-last.
        fmt = memory_format(ndim, dev) if members == 1 or grouped else torch.contiguous_format
        self._autocast = torch.bfloat16 if self.precision == "bfloat16" else None
        self.net: Prior = net.to(dev, memory_format=fmt)
        self.operator = operator.to(dev)
        # One view per member (no copy): each member's loss is its own fit's.
        self._measured = measured.to(dev).expand(members, *measured.shape[1:])
        # z, its noise and their sum (the network's input) take the network's layout, or its
        # first convolutions would convert the input every step (4 % of a width-32 step at
        # 96² on CPU). The noise is drawn through a dense view of its buffer: normal_() into
        # a channels-last tensor takes a serial path, ~10x slower on CPU.
        self._z = self.net.arrange(z.to(dev)) if grouped else z.to(dev).contiguous(memory_format=fmt)
        self._noise_gen = torch.Generator(device=dev).manual_seed(self.seed + 2)
        self._noise = self._noise_draw = self._noise_bank = None
        if self.input_noise > 0 and dev.type == "cpu" and NOISE_SHIFTS > 0:
            size = self._z.numel()
            self._noise_bank = torch.randn(size + min(size, NOISE_SHIFTS), generator=self._noise_gen)
            self._noise_shift = random.Random(self.seed + 3)
        elif self.input_noise > 0:
            self._noise = torch.empty_like(self._z)
            self._noise_draw = _dense_view(self._noise)
        self._z_noisy = torch.empty_like(self._z) if self.input_noise > 0 else self._z
        self._average = torch.zeros((members, channels, *self.canvas), device=dev)
        # ema**t on the device: the average is normalised as Adam's moments are, so that it
        # weighs the outputs so far and nothing else. Started from the first output instead
        # (the paper's code), that untrained output keeps ema**t of the weight (5 % after
        # 300 iterations), a blur that costs an early-stopped fit 0.2 dB (BENCHMARKS.md).
        self._ema_power = torch.ones((), device=dev)
        self._loss = torch.zeros((), device=dev)
        self._history = _History(1 if stopping is None else 2, self.iterations, dev)
        self._output = self._average
        self.stopped_early = False
        if self.rule is not None:
            self._attach_rule(region, held_out, cpu_gen, noise_variance if task == "denoise" else None)
        self._graphed = cuda_graph and dev.type == "cuda" and hasattr(torch.cuda.CUDAGraph, "register_generator_state")
        self._graph: torch.cuda.CUDAGraph | None = None
        self._side_stream: torch.cuda.Stream | None = None  # one for every warm-up step
        self.compiled = self.device.type in COMPILE_DEVICES if compile is None else bool(compile)
        # The step calls this; ``result()`` and checkpoints keep the plain module (no second
        # compilation for inference, same parameters).
        self._forward = torch.compile(self.net, dynamic=False) if self.compiled else self.net
        weights = _flat_parameters(self.net)
        self._params = list(self.net.parameters())
        self._grad_views = [p.grad for p in self._params]  # views into weights.grad, what Adam reads
        # Whether the parameters that get no gradient (biases a BatchNorm cancels:
        # networks._NormedBias) have been left out of the backward; found at the first step.
        self._unused_dropped = False
        self._optimizer = torch.optim.Adam(
            [weights], lr=self.lr, fused=dev.type in ("cpu", "cuda"), capturable=self._graphed
        )
        if init is not None:
            self._restore(init)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def checkpoint(self) -> Checkpoint:
        """Weights and Adam state now, on the device (copies): ``init=`` of a warm-started fit."""
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self._optimizer.state_dict()),
        }

    def _restore(self, init: Checkpoint) -> None:
        try:
            self.net.load_state_dict(init["net"])
        except (RuntimeError, KeyError) as err:
            raise ValueError("init is not a checkpoint of the same network, width and channels") from err
        self._optimizer.load_state_dict(init["optimizer"])

    def _on_device(self) -> contextlib.AbstractContextManager:
        """Make ``self.device`` current: streams and graph capture use the current CUDA
        device, and a worker thread starts on device 0 whatever the fit's is."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _attach_rule(
        self,
        region: Region,
        held_out: torch.Tensor | None,
        generator: torch.Generator,
        noise_variance: float | None,
    ) -> None:
        """Give the rule its sample: the held-out pixels (and their measured values) for
        validation; for the variance rules, as many random output values of each region that
        stops apart (``stopping.region_grid``; one: the whole image), as many of its flattest
        (``flat``: each region's own), with the noise variance the noisy values there, and
        with regions the region of each canvas pixel (padding: the nearest)."""
        dev, image = self.device, self._image
        if held_out is not None:
            self.rule.attach(self._average, _canvas_indices(self.canvas, region, image.shape[0], held_out).to(dev))
            self.rule.measured = image[:, held_out].reshape(-1).to(dev)
            return
        parts = region_grid(image.shape[1:], self.rule.region)
        pixels = _canvas_indices(self.canvas, self.output_region, image.shape[0])
        positions = torch.arange(image.numel()).view(image.shape)  # into ``pixels``: the image's flat order
        known = None if self._known is None else self._known.expand(image.shape)
        inside = [positions[(..., *part)].flatten() for part in parts]
        count = min(self.rule.samples, *(len(p) for p in inside))
        picks = torch.stack([p[torch.randperm(len(p), generator=generator)[:count]] for p in inside])
        watched = None
        if self.rule.flat:  # the variance statistics watch the flattest values only
            pools = []
            for part, where in zip(parts, inside, strict=True):
                flat = flat_pixels(image[(..., *part)], self.rule.flat).flatten()
                if known is not None:
                    flat &= known[(..., *part)].flatten()
                pools.append(where[flat] if bool(flat.any()) else where)
            size = min(self.rule.samples, *(len(p) for p in pools))
            watched = torch.stack([p[torch.randperm(len(p), generator=generator)[:size]] for p in pools])
            watched = pixels[watched].to(dev)
        region_map = None
        if len(parts) > 1:
            labels = torch.empty(image.shape[-2:], dtype=torch.long)
            for k, part in enumerate(parts):
                labels[part] = k
            # Canvas rows and columns to the image's nearest (the canvas adds padding around it).
            near = [
                (torch.arange(n) - r.start).clamp(0, r.stop - r.start - 1)
                for n, r in zip(self.canvas[-2:], self.output_region[-2:], strict=True)
            ]
            region_map = labels[near[0][:, None], near[1][None, :]].expand(self.canvas)
        self.rule.attach(self._average, pixels[picks].to(dev), watched, region_map)
        if noise_variance is not None:
            weight = torch.ones(picks.shape, dtype=torch.bool) if known is None else known.reshape(-1)[picks]
            self.rule.watch_residual(image.reshape(-1)[picks], weight, float(noise_variance))
            self.rule.watch_whiteness(image, self._known, self.output_region, parts)

    def _step(self) -> None:
        """One Adam step; device work only, so that a CUDA graph can capture it."""
        z = self._z_noisy
        if self._noise_bank is not None:
            shift = self._noise_shift.randrange(self._noise_bank.numel() - z.numel() + 1)
            noise = self._noise_bank.as_strided(z.shape, z.stride(), shift)  # z's dense layout
            torch.add(self._z, noise, alpha=self.input_noise, out=z)
        elif self._noise is not None:
            self._noise_draw.normal_(generator=self._noise_gen)
            torch.add(self._z, self._noise, alpha=self.input_noise, out=z)
        # No autocast cache: a CUDA graph must not capture cached casts of the weights.
        with torch.autocast(
            self.device.type, dtype=self._autocast or torch.float32, enabled=bool(self._autocast), cache_enabled=False
        ):
            out = self._forward(z)
        # Under a CUDA graph: the graph's output buffer, refreshed by each replay. Detached: a
        # reference to the autograd graph would keep its gradient accumulators alive into the
        # next step, which on CUDA then runs on another stream (torch warns, and may sync).
        self._output = out.detach()
        loss = data = data_loss(self.operator(out), self._measured)  # the mean over members too
        if self.tv:  # over the image's own pixels: the canvas padding is free
            loss = data + self.tv * total_variation(out[(..., *self.output_region)], self._spacing)
        # Summed over members instead, so that each member's gradient is that of its own fit.
        total = loss * self.members if self.members > 1 else loss
        # Gradients into their views of the flat buffer in one foreach copy, instead of
        # zeroing it and letting backward add into each (one accumulation node and one add
        # per parameter, ~120 at width 32): 1-3 % of a small CPU step, the same numbers.
        if self._unused_dropped:
            grads = torch.autograd.grad(total, self._params)
        else:  # the first step: the graph is the same at every step, so is what it leaves out
            grads = torch.autograd.grad(total, self._params, allow_unused=True)
            used = [i for i, g in enumerate(grads) if g is not None]
            # Their gradient views stay 0 (the buffer starts zeroed): Adam leaves them put.
            self._params, self._grad_views = [self._params[i] for i in used], [self._grad_views[i] for i in used]
            grads = [grads[i] for i in used]
            self._unused_dropped = True
        torch._foreach_copy_(self._grad_views, grads)
        self._optimizer.step()
        with torch.no_grad():
            self._ema_power.mul_(self.ema)
            self._average.lerp_(out.detach(), (1 - self.ema) / (1 - self._ema_power))  # 1 at the first step
            self._loss.copy_(data.detach())  # what the records report: the data term

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self._noise_gen)
        try:
            with torch.cuda.graph(graph):
                self._step()
        except RuntimeError:  # an op that cannot be captured: stay eager
            self._graphed = False
            return
        self._graph = graph

    def _compiled_step(self) -> None:
        """The first step of a compiled network, which compiles it; on failure the eager
        network takes over: the same step as if never compiled (the failure comes before
        any update; the input noise is drawn again)."""
        noise_state = self._noise_gen.get_state()
        shift_state = self._noise_shift.getstate() if self._noise_bank is not None else None
        try:
            self._step()
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # inductor's errors have no common base (no Triton, no C++ compiler)
            warnings.warn(f"torch.compile failed, running the network eagerly: {err}", RuntimeWarning, stacklevel=3)
            self._forward = self.net
            self.compiled = False
            self._noise_gen.set_state(noise_state)
            if shift_state is not None:
                self._noise_shift.setstate(shift_state)
            self._step()

    def _advance(self) -> None:
        if self._graph is None and self._graphed and self.iteration >= GRAPH_WARMUP:
            self._capture()
        if self._graph is not None:
            self._graph.replay()
            return
        step = self._compiled_step if self.compiled and self.iteration == 0 else self._step
        if self._graphed:  # warm-up before capture runs on a side stream, as CUDA graphs require
            side = self._side_stream = self._side_stream or torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            step()

    def __iter__(self) -> Iterator[Progress]:
        """Run the remaining iterations, yielding a ``Progress`` after each."""
        history, every, rule = self._history, self.preview_every, self.rule
        start = last_time = time.perf_counter()
        last_preview = self.iteration
        # Left when the loop ends or the generator is closed or collected.
        with _host_memory_reused(self.device):
            while self.iteration < self.iterations and not self.stopped_early:
                with self._on_device():
                    self._advance()
                statistic = None
                if rule is not None:  # one value per member (and region); the history keeps their mean
                    statistic = rule.update(self.iteration + 1, self._output, self._average)
                    statistic = statistic[0] if statistic.numel() == 1 else statistic.mean()
                history.append(self._loss, statistic)
                self.iteration += 1
                i, now = self.iteration, time.perf_counter()
                if rule is not None and i % STOP_CHECK_EVERY == 0 and rule.done(i):
                    self.stopped_early = True
                preview = losses = statistics = kept = None
                due = now - last_time >= PREVIEW_SECONDS if every is None else i % every == 0
                if due or i == self.iterations or self.stopped_early:
                    preview = self.result()
                    recent = history.last(i - last_preview)
                    losses = recent[0]
                    if rule is not None:
                        statistics = recent[1]
                        kept = self.best_iterations
                    last_preview, last_time = i, time.perf_counter()
                # A copy: the loss buffer is reused, and a record may be read long after.
                yield Progress(i, self.iterations, now - start, preview, losses, statistics, kept, self._loss.clone())

    @property
    def best_iteration(self) -> int | None:
        """Iteration whose averaged output ``result()`` returns under a stopping rule."""
        return None if self.rule is None else self.rule.best_iteration

    @property
    def best_iterations(self) -> tuple[tuple[int, ...], ...] | None:
        """Each member's kept iteration per region that stops apart (one region: the whole
        image), 0 before any; None without a rule. A host sync."""
        if self.rule is None:
            return None
        kept, regions = self.rule.best_iterations, self.rule.regions
        return tuple(tuple(kept[m : m + regions]) for m in range(0, len(kept), regions))

    @property
    def statistics(self) -> np.ndarray | None:
        """The stopping rule's statistic at each iteration so far (the last ``HISTORY``), or None."""
        return None if self.rule is None else self._history.last(self.iteration)[1]

    @property
    def output(self) -> torch.Tensor:
        """The last raw network output on the device, (1, C) + canvas."""
        return self._output

    @property
    def average(self) -> torch.Tensor:
        """The moving average of the outputs on the device, (1, C) + canvas."""
        return self._average

    @property
    def losses(self) -> np.ndarray:
        """Loss of each iteration so far (the last ``HISTORY``)."""
        return self._history.last(self.iteration)[0]

    def result(self) -> np.ndarray:
        """The averaged output so far, float32 (C, H, W) in [0, 1].

        For inpainting, known pixels keep their measured values; only the missing
        ones come from the network. Before the first iteration: the untrained output.
        """
        with torch.no_grad():
            if not self.iteration:
                average = self.net(self._z)
            elif self.rule is not None:  # each member's (and region's) best, the latest where none yet
                average = self.rule.kept(self._average)
            else:
                average = self._average
            # An ensemble's result is the mean of its members' (for one member: itself).
            out = average[(slice(None), slice(None), *self.output_region)].float().mean(dim=0).cpu()
        if self.task == "inpaint":
            out = torch.where(self._known, self._image, out)
        return out.numpy()
