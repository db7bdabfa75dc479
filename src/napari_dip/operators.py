"""Forward models d(x) of the restoration tasks.

Every operator maps the network's output canvas ``x`` of shape ``(1, C, H', W')``
to the frame of the measured image ``y`` of shape ``(1, C, h, w)`` — or, for a
volume, ``(1, C, Z', H', W')`` to ``(1, C, z, h, w)`` — and the fit then
minimises the data term ``E = mean((d(x) - y)**2)``. The canvas is larger than
the image (the networks need sizes divisible by ``2**levels``), so each operator
ends with the crop that takes the canvas back to the image's own pixels: padded
pixels never enter the loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The image's pixels inside the canvas: one slice per spatial axis, (Y, X) or (Z, Y, X).
Region = tuple[slice, ...]


def data_loss(prediction: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """Mean squared error, the data term of every task (as in the paper's code)."""
    return F.mse_loss(prediction, measured)


def total_variation(x: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
    """Anisotropic total variation of ``x`` over its last ``len(spacing)`` axes: the mean
    absolute difference between neighbours along each axis over their distance (pixels
    in Y and X: 1), summed over the axes (DIP-TV: Liu et al., "Image restoration using
    total variation regularized deep image prior", ICASSP 2019). Added to the data term
    it favours flat regions with sharp edges."""
    total = x.new_zeros(())
    for axis, step in zip(range(x.ndim - len(spacing), x.ndim), spacing, strict=True):
        total = total + torch.diff(x, dim=axis).abs().mean() / step
    return total


class Identity(nn.Module):
    """Denoising (and flash/no-flash): ``d(x) = x`` on the image's pixels."""

    def __init__(self, region: Region) -> None:
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[(..., *self.region)]


class Mask(Identity):
    """Inpainting: ``d(x) = m * x`` with ``m`` = 1 on known pixels, 0 on missing ones.

    The measured image must be masked the same way (multiplied by ``known``), so
    the missing pixels contribute nothing to the loss.

    ``known`` is ``(H, W)`` for an image or ``(Z, H, W)`` for a volume, one axis
    per slice of ``region``.
    """

    def __init__(self, known: torch.Tensor, region: Region) -> None:
        super().__init__(region)
        if known.ndim not in (2, 3) or known.ndim != len(region):
            raise ValueError(
                f"known-pixel mask must be (H, W) or (Z, H, W), one axis per region axis ({len(region)}), "
                f"got shape {tuple(known.shape)}"
            )
        self.register_buffer("known", known.to(torch.float32)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.known


def lanczos2_taps(factor: int) -> np.ndarray:
    """1-D Lanczos2 weights for downsampling by ``factor``, normalised to sum 1.

    The taps sit at HR pixel centres around the centre of one low-resolution pixel,
    ``(j + 0.5) * factor - 0.5`` in HR pixel coordinates (the convention of
    scikit-image and PIL ``resize``), at distances ``d`` in LR pixels with
    ``|d| < 2``. For even factors that is the paper's 4·factor-tap kernel
    (``phase=0.5``); odd factors centre on a pixel and need 4·factor − 1 taps.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
        raise ValueError(f"downsampling factor must be an integer >= 2, got {factor!r}")
    n_taps = 4 * factor if factor % 2 == 0 else 4 * factor - 1
    distance = (np.arange(n_taps) - (n_taps - 1) / 2) / factor
    # Lanczos with support a = 2: sinc(d) * sinc(d / a); np.sinc is sin(pi x) / (pi x).
    taps = np.sinc(distance) * np.sinc(distance / 2)
    return taps / taps.sum()


class LanczosDownsample(nn.Module):
    """Super-resolution: ``d(x)`` = Lanczos2 low-pass then subsampling by ``factor``.

    The 2-D kernel is the outer product of ``lanczos2_taps`` (separable, as in the
    paper's code), applied as two strided 1-D convolutions; edges are replicated.
    A canvas of ``H' = factor * h'`` rows gives exactly ``h'`` rows. On a volume
    ``(1, C, Z, H', W')`` only Y and X are downsampled, plane by plane (the
    microscope's Z sampling is left as it is), giving ``(1, C, Z, h', w')``.
    """

    def __init__(self, factor: int, region: Region) -> None:
        super().__init__()
        taps = torch.from_numpy(lanczos2_taps(factor)).to(torch.float32)
        self.factor = int(factor)
        self.pad = (taps.numel() - self.factor) // 2
        self.region = region
        self.register_buffer("row_taps", taps.view(1, 1, 1, -1))
        self.register_buffer("col_taps", taps.view(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (4, 5):
            raise ValueError(f"expected a (1, C, H, W) or (1, C, Z, H, W) canvas, got shape {tuple(x.shape)}")
        *lead, h, w = x.shape
        p, f = self.pad, self.factor
        # Channels (and Z planes) become the batch so one single-channel kernel serves them all.
        planes = F.pad(x.reshape(math.prod(lead), 1, h, w), (p, p, p, p), mode="replicate")
        planes = F.conv2d(planes, self.row_taps, stride=(1, f))
        planes = F.conv2d(planes, self.col_taps, stride=(f, 1))
        return planes.reshape(*lead, h // f, w // f)[(..., *self.region)]


class Masked(nn.Module):
    """``m * d(x)`` for any operator ``d``: measured values with ``m`` = 0 are left out
    of the loss (super-resolution of an image with hot pixels, say). The measured
    image must be masked the same way."""

    def __init__(self, inner: nn.Module, known: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("known", known.to(torch.float32)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.known
