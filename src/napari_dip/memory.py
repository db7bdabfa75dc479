"""Memory a fit needs, known before it allocates anything.

``estimate_fit_bytes`` builds the network on torch's "meta" device (shapes, no
data) and replays one training step under a dispatch mode that books every
tensor storage as it is created and frees it when it dies: an allocator
simulation whose peak is exact for the tensors themselves, in well under a
second even for a 16384² canvas. A per-device factor covers what tensors do not
show (allocator slack, library workspaces). ``available_bytes`` says what the
device has free, ``advice`` words the ``MemoryError`` of a fit that would not
fit, and ``largest_tile`` tells the tiling code how big a tile fits.

Engine-level like ``fit.py``: imports torch, not napari; ``import napari_dip``
does not import it.
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .networks import Prior, build_network, memory_format, simulating

#: Fraction of the available memory a fit may plan to use: the rest absorbs what the
#: estimate cannot see (other processes growing, the caller's own arrays, page cache).
SAFETY = 0.8


@dataclass(frozen=True)
class Overhead:
    """What a device's allocator and libraries add to the simulated tensor bytes."""

    #: Multiplies everything.
    factor: float
    #: Added once (library workspaces, small tensors the simulation leaves out).
    fixed: int
    #: Storages smaller than this are weighted by ``small_weight`` (heap fragmentation).
    small_below: int = 0
    small_weight: float = 1.0


#: Per device type. cpu: measured with benchmarks/memory_estimate.py (2-core x86-64, torch
#: 2.13, glibc; 36 fits of all five networks, 128²-1024², widths 32-128): the simulated peak
#: alone is 1.00-1.01x the peak RSS growth of real ``Fit`` steps whenever the activations are
#: over 32 MiB each (glibc's largest mmap threshold: each one is its own mmap, returned on
#: free), but only 0.60-0.95x for smaller ones, which come from the heap, where freed blocks
#: stay resident and fragment, differently from run to run (skip 256², width 64: 398-463 MB
#: in six runs, 2026-12-06). Weighting those by 1.6 brings every case to 1.03-1.57x (1.74x
#: for a 58 MB fit); 2 % and 32 MiB cover oneDNN's scratchpads and measurement scatter.
#: cuda, mps: NOT measured (no GPU in the calibration session): an allowance for the caching
#: allocator's rounding and fragmentation and cuDNN's benchmark-mode workspaces.
DEVICE_OVERHEAD: dict[str, Overhead] = {
    "cpu": Overhead(1.02, 32 * 2**20, small_below=32 * 2**20, small_weight=1.6),
    "cuda": Overhead(1.2, 512 * 2**20),
    "mps": Overhead(1.2, 512 * 2**20),
}

#: Canvas-sized float32 buffers with the output's channels the fit keeps besides the step:
#: measured image, moving average, best average (stopping rules), mask, host image copy,
#: result/preview copies and the shells' conversions; the network output is in the step.
IMAGE_BUFFERS = 8

_GB = 1e9


class _LiveBytes(TorchDispatchMode):
    """Books each tensor storage an op creates and frees it when the storage dies; storages
    under ``small_below`` bytes count ``small_weight`` times.

    Storages are keyed by their C++ address (views and in-place results share one);
    torch keeps a storage's Python object alive as long as the storage, so a
    weakref finalizer sees the real free, also of tensors autograd saved.
    """

    def __init__(self, small_below: int = 0, small_weight: float = 1.0) -> None:
        super().__init__()
        self.small_below, self.small_weight = small_below, small_weight
        self.live: dict[int, float] = {}
        self.current = 0.0
        self.peak = 0.0

    def _book(self, tensor: torch.Tensor) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            return
        key = storage._cdata
        if key in self.live:
            return
        nbytes = float(storage.nbytes())
        if nbytes < self.small_below:
            nbytes *= self.small_weight
        self.live[key] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self._book(leaf)
        return out


def _per_axis(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    # networks.py is moving from int to per-axis tuples for multiple/min_size: accept both.
    return tuple(value)[-n:] if isinstance(value, tuple) else (int(value),) * n


@dataclass(frozen=True)
class _Spec:
    """One fit's network and tensors, minus the canvas."""

    build: Callable[[], Prior]
    in_channels: int
    out_channels: int
    input_stride: int | None
    device: torch.device  # the fit's device: picks the memory format and the overhead
    overhead: Overhead


def _simulate_step(spec: _Spec, canvas: tuple[int, ...], run_on: torch.device, scale: float = 1.0) -> int:
    """Peak live tensor bytes of a steady-state Adam step (weights, Adam moments, z, its
    noise and noisy copy, the target, forward, backward, gradients), run on ``run_on``.
    ``scale``: target pixels per pixel of ``canvas``, so small storages are told apart as at
    the target size."""
    tracker = _LiveBytes(round(spec.overhead.small_below / scale), spec.overhead.small_weight)
    with tracker, torch.device(run_on), simulating(spec.device.type):
        net = spec.build().to(memory_format=memory_format(len(canvas), spec.device))
        params = [p for p in net.parameters() if p.requires_grad]
        moments = [torch.zeros_like(p) for p in params for _ in range(2)]  # Adam's m and v
        stride = net.input_stride if spec.input_stride is None else spec.input_stride
        z_shape = (1, spec.in_channels, *(n // stride for n in canvas))
        # On a CPU the noise is a bank of draws up to 2**20 values (4 MB) larger than z
        # (fit.NOISE_SHIFTS): left out, as it does not grow with the image.
        z, noise, z_noisy = torch.zeros(z_shape), torch.zeros(z_shape), torch.zeros(z_shape)
        target = torch.zeros(1, spec.out_channels, *canvas)
        torch.add(z, noise, alpha=0.03, out=z_noisy)
        out = net(z_noisy)
        torch.nn.functional.mse_loss(out, target).backward()
        del net, params, moments, z, noise, z_noisy, target, out
    return round(tracker.peak)


def _simulate_scaled(spec: _Spec, canvas: tuple[int, ...], multiple: tuple[int, ...], min_size: tuple[int, ...]) -> int:
    """Fallback for ops without a meta kernel: real CPU steps on the smallest valid canvas and
    on one with Y and X doubled, extrapolated linearly in pixels (the nets are fully
    convolutional)."""
    small = tuple(min(c, -(-max(m, lo) // m) * m) for c, m, lo in zip(canvas, multiple, min_size, strict=True))
    large = (*small[:-2], 2 * small[-2], 2 * small[-1])
    cpu, pixels = torch.device("cpu"), math.prod(canvas)
    pixels_a, pixels_b = math.prod(small), math.prod(large)
    a = _simulate_step(spec, small, cpu, pixels / pixels_a)
    b = _simulate_step(spec, large, cpu, pixels / pixels_b)
    return round(a + (b - a) * (pixels - pixels_a) / (pixels_b - pixels_a))


def estimate_fit_bytes(
    network: str,
    width: int,
    in_channels: int,
    out_channels: int,
    canvas: tuple[int, ...],
    device: str | torch.device = "cpu",
    *,
    input_stride: int | None = None,
    **network_kwargs: Any,
) -> int:
    """Peak bytes of a fit of ``network`` on a ``(1, out_channels, *canvas)`` output canvas.

    ``canvas`` is the padded spatial shape, (H, W) or (Z, H, W); ``network_kwargs``
    go to ``build_network`` (``spatial_dims``, ``z_size``, ``anisotropy``).
    ``input_stride`` overrides the network's own (z is ``canvas / input_stride``).
    Counts one steady-state training step (simulated on the meta device, or on
    small CPU canvases where an op has no meta kernel), the fit's image-sized
    buffers and the device's overhead (``DEVICE_OVERHEAD``). Allocates nothing
    canvas-sized.
    """
    dev = _resolve(device)
    canvas = tuple(int(n) for n in canvas)
    if len(canvas) not in (2, 3) or min(canvas) < 1:
        raise ValueError(f"canvas must be 2 or 3 positive lengths, got {canvas}")
    overhead = DEVICE_OVERHEAD.get(dev.type, DEVICE_OVERHEAD["cuda"])
    options = tuple(sorted(network_kwargs.items()))
    step = _step_bytes(network, width, in_channels, out_channels, canvas, dev.type, input_stride, options, overhead)
    # Allocated once and kept: no fragmentation weight.
    buffers = IMAGE_BUFFERS * out_channels * math.prod(canvas) * 4
    return math.ceil(overhead.factor * (step + buffers)) + overhead.fixed


@functools.lru_cache(maxsize=256)  # tiling asks about the same few canvases again and again
def _step_bytes(
    network: str,
    width: int,
    in_channels: int,
    out_channels: int,
    canvas: tuple[int, ...],
    device_type: str,
    input_stride: int | None,
    options: tuple[tuple[str, Any], ...],
    overhead: Overhead,
) -> int:
    def build() -> Prior:
        # Built on meta, then given storage where the caller runs: no weights drawn, so
        # torch's global generator is left alone (only memory is measured).
        with torch.device("meta"):
            net = build_network(network, in_channels, out_channels, width, **dict(options))
        return net.to_empty(device=torch.get_default_device())

    with torch.device("meta"):
        net = build()
    multiple, min_size = _per_axis(net.multiple, len(canvas)), _per_axis(net.min_size, len(canvas))
    if any(n % m or n < lo for n, m, lo in zip(canvas, multiple, min_size, strict=True)):
        # Else meta would fail on a shape mismatch, and the fallback extrapolate around it.
        raise ValueError(
            f"canvas {canvas} does not suit network {network!r}: each axis must be a multiple of "
            f"{multiple} and at least {min_size}"
        )
    spec = _Spec(build, in_channels, out_channels, input_stride, torch.device(device_type), overhead)
    try:
        return _simulate_step(spec, canvas, torch.device("meta"))
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel; real errors recur on CPU
        return _simulate_scaled(spec, canvas, multiple, min_size)


def _resolve(device: str | torch.device) -> torch.device:
    if device == "auto" or device is None:
        from .fit import resolve_device  # lazy: fit.py may come to import this module

        return resolve_device("auto")
    return torch.device(device)


# --- what the device has free ---------------------------------------------------------

_MEMINFO = Path("/proc/meminfo")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_SELF_CGROUP = Path("/proc/self/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _cgroup_dirs() -> Iterator[Path]:
    """This process's cgroup (v2, else v1 memory controller) and its ancestors: a limit
    on any of them applies."""
    try:
        lines = _SELF_CGROUP.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        root = _CGROUP_ROOT if controllers == "" else _CGROUP_ROOT / "memory"
        if controllers not in ("", "memory") and "memory" not in controllers.split(","):
            continue
        here = root / path.lstrip("/")
        while True:
            yield here
            if here == root or root not in here.parents:
                break
            here = here.parent
    yield _CGROUP_ROOT  # a container whose own cgroup is mounted as the root
    yield _CGROUP_ROOT / "memory"


def _cgroup_available() -> int | None:
    """Smallest ``limit - usage`` over the cgroups that bound this process; usage leaves out
    the reclaimable page cache (``inactive_file``), as the kernel's OOM accounting does."""
    best = None
    for folder in _cgroup_dirs():
        for limit_name, usage_name in (
            ("memory.max", "memory.current"),
            ("memory.limit_in_bytes", "memory.usage_in_bytes"),
        ):
            limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
            if limit is None or usage is None or limit >= 2**60:  # v1 reports "no limit" as ~2**63
                continue
            inactive = 0
            try:
                for line in (folder / "memory.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key in ("inactive_file", "total_inactive_file"):
                        inactive = int(value)
                        break
            except (OSError, ValueError):
                pass
            free = max(limit - max(usage - inactive, 0), 0)
            best = free if best is None else min(best, free)
    return best


def _host_available() -> int:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def available_bytes(device: str | torch.device = "cpu") -> int:
    """Bytes a fit could allocate on ``device`` now.

    CUDA: free device memory plus what torch's cache holds unused; MPS: the
    recommended working set minus what this process allocated; CPU: the
    kernel's MemAvailable (psutil or sysconf elsewhere), capped by a cgroup
    (container) memory limit.
    """
    dev = _resolve(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    if dev.type == "mps":
        mps = torch.mps
        if hasattr(mps, "recommended_max_memory"):
            return max(int(mps.recommended_max_memory()) - int(mps.current_allocated_memory()), 0)
        return _host_available()  # unified memory
    host = _host_available()
    limit = _cgroup_available()
    return host if limit is None else min(host, limit)


def usable_bytes(available: int) -> int:
    """The share of ``available`` a fit may plan to use (``SAFETY``)."""
    return int(SAFETY * available)


# --- telling the user -----------------------------------------------------------------


def gigabytes(n: int) -> str:
    """``n`` bytes for a message: "12.3 GB", or "1.3e+09 GB" when absurdly many."""
    gb = n / _GB
    return f"{gb:.1f} GB" if gb < 1e5 else f"{gb:.2g} GB"


def advice(
    estimate: int,
    available: int,
    what: str,
    *,
    device: str | torch.device = "cpu",
    tile_size: int | None = None,
    width: int | None = None,
    first: str | None = None,
) -> str:
    """The message for a fit that does not fit: both numbers in GB and what to do instead
    (``first``, then ``tile_size``, a smaller ``width``: concrete values the caller worked out)."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    text = f"{what} needs about {gigabytes(estimate)}, {gigabytes(available)} available on {dev}"
    text += f" (at most {SAFETY:.0%} of it is used)"
    remedies = [] if first is None else [first]
    if tile_size is not None:
        remedies.append(f"pass tile_size={tile_size} to restore it in tiles")
    if width is not None:
        remedies.append(f"use a smaller width (width={width} fits)")
    else:
        remedies.append("use a smaller width")
    if dev.type != "cpu":
        remedies.append("run on the CPU (device='cpu') if it has more memory")
    return f"{text}; {', or '.join(remedies)}."


def largest_tile(
    network: str,
    width: int,
    in_channels: int,
    out_channels: int,
    budget_bytes: int,
    device: str | torch.device = "cpu",
    *,
    multiple: int | None = None,
    spatial_dims: int = 2,
    depth: int | None = None,
    max_side: int | None = None,
    **network_kwargs: Any,
) -> int:
    """Largest square canvas side (a multiple of ``multiple``, by default the network's Y/X
    multiple) whose ``estimate_fit_bytes`` is within ``budget_bytes``; capped at ``max_side``
    rounded up to the multiple. A 3-D canvas is ``(depth, side, side)``.
    Raises ``MemoryError`` if not even the smallest canvas the network accepts fits.
    """
    if spatial_dims == 3 and depth is None:
        raise ValueError("a 3-D tile needs depth, the padded number of Z planes of its canvas")
    kwargs = dict(network_kwargs, spatial_dims=spatial_dims) if spatial_dims != 2 else network_kwargs
    with torch.device("meta"):
        net = build_network(network, in_channels, out_channels, width, **kwargs)
    net_multiple, net_min = _per_axis(net.multiple, 1)[0], _per_axis(net.min_size, 1)[0]
    step = int(multiple) if multiple is not None else net_multiple
    if step % net_multiple:
        raise ValueError(f"multiple={step} is not a multiple of network {network!r}'s {net_multiple}")
    smallest = -(-net_min // step) * step

    def canvas(side: int) -> tuple[int, ...]:
        return (side, side) if spatial_dims == 2 else (depth, side, side)

    def cost(side: int) -> int:
        return estimate_fit_bytes(network, width, in_channels, out_channels, canvas(side), device, **kwargs)

    lo, lo_cost = smallest, cost(smallest)  # lo always fits, hi never does
    if lo_cost > budget_bytes:
        raise MemoryError(
            f"even a {smallest}x{smallest} tile of network {network!r} at width {width} needs about "
            f"{lo_cost / _GB:.1f} GB, over the {budget_bytes / _GB:.1f} GB budget; use a smaller width"
        )
    if max_side is not None:
        cap = max(-(-int(max_side) // step) * step, smallest)
        hi, hi_cost = cap, lo_cost if cap == lo else cost(cap)
        if hi_cost <= budget_bytes:
            return cap
    else:  # grow until a side does not fit
        hi, hi_cost = 4 * lo, cost(4 * lo)
        while hi_cost <= budget_bytes:
            guess = _interpolate(lo, lo_cost, hi, hi_cost, budget_bytes, step)
            lo, lo_cost = hi, hi_cost
            hi = max(2 * hi, guess + step)
            hi_cost = cost(hi)
    # Bytes are nearly affine in pixels (side²): interpolation search lands within a step of
    # the answer, so each round checks its guess and the next side up.
    while hi - lo > step:
        guess = min(max(_interpolate(lo, lo_cost, hi, hi_cost, budget_bytes, step), lo + step), hi - step)
        for side in (guess, guess + step) if guess + step < hi else (guess,):
            side_cost = cost(side)
            if side_cost > budget_bytes:
                hi, hi_cost = side, side_cost
                break
            lo, lo_cost = side, side_cost
    return lo


def _interpolate(lo: int, lo_cost: int, hi: int, hi_cost: int, budget: int, step: int) -> int:
    """Side (rounded down to ``step``) where cost, affine in side², meets ``budget``."""
    slope = max((hi_cost - lo_cost) / (hi**2 - lo**2), 1e-9)
    return int(math.sqrt(max(lo**2 + (budget - lo_cost) / slope, 0))) // step * step
