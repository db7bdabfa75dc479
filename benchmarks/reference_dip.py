"""A plain eager Deep Image Prior, written the way the paper's notebooks are.

Independent of napari_dip (it imports nothing from it): the yardstick for
``compare_reference.py``. Layers as ``nn.Sequential`` with explicit reflection
pads and a concatenation module, ``.item()`` on the loss every step, the EMA
as a fresh tensor every step. Images must be multiples of 32 pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn


class Concat(nn.Module):
    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


def conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d((k - 1) // 2), nn.Conv2d(c_in, c_out, k, stride))


def block(c_in: int, c_out: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [conv(c_in, c_out, k, stride), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]


def skip_net(c_in: int, c_out: int, width: int = 128, levels: int = 5, n_skip: int = 4) -> nn.Module:
    model = nn.Sequential()
    current = model
    depth = c_in
    for i in range(levels):
        deeper = nn.Sequential(*block(depth, width, 3, 2), *block(width, width, 3))
        skip = nn.Sequential(*block(depth, n_skip, 1))
        current.append(Concat(skip, deeper))
        current.append(nn.BatchNorm2d(n_skip + width))
        inner = nn.Sequential()
        if i < levels - 1:
            deeper.append(inner)
        deeper.append(nn.Upsample(scale_factor=2, mode="bilinear"))
        current.extend(block(n_skip + width, width, 3))
        current.extend(block(width, width, 1))
        depth = width
        current = inner
    model.append(nn.Conv2d(width, c_out, 1))
    model.append(nn.Sigmoid())
    return model


def lanczos2_downsampler(factor: int, channels: int) -> nn.Module:
    """The paper's Downsampler(kernel_type='lanczos2', phase=0.5, preserve_size=True)."""
    size = 4 * factor
    centre = (size + 2) / 2  # the paper's (kernel_width + 1) / 2 with kernel_width = 4 * factor + 1
    k = np.zeros((size, size))
    for i in range(1, size + 1):
        for j in range(1, size + 1):
            di, dj = abs(i + 0.5 - centre) / factor, abs(j + 0.5 - centre) / factor
            v = 1.0
            for d in (di, dj):
                if d != 0:
                    v *= 2 * np.sin(np.pi * d) * np.sin(np.pi * d / 2) / (np.pi * np.pi * d * d)
            k[i - 1, j - 1] = v
    k /= k.sum()
    down = nn.Conv2d(channels, channels, size, stride=factor, padding=0)
    down.weight.data[:] = 0
    down.bias.data[:] = 0
    for c in range(channels):
        down.weight.data[c, c] = torch.from_numpy(k)
    return nn.Sequential(nn.ReplicationPad2d((size - factor) // 2), down).requires_grad_(False)


def reference_dip(
    target: np.ndarray,
    iterations: int,
    *,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    **options: object,
) -> tuple[np.ndarray, list[float]]:
    """Fit DIP to ``target`` (C, H, W) in [0, 1]; returns the EMA output and losses.

    ``options`` are ``reference_steps``'s; ``on_step(iteration, ema_output)`` is called
    after every step (1-based).
    """
    losses: list[float] = []
    out_avg = None
    for i, out_avg, loss in reference_steps(target, iterations, **options):
        losses.append(loss)
        if on_step is not None:
            on_step(i, out_avg)
    return out_avg[0].cpu().numpy(), losses


def reference_steps(
    target: np.ndarray,
    iterations: int,
    *,
    width: int = 128,
    lr: float = 0.01,
    reg_noise_std: float = 1 / 30,
    mask: np.ndarray | None = None,
    factor: int = 1,
    seed: int = 0,
    device: str = "cpu",
    exp_weight: float = 0.99,
) -> Iterator[tuple[int, torch.Tensor, float]]:
    """The fit, one step per item: (iteration from 1, EMA output, loss).

    ``mask`` (H, W, 1 = known) gives inpainting, ``factor > 1`` super-resolution.
    A generator, so that a benchmark can interleave it with another fit step by step.
    """
    torch.manual_seed(seed)
    c, h, w = target.shape
    net = skip_net(32, c, width).to(device)
    net_input = (torch.rand(1, 32, h * factor, w * factor) * 0.1).to(device)
    y = torch.from_numpy(target)[None].float().to(device)
    m = torch.from_numpy(mask.astype(np.float32))[None, None].to(device) if mask is not None else None
    down = lanczos2_downsampler(factor, c).to(device) if factor > 1 else None
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    saved = net_input.detach().clone()
    noise = net_input.detach().clone()
    out_avg = None
    for i in range(1, iterations + 1):
        opt.zero_grad()
        if reg_noise_std > 0:
            net_input = saved + noise.normal_() * reg_noise_std
        out = net(net_input)
        pred = down(out) if down is not None else out
        loss = nn.functional.mse_loss(pred * m, y * m) if m is not None else nn.functional.mse_loss(pred, y)
        loss.backward()
        opt.step()
        out_avg = out.detach() if out_avg is None else out_avg * exp_weight + out.detach() * (1 - exp_weight)
        yield i, out_avg, loss.item()
