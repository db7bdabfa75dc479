"""Stopping rules: find the iteration where a denoising fit is at its best.

Deep Image Prior fits image structure first and noise later, so the output gets
better, then worse. A rule watches the fit and reports a statistic each
iteration whose minimum should sit near the best output; the fit stops once the
statistic has not improved for ``patience`` iterations and returns the averaged
output kept at the minimum.

- ``"wmv"``: windowed moving variance of the successive raw outputs (ES-WMV,
  Wang et al., "Early Stopping for Deep Image Prior", TMLR 2023), window ``W``.
- ``"emv"``: its exponential variant (ES-EMV), constant memory.
- ``"validation"``: a random few percent of the pixels are left out of the loss
  (as in Noise2Self); the statistic is the averaged output's error on them.

With ``tolerance`` a later statistic within ``(1 + tolerance)`` of the lowest also counts
as the best (its output is kept and the patience starts again): ES-EMV's statistic can lie
flat for hundreds of iterations while the output still improves (camera, σ 15: flat from
600 to 1100 iterations, peak at 1435), and noise decides where on the flat its strict
minimum falls. ES-EMV takes 1 % (``ExponentialVariance.default_tolerance``).

With ``floor`` and the noise's variance (``watch_residual``, set by the fit from the noise
model), a member is done once its averaged output's mean squared residual against the noisy
image (on the sampled pixels) has fallen to ``floor`` times that variance: it fits noise by
then, whatever its statistic says. On texture (grass, gravel) ES-EMV's variance keeps
falling as the network memorises the noisy image, and the fit would run to its cap; the
best outputs of the benchmark's other images lie at 0.6-1.0 times the variance, above
ES-EMV's floor of 0.35 (``ExponentialVariance.default_floor``).

With ``growth`` a member is also done once the variance of its raw outputs over the last
``window`` iterations (ES-WMV's statistic, watched beside the rule's own) has grown to
``growth`` times its lowest: the network is then fitting noise fast, and the peak has
passed. ES-EMV's own minimum lags such early peaks by 100-200 iterations (its average
still carries the large changes of the first iterations): on smooth or dim images
(retina at σ 25, a cell at 5 photons, peaks at 85-205 iterations) it kept outputs
0.7-1.6 dB under the peak. It keeps what the ``rise`` would keep (this output) where
there is one, else what the ``floor`` would. ES-EMV takes 2.5
(``ExponentialVariance.default_growth``).

With ``ceiling`` (and the noise's variance, as for the floor) no output counts as the best,
and no rise or growth either, until its residual has fallen to ``ceiling`` times the noise
variance, and the patience counts from there: an averaged output farther from the noisy
image than the noise itself has not fitted the image yet. On texture at σ 50 ES-EMV's
variance only rises after the warm-up (grass: its lowest at iteration 108, the peak at
315), and the rule kept a blurred output 2 dB under the peak. The best outputs of the
Gaussian benchmark images lie at 0.23-0.99 times the variance. ES-EMV takes 1.0
(``ExponentialVariance.default_ceiling``); the photon settings 1.5 (``fit.PHOTON_CEILING``:
planes of 16-bit stacks fit slowly, and their statistic rises and grows long before the
peak; photon images under TV peak at up to 1.38 estimated variances).

With ``plateau`` (and the noise's variance) a member is also done, keeping its best so far,
once its residual is down to ``plateau`` times the noise variance while its lowest statistic
has fallen by less than ``PLATEAU_DROP`` over the last ``PLATEAU_SPAN`` iterations. On grey
textures (a library's shelves, a zebra at σ 15-25) ES-EMV's variance creeps down by 1-2 % every
100 iterations long after the peak, each step a new best within the tolerance, and only the
floor ended the fit, 0.5-1.9 dB under the peak (the residual there 0.5-0.76 variances). A
statistic still falling fast (more than 5 % in 200 iterations) is heeded: where texture
inflates the noise estimate (grass: σ 1.4 times the true one) such residuals come early in
the fit. ES-EMV takes 0.75 (``ExponentialVariance.default_plateau``); the photon settings none.

With ``rise`` the rule keeps, instead of the output at the statistic's minimum, the
one of the first iteration where the statistic has risen to ``(1 + rise)`` times its
lowest so far, and the member is done there. The raw outputs have then begun to fit
noise, while a long moving average of them (0.995: it lags them by ~200 iterations) is
only then near its best (``fit.photon_options``; BENCHMARKS.md, "Automatic early
stopping"). Without such a rise within ``patience`` iterations of the lowest, the
lowest's output is kept.

With ``settle`` (and a ``rise``) a rise counts only once the statistic has settled: its lowest
has fallen by less than ``PLATEAU_DROP`` over the last ``PLATEAU_SPAN`` iterations (the
plateau's test). Over the flat half (``flat``) the statistic wobbles by 20-60 % while it
still falls: on the Shepp-Logan phantom at 128² (40 photons) its lowest fell from 5.4e-6
at 725 iterations to 4.0e-6 at 1150, a 31 % wobble at 750 fired the rise, and the output
kept lay 2.6 dB under the peak (at 1625). Replayed on one network's saved runs of 21 photon
cases at 128², 0.23 -> 0.10 dB under the peak on average, worst 2.64 -> 0.40; of 24 at 96²,
0.22 -> 0.20, worst 1.82 -> 1.16; dim images that peak soon after their residual turns white
wait longer (blobs at 5 photons 0.31 -> 0.49; BENCHMARKS.md, "A rise that waits for the
statistic to settle"). The photon settings take it.

With ``flat`` the variance statistics (the rule's own and the growth guard's) watch only
that fraction of the image's values: those where the noisy image, smoothed, changes least
(``flat_pixels``); the residual still watches all. On blurred piecewise-constant images
(binary blobs at 40 photons) the raw outputs at edges keep settling for hundreds of
iterations after the peak while those in flat regions already fit the noise: over all
pixels the statistic lay flat and the rule kept outputs 400-700 iterations late, 0.8-1.8 dB
under the peak; in the flat half it rises at the peak. The photon settings take 0.5
(``fit.PHOTON_FLAT``).

With ``white`` (and the noisy image, ``watch_whiteness``) no output counts either, nor any
rise or growth, until the averaged output's residual against the noisy image looks white:
the correlation of neighbouring residual values (along Y and X, about its mean) has fallen
to ``white``. While the network still misses structure, the residual holds it and neighbours
agree (correlation > 0); a fit of the noise leaves a high-passed residual (< 0). Unlike the
ceiling it needs no noise level, so an estimated gain that is off does not move it. Slow
high-signal fits (planes of 16-bit stacks fitted from scratch) keep improving for thousands of
iterations while ES-EMV's statistic wobbles by 20 % and more; their residual turns white
after 2900-3800 iterations, and the rule then keeps outputs 0-0.5 dB under peaks at or past
4000, where it had ended them after 1100-2200 iterations, 1.1-4.7 dB under (replayed). The
photon settings take 0 (``fit.PHOTON_WHITE``).

With ``overfit`` (and the noisy image, as for ``white``) a member is also done, keeping its
best so far, once that correlation has fallen to ``overfit`` (< 0): the output has fitted the
noise's low frequencies, so the residual is high-passed. It is the end for images on which
ES-EMV's statistic never turns: sparse spots on a dark background at 15-40 photons, where the
raw outputs' variance over the flat (dark) half keeps falling by 8-10 % per 200 iterations
long after the peak (the fit ran 1000 iterations past it, 1.8 dB under). The photon settings
of the plain loss take ``fit.PHOTON_OVERFIT``.

With ``hold`` (and the noise's variance, as for the floor) a member's patience does not end it
while its averaged output's residual is above ``hold`` times the noise variance: the network
is still fitting the image, and the statistic's next new lowest may be far off. Bright,
finely textured images fitted on their variance-stabilised values (coins at 300-600 photons)
find a new lowest every 200-700 iterations for thousands of iterations while the PSNR climbs
by 2 dB; the patience ended them 1.5-2.3 dB under the peak, the residual still 1.4 variances
(replayed: 0.1-0.7 dB under it with a hold at 1.0). The stabilised fit of bright images takes
1.0 (``fit.STABILISED_HOLD``).

With ``region`` (a side in pixels) a plane whose Y and X span two such sides or more is cut
into a grid of regions (``region_grid``), and each stops apart: each has its own sample of
raw outputs, flat half, residual and whiteness, its own statistic, best iteration and kept
output, as if it were an ensemble member of its own; the fit ends when the last region is
done, and the result takes each region's pixels from its own kept output. Regions of one
image peak at different iterations: at 256² the whole image's flat-half statistic turned
700-1000 iterations before the peak on nuclei (40 photons) while other parts of the image
still improved; with a stopping time per 128² quadrant, replayed on one network's saved
runs of six photon cases, +0.25 dB over the whole image's rule on average (nuclei +0.50 to
+1.10, above the run's single peak; the phantom -0.18); end to end, two members, +0.29 dB
(BENCHMARKS.md, "A stopping time per region, end to end at 256²"). Smaller regions were no
gain at 96² (too few flat values to watch). The photon settings take 128
(``fit.PHOTON_REGION``).

Everything runs on the fit's device without host synchronisation; the variance
rules follow a fixed random sample of ``samples`` values, so memory stays small
whatever the image size (a window of W full images would not). An ensemble's
members (the first axis of the outputs) are watched and kept apart: each has
its own statistic, best iteration and best output, and the fit ends when the
last of them is done.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from ._names import DEFAULT_RULE as DEFAULT_RULE  # re-exported: the engine's default
from ._names import RULES

#: ``plateau``: the lowest statistic counts as flat when it has fallen by less than this
#: fraction over the last ``PLATEAU_SPAN`` iterations (BENCHMARKS.md, "A plateau ...").
PLATEAU_DROP = 0.05
PLATEAU_SPAN = 200
#: ``white``: the residual's correlation is measured every this many iterations (a few
#: passes over the whole image; the averaged output it watches changes slowly).
WHITE_EVERY = 10
#: ``flat``: the noisy image is smoothed by a Gaussian of this std (pixels) before its
#: gradient is taken, so that noise does not decide which pixels count as flat.
FLAT_SIGMA = 2.0


def region_grid(shape: tuple[int, ...], side: int | None) -> list[tuple[slice, slice]]:
    """The regions that stop apart in a plane of ``shape`` (its last two axes: Y, X), as
    (Y, X) slices: ``side`` or more pixels along each axis, as many as fit, of near-equal
    size (256 at side 128: halves; 383: halves; 384: thirds). One region, the whole plane,
    where ``side`` is None or the plane is under two sides along both axes."""
    height, width = shape[-2:]
    if side is None or (height < 2 * side and width < 2 * side):
        return [(slice(0, height), slice(0, width))]
    spans = []
    for n in (height, width):
        count = max(1, n // side)
        spans.append([slice(a, b) for a, b in itertools.pairwise(n * k // count for k in range(count + 1))])
    return [(rows, cols) for rows in spans[0] for cols in spans[1]]


def describe_best(kept: Sequence[Sequence[int]] | None) -> str | None:
    """Where the kept outputs come from, for people: "best output at iteration N", or where
    members or regions kept different ones, "best outputs at iterations A–B (2 members × 4
    regions)". ``kept``: each member's kept iteration per region (``Fit.best_iterations``);
    None (no rule) or nothing kept yet: None."""
    flat = [i for member in kept or () for i in member if i]
    if not flat:
        return None
    low, high = min(flat), max(flat)
    if low == high:
        return f"best output at iteration {high}"
    parts = [f"{n} {name}" for n, name in ((len(kept), "members"), (len(kept[0]), "regions")) if n > 1]
    return f"best outputs at iterations {low}–{high} ({' × '.join(parts)})"


def flat_pixels(image: torch.Tensor, fraction: float, sigma: float = FLAT_SIGMA) -> torch.Tensor:
    """Where ``image`` (C, *S) changes least: True at the ``fraction`` of its values with the
    smallest gradient after a Gaussian blur of std ``sigma`` along each axis of S (edges
    replicated), per value (each channel its own)."""
    x = image.detach().float()
    radius = max(1, int(3 * sigma + 0.5))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    squared = torch.zeros_like(x)
    for axis in range(1, x.ndim):
        if x.shape[axis] < 2:
            continue
        lines = x.movedim(axis, -1)
        shape = lines.shape
        padded = torch.nn.functional.pad(lines.reshape(-1, 1, shape[-1]), (radius, radius), mode="replicate")
        x = torch.nn.functional.conv1d(padded, kernel).reshape(shape).movedim(-1, axis)
    for axis in range(1, x.ndim):
        if x.shape[axis] >= 2:
            squared += torch.gradient(x, dim=axis)[0].square()
    values = squared.flatten()
    k = min(values.numel(), max(1, math.ceil(fraction * values.numel())))
    flat = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    flat[values.topk(k, largest=False, sorted=False).indices] = True  # exactly k, ties or not
    return flat.view(image.shape)


class _Window:
    """The last ``size`` sampled values (a ring) and the variance of each over them, from
    running sums about a per-value centre: O(values) work an iteration instead of
    O(size × values) (``torch.var`` over a 100 × 4096 ring took 5 ms on a 2-core CPU, a
    fifth of a step). Every ``size`` iterations the centre moves to the ring's mean and the
    sums are taken afresh, so rounding cannot build up and the centred values stay small."""

    def __init__(self, size: int, shape: tuple[int, ...], device: torch.device) -> None:
        self.size = size
        self.ring = torch.zeros(size, *shape, device=device)
        self._centre = torch.zeros(shape, device=device)
        self._sum = torch.zeros(shape, device=device)
        self._squares = torch.zeros(shape, device=device)

    def push(self, iteration: int, values: torch.Tensor) -> torch.Tensor | None:
        """Add the values of ``iteration`` (1-based, consecutive); the mean over the last
        axis of their variances over the window, or None until it is full."""
        slot = iteration % self.size
        if iteration > self.size:
            old = self.ring[slot]
            self._sum.add_(values - old)
            self._squares.add_((values - self._centre).square_() - (old - self._centre).square_())
        self.ring[slot] = values
        if slot == 0:
            torch.mean(self.ring, dim=0, out=self._centre)
            deviations = self.ring - self._centre
            torch.sum(deviations, dim=0, out=self._sum)
            torch.sum(deviations.square_(), dim=0, out=self._squares)
        if iteration < self.size:
            return None
        mean = self._sum / self.size
        return (self._squares / self.size - mean.square_()).mean(dim=-1)


def residual_correlation(residual: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """The correlation of neighbouring values along Y and X of each ``residual[m]``
    (``(M, C, *shape)``, noisy image minus output) about its mean, ``(M,)``: > 0 while it
    holds structure, about 0 for white noise, < 0 once the output fits the noise's low
    frequencies (``Rule``'s ``white``). ``known``: 1 where known, 0 for values left out
    (broadcastable to ``residual``), or None: all known."""
    dims = tuple(range(2, residual.ndim))
    if known is None:
        residual = residual - residual.mean(dim=dims, keepdim=True)
    else:  # about the known values' mean; unknown values out of every sum
        mean = (residual * known).sum(dim=dims, keepdim=True) / known.sum(dim=dims, keepdim=True).clamp(min=1)
        residual = (residual - mean) * known
    members = residual.shape[0]
    neighbours = (residual[..., 1:, :] * residual[..., :-1, :]).reshape(members, -1).sum(dim=-1)
    neighbours += (residual[..., :, 1:] * residual[..., :, :-1]).reshape(members, -1).sum(dim=-1)
    squares = residual.square().reshape(members, -1).sum(dim=-1)
    return neighbours / (2 * squares).clamp(min=torch.finfo(residual.dtype).tiny)


class Rule:
    """Base class: keeps the lowest statistic, and the iteration and output judged best."""

    name = ""
    #: Fraction of pixels the fit must leave out of the loss for this rule.
    held_out = 0.0
    #: Default patience, tuned on benchmarks/early_stopping.py (BENCHMARKS.md).
    default_patience = 200
    #: Defaults of the keywords of the same names (see the module's docstring).
    default_tolerance = 0.0
    default_floor: float | None = None
    default_growth: float | None = None
    default_ceiling: float | None = None
    default_plateau: float | None = None

    def __init__(
        self,
        patience: int | None = None,
        window: int = 100,
        samples: int = 4096,
        rise: float | None = None,
        tolerance: float | None = None,
        floor: float | None = None,
        growth: float | None = None,
        ceiling: float | None = None,
        plateau: float | None = None,
        flat: float | None = None,
        white: float | None = None,
        overfit: float | None = None,
        hold: float | None = None,
        settle: bool = False,
        region: int | None = None,
    ) -> None:
        patience = self.default_patience if patience is None else patience
        tolerance = self.default_tolerance if tolerance is None else tolerance
        floor = self.default_floor if floor is None else floor
        growth = self.default_growth if growth is None else growth
        ceiling = self.default_ceiling if ceiling is None else ceiling
        plateau = self.default_plateau if plateau is None else plateau
        if patience < 1 or window < 2 or samples < 1:
            raise ValueError("patience >= 1, window >= 2 and samples >= 1 are needed")
        if rise is not None and not (isinstance(rise, (int, float)) and 0 < rise < math.inf):
            raise ValueError(f"rise must be a positive fraction (0.1: 10 % over the lowest) or None, got {rise!r}")
        if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < math.inf):
            raise ValueError(f"tolerance must be a fraction >= 0 (0.01: within 1 % of the lowest), got {tolerance!r}")
        if floor is not None and not (isinstance(floor, (int, float)) and 0 <= floor < math.inf):
            raise ValueError(f"floor must be a fraction >= 0 of the noise variance (0: none) or None, got {floor!r}")
        if growth is not None and not (isinstance(growth, (int, float)) and (growth == 0 or 1 < growth < math.inf)):
            raise ValueError(
                f"growth must be a factor > 1 (2.5: 2.5 times the lowest), 0 (none) or None, got {growth!r}"
            )
        if ceiling is not None and not (isinstance(ceiling, (int, float)) and 0 <= ceiling < math.inf):
            raise ValueError(f"ceiling must be a factor >= 0 of the noise variance (0: none) or None, got {ceiling!r}")
        if plateau is not None and not (isinstance(plateau, (int, float)) and 0 <= plateau < math.inf):
            raise ValueError(f"plateau must be a factor >= 0 of the noise variance (0: none) or None, got {plateau!r}")
        if flat is not None and not (isinstance(flat, (int, float)) and 0 <= flat <= 1):
            raise ValueError(f"flat must be a fraction of the pixels in (0, 1] (0: all), or None, got {flat!r}")
        if white is not None and not (isinstance(white, (int, float)) and -1 <= white < 1):
            raise ValueError(f"white must be a correlation in [-1, 1) (0: a white residual) or None, got {white!r}")
        if overfit is not None and not (
            isinstance(overfit, (int, float)) and -1 <= overfit < 0 and (white is None or overfit <= white)
        ):
            raise ValueError(
                f"overfit must be a correlation in [-1, 0) (a high-passed residual), at or under white, "
                f"or None, got {overfit!r}"
            )
        if hold is not None and not (isinstance(hold, (int, float)) and 0 <= hold < math.inf):
            raise ValueError(f"hold must be a factor >= 0 of the noise variance (0: none) or None, got {hold!r}")
        if region is not None and not (isinstance(region, int) and not isinstance(region, bool) and region >= 32):
            raise ValueError(f"region must be a side in pixels >= 32 (regions that stop apart) or None, got {region!r}")
        if region is not None and self.held_out > 0:
            raise ValueError(f"the {self.name!r} rule watches the whole image; leave region unset")
        self.patience, self.window, self.samples = int(patience), int(window), int(samples)
        #: The side of the regions that stop apart (``region_grid``), or None: the whole image.
        self.region = region
        self.rise = None if rise is None else float(rise)
        self.tolerance = float(tolerance)
        self.floor = None if floor is None else float(floor)
        self.growth = float(growth) if growth else None
        self.ceiling = float(ceiling) if ceiling else None
        self.plateau = float(plateau) if plateau else None
        self.hold = float(hold) if hold else None
        #: A rise counts only once the lowest statistic has settled (the plateau's test).
        self.settle = bool(settle)
        self._settled_rise = self.settle and self.rise is not None  # without a rise, settle reads nothing
        #: The fraction of the image's values the variance statistics watch (``flat_pixels``),
        #: or None: all. The fit chooses them (``attach``'s ``statistic_index``).
        self.flat = float(flat) if flat else None
        #: The residual correlation below which outputs count (``watch_whiteness``), or None.
        self.white = None if white is None else float(white)
        #: The residual correlation at which a member is done (``watch_whiteness``), or None.
        self.overfit = None if overfit is None else float(overfit)
        self._best: torch.Tensor | None = None
        self._noisy: torch.Tensor | None = None  # ``watch_residual``
        self._white_noisy: torch.Tensor | None = None  # ``watch_whiteness``

    def attach(
        self,
        average: torch.Tensor,
        sample_index: torch.Tensor,
        statistic_index: torch.Tensor | None = None,
        region_map: torch.Tensor | None = None,
    ) -> None:
        """Allocate state on the fit's device. ``average`` is ``(M, C, *canvas)``, one
        entry per ensemble member; ``sample_index`` are flat indices of image pixels
        (not canvas padding) into one member's output, ``(S,)``, or ``(R, S)``: S of each
        of R regions that stop apart; ``statistic_index``, the same kind (as many rows),
        those the variance statistics watch instead (``flat``), or None: the same.
        ``region_map``, with R > 1: the region of each canvas pixel (integers, the canvas's
        shape), which says whose kept output the pixel takes (padding: any region)."""
        dev, members = average.device, average.shape[0]
        sample_index = sample_index.view(-1, sample_index.shape[-1])
        self.regions = regions = sample_index.shape[0]
        if regions > 1 and (region_map is None or region_map.shape != average.shape[2:]):
            raise ValueError("regions that stop apart need a region_map of the canvas's shape")
        # The same pixels of every member, as flat indices into the whole (M, ...) tensor: one
        # row per member and region (member-major), each watched as if a member of its own.
        offsets = torch.arange(members, device=dev)[:, None, None] * average[0].numel()
        self._index = (sample_index[None] + offsets).flatten(0, 1)
        self._statistic_index = (
            self._index
            if statistic_index is None
            else (statistic_index.view(regions, -1)[None] + offsets).flatten(0, 1)
        )
        watched = members * regions
        self._best = torch.full((watched,), math.inf, device=dev)
        self._inf = torch.full((watched,), math.inf, device=dev)  # preallocated: no host-to-device copy per step
        self._best_iteration = torch.zeros(watched, dtype=torch.long, device=dev)
        self._finished = torch.zeros(watched, dtype=torch.bool, device=dev)  # rise, floor, growth or patience
        self._fitting = torch.zeros(watched, dtype=torch.bool, device=dev)  # residual above ``hold``
        # Patience counts from here: the end of the window, or of the last output above the ceiling.
        self._since = torch.full((watched,), self.window, dtype=torch.long, device=dev)
        self._member_shape = (members,) + (1,) * (average.ndim - 1)
        self._region_map = None if regions == 1 else region_map.to(dev, torch.long)
        self.best_average = average.clone()
        if self.plateau is not None or self._settled_rise:  # the lowest statistic of the last PLATEAU_SPAN iterations
            self._lowest_before = torch.full((PLATEAU_SPAN, watched), math.inf, device=dev)
        if self.growth is not None:  # the raw outputs' last ``window`` values, for ``growth``
            self._growth_window = _Window(self.window, self._statistic_index.shape, dev)
            self._lowest_windowed = torch.full((watched,), math.inf, device=dev)

    def _windowed_variance(self, window: _Window, iteration: int, output: torch.Tensor) -> torch.Tensor:
        """ES-WMV's statistic: per member, the mean over the sampled values of their variance
        over the last ``window`` raw outputs (inf until the window is full)."""
        variance = window.push(iteration, torch.take(output.detach(), self._statistic_index))
        return self._inf if variance is None else variance

    def watch_residual(self, noisy: torch.Tensor, weight: torch.Tensor, variance: float) -> None:
        """After ``attach``: the noisy values at the sampled pixels, their weights (0 for
        pixels left out of the fit; both shaped as ``sample_index``) and the noise variance,
        in the fit's units. With a
        ``floor``, a member is done once its averaged output's residual has fallen to
        ``floor × variance``; with a ``ceiling``, no output counts (nor any rise or growth)
        until it has fallen to ``ceiling × variance``; with a ``plateau``, a member is done
        once it is at ``plateau × variance`` while its statistic lies flat; with a ``hold``, its
        patience does not end it while the residual is above ``hold × variance``."""
        if not (self.floor or self.ceiling or self.plateau or self.hold):
            return
        if not (math.isfinite(variance) and variance > 0) or not bool(weight.any()):
            return
        dev, rows = self._best.device, self._index.shape[0]
        # One row per member and region, as ``_index``.
        self._noisy = noisy.reshape(self.regions, -1).repeat(rows // self.regions, 1).to(dev)
        self._weight = weight.reshape(self.regions, -1).repeat(rows // self.regions, 1).to(dev, torch.float32)
        total = variance * self._weight.sum(dim=-1)  # against the weighted sum, per row
        self._residual_floor = self.floor * total if self.floor else torch.full_like(total, -math.inf)
        self._residual_ceiling = self.ceiling * total if self.ceiling else None
        self._residual_plateau = self.plateau * total if self.plateau else None
        self._residual_hold = self.hold * total if self.hold else None

    def watch_whiteness(
        self,
        noisy: torch.Tensor,
        known: torch.Tensor | None,
        region: tuple[slice, ...],
        parts: list[tuple[slice, slice]] | None = None,
    ) -> None:
        """After ``attach``, with ``white`` or ``overfit``: the noisy image ``(C, *shape)``, where
        it is known (broadcastable to it; None: everywhere) and where it lies in the output's
        canvas; ``parts``: each region's (Y, X) slices of the image, in ``sample_index``'s
        order (None: one, the whole image)."""
        if self.white is None and self.overfit is None:
            return
        parts = [(slice(None), slice(None))] if parts is None else parts
        if len(parts) != self.regions:
            raise ValueError(f"watch_whiteness needs the {self.regions} regions' slices, got {parts!r}")
        dev = self._best.device
        self._white_noisy = noisy[None].to(dev)
        self._white_known = None if known is None else known.expand(noisy.shape)[None].to(dev, torch.float32)
        self._white_region = (slice(None), slice(None), *region)
        self._white_parts = [(..., *part) for part in parts]
        # Latched once white; without ``white`` every output counts from the start.
        self._white = torch.full(self._best.shape, self.white is None, dtype=torch.bool, device=dev)

    def statistic(self, iteration: int, output: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        """The rule's statistic per member (and region) after ``iteration``, ``(M × R,)`` (inf
        while warming up)."""
        raise NotImplementedError

    def update(self, iteration: int, output: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        """Feed one iteration; device work only. Returns the statistic, ``(M × R,)``."""
        with torch.no_grad():
            stat = self.statistic(iteration, output, average)
            residual = above = overfitted = None
            if self._noisy is not None:
                residual = ((torch.take(average, self._index) - self._noisy).square() * self._weight).sum(dim=-1)
                if self._residual_ceiling is not None:
                    above = residual > self._residual_ceiling
                if self._residual_hold is not None:
                    torch.gt(residual, self._residual_hold, out=self._fitting)
            if self._white_noisy is not None:
                if iteration % WHITE_EVERY == 0:
                    difference, known = self._white_noisy - average[self._white_region], self._white_known
                    # (M, R), flat in the rows' member-major order
                    correlation = torch.stack(
                        [
                            residual_correlation(difference[p], None if known is None else known[p])
                            for p in self._white_parts
                        ],
                        dim=1,
                    ).flatten()
                    if self.white is not None:
                        self._white |= correlation <= self.white
                    if self.overfit is not None:
                        overfitted = ~self._finished & self._white & (correlation <= self.overfit)
                if self.white is not None:
                    above = ~self._white if above is None else above | ~self._white
            if above is not None:  # not fitted yet: as if warming up
                stat = torch.where(above, self._inf, stat)
                self._since.copy_(torch.where(above, self._since.clamp(min=iteration), self._since))
            # A finished member is done: nothing replaces the output it kept.
            keep = (stat <= (1 + self.tolerance) * self._best) & torch.isfinite(stat) & ~self._finished
            plateau_ends = residual is not None and self._residual_plateau is not None
            settled = None  # the lowest statistic has fallen by less than PLATEAU_DROP in PLATEAU_SPAN
            if plateau_ends or self._settled_rise:  # only where something reads it
                lowest = torch.minimum(self._best, stat)
                ring = self._lowest_before[iteration % PLATEAU_SPAN]  # the lowest PLATEAU_SPAN iterations ago
                settled = torch.isfinite(ring) & (lowest > (1 - PLATEAU_DROP) * ring)
                ring.copy_(lowest)
            if residual is not None:
                keep = self._end(keep, ~self._finished & (residual <= self._residual_floor), this_output=False)
                if plateau_ends:
                    ended = ~self._finished & settled & (residual <= self._residual_plateau)
                    keep = self._end(keep, ended, this_output=False)
            if overfitted is not None:
                keep = self._end(keep, overfitted, this_output=False)
            if self.growth is not None:
                windowed = self._windowed_variance(self._growth_window, iteration, output)
                if above is not None:  # the image is still being fitted: no growth counts
                    windowed = torch.where(above, self._inf, windowed)
                torch.minimum(self._lowest_windowed, windowed, out=self._lowest_windowed)
                grown = ~self._finished & torch.isfinite(windowed) & (windowed >= self.growth * self._lowest_windowed)
                keep = self._end(keep, grown, this_output=self.rise is not None)  # as the rise would, else the floor
            if self.rise is not None:
                risen = ~self._finished & torch.isfinite(stat) & (stat >= (1 + self.rise) * self._best)
                if self._settled_rise:
                    risen &= settled
                keep = self._end(keep, risen, this_output=True)
            torch.minimum(self._best, stat, out=self._best)
            self._best_iteration.copy_(torch.where(keep, iteration, self._best_iteration))
            self.best_average.copy_(torch.where(self._per_pixel(keep), average, self.best_average))
        return stat

    def _per_pixel(self, flags: torch.Tensor) -> torch.Tensor:
        """One flag per member (and region), ``(M × R,)``, as a mask broadcastable to the
        outputs: each pixel takes its region's."""
        if self._region_map is None:
            return flags.view(self._member_shape)
        return flags.view(-1, self.regions)[:, self._region_map].unsqueeze(1)  # (M, 1, *canvas)

    def kept(self, average: torch.Tensor) -> torch.Tensor:
        """The outputs kept, ``(M, C, *canvas)``: each member's (and region's) best so far, or
        ``average`` (the fit's averaged output now) where none has counted yet."""
        return torch.where(self._per_pixel(self._best_iteration == 0), average, self.best_average)

    def _end(self, keep: torch.Tensor, ended: torch.Tensor, *, this_output: bool) -> torch.Tensor:
        """Mark the ``ended`` members finished; returns which members keep this output:
        the ended ones with ``this_output``, else they keep their best so far (this output
        only if still warming up, with no best yet)."""
        self._finished |= ended
        if this_output:
            return keep | ended
        return (keep & ~ended) | (ended & ~torch.isfinite(self._best))

    @property
    def best_iterations(self) -> list[int]:
        """Each member's iteration of the output it keeps (its best so far; a host sync), 0
        before any; with regions that stop apart, each member's regions in turn."""
        return self._best_iteration.tolist()

    @property
    def best_iteration(self) -> int:
        """The latest of the members' kept iterations (a host sync); 0 before any."""
        return int(self._best_iteration.max())

    def done(self, iteration: int) -> bool:
        """True once every member has risen (``rise``), reached the ``floor`` (or ``overfit``)
        or gone ``patience`` iterations without a new best with its residual down to the
        ``hold`` (one sync). A member that has waited out its patience is finished here, as if
        it ran alone: left running beside a slower member, its statistic's next slow new
        lowest restarted it, and two members kept each other going (40 photons, two members:
        nuclei-e kept its output at 1424 iterations instead of 953, 0.64 dB lower; ihc under
        a 20 % rise ran to the 6000-iteration cap, 0.8 dB under its peak)."""
        waited = iteration - torch.maximum(self._best_iteration, self._since) >= self.patience
        self._finished |= waited & ~self._fitting
        return bool(self._finished.all())


class WindowedVariance(Rule):
    """ES-WMV: mean over the sampled values of their variance over the last
    ``window`` raw outputs."""

    name = "wmv"
    default_patience = 300

    def attach(
        self,
        average: torch.Tensor,
        sample_index: torch.Tensor,
        statistic_index: torch.Tensor | None = None,
        region_map: torch.Tensor | None = None,
    ) -> None:
        super().attach(average, sample_index, statistic_index, region_map)
        self._window = _Window(self.window, self._statistic_index.shape, average.device)

    def statistic(self, iteration: int, output: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        return self._windowed_variance(self._window, iteration, output)


class ExponentialVariance(Rule):
    """ES-EMV: exponential moving variance of the sampled raw output values with
    weight ``2 / (window + 1)``, averaged over them, without storing a window."""

    name = "emv"
    #: benchmarks/stopping_traces.py: 0.24 -> 0.14 dB under the peak on held-out Gaussian
    #: images (worst 1.28 -> 0.41), photon-limited ones unchanged (BENCHMARKS.md).
    default_tolerance = 0.01
    #: Ibid.: grass at σ 25 1.41 -> 0.24 dB under the peak; 0.3-0.4 changed nothing else.
    default_floor = 0.35
    #: Ibid.: early peaks 0.69-1.61 -> 0.15-0.98 dB under; 2.25-2.75 alike (BENCHMARKS.md).
    default_growth = 2.5
    #: Ibid.: grass at σ 50 2.00 -> 0.68 dB under the peak; nothing else moved over 0.06 dB.
    default_ceiling = 1.0
    #: Ibid.: two members on Gaussian images 0.32 -> 0.19 dB under the peak (worst 1.88 -> 0.55).
    default_plateau = 0.75

    def attach(
        self,
        average: torch.Tensor,
        sample_index: torch.Tensor,
        statistic_index: torch.Tensor | None = None,
        region_map: torch.Tensor | None = None,
    ) -> None:
        super().attach(average, sample_index, statistic_index, region_map)
        self._alpha = 2 / (self.window + 1)
        self._mean = torch.zeros(self._statistic_index.shape, device=average.device)
        self._variance = torch.zeros(self._best.shape, device=average.device)

    def statistic(self, iteration: int, output: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        values = torch.take(output.detach(), self._statistic_index)
        if iteration == 1:
            self._mean.copy_(values)
        delta = values - self._mean
        self._mean.add_(delta, alpha=self._alpha)
        self._variance.mul_(1 - self._alpha).add_((1 - self._alpha) * self._alpha * delta.square().mean(dim=-1))
        if iteration < self.window:
            return self._inf
        return self._variance.clone()


class HeldOutPixels(Rule):
    """Validation on ``held_out`` of the pixels, left out of the loss: the
    averaged output's mean squared error against the noisy values there."""

    name = "validation"
    held_out = 0.05
    default_patience = 100

    def attach(
        self,
        average: torch.Tensor,
        sample_index: torch.Tensor,
        statistic_index: torch.Tensor | None = None,
        region_map: torch.Tensor | None = None,
    ) -> None:
        super().attach(average, sample_index, statistic_index, region_map)
        self.measured: torch.Tensor | None = None  # set by the fit: noisy values at sample_index

    def statistic(self, iteration: int, output: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        return (torch.take(average, self._index) - self.measured).square().mean(dim=-1)


_RULES = {"wmv": WindowedVariance, "emv": ExponentialVariance, "validation": HeldOutPixels}


def make_rule(name: str | Rule, **kwargs: float | None) -> Rule:
    """A rule by name (``RULES``) built with ``kwargs``, or ``name`` itself if it is a ``Rule``."""
    if isinstance(name, Rule):
        return name
    if name not in _RULES:
        raise ValueError(f"unknown stopping rule {name!r}; choose one of {', '.join(RULES)}")
    return _RULES[name](**kwargs)
