"""Planes, tiles and volumes: a scheduling layer above ``Fit``.

A stack ``(P, C, *S)`` is restored unit by unit — one unit per plane, or per
tile of a plane when the plane is too large — each unit its own ``Fit``. Units
of equal shape share the canvas and the input z (same seed), so a unit can be
**warm-started** from the weights and Adam state of the same tile in the
previous plane (neighbouring planes look alike): it starts near the answer and
its stopping rule ends it sooner. Neighbouring tiles of one plane differ too
much for that, so they start from scratch. Tiles overlap and are blended with tapered
weights, so no seam shows.

``Schedule`` is a generator like ``Fit``: iterate to run, stop between any two
iterations, take ``result()`` (finished units plus the current one so far).
torch and numpy only, no napari.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fit import Checkpoint, Fit, Progress, latest_kept

#: Overlap between neighbouring tiles, as a fraction of the tile side (at least
#: ``MIN_OVERLAP`` pixels): enough context that each tile's border is fitted well.
OVERLAP = 0.25
MIN_OVERLAP = 8
#: Stopping-rule settings of warm-started units (``make_rule`` keywords, over the fit's own
#: ``rise`` and ``ceiling``); None keeps the fit's rule. A warm unit starts near its answer,
#: so its statistic settles sooner: measured (benchmarks/stack_warm_start.py) a shorter
#: window and patience cost no quality. No growth guard: a warm start's raw outputs barely
#: change at first, so their variance would grow many times over without any peak having
#: passed. No rise, and the ceiling at the noise variance even under the photon settings:
#: replayed on 7 warm planes of a 16-bit stack, the lowest kept 0.52 dB under the peak on
#: average, the photon settings' rise 1.04 (BENCHMARKS.md, "The ceiling under the photon
#: settings").
WARM_RULE: dict[str, float | None] | None = {
    "window": 50,
    "patience": 100,
    "growth": 0,
    "rise": None,
    "ceiling": 1.0,
    "plateau": 0,  # a warm unit's statistic lies flat from its start (not measured with one)
    "flat": 0,  # all pixels: the warm units' replays watched them all
    "white": None,  # not measured on warm units (they start fitted)
    "overfit": None,
    "region": None,  # the whole unit: regions that stop apart were measured on cold fits only
}


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Starts of tiles of ``size`` covering ``length`` with at least ``overlap``
    pixels shared by neighbours; the last tile is shifted to end at the edge, so
    that every tile has the same size (one canvas, one warm start for all)."""
    if size >= length:
        return [0]
    step = max(size - overlap, 1)
    count = math.ceil((length - size) / step) + 1
    return sorted({min(i * step, length - size) for i in range(count)})


def plan_tiles(shape: tuple[int, int], tile_size: int | None, overlap: int | None = None) -> list[tuple[slice, slice]]:
    """Tiles of a (H, W) plane as slices, row by row; one tile when ``tile_size`` is None."""
    if tile_size is None:
        return [(slice(0, shape[0]), slice(0, shape[1]))]
    overlap = max(MIN_OVERLAP, round(OVERLAP * tile_size)) if overlap is None else overlap
    sizes = [min(tile_size, n) for n in shape]
    rows = tile_starts(shape[0], sizes[0], overlap)
    cols = tile_starts(shape[1], sizes[1], overlap)
    return [(slice(r, r + sizes[0]), slice(c, c + sizes[1])) for r in rows for c in cols]


def _ramp(length: int, before: int, after: int) -> np.ndarray:
    """1-D blending weight: rises over ``before`` pixels, falls over ``after``,
    1 between (raised cosine, never exactly 0 so every pixel has weight)."""
    weight = np.ones(length)
    for n, sl in ((before, slice(None)), (after, slice(None, None, -1))):
        if n > 0:
            n = min(n, length)
            rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
            weight[sl][:n] = np.minimum(weight[sl][:n], rise)
    return weight


def tile_weights(tiles: list[tuple[slice, slice]], scale: int = 1) -> list[np.ndarray]:
    """Blending weight of each tile (in the output frame, ``scale`` times larger):
    tapered across the overlap on sides shared with another tile, flat at the
    image border."""
    weights = []
    for tile in tiles:
        axes = []
        for axis, sl in enumerate(tile):
            other = [t[axis] for t in tiles]
            before = max((o.stop - sl.start for o in other if o.start < sl.start < o.stop), default=0)
            after = max((sl.stop - o.start for o in other if o.start < sl.stop < o.stop), default=0)
            axes.append(_ramp((sl.stop - sl.start) * scale, before * scale, after * scale))
        weights.append(np.outer(axes[0], axes[1]))
    return weights


@dataclass(frozen=True)
class Unit:
    """One fit of the schedule: a plane, or a tile of it."""

    plane: int
    tile: int
    #: The unit's pixels in its plane (measured frame), one slice per spatial axis.
    region: tuple[slice, ...]


@dataclass(frozen=True, eq=False)
class Step:
    """What the schedule reports after each iteration of the unit being fitted."""

    #: Index (0-based) of the unit being fitted, and how many there are.
    unit: int
    units: int
    plane: int
    planes: int
    tile: int
    tiles: int
    #: The unit's own ``Fit`` record (its iteration, loss, preview).
    record: Progress
    #: Seconds since the schedule started.
    elapsed: float
    #: Units finished, counting this one when this record ends it.
    done: int
    #: Seconds each finished unit took, in order.
    unit_seconds: tuple[float, ...] = ()
    #: When ``record`` has a preview: the whole plane being fitted as ``result()``
    #: would give it, (C, *S') float32 in [0, 1].
    plane_preview: np.ndarray | None = None

    @property
    def seconds_left(self) -> float | None:
        """Estimate of the time still needed: warm-started units take about as long
        as the finished warm ones (the first unit, cold, is slower)."""
        if not self.unit_seconds:
            return None
        warm = self.unit_seconds[1:] or self.unit_seconds
        mean = sum(warm) / len(warm)
        current = self.elapsed - sum(self.unit_seconds)  # 0 when this record ends a unit
        return max(mean * (self.units - self.done) - current, 0.0)


@dataclass
class UnitSummary:
    """How a finished unit went."""

    unit: Unit
    iterations: int
    seconds: float
    stopped_early: bool
    warm: bool
    skipped: bool = False
    #: Each member's kept iteration per region (``Fit.best_iterations``), or None.
    best_iterations: tuple[tuple[int, ...], ...] | None = None

    @property
    def best_iteration(self) -> int | None:
        """The latest kept iteration, or None without a rule."""
        return latest_kept(self.best_iterations)


@dataclass
class _Assembly:
    """Weighted sums of the finished tiles of every plane, in the output frame."""

    total: np.ndarray  # (P, C, *S')
    weight: np.ndarray  # (P, *S')
    done: np.ndarray = field(init=False)  # (P,) planes complete

    def __post_init__(self) -> None:
        self.done = np.zeros(self.total.shape[0], bool)


class Schedule:
    """Restore a stack ``(P, C, *S)`` (float32 in [0, 1]) plane by plane, tile by tile.

    Parameters
    ----------
    task : str
        As for ``Fit``.
    image : ndarray, shape (P, C, H, W) or (P, C, D, H, W)
        P planes (or volumes) to restore in turn.
    known : ndarray of bool, shape (P, *S), optional
        True where measured pixels are trusted (``Fit``'s ``known``): inpainting's
        mask, or the pixels that are not outliers.
    guide : ndarray, shape (P, C', *S), optional
        Flash/no-flash: the flash images.
    factor : int
        Super-resolution factor (Y and X).
    tile_size : int or None
        Restore each plane in overlapping square tiles of this side (Y and X),
        blended; ``None``: whole planes.
    warm_start : bool
        Start each unit from the weights of the same tile in the previous plane
        (the tiles of one plane are fitted from scratch).
    **options
        Passed to every ``Fit`` (network, width, iterations, lr, seed, device,
        stopping, preview_every, anisotropy, ...).
    """

    def __init__(
        self,
        task: str,
        image: np.ndarray,
        *,
        known: np.ndarray | None = None,
        guide: np.ndarray | None = None,
        factor: int = 4,
        tile_size: int | None = None,
        warm_start: bool = True,
        **options: Any,
    ) -> None:
        if image.ndim not in (4, 5):
            raise ValueError(f"image must be (P, C, H, W) or (P, C, D, H, W), got shape {image.shape}")
        self.task = task
        self.image = image
        self.known = known
        self.guide = guide
        self.factor = factor if task == "super-resolve" else 1
        self.warm_start = warm_start
        self.options = options
        self.planes, channels, *shape = image.shape
        self.shape = tuple(shape)
        lead = tuple(slice(None) for _ in shape[:-2])  # a volume's Z is never tiled
        self.tiles = [(*lead, *t) for t in plan_tiles(tuple(shape[-2:]), tile_size)]
        self.tile_size = tile_size
        f = self.factor
        out_shape = (*shape[:-2], shape[-2] * f, shape[-1] * f)
        weights = tile_weights([t[-2:] for t in self.tiles], f)
        self._weights = [w.astype(np.float32) for w in weights]
        self._assembly = _Assembly(
            np.zeros((self.planes, channels, *out_shape), np.float32),
            np.zeros((self.planes, *out_shape[-2:]), np.float32),
        )
        self.units = [Unit(p, t, region) for p in range(self.planes) for t, region in enumerate(self.tiles)]
        self._check_units()
        self.summaries: list[UnitSummary] = []
        self.fit: Fit | None = None
        self._current: Unit | None = None
        self._next = 0
        self._checkpoints: dict[int, Checkpoint] = {}
        self._elapsed = 0.0
        self._warm = False

    # -- plan ----------------------------------------------------------------------
    def _check_units(self) -> None:
        if self.known is None:
            return
        for unit in self.units:
            known = self.known[(unit.plane, *unit.region)]
            if not known.any():
                where = f"plane {unit.plane}" if len(self.tiles) == 1 else f"tile {unit.tile} of plane {unit.plane}"
                hint = "" if len(self.tiles) == 1 else "; use a larger tile_size"
                raise ValueError(f"the mask covers all of {where}: no known pixel is left to fit{hint}")

    def _output_region(self, unit: Unit) -> tuple[slice, ...]:
        f = self.factor
        *lead, rows, cols = unit.region
        return (*lead, slice(rows.start * f, rows.stop * f), slice(cols.start * f, cols.stop * f))

    def _make_fit(self, unit: Unit) -> Fit:
        extra: dict[str, Any] = {}
        if self.known is not None:
            extra["known"] = self.known[(unit.plane, *unit.region)]
        if self.guide is not None:
            extra["guide"] = self.guide[(unit.plane, slice(None), *unit.region)]
        if self.task == "super-resolve":
            extra["factor"] = self.factor
        # Only from the same tile of the previous plane: warm-starting a tile from its
        # neighbour in the same plane cost 1.4 dB (benchmarks/tiles.py).
        init = self._checkpoints.get(unit.tile) if self.warm_start else None
        image = np.ascontiguousarray(self.image[(unit.plane, slice(None), *unit.region)])
        options = dict(self.options)
        if init is not None and WARM_RULE is not None and isinstance(options.get("stopping"), str):
            # Over the fit's own rule options: what WARM_RULE does not set (the bright
            # stabilised fit's hold) still applies to warm planes.
            options["rule_options"] = {**(options.get("rule_options") or {}), **WARM_RULE}
        return Fit(self.task, image, init=init, **extra, **options)

    # -- running -------------------------------------------------------------------
    @property
    def done(self) -> int:
        """Units finished."""
        return len(self.summaries)

    @property
    def planes_started(self) -> np.ndarray:
        """(P,) True for the planes with a finished unit or the unit being fitted."""
        started = self._assembly.weight.reshape(self.planes, -1).any(axis=1)
        if self.fit is not None and self._current is not None:
            started[self._current.plane] = True
        return started

    @property
    def planes_done(self) -> np.ndarray:
        """(P,) True for the planes whose every unit is finished."""
        return self._assembly.done.copy()

    def __iter__(self) -> Iterator[Step]:
        """Run the remaining units, yielding a ``Step`` after each iteration."""
        while self._next < len(self.units) or self.fit is not None:
            if self.fit is None:
                unit = self.units[self._next]
                self._next += 1
                if self.task == "inpaint" and self.known[(unit.plane, *unit.region)].all():
                    self._finish_without_fit(unit)  # nothing to fill here
                    continue
                started = time.perf_counter()
                self._current = unit
                self._warm = self.warm_start and unit.tile in self._checkpoints
                self.fit = self._make_fit(unit)
                self._elapsed += time.perf_counter() - started
            yield from self._run_current()

    def _run_current(self) -> Iterator[Step]:
        fit, unit = self.fit, self._current
        assert fit is not None and unit is not None
        last = time.perf_counter()
        for record in fit:
            now = time.perf_counter()
            self._elapsed += now - last
            finished = fit.iteration >= fit.iterations or fit.stopped_early
            if finished:
                self._finish(unit, fit)
            preview = self._plane_preview(unit, fit, finished) if record.preview is not None else None
            yield Step(
                self._next - 1,
                len(self.units),
                unit.plane,
                self.planes,
                unit.tile,
                len(self.tiles),
                record,
                self._elapsed,
                self.done,
                tuple(s.seconds for s in self.summaries),
                preview,
            )
            last = time.perf_counter()
            if finished:
                return

    def _finish(self, unit: Unit, fit: Fit) -> None:
        self._add(unit, fit.result())
        if self.warm_start and unit.plane < self.planes - 1:
            self._checkpoints[unit.tile] = fit.checkpoint()
        seconds = self._elapsed - sum(s.seconds for s in self.summaries)
        self.summaries.append(
            UnitSummary(
                unit, fit.iteration, seconds, fit.stopped_early, bool(self._warm), best_iterations=fit.best_iterations
            )
        )
        self.fit, self._current = None, None

    def _finish_without_fit(self, unit: Unit) -> None:
        self._add(unit, self.image[(unit.plane, slice(None), *unit.region)])
        self.summaries.append(UnitSummary(unit, 0, 0.0, False, False, skipped=True))

    def _add(self, unit: Unit, values: np.ndarray) -> None:
        region = self._output_region(unit)
        weight = self._weights[unit.tile]
        assembly = self._assembly
        assembly.total[(unit.plane, slice(None), *region)] += values * weight
        assembly.weight[(unit.plane, *region[-2:])] += weight
        if unit.tile == len(self.tiles) - 1:
            assembly.done[unit.plane] = True

    def _plane(self, plane: int, partial: tuple[Unit, np.ndarray] | None = None) -> np.ndarray:
        """Plane ``plane`` assembled from its finished tiles (and ``partial``), 0 where none."""
        total, weight = self._assembly.total[plane], self._assembly.weight[plane]
        if partial is not None:
            unit, values = partial
            region = self._output_region(unit)
            total, weight = total.copy(), weight.copy()
            total[(slice(None), *region)] += values * self._weights[unit.tile]
            weight[region[-2:]] += self._weights[unit.tile]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(weight > 0, total / np.where(weight > 0, weight, 1), 0).astype(np.float32)

    def _plane_preview(self, unit: Unit, fit: Fit, finished: bool) -> np.ndarray:
        return self._plane(unit.plane, None if finished else (unit, fit.result()))

    def result(self) -> np.ndarray:
        """(P, C, *S') float32 in [0, 1]: finished units blended, the unit being
        fitted as it is now; 0 where no unit has run (see ``planes_done``)."""
        out = np.zeros_like(self._assembly.total)
        current = self._current if self.fit is not None else None
        for plane in range(self.planes):
            if self._assembly.weight[plane].any() or (current is not None and current.plane == plane):
                partial = (current, self.fit.result()) if current is not None and current.plane == plane else None
                out[plane] = self._plane(plane, partial)
        return out
