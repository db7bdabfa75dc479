"""The image priors: randomly initialised convolutional networks built by name.

Every network maps an input ``z`` of shape ``(1, in_channels, H / input_stride,
W / input_stride)`` to an image ``(1, out_channels, H, W)`` in (0, 1) (sigmoid
output). ``H`` and ``W`` must be multiples of ``net.multiple`` and at least
``net.min_size``; the fit pads the canvas to satisfy both.

Architectures follow the Deep Image Prior paper's code (Ulyanov et al., 2018):
the skip "hourglass" family, a U-net and a ResNet, plus the Deep Decoder of
Heckel & Hand (2019), which needs no convolution wider than 1x1.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import nn

NETWORKS = ("skip", "encoder-decoder", "unet", "resnet", "deep-decoder")


class Prior(nn.Module):
    """Base class: a generator network plus the canvas geometry it needs."""

    in_channels: int
    #: Canvas height and width must be multiples of this.
    multiple: int = 1
    #: Canvas height and width must be at least this (reflection padding needs
    #: at least 2 pixels at the coarsest level).
    min_size: int = 1
    #: The input z is this many times smaller than the output.
    input_stride: int = 1


def _conv(c_in: int, c_out: int, size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, size, stride, padding=size // 2, padding_mode="reflect")


def _conv_bn_act(c_in: int, c_out: int, size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        _conv(c_in, c_out, size, stride),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2, inplace=True),
    )


class _Hourglass(nn.Module):
    """One scale of the skip network; ``inner`` is the next coarser scale."""

    def __init__(self, c_in: int, down: int, up: int, skip: int, inner: _Hourglass | None) -> None:
        super().__init__()
        self.skip = _conv_bn_act(c_in, skip, 1) if skip else None
        self.down = nn.Sequential(_conv_bn_act(c_in, down, 3, stride=2), _conv_bn_act(down, down, 3))
        self.inner = inner
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
        merged = skip + (inner.out_channels if inner is not None else down)
        self.merge_bn = nn.BatchNorm2d(merged)
        self.up = nn.Sequential(_conv_bn_act(merged, up, 3), _conv_bn_act(up, up, 1))
        self.out_channels = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.down(x)
        if self.inner is not None:
            deep = self.inner(deep)
        deep = self.upsample(deep)
        if self.skip is not None:
            deep = torch.cat((self.skip(x), deep), dim=1)
        return self.up(self.merge_bn(deep))


class Skip(Prior):
    """The paper's hourglass with skip connections (its default prior).

    ``levels`` scales, each: a stride-2 3x3 conv and a 3x3 conv down, bilinear
    upsampling, concatenation with a ``skip``-channel 1x1 branch, then a 3x3 and
    a 1x1 conv up; BatchNorm and LeakyReLU(0.2) after every conv, reflection
    padding, 1x1 conv and sigmoid at the output. ``skip=0`` removes the skip
    connections (the paper's encoder-decoder).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 128, levels: int = 5, skip: int = 4) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.multiple = 2**levels
        self.min_size = 2 ** (levels + 1)
        inner = None
        for level in reversed(range(levels)):
            c_in = in_channels if level == 0 else width
            inner = _Hourglass(c_in, width, width, skip, inner)
        self.body = inner
        self.head = nn.Sequential(nn.Conv2d(width, out_channels, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


class UNet(Prior):
    """U-net (Ronneberger et al.) as in the paper's code: ``depth`` resolutions,
    channels doubling per level from ``width // 8``, max-pool down, bilinear
    upsampling + 3x3 conv up, concatenated skips, BatchNorm + ReLU, sigmoid out.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 128, depth: int = 5) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.multiple = 2 ** (depth - 1)
        self.min_size = 2**depth
        chans = [max(width // 8, 1) * 2**i for i in range(depth)]
        self.encoders = nn.ModuleList(
            [self._double(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
        self.ups = nn.ModuleList([_conv(chans[i + 1], chans[i], 3) for i in range(depth - 1)])
        self.decoders = nn.ModuleList([self._double(2 * chans[i], chans[i]) for i in range(depth - 1)])
        self.head = nn.Sequential(nn.Conv2d(chans[0], out_channels, 1), nn.Sigmoid())

    @staticmethod
    def _double(c_in: int, c_out: int) -> nn.Sequential:
        layers = []
        for c in (c_in, c_out):
            layers += [_conv(c, c_out, 3), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        skips = []
        x = z
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else self.pool(x))
            skips.append(x)
        for i in reversed(range(len(self.decoders))):
            x = self.ups[i](self.upsample(x))
            x = self.decoders[i](torch.cat((skips[i], x), dim=1))
        return self.head(x)


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(width, width, 3),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            _conv(width, width, 3),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet(Prior):
    """Residual network without downsampling: ``blocks`` residual blocks of
    ``width`` channels at full resolution (the paper's ``ResNet`` option)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 128, blocks: int = 8) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.min_size = 2
        self.body = nn.Sequential(
            _conv(in_channels, width, 3),
            nn.LeakyReLU(0.2, inplace=True),
            *[_Residual(width) for _ in range(blocks)],
            _conv(width, width, 3),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, out_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class DeepDecoder(Prior):
    """Deep Decoder (Heckel & Hand, ICLR 2019): a small input tensor upsampled
    ``levels`` times, each step bilinear x2, 1x1 conv, ReLU, BatchNorm; then a
    1x1 conv, ReLU, BatchNorm and a 1x1 conv to the output with sigmoid.
    Its input has ``width`` channels at 1/2**levels of the output size."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 128, levels: int = 4) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.input_stride = 2**levels
        self.multiple = 2**levels
        self.min_size = 2**levels
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(levels):
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear"),
                nn.Conv2d(c, width, 1),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(width),
            ]
            c = width
        layers += [
            nn.Conv2d(width, width, 1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(width),
            nn.Conv2d(width, out_channels, 1),
            nn.Sigmoid(),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


_BUILDERS: dict[str, Callable[..., Prior]] = {
    "skip": lambda i, o, w: Skip(i, o, w, levels=5, skip=4),
    "encoder-decoder": lambda i, o, w: Skip(i, o, w, levels=6, skip=0),
    "unet": lambda i, o, w: UNet(i, o, w, depth=5),
    "resnet": lambda i, o, w: ResNet(i, o, w, blocks=8),
    "deep-decoder": lambda i, o, w: DeepDecoder(i, o, w, levels=4),
}


def check_network(name: object, width: object) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``name`` and ``width`` are valid."""
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    if isinstance(width, bool) or not isinstance(width, numbers.Integral):
        raise TypeError(f"width must be an integer, got {type(width).__name__}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")


def input_channels(name: str, width: int, default: int = 32) -> int:
    """Channels of the random input z that network ``name`` takes by default."""
    return width if name == "deep-decoder" else default


def build_network(name: str, in_channels: int, out_channels: int, width: int = 128) -> Prior:
    """Build prior ``name`` (one of ``NETWORKS``) with ``width`` channels per level.

    ``width`` is the channel count at every level of the skip family and of the
    ResNet and Deep Decoder; the U-net starts from ``width // 8`` and doubles.
    """
    check_network(name, width)
    return _BUILDERS[name](in_channels, out_channels, int(width))
