"""The image priors: randomly initialised convolutional networks built by name.

Every network maps an input ``z`` of shape ``(1, in_channels, *canvas / input_stride)``
to an image ``(1, out_channels, *canvas)`` in (0, 1) (sigmoid output), where the
canvas is ``(H, W)`` for a 2-D prior and ``(Z, H, W)`` for a 3-D one
(``net.spatial_dims``). Each canvas axis must be a multiple of the matching entry
of ``net.multiple`` and at least that of ``net.min_size``; the fit pads the canvas
to satisfy both.

Architectures follow the Deep Image Prior paper's code (Ulyanov et al., 2018):
the skip "hourglass" family, a U-net and a ResNet, plus the Deep Decoder of
Heckel & Hand (2019), which needs no convolution wider than 1x1. The skip family
also comes in 3-D (``NETWORKS_3D``) for volumetric fits of Z-stacks, downsampling
Z only where the voxel spacing allows (see ``z_strides``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ._names import NETWORKS, NETWORKS_3D

#: Beyond this many channels per level no layer fits any memory (a 3x3 convolution of
#: width 8192 alone holds 2.4 GB of weights, 10 GB with its gradient and Adam state).
MAX_WIDTH = 8192

# An int kernel/stride applies to every axis; a tuple gives one entry per axis (Z first).
_Size = int | tuple[int, ...]


class Prior(nn.Module):
    """Base class: a generator network plus the canvas geometry it needs.

    ``multiple`` and ``min_size`` have one entry per spatial axis, in canvas
    order: ``(Y, X)`` for 2-D priors, ``(Z, Y, X)`` for 3-D ones.
    """

    in_channels: int
    #: 2 for an image prior over (Y, X), 3 for a volume prior over (Z, Y, X).
    spatial_dims: int = 2
    #: Each canvas axis must be a multiple of its entry.
    multiple: tuple[int, ...] = (1, 1)
    #: Each canvas axis must be at least its entry (reflection padding needs
    #: at least 2 pixels at the coarsest level).
    min_size: tuple[int, ...] = (1, 1)
    #: The input z is this many times smaller than the output, on every axis.
    input_stride: int = 1


def _channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last (and not also plain, as 1x1 images are).
    Asks ``is_contiguous()`` first: inside an ensemble's vmap only that query is allowed,
    and an ensemble's tensors are plain."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _NormedBias:
    """Mixed in before a convolution class: with ``before_norm`` (set by ``_before_norm``)
    the layer's output goes straight into a BatchNorm, which takes out any constant per
    channel, so the bias changes nothing but rounding. It stays a parameter (the paper's
    network, its parameter count and seeded weights) but is not added: no pass over the
    output to add it and none over the output gradient to sum for it (its gradient is 0)."""

    before_norm: bool = False

    def _bias(self) -> torch.Tensor | None:
        return None if self.before_norm else self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight, self._bias())


class _PointwiseConv2d(_NormedBias, nn.Conv2d):
    """A 1x1 convolution that runs a channels-last CPU input of 2048 pixels or more as one
    matrix product over its channels (a free view): oneDNN's 1x1 convolution took twice
    as long forward and back (32 to 32 channels at 96²: 2.9 against 1.4 ms on a 2-core
    CPU; at 24² and below the convolution is the faster one). Same layer, same weights.
    Its output is then a permuted view: an in-place operation right after it makes
    autograd copy the whole tensor (the Deep Decoder's in-place ReLU cost 2x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type == "cpu"
            and x.shape[-1] * x.shape[-2] >= 2048
            and self.stride == (1, 1)
            and self.groups == 1  # grouped (an ensemble's): oneDNN's; products per group gain little
            and _channels_last(x)
        ):
            weight, bias = self.weight.flatten(1), self._bias()
            if weight.shape[0] == 1 and torch.is_grad_enabled():
                y = _ToOneChannel.apply(x.permute(0, 2, 3, 1), weight, bias)
            else:
                y = nn.functional.linear(x.permute(0, 2, 3, 1), weight, bias)
            return y.permute(0, 3, 1, 2)
        return super().forward(x)


class _ToOneChannel(torch.autograd.Function):
    """``linear`` to one output channel (a grey image's head) whose input gradient is a
    broadcast product: as a matrix product over an inner dimension of 1, torch's CPU
    path took 1.2 ms at 128² in a width-32 fit, the product 0.6 ms."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad * weight[0] if ctx.needs_input_grad[0] else None
        grad_w = (grad.reshape(1, -1) @ x.reshape(-1, x.shape[-1])) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum().reshape(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _weight_grad_by_matmul(x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> bool:
    """Whether a stride-1 2-D convolution of ``x`` should take ``_ShiftedWeightGrad``.

    Only on CPUs whose best instructions are AVX2: there oneDNN computes the weight
    gradient of a channels-last convolution with an old direct kernel (``jit:avx2``;
    AVX-512 CPUs get brgemm kernels), up to 3x slower than the matrix products (132 to 128
    channels at 98²: 102 against 32 ms; 36 to 32: 3.4 against 2.9 ms). With fewer than
    32 output channels or 2**23 pixel-channel products (32 channels below ~90²) the
    kernel is as fast or faster (BENCHMARKS.md). A grouped convolution's groups (a
    ``GroupedEnsemble``'s members) are counted one by one."""
    c_out, c_in = weight.shape[0] // groups, weight.shape[1]
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.requires_grad
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and c_out >= 32
        and x.shape[-1] * x.shape[-2] * c_in * c_out >= 2**23
        and _channels_last(x)
        and _cpu_capability() == "AVX2"
    )


@functools.cache
def _cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


def memory_format(spatial_dims: int, device: torch.device) -> torch.memory_format:
    """The layout a single network's tensors take on ``device``.

    Channels-last on CPU, where oneDNN's kernels are fastest with it (~20 % at 2-D), except
    for 3-D networks on AVX2 CPUs: there oneDNN's channels-last 3-D weight gradient is the
    slow direct kernel (see ``_weight_grad_by_matmul``), and a whole 3-D step took 287-329
    against 198-223 ms in the plain layout (8x64x64, width 32, BENCHMARKS.md). The plain
    layout on GPUs (channels-last was slower there)."""
    if device.type != "cpu":
        return torch.contiguous_format
    if spatial_dims == 2:
        return torch.channels_last
    return torch.contiguous_format if _cpu_capability() == "AVX2" else torch.channels_last_3d


class _ShiftedWeightGrad(torch.autograd.Function):
    """A stride-1, unpadded 2-D convolution of a channels-last input whose weight gradient
    is one matrix product per kernel tap (and group). Laid out (pixels, channels), the input rows that
    tap (i, j) meets are one contiguous block starting i * width + j rows in, if the
    output gradient is given the input's width (zeros in the extra columns): so each tap is
    ``grad_rows.T @ input_rows[shift : shift + n]`` with no copy of the input."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int = 1) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.groups = groups
        return nn.functional.conv2d(x, weight, bias, groups=groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, (1, 1), (0, 0), (1, 1), False, (0, 0), ctx.groups, (True, False, False)
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(grad, x.contiguous(memory_format=torch.channels_last), weight.shape, ctx.groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _weight_grad(grad: torch.Tensor, x: torch.Tensor, shape: torch.Size, groups: int = 1) -> torch.Tensor:
    """Weight gradient (out, in, kh, kw), laid out channels-last, of ``conv2d(x, w, groups=groups)``."""
    c_out, c_in, kh, kw = shape
    n, _, rows, width = x.shape
    # Output gradient at the input's width (zeros beyond): its row r meets input row r + shift.
    wide = grad.new_empty(n, grad.shape[2], width, c_out)
    wide[:, :, grad.shape[3] :] = 0
    wide[:, :, : grad.shape[3]] = grad.permute(0, 2, 3, 1)
    grad = wide.reshape(n, -1, c_out)
    length = grad.shape[1] - (kw - 1)  # the last kw - 1 rows are padding: zeros
    x = x.permute(0, 2, 3, 1).reshape(n, rows * width, c_in * groups)
    out = torch.empty(c_out, kh, kw, c_in, dtype=x.dtype, device=x.device)
    per_group = c_out // groups  # group k: output channels k * per_group.., input channels k * c_in..
    for k in range(groups):
        g = grad[..., k * per_group : (k + 1) * per_group]
        xk = x[..., k * c_in : (k + 1) * c_in]
        for i in range(kh):
            for j in range(kw):
                shift = i * width + j
                tap = out[k * per_group : (k + 1) * per_group, i, j]
                torch.mm(g[0, :length].T, xk[0, shift : shift + length], out=tap)
                for b in range(1, n):
                    tap.addmm_(g[b, :length].T, xk[b, shift : shift + length])
    return out.permute(0, 3, 1, 2)


#: Winograd's convolution (``_Winograd``) from this many output pixels x input x output
#: channels on, and from ``WINOGRAD_CHANNELS`` input and output channels; None: never.
#: Below either its transforms cost more than they save (BENCHMARKS.md).
WINOGRAD_WORK: int | None = 2**23
WINOGRAD_CHANNELS = 96
#: Tiles x channels per band of ``_Winograd``'s transforms.
WINOGRAD_BAND = 2**15
#: Bytes of transformed tiles a layer keeps for its backward (``_Winograd``).
WINOGRAD_KEEP = 2**26


#: The device a step simulated on "meta" stands for (``simulating``; memory.py), per thread.
_simulated_device: contextvars.ContextVar[str | None] = contextvars.ContextVar("simulated_device", default=None)


@contextlib.contextmanager
def simulating(device_type: str) -> Iterator[None]:
    """Layers given "meta" tensors choose their kernels as on ``device_type``, so a
    simulated step (``memory.estimate_fit_bytes``) allocates what the real one will."""
    token = _simulated_device.set(device_type)
    try:
        yield
    finally:
        _simulated_device.reset(token)


def _winograd_rows(x: torch.Tensor, weight: torch.Tensor, groups: int) -> int | None:
    """Tile rows per band if this stride-1 2-D convolution of ``x`` should take
    ``_Winograd``, else None: same-padded 3x3 float32 convolutions on CPU of at least
    ``WINOGRAD_WORK``, sides multiples of 4, one group, outside autocast and vmap."""
    c_out, c_in, *kernel = weight.shape
    h, w = x.shape[-2:]
    device = _simulated_device.get() if x.device.type == "meta" else x.device.type
    if not (
        WINOGRAD_WORK is not None
        and kernel == [3, 3]
        and groups == 1
        and min(c_in, c_out) >= WINOGRAD_CHANNELS
        and device == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and h % 4 == 0
        and w % 4 == 0
        and h * w * c_in * c_out >= WINOGRAD_WORK
        and not torch.is_autocast_enabled("cpu")
        and not torch._C._functorch.is_batchedtensor(x)
        and (_channels_last(x) or x.device.type == "meta")  # a simulation's layout is plain
    ):
        return None
    return max(1, WINOGRAD_BAND // (x.shape[0] * (w // 4) * max(c_in, c_out)))


@functools.cache
def _winograd_matrices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lavin & Gray's F(4x4, 3x3) transforms as Kronecker products acting on flattened
    tiles: data (36 x 36, on 6x6 input tiles), kernel (36 x 9), output (16 x 36)."""
    d = {"dtype": torch.float64, "device": "cpu"}  # whatever device a caller's context sets
    b = torch.tensor(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        **d,
    )
    g = torch.tensor(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        **d,
    )
    a = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], **d)
    return tuple(torch.kron(m, m).float().to(device) for m in (b, g, a))


def _winograd_bands(
    x: torch.Tensor, rows: int, transform: bool = True, kept: bool = False
) -> Iterator[tuple[int, int, torch.Tensor | None]]:
    """``_Winograd``'s transformed input tiles (36, tiles, channels), ``rows`` tile rows at a
    time: (first tile row, tile rows, tiles or None without ``transform``) per band. On
    "meta" (a simulated step) only the first band unless the tiles are ``kept``: the others
    allocate alike, and a wide canvas has thousands."""
    data = _winograd_matrices(x.device)[0]
    n, c, hp, wp = x.shape
    th, tw = (hp - 2) // 4, (wp - 2) // 4
    xl = x.permute(0, 2, 3, 1)  # (n, hp, wp, c), dense
    starts = range(0, th, rows)
    for r0 in starts if kept or x.device.type != "meta" else starts[:1]:
        r = min(rows, th - r0)
        if not transform:
            yield r0, r, None
            continue
        tiles = xl[:, 4 * r0 : 4 * (r0 + r) + 2].unfold(1, 6, 4).unfold(2, 6, 4)  # (n, r, tw, c, 6, 6)
        p = n * r * tw
        yield r0, r, (data @ tiles.permute(4, 5, 0, 1, 2, 3).reshape(36, p * c)).view(36, p, c)


class _Winograd(torch.autograd.Function):
    """A 3x3, stride-1, unpadded convolution of a channels-last CPU input (output sides
    multiples of 4) by Winograd's minimal filtering F(4x4, 3x3): 36 products of
    (tiles x in) by (in x out) matrices per 4x4 output tile instead of 144 per
    channel pair, their gradients likewise. The transforms are matrix products too, taken
    over bands of ``rows`` tile rows so that each band's tiles stay in cache. Same
    numbers to ~1e-5 relative (float32)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> torch.Tensor:
        _, kernel, out = _winograd_matrices(x.device)
        n, c, hp, wp = x.shape
        k = weight.shape[0]
        th, tw = (hp - 2) // 4, (wp - 2) // 4
        u = (kernel @ weight.permute(2, 3, 1, 0).reshape(9, c * k)).view(36, c, k)
        y = x.new_empty(n, th, 4, tw, 4, k)
        # Small layers keep their transformed tiles (2.25x the input) for the backward, larger
        # ones transform the input again there (6 % of a width-128 step at 96²).
        keep = 36 * n * th * tw * c * x.element_size() <= WINOGRAD_KEEP
        kept = []
        for r0, r, v in _winograd_bands(x, rows, kept=keep):
            if keep:
                kept.append(v)
            m = torch.bmm(v, u)
            y[:, r0 : r0 + r] = (out @ m.view(36, -1)).view(4, 4, n, r, tw, k).permute(2, 3, 0, 4, 1, 5)
        y = y.view(n, 4 * th, 4 * tw, k)
        if bias is not None:
            y += bias
        ctx.save_for_backward(x, u, *kept)
        ctx.rows = rows
        ctx.has_bias = bias is not None
        return y.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, u, *kept = ctx.saved_tensors
        data, kernel, out = _winograd_matrices(x.device)
        rows, (n, c, hp, wp), k = ctx.rows, x.shape, u.shape[2]
        th, tw = (hp - 2) // 4, (wp - 2) // 4
        grad = grad.permute(0, 2, 3, 1).contiguous().view(n, th, 4, tw, 4, k)
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = grad.new_empty(n, hp, wp, c) if want_x else None
        if want_x:  # the last two rows and columns only receive overlaps (below)
            grad_x[:, 4 * th :].zero_()
            grad_x[:, : 4 * th, 4 * tw :].zero_()
        grad_u = grad.new_zeros(36, c, k) if want_w else None
        pending = None
        bands = _winograd_bands(x, rows, transform=want_w)  # the tiles serve the weight gradient only
        if kept:  # the forward's tiles
            where = _winograd_bands(x, rows, transform=False, kept=True)
            bands = ((r0, r, v) for (r0, r, _), v in zip(where, kept, strict=True))
        for r0, r, v in bands:
            p = n * r * tw
            gm = (out.T @ grad[:, r0 : r0 + r].permute(2, 4, 0, 1, 3, 5).reshape(16, p * k)).view(36, p, k)
            if want_w:
                grad_u.baddbmm_(v.transpose(1, 2), gm)
            if not want_x:
                continue
            gd = (data.T @ torch.bmm(gm, u.transpose(1, 2)).view(36, p * c)).view(6, 6, n, r, tw, c)
            gd = gd.permute(2, 3, 0, 4, 1, 5)  # (n, r, 6, tw, 6, c): input tiles, overlapping by 2 pixels
            _cells(grad_x, 4 * r0, 0, r, 4, tw, 4).copy_(gd[:, :, :4, :, :4])
            _cells(grad_x, 4 * r0, 4, r, 4, tw, 2).add_(gd[:, :, :4, :, 4:])
            if pending is not None:  # the previous band's overlap into this band's first row, now written
                _add_row_overlap(grad_x, 4 * r0, 1, tw, pending)
            _add_row_overlap(grad_x, 4 * r0 + 4, r - 1, tw, gd[:, : r - 1, 4:])
            pending = gd[:, r - 1 :, 4:]
        if want_x:
            _add_row_overlap(grad_x, 4 * th, 1, tw, pending)
            grad_x = grad_x.permute(0, 3, 1, 2)
        grad_w = grad_b = None
        if want_w:
            grad_w = (kernel.T @ grad_u.view(36, c * k)).view(3, 3, c, k).permute(3, 2, 0, 1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 1, 2, 3, 4))
        return grad_x, grad_w, grad_b, None


def _cells(t: torch.Tensor, row: int, col: int, rows: int, sub_rows: int, cols: int, sub_cols: int) -> torch.Tensor:
    """The view of ``t`` (n, H, W, c) whose element (b, i, s, j, v, ch) is
    ``t[b, row + 4 i + s, col + 4 j + v, ch]``: parts of 4x4 cells, ``rows`` x ``cols`` of them."""
    n, _, _, c = t.shape
    sn, sh, sw, _ = t.stride()
    return t.as_strided(
        (n, rows, sub_rows, cols, sub_cols, c),
        (sn, 4 * sh, sh, 4 * sw, sw, 1),
        t.storage_offset() + row * sh + col * sw,
    )


def _add_row_overlap(t: torch.Tensor, row: int, rows: int, cols: int, tiles: torch.Tensor) -> None:
    """Add the last two rows of ``rows`` rows of 6x6 tiles' gradients (n, rows, 2, cols, 6, c)
    to the first two rows of the cells starting at ``row``."""
    if rows:
        _cells(t, row, 0, rows, 2, cols, 4).add_(tiles[..., :4, :])
        _cells(t, row, 4, rows, 2, cols, 2).add_(tiles[..., 4:, :])


class _ShiftedConv2d(nn.Conv2d):
    """Conv2d that takes Winograd's algorithm (``_Winograd``), or else a weight gradient by
    shifted matrix products (``_ShiftedWeightGrad``), where that is faster. Same layer, same
    weights, same numbers to rounding."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.stride != (1, 1) or self.dilation != (1, 1):
            return super()._conv_forward(x, weight, bias)
        rows = _winograd_rows(x, weight, self.groups) if self.padding == (1, 1) else None
        if rows is None and not _weight_grad_by_matmul(x, weight, self.groups):
            return super()._conv_forward(x, weight, bias)
        if any(self.padding):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=mode)
        if rows is not None:
            return _Winograd.apply(x, weight, bias, rows)
        return _ShiftedWeightGrad.apply(x, weight, bias, self.groups)


class _LowPrecision:
    """Mixed in before a convolution class: runs the convolution in bfloat16, cast in and
    out inside the layer, where ``bfloat16_from`` says (``large_convolutions_in_bfloat16``)."""

    #: Stride-1 convolutions (not pointwise) of at least this many output pixels (voxels) x
    #: input x output channels (per group) run in bfloat16, outside autocast; None: never.
    bfloat16_from: int | None = None

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            self.bfloat16_from is not None
            and x.dtype == torch.float32
            and all(s == 1 for s in self.stride)
            and any(k > 1 for k in self.kernel_size)  # pointwise ones lose in bfloat16 (1.15x)
            and math.prod(x.shape[2:]) * weight.shape[0] * weight.shape[1] >= self.bfloat16_from * self.groups
        ):
            low = torch.bfloat16
            return super()._conv_forward(x.to(low), weight.to(low), None if bias is None else bias.to(low)).float()
        return super()._conv_forward(x, weight, bias)


class _Conv2d(_NormedBias, _LowPrecision, _ShiftedConv2d):
    """The 2-D convolution of our networks: in bfloat16 where asked (``_LowPrecision``),
    else by Winograd's algorithm or with the shifted weight gradient where that is faster
    (``_ShiftedConv2d``)."""


class _Conv3d(_NormedBias, _LowPrecision, nn.Conv3d):
    """The 3-D convolution of our networks: in bfloat16 where asked (``_LowPrecision``)."""


def large_convolutions_in_bfloat16(net: nn.Module, work: int | None) -> None:
    """Run ``net``'s stride-1 convolutions of at least ``work`` output pixels (voxels) x
    input x output channels (per member of a grouped ensemble) in bfloat16, the rest in
    float32 (None: all in float32). Casts in and out are part of each such layer: only the
    largest convolutions gain from bfloat16 (see ``fit.MIXED_WORK``)."""
    for module in net.modules():
        if isinstance(module, _LowPrecision):
            module.bfloat16_from = work


def _conv(
    c_in: int, c_out: int, size: _Size, stride: _Size = 1, dims: int = 2, groups: int = 1
) -> nn.Conv2d | nn.Conv3d:
    """A convolution of ``c_in`` to ``c_out`` channels, ``groups`` times side by side."""
    if dims == 2 and size == 1:
        return _PointwiseConv2d(c_in * groups, c_out * groups, 1, stride, groups=groups)
    conv = _Conv2d if dims == 2 else _Conv3d
    padding = size // 2 if isinstance(size, int) else tuple(k // 2 for k in size)
    # Reflection padding of nothing (1x1 kernels) would still copy the input, forward and back.
    mode = "reflect" if any(p > 0 for p in ((padding,) if isinstance(padding, int) else padding)) else "zeros"
    return conv(c_in * groups, c_out * groups, size, stride, padding=padding, padding_mode=mode, groups=groups)


class _BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises a channels-last CPU input whose channel count is not a
    multiple of 8 (the 4 skip channels) in the plain layout: torch's channels-last
    kernels are 2-6x slower there (4 channels at 96²: 0.82 against 0.13 ms forward and
    back), which the two copies do not come near. Same numbers."""

    def plain_for(self, x: torch.Tensor) -> bool:
        """Whether this layer normalises ``x`` in the plain layout (and converts it back)."""
        return bool(self.num_features % 8) and x.device.type == "cpu" and _channels_last(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain_for(x):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward hands on a dense channels-last gradient. The gradient of a
    part of a concatenation is a strided slice, and torch's CPU BatchNorm backward on
    such a slice takes a slow path (32 channels at 96²: 1.9 against 0.35 ms)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.as_strided(x.size(), x.stride())  # a view that keeps the layout (view_as may not)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def _concat(parts: tuple[torch.Tensor, ...], groups: int = 1) -> torch.Tensor:
    """``torch.cat`` over channels whose backward gives each part a dense gradient on CPU.
    Parts in the plain layout get dense gradients anyway: only channels-last ones need it.

    With ``groups`` (a grouped ensemble's members side by side), each part's channels are
    ``groups`` blocks, and the result holds each group's blocks together: member k's
    concatenation is block k. Channels-last parts stay channels-last (one copy, as cat)."""
    first = parts[0]
    dense = first.device.type == "cpu" and torch.is_grad_enabled() and first.dim() == 4 and _channels_last(first)
    if dense:
        parts = tuple(_DenseGrad.apply(p) for p in parts)
    if groups == 1:
        return torch.cat(parts, dim=1)
    if first.dim() == 4 and _channels_last(first):  # (N, H, W, groups, c): cat the last axis
        blocks = [p.permute(0, 2, 3, 1).unflatten(3, (groups, -1)) for p in parts]
        return torch.cat(blocks, dim=4).flatten(3).permute(0, 3, 1, 2)
    blocks = [p.unflatten(1, (groups, -1)) for p in parts]
    return torch.cat(blocks, dim=2).flatten(1, 2)


def _before_norm(conv: nn.Module) -> nn.Module:
    """``conv``, marked as feeding a BatchNorm directly (``_NormedBias``)."""
    conv.before_norm = True
    return conv


def _batch_norm(channels: int, dims: int = 2) -> nn.Module:
    """BatchNorm over the batch's own statistics only: a fit never leaves training mode, so
    running statistics would never be read, yet keeping them costs one more operator call
    per layer and step (2-5 % of a width-32 CPU step at 64²-96²). Same numbers."""
    if dims == 2:
        return _BatchNorm2d(channels, track_running_stats=False)
    return nn.BatchNorm3d(channels, track_running_stats=False)


def _conv_bn_act(
    c_in: int, c_out: int, size: _Size, stride: _Size = 1, dims: int = 2, groups: int = 1
) -> nn.Sequential:
    # BatchNorm is per channel: over a grouped layer's channels it is each group's own.
    return nn.Sequential(
        _before_norm(_conv(c_in, c_out, size, stride, dims, groups)),
        _batch_norm(c_out * groups, dims),
        nn.LeakyReLU(0.2, inplace=True),
    )


class _Hourglass(nn.Module):
    """One scale of the skip network; ``inner`` is the next coarser scale.

    2-D when ``z_stride`` is None; otherwise 3-D, downsampling by
    ``(z_stride, 2, 2)`` with ``(z_kernel, 3, 3)`` kernels.
    """

    def __init__(
        self,
        c_in: int,
        down: int,
        up: int,
        skip: int,
        inner: _Hourglass | None,
        z_stride: int | None = None,
        z_kernel: int = 3,
        groups: int = 1,
    ) -> None:
        super().__init__()
        dims = 2 if z_stride is None else 3
        self.groups = g = groups
        # 2-D keeps plain ints, so its layers are exactly the paper's (and seeded fits unchanged).
        k3: _Size = 3 if dims == 2 else (z_kernel, 3, 3)
        stride: _Size = 2 if dims == 2 else (z_stride, 2, 2)
        self.skip = _conv_bn_act(c_in, skip, 1, dims=dims, groups=g) if skip else None
        self.down = nn.Sequential(
            _conv_bn_act(c_in, down, k3, stride=stride, dims=dims, groups=g),
            _conv_bn_act(down, down, k3, dims=dims, groups=g),
        )
        self.inner = inner
        # Undo exactly this level's stride, so every level returns its input's size.
        self.upsample = (
            nn.Upsample(scale_factor=2, mode="bilinear")
            if dims == 2
            else nn.Upsample(scale_factor=(float(z_stride), 2.0, 2.0), mode="trilinear")
        )
        deep = inner.out_channels if inner is not None else down
        # The paper normalises the concatenation; BatchNorm is per channel, so normalising
        # each part before concatenating is the same layer, and on CPU it keeps the wide
        # part in oneDNN's channels-last kernels (4 + 32 merged channels would not be).
        self.skip_bn = _batch_norm(skip * g, dims) if skip else None
        self.deep_bn = _batch_norm(deep * g, dims)
        self.up = nn.Sequential(
            _conv_bn_act(skip + deep, up, k3, dims=dims, groups=g), _conv_bn_act(up, up, 1, dims=dims, groups=g)
        )
        self.out_channels = up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.down(x)
        if self.inner is not None:
            deep = self.inner(deep)
        deep = self.deep_bn(self.upsample(deep))
        if self.skip is not None:
            deep = _concat((self._skip(x), deep), self.groups)
        return self.up(deep)

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        """The skip branch: conv, BatchNorm, LeakyReLU, BatchNorm. Its few channels (4 a
        member) would have each BatchNorm convert a channels-last CPU input to the plain
        layout and back (``_BatchNorm2d``); converted once for both instead: 7-17 % of the
        branch's time forward and back at 32²-128² (the same numbers)."""
        conv, norm, act = self.skip
        s = conv(x)
        plain = isinstance(self.skip_bn, _BatchNorm2d) and self.skip_bn.plain_for(s)  # 3-D: BatchNorm3d
        if plain:
            s = s.contiguous()
        s = self.skip_bn(act(norm(s)))
        return s.contiguous(memory_format=torch.channels_last) if plain else s


def z_strides(z_size: int, levels: int, anisotropy: float = 1.0) -> tuple[int, ...]:
    """Z stride (1 or 2) of each level of a 3-D skip network; Y and X always stride 2.

    ``anisotropy`` is the Z step over the XY pixel size (3.0 for a 0.3 µm Z step
    over 0.1 µm pixels). Following nnU-Net's rule, the Z and XY spacings are
    tracked through the levels (XY doubles every level) and a level halves Z only
    if the current Z spacing is < 2x the current XY spacing, so a coarse Z waits
    until XY has caught up, and only if ``z // 2 >= 2`` planes of the data remain
    (the floor keeps every coarse plane backed by real planes, and 3-wide
    reflection padding needs at least 2): stacks of 2-3 planes are never
    downsampled in Z. Examples with 5 levels: 32 planes isotropic ->
    ``(2, 2, 2, 2, 1)``; 16 planes at anisotropy 3 -> ``(1, 2, 2, 2, 1)``;
    5 planes -> ``(2, 1, 1, 1, 1)``.
    """
    if isinstance(z_size, bool) or not isinstance(z_size, numbers.Integral) or z_size < 1:
        raise ValueError(f"z_size must be an integer >= 1 (the number of Z planes), got {z_size!r}")
    if isinstance(levels, bool) or not isinstance(levels, numbers.Integral) or levels < 0:
        raise ValueError(f"levels must be an integer >= 0, got {levels!r}")
    if isinstance(anisotropy, bool) or not isinstance(anisotropy, numbers.Real) or not 0 < anisotropy < math.inf:
        raise ValueError(f"anisotropy (Z step / XY pixel size) must be a positive number, got {anisotropy!r}")
    strides = []
    z_spacing, xy_spacing, planes = float(anisotropy), 1.0, int(z_size)
    for _ in range(levels):
        if z_spacing < 2 * xy_spacing and planes // 2 >= 2:
            strides.append(2)
            z_spacing *= 2
            planes //= 2
        else:
            strides.append(1)
        xy_spacing *= 2
    return tuple(strides)


class Skip(Prior):
    """The paper's hourglass with skip connections (its default prior).

    ``levels`` scales, each: a stride-2 3x3 conv and a 3x3 conv down, bilinear
    upsampling, concatenation with a ``skip``-channel 1x1 branch, then a 3x3 and
    a 1x1 conv up; BatchNorm and LeakyReLU(0.2) after every conv, reflection
    padding, 1x1 conv and sigmoid at the output. ``skip=0`` removes the skip
    connections (the paper's encoder-decoder). Geometry: ``multiple`` is
    ``2**levels`` and ``min_size`` ``2**(levels + 1)`` on Y and X.

    With ``z_size`` (the number of Z planes) the network is 3-D over (Z, Y, X):
    the same structure with Conv3d, BatchNorm3d and trilinear upsampling. Level
    ``i`` strides ``(z_strides[i], 2, 2)`` (``net.z_strides``, from the function
    ``z_strides`` with ``anisotropy``) and its upsampling scales by exactly that. Kernels are
    ``(3, 3, 3)``, or ``(1, 3, 3)`` for a single plane (Z is then never
    downsampled; with >= 2 planes every level keeps >= 2, so 3 wide is safe).
    On Z, ``multiple`` is ``prod(z_strides)`` and ``min_size`` twice that (2
    planes at the coarsest level), or, with no Z downsampling, ``min(z_size, 2)``:
    ``z_size`` itself always fits.

    ``groups`` builds that many networks side by side in one (grouped convolutions,
    BatchNorm over all their channels, which is each one's own): input and output
    channels are ``groups`` blocks, one per network (``GroupedEnsemble``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 128,
        levels: int = 5,
        skip: int = 4,
        *,
        z_size: int | None = None,
        anisotropy: float = 1.0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.groups = groups
        # What a grouped copy (GroupedEnsemble) is built from.
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "width": width,
            "levels": levels,
            "skip": skip,
            "z_size": z_size,
            "anisotropy": anisotropy,
        }
        xy_multiple, xy_min = 2**levels, 2 ** (levels + 1)
        if z_size is None:
            strides: tuple[int | None, ...] = (None,) * levels
            z_kernel = 3
            self.multiple = (xy_multiple, xy_multiple)
            self.min_size = (xy_min, xy_min)
        else:
            strides = self.z_strides = z_strides(z_size, levels, anisotropy)
            z_kernel = 3 if z_size >= 2 else 1
            z_multiple = math.prod(strides)
            self.spatial_dims = 3
            self.multiple = (z_multiple, xy_multiple, xy_multiple)
            self.min_size = (2 * z_multiple if z_multiple > 1 else min(int(z_size), 2), xy_min, xy_min)
        inner = None
        for level in reversed(range(levels)):
            c_in = in_channels if level == 0 else width
            inner = _Hourglass(
                c_in, width, width, skip, inner, z_stride=strides[level], z_kernel=z_kernel, groups=groups
            )
        self.body = inner
        self.head = nn.Sequential(
            _conv(width, out_channels, 1, dims=2 if z_size is None else 3, groups=groups), nn.Sigmoid()
        )

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
        self.multiple = (2 ** (depth - 1),) * 2
        self.min_size = (2**depth,) * 2
        chans = [max(width // 8, 1) * 2**i for i in range(depth)]
        self.encoders = nn.ModuleList(
            [self._double(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
        self.ups = nn.ModuleList([_conv(chans[i + 1], chans[i], 3) for i in range(depth - 1)])
        self.decoders = nn.ModuleList([self._double(2 * chans[i], chans[i]) for i in range(depth - 1)])
        self.head = nn.Sequential(_conv(chans[0], out_channels, 1), nn.Sigmoid())

    @staticmethod
    def _double(c_in: int, c_out: int) -> nn.Sequential:
        layers = []
        for c in (c_in, c_out):
            layers += [_before_norm(_conv(c, c_out, 3)), _batch_norm(c_out), nn.ReLU(inplace=True)]
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
            _before_norm(_conv(width, width, 3)),
            _batch_norm(width),
            nn.LeakyReLU(0.2, inplace=True),
            _before_norm(_conv(width, width, 3)),
            _batch_norm(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet(Prior):
    """Residual network without downsampling: ``blocks`` residual blocks of
    ``width`` channels at full resolution (the paper's ``ResNet`` option)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 128, blocks: int = 8) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.min_size = (2, 2)
        self.body = nn.Sequential(
            _conv(in_channels, width, 3),
            nn.LeakyReLU(0.2, inplace=True),
            *[_Residual(width) for _ in range(blocks)],
            _before_norm(_conv(width, width, 3)),
            _batch_norm(width),
            nn.LeakyReLU(0.2, inplace=True),
            _conv(width, out_channels, 1),
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
        self.multiple = (2**levels,) * 2
        self.min_size = (2**levels,) * 2
        layers: list[nn.Module] = []
        c = in_channels
        # oneDNN's own 1x1 convolutions, not _PointwiseConv2d's matrix products: their
        # output is a permuted view, and the in-place ReLU on it makes autograd copy the
        # whole tensor back; in this net of nothing else they took 2x the time and memory
        # on CPU (256², width 64: 130 against 62 ms, 276 against 169 MB a step), and even
        # without the in-place ReLU they were the slower (BENCHMARKS.md).
        pointwise = functools.partial(nn.Conv2d, kernel_size=1)
        for _ in range(levels):
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear"),
                pointwise(c, width),
                nn.ReLU(inplace=True),
                _batch_norm(width),
            ]
            c = width
        layers += [
            pointwise(width, width),
            nn.ReLU(inplace=True),
            _batch_norm(width),
            pointwise(width, out_channels),
            nn.Sigmoid(),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


# 2-D builders take (in_channels, out_channels, width); 3-D ones also (z_size, anisotropy).
_BUILDERS: dict[str, Callable[..., Prior]] = {
    "skip": lambda i, o, w: Skip(i, o, w, levels=5, skip=4),
    "encoder-decoder": lambda i, o, w: Skip(i, o, w, levels=6, skip=0),
    "unet": lambda i, o, w: UNet(i, o, w, depth=5),
    "resnet": lambda i, o, w: ResNet(i, o, w, blocks=8),
    "deep-decoder": lambda i, o, w: DeepDecoder(i, o, w, levels=4),
}
_BUILDERS_3D: dict[str, Callable[..., Prior]] = {
    "skip": lambda i, o, w, z, a: Skip(i, o, w, levels=5, skip=4, z_size=z, anisotropy=a),
    "encoder-decoder": lambda i, o, w, z, a: Skip(i, o, w, levels=6, skip=0, z_size=z, anisotropy=a),
}


def check_network(name: object, width: object, *, spatial_dims: object = 2) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``name``, ``width`` and ``spatial_dims`` are valid
    (and ``name`` exists in that many dimensions)."""
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    if isinstance(width, bool) or not isinstance(width, numbers.Integral):
        raise TypeError(f"width must be an integer, got {type(width).__name__}")
    if not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"width must be between 1 and {MAX_WIDTH}, got {width}; the paper uses 128, 32-64 is faster")
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if spatial_dims == 3 and name not in _BUILDERS_3D:
        raise ValueError(
            f"network {name!r} has no 3-D version; volumetric fits support {', '.join(NETWORKS_3D)}, "
            "or restore the volume plane by plane with a 2-D network instead"
        )


def input_channels(name: str, width: int, default: int = 32) -> int:
    """Channels of the random input z that network ``name`` takes by default."""
    return width if name == "deep-decoder" else default


def build_network(
    name: str,
    in_channels: int,
    out_channels: int,
    width: int = 128,
    *,
    spatial_dims: int = 2,
    z_size: int | None = None,
    anisotropy: float = 1.0,
) -> Prior:
    """Build prior ``name`` (one of ``NETWORKS``) with ``width`` channels per level.

    ``width`` is the channel count at every level of the skip family and of the
    ResNet and Deep Decoder; the U-net starts from ``width // 8`` and doubles.

    ``spatial_dims=3`` builds a volume prior over (Z, Y, X), for ``NETWORKS_3D``
    only. It needs ``z_size``, the number of Z planes of the data (before padding),
    and takes ``anisotropy``, the Z step over the XY pixel size: together they
    decide which levels downsample Z (see ``z_strides``) and so ``multiple`` and
    ``min_size`` on Z. Both are ignored for 2-D.
    """
    check_network(name, width, spatial_dims=spatial_dims)
    if spatial_dims == 2:
        return _BUILDERS[name](in_channels, out_channels, int(width))
    if z_size is None:
        raise ValueError("a 3-D network needs z_size, the number of Z planes of the volume")
    return _BUILDERS_3D[name](in_channels, out_channels, int(width), z_size, anisotropy)


class FullPrecision(nn.Module):
    """Runs ``inner`` in float32 even under autocast: the output layer, whose rounding to
    bfloat16 (steps of 1/256 near 1) would show in 16-bit results."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.inner(x.float())


def full_precision_output(net: nn.Module) -> None:
    """Wrap ``net``'s last convolution (the output layer, before the sigmoid) in ``FullPrecision``."""
    name, parent_name = None, None
    for qualified, module in net.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            parent_name, _, name = qualified.rpartition(".")
    if name is None:
        raise ValueError("the network has no convolution to keep in float32")
    parent = net.get_submodule(parent_name) if parent_name else net
    parent._modules[name] = FullPrecision(parent._modules[name])


def seeded_network(name: str, in_channels: int, out_channels: int, width: int, seed: int, **options: object) -> Prior:
    """``build_network`` with weights drawn from a generator seeded with ``seed``.

    torch's global generator is neither read nor advanced, so a seeded fit gives the
    same weights whatever other threads (a napari worker beside user code) draw.
    """
    with torch.device("meta"):  # no weights drawn yet: allocation only
        net = build_network(name, in_channels, out_channels, width, **options)
    net = net.to_empty(device="cpu")
    initialise(net, torch.Generator().manual_seed(seed))
    return net


def initialise(net: nn.Module, generator: torch.Generator) -> None:
    """Draw ``net``'s weights as torch's default initialisation does, from ``generator``."""
    for module in net.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            # PyTorch's default: Kaiming uniform with a = sqrt(5), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            module.reset_parameters()  # ones and zeros: nothing random
        elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            raise TypeError(f"initialise does not know how to draw the weights of {type(module).__name__}")


class Ensemble(nn.Module):
    """``members`` copies of one prior with their own weights, run as one batched call.

    The members' parameters are stacked along a new first axis and the shared
    architecture is applied to all of them at once with ``torch.func.vmap``, which
    turns each convolution into one grouped convolution: no Python loop over
    members, one optimiser step for all. Input ``(M, C, *canvas / stride)``, one
    entry per member; output ``(M, C', *canvas)``. Member ``k`` computes exactly what
    ``nets[k]`` alone would.
    """

    def __init__(self, nets: list[Prior]) -> None:
        super().__init__()
        import copy

        from torch.func import stack_module_state

        first = nets[0]
        self.members = len(nets)
        for name in ("in_channels", "spatial_dims", "multiple", "min_size", "input_stride"):
            setattr(self, name, getattr(first, name))
        params, buffers = stack_module_state(nets)
        # Module attribute names may not hold dots: keep the qualified names aside.
        self._param_names = list(params)
        self._buffer_names = list(buffers)
        self.stacked = nn.ParameterList(nn.Parameter(p.detach().clone()) for p in params.values())
        for i, b in enumerate(buffers.values()):
            self.register_buffer(f"buffer_{i}", b.clone())
        # The architecture alone, without storage; its forward runs on the stacked weights.
        self._base = [copy.deepcopy(first).to("meta")]  # a list: not a submodule (no .to(), no state)

    def _member(self, params: dict, buffers: dict, z: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        return functional_call(self._base[0], (params, buffers), (z[None],))[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        from torch.func import vmap

        params = dict(zip(self._param_names, self.stacked, strict=True))
        buffers = {n: getattr(self, f"buffer_{i}") for i, n in enumerate(self._buffer_names)}
        return vmap(self._member, in_dims=(0, 0, 0))(params, buffers, z)


class GroupedEnsemble(Prior):
    """``members`` skip networks side by side in one grouped network (``Skip(groups=M)``):
    every convolution a grouped one, the members' channels in blocks.

    The same members as ``Ensemble`` (member ``k`` computes what ``nets[k]`` alone would),
    without ``vmap``, so that its tensors may be channels-last: on CPU oneDNN's grouped
    convolutions are ~2x faster so (2 members of 36 to 32 channels at 96², forward and
    back: 19.8 against 41.9 ms), where vmap's take the plain layout. Input
    ``(M, C, *canvas)``, output ``(M, C', *canvas)``; ``arrange`` lays an input out as
    the network wants it, channels-last with the members' channels side by side.
    """

    def __init__(self, nets: list[Prior]) -> None:
        super().__init__()
        first = nets[0]
        if not all(isinstance(n, Skip) and n.spatial_dims == 2 and n.groups == 1 for n in nets):
            raise ValueError("a grouped ensemble takes 2-D skip-family networks only")
        if any(n.config != first.config for n in nets):
            raise ValueError("the members of a grouped ensemble must be the same network")
        self.members = len(nets)
        for name in ("in_channels", "spatial_dims", "multiple", "min_size", "input_stride"):
            setattr(self, name, getattr(first, name))
        self.out_channels = first.config["out_channels"]
        with torch.device("meta"):
            grouped = Skip(**first.config, groups=self.members)
        self.grouped = grouped.to_empty(device="cpu")
        states = [n.state_dict() for n in nets]
        # A grouped layer's weights are its groups' stacked along the first axis.
        joined = {
            key: value if value.dim() == 0 else torch.cat([s[key] for s in states]) for key, value in states[0].items()
        }
        self.grouped.load_state_dict(joined)

    @staticmethod
    def suits(nets: list[Prior], device: torch.device) -> bool:
        """Whether ``nets`` on ``device`` should be fitted as a ``GroupedEnsemble``: 2-D
        skip-family networks on CPU (on CUDA vmap's grouped convolutions are measured)."""
        return device.type == "cpu" and all(isinstance(n, Skip) and n.spatial_dims == 2 for n in nets)

    def arrange(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (M, C, h, w) in the layout whose flattening is the network's channels-last
        input: memory in (h, w, M, C) order."""
        out = torch.empty((*z.shape[2:], *z.shape[:2]), dtype=z.dtype, device=z.device).permute(2, 3, 0, 1)
        return out.copy_(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        members, channels, h, w = z.shape
        hwmc = z.permute(2, 3, 0, 1)
        if hwmc.is_contiguous():  # arranged: a view with channels-last's own strides, batch's too
            # (z.flatten(0, 1)[None] has a batch stride of M·C; with one thread, oneDNN's grouped
            # 1x1 convolution then took a wrong weight gradient: 1.33x its largest value.)
            x = hwmc.reshape(1, h, w, members * channels).permute(0, 3, 1, 2)
        else:
            x = z.flatten(0, 1)[None]
        y = self.grouped(x)
        return y[0].unflatten(0, (self.members, self.out_channels))
