"""The Deep Image Prior fit: one optimisation loop, written as a generator.

``Fit`` sets up one task (network, input z, operator, optimiser) on a device;
iterating over it runs Adam steps and yields a ``Progress`` record after each,
so any caller (numpy API, CLI, napari worker) can stop between two iterations
and take ``Fit.result()``: the exponential moving average of the outputs.

Images here are float32 arrays ``(C, H, W)`` scaled to [0, 1]; conversion from
and to user dtypes lives in the shells. torch only, no napari.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from .networks import Prior, build_network, input_channels
from .operators import Identity, LanczosDownsample, Mask, Region, data_loss

Task = Literal["denoise", "inpaint", "super-resolve", "flash-no-flash"]
TASKS: tuple[Task, ...] = ("denoise", "inpaint", "super-resolve", "flash-no-flash")
NET_INPUTS = ("noise", "meshgrid")


@dataclass(frozen=True)
class TaskDefaults:
    """Settings of the paper's code for one task."""

    iterations: int
    lr: float
    #: Std of the Gaussian noise added to z at every step ("reg_noise_std").
    input_noise: float


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
    #: Current averaged output, float32 (C, H, W) in [0, 1], or None.
    preview: np.ndarray | None = None
    #: Losses of the iterations since the previous preview, or None.
    losses: np.ndarray | None = None
    _loss: torch.Tensor | None = field(default=None, repr=False)

    @property
    def loss(self) -> float:
        """Data-term loss of this iteration."""
        return float(self._loss) if self._loss is not None else math.nan


def canvas_length(n: int, multiple: int, min_size: int) -> int:
    """Smallest length >= max(n, min_size) that is a multiple of ``multiple``."""
    n = max(n, min_size)
    return -(-n // multiple) * multiple


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


def _meshgrid(height: int, width: int) -> torch.Tensor:
    ys = torch.linspace(0, 1, height)
    xs = torch.linspace(0, 1, width)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y))[None]


def _pad_into(image: np.ndarray, canvas: tuple[int, int], top: int, left: int) -> np.ndarray:
    """Place ``image`` (C, h, w) at (top, left) in a canvas, reflecting at the edges."""
    h, w = image.shape[-2:]
    pad = ((0, 0), (top, canvas[0] - h - top), (left, canvas[1] - w - left))
    return np.pad(image, pad, mode="symmetric")


class Fit:
    """One Deep Image Prior restoration, ready to iterate.

    Parameters
    ----------
    task : {"denoise", "inpaint", "super-resolve", "flash-no-flash"}
    image : ndarray, shape (C, h, w), float32 in [0, 1]
        The measured image: noisy, damaged, low-resolution or no-flash.
    known : ndarray of bool, shape (h, w), optional
        Inpainting only: True where pixels are known.
    factor : int
        Super-resolution only: output is ``factor`` times larger per axis.
    guide : ndarray, shape (C', h, w), optional
        Flash/no-flash only: the flash image, used as the network input z.
    network, width : str, int
        The prior (see ``napari_dip.networks.NETWORKS``) and its channels per level.
    iterations, lr, input_noise : optional
        ``None`` takes the task's defaults (``task_defaults``).
    net_input : {"noise", "meshgrid"}
        z: uniform noise U(0, 0.1) with 32 channels, or a 2-channel coordinate grid.
    ema : float
        Weight of the exponential moving average of the outputs (0 disables it).
    seed : int or None
        Seeds the weights, z and the per-step noise; CPU runs are reproducible.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    preview_every : int
        Progress records carry a preview every this many iterations.
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
        iterations: int | None = None,
        lr: float | None = None,
        input_noise: float | None = None,
        net_input: str = "noise",
        ema: float = 0.99,
        seed: int | None = 0,
        device: str | torch.device = "auto",
        preview_every: int = 100,
    ) -> None:
        defaults = task_defaults(task, factor)
        if net_input not in NET_INPUTS:
            raise ValueError(f"unknown net_input {net_input!r}; choose one of {', '.join(NET_INPUTS)}")
        if task == "flash-no-flash" and guide is None:
            raise ValueError("flash-no-flash needs the flash image as guide")
        self.task = task
        self.device = resolve_device(device)
        self.iterations = defaults.iterations if iterations is None else int(iterations)
        self.lr = defaults.lr if lr is None else float(lr)
        self.input_noise = defaults.input_noise if input_noise is None else float(input_noise)
        self.ema = float(ema)
        self.preview_every = max(int(preview_every), 1)
        self.iteration = 0
        self.seed = int(np.random.SeedSequence().entropy % 2**62) if seed is None else int(seed)

        channels, h, w = image.shape
        if guide is not None:
            in_channels = guide.shape[0]
        elif net_input == "meshgrid":
            in_channels = 2
        else:
            in_channels = input_channels(network, width)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)
            net = build_network(network, in_channels, channels, width)
            cpu_gen = torch.Generator().manual_seed(self.seed + 1)
            if guide is not None and net.input_stride != 1:
                raise ValueError(
                    f"network {network!r} takes no image input; use it for other tasks than flash-no-flash"
                )

            scale = factor if task == "super-resolve" else 1
            # Canvas in measured-image pixels; scale * canvas must suit the network.
            m = net.multiple // math.gcd(net.multiple, scale)
            min_side = -(-net.min_size // scale)
            canvas = (canvas_length(h, m, min_side), canvas_length(w, m, min_side))
            top, left = (canvas[0] - h) // 2, (canvas[1] - w) // 2
            region: Region = (slice(top, top + h), slice(left, left + w))
            self.canvas = (canvas[0] * scale, canvas[1] * scale)
            self.output_region: Region = (
                slice(top * scale, (top + h) * scale),
                slice(left * scale, (left + w) * scale),
            )

            measured = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
            self._known = None
            if task == "inpaint":
                if known is None:
                    raise ValueError("inpainting needs a mask of known pixels")
                known_t = torch.from_numpy(np.asarray(known, dtype=bool))
                operator = Mask(known_t, region)
                measured = measured * known_t.to(torch.float32)
                self._known = known_t
                self._image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
            elif task == "super-resolve":
                operator = LanczosDownsample(scale, region)
            else:
                operator = Identity(region)

            ch, cw = self.canvas
            s = net.input_stride
            if guide is not None:
                z = torch.from_numpy(_pad_into(np.asarray(guide, np.float32), self.canvas, top, left))[None]
            elif net_input == "meshgrid":
                z = _meshgrid(ch // s, cw // s)
            else:
                z = torch.rand(1, in_channels, ch // s, cw // s, generator=cpu_gen) * 0.1

        dev = self.device
        # Channels-last convolutions are ~20 % faster on CPU (oneDNN) and use tensor cores on CUDA.
        fmt = torch.contiguous_format if dev.type == "mps" else torch.channels_last
        self.net: Prior = net.to(dev, memory_format=fmt)
        self.operator = operator.to(dev)
        self._measured = measured.to(dev)
        # z stays contiguous: normal_() into a channels-last tensor is ~10x slower on CPU.
        self._z = z.to(dev).contiguous()
        self._noise_gen = torch.Generator(device=dev).manual_seed(self.seed + 2)
        self._average: torch.Tensor | None = None
        self._losses = torch.zeros(self.iterations, device=dev)
        # The fused kernel updates all parameters at once (CPU and CUDA).
        self._optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr, fused=dev.type in ("cpu", "cuda"))
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def __iter__(self) -> Iterator[Progress]:
        """Run the remaining iterations, yielding a ``Progress`` after each."""
        net, operator, optimizer = self.net, self.operator, self._optimizer
        measured, z0, losses = self._measured, self._z, self._losses
        noise = torch.empty_like(z0) if self.input_noise > 0 else None
        z = z0
        start = time.perf_counter()
        last_preview = self.iteration
        while self.iteration < self.iterations:
            if noise is not None:
                noise.normal_(generator=self._noise_gen)
                z = torch.add(z0, noise, alpha=self.input_noise)
            out = net(z)
            loss = data_loss(operator(out), measured)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                if self._average is None or self.ema == 0:
                    self._average = out.detach().clone()
                else:
                    self._average.lerp_(out.detach(), 1 - self.ema)
                losses[self.iteration] = loss.detach()
            self.iteration += 1
            i = self.iteration
            preview = history = None
            if i % self.preview_every == 0 or i == self.iterations:
                preview = self.result()
                history = losses[last_preview:i].cpu().numpy()
                last_preview = i
            yield Progress(i, self.iterations, time.perf_counter() - start, preview, history, loss.detach())

    @property
    def losses(self) -> np.ndarray:
        """Loss of every iteration done so far (one host copy)."""
        return self._losses[: self.iteration].cpu().numpy()

    def result(self) -> np.ndarray:
        """The averaged output so far, float32 (C, H, W) in [0, 1].

        For inpainting, known pixels keep their measured values; only the missing
        ones come from the network. Before the first iteration: the untrained output.
        """
        with torch.no_grad():
            average = self._average if self._average is not None else self.net(self._z)
            out = average[(0, slice(None), *self.output_region)].float().cpu()
        if self._known is not None:
            out = torch.where(self._known, self._image, out)
        return out.numpy()
