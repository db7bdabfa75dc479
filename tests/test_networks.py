import math

import pytest
import torch

from napari_dip.networks import NETWORKS, NETWORKS_3D, build_network, z_strides


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def _biases_before_norm(net):
    """ids of the biases that ``networks._NormedBias`` leaves out (a BatchNorm follows)."""
    return {id(m.bias) for m in net.modules() if getattr(m, "before_norm", False)}


def test_default_skip_has_the_papers_parameter_count():
    assert n_params(build_network("skip", 32, 3, 128)) == 2_217_831


@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_maps_z_to_an_image_in_unit_range(name):
    torch.manual_seed(0)
    net = build_network(name, 32 if name != "deep-decoder" else 16, 2, 16)
    assert net.spatial_dims == 2 and len(net.multiple) == len(net.min_size) == 2
    side = max(net.min_size[0], 2 * net.multiple[0])
    z = torch.rand(1, net.in_channels, side // net.input_stride, side // net.input_stride)
    out = net(z)
    assert out.shape == (1, 2, side, side)
    assert 0 < out.min() and out.max() < 1
    out.mean().backward()
    cancelled = _biases_before_norm(net)
    assert all((p.grad is None) == (id(p) in cancelled) for p in net.parameters())


def test_skip_family_geometry():
    skip = build_network("skip", 32, 1, 8)
    assert (skip.multiple, skip.min_size) == ((32, 32), (64, 64))
    encdec = build_network("encoder-decoder", 32, 1, 8)
    assert (encdec.multiple, encdec.min_size) == ((64, 64), (128, 128))
    # No skip branch: fewer parameters than the skip net of the same width and depth.
    assert not any("skip" in name for name, _ in encdec.named_parameters())


def test_width_sets_channels_per_level():
    assert n_params(build_network("skip", 32, 3, 64)) < n_params(build_network("skip", 32, 3, 128)) / 3


@pytest.mark.parametrize("bad", ["hourglass", "", None, 3])
def test_unknown_network_rejected(bad):
    with pytest.raises(ValueError, match="unknown network"):
        build_network(bad, 32, 3)


def test_bad_width_rejected():
    with pytest.raises(ValueError, match="width"):
        build_network("skip", 32, 3, 0)
    with pytest.raises(TypeError, match="width"):
        build_network("skip", 32, 3, 12.5)


def test_3d_skip_maps_a_volume_to_unit_range_with_gradients_everywhere():
    torch.manual_seed(0)
    net = build_network("skip", 32, 2, 8, spatial_dims=3, z_size=8)
    assert net.spatial_dims == 3
    assert net.z_strides == (2, 2, 1, 1, 1)
    assert (net.multiple, net.min_size) == ((4, 32, 32), (8, 64, 64))
    z = torch.rand(1, 32, 8, 64, 64)
    out = net(z)
    assert out.shape == (1, 2, 8, 64, 64)
    assert 0 < out.min() and out.max() < 1
    out.mean().backward()
    cancelled = _biases_before_norm(net)
    assert cancelled
    assert all(p.grad is None if id(p) in cancelled else p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize(
    ("z_size", "anisotropy", "expected"),
    [
        (32, 1.0, (2, 2, 2, 2, 1)),  # isotropic: halve Z with XY until 2 planes would be left
        (16, 3.0, (1, 2, 2, 2, 1)),  # coarse Z waits one level for XY to catch up
        (2, 1.0, (1, 1, 1, 1, 1)),  # too few planes to downsample
        (3, 1.0, (1, 1, 1, 1, 1)),
        (5, 1.0, (2, 1, 1, 1, 1)),  # odd: 5 -> 2 planes, no further
        (1, 1.0, (1, 1, 1, 1, 1)),
        (64, 10.0, (1, 1, 1, 2, 2)),
    ],
)
def test_z_strides(z_size, anisotropy, expected):
    assert z_strides(z_size, 5, anisotropy) == expected


@pytest.mark.parametrize(("z_size", "anisotropy"), [(5, 1.0), (7, 1.0), (2, 3.0), (1, 1.0), (16, 3.0)])
def test_3d_net_accepts_a_canvas_of_its_multiple(z_size, anisotropy):
    net = build_network("encoder-decoder", 4, 1, 4, spatial_dims=3, z_size=z_size, anisotropy=anisotropy)
    strides = z_strides(z_size, 6, anisotropy)
    assert net.multiple == (math.prod(strides), 64, 64)
    assert net.min_size[1:] == (128, 128)
    # The canvas the fit would build: z_size padded up to the multiple and the minimum.
    depth = -(-max(z_size, net.min_size[0]) // net.multiple[0]) * net.multiple[0]
    assert net.min_size[0] <= max(z_size, 1) <= depth
    out = net(torch.rand(1, 4, depth, 128, 128))
    assert out.shape == (1, 1, depth, 128, 128)


def test_single_plane_volume_uses_flat_kernels():
    net = build_network("skip", 4, 1, 4, spatial_dims=3, z_size=1)
    assert (net.multiple[0], net.min_size[0]) == (1, 1)
    kernels = {m.kernel_size[0] for m in net.modules() if isinstance(m, torch.nn.Conv3d)}
    assert kernels == {1}
    assert net(torch.rand(1, 4, 1, 64, 64)).shape == (1, 1, 1, 64, 64)


@pytest.mark.parametrize("name", sorted(set(NETWORKS) - set(NETWORKS_3D)))
def test_3d_rejects_networks_without_a_3d_version(name):
    with pytest.raises(ValueError, match="plane by plane"):
        build_network(name, 32, 1, 8, spatial_dims=3, z_size=8)


def test_3d_needs_z_size_and_valid_geometry():
    with pytest.raises(ValueError, match="z_size"):
        build_network("skip", 32, 1, 8, spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims"):
        build_network("skip", 32, 1, 8, spatial_dims=4)
    with pytest.raises(ValueError, match="anisotropy"):
        build_network("skip", 32, 1, 8, spatial_dims=3, z_size=8, anisotropy=0)
    with pytest.raises(ValueError, match="z_size"):
        z_strides(0, 5)


def test_batch_norm_of_odd_channel_counts_gives_the_same_numbers_in_either_layout():
    """36 channels (4 skip + 32) run in the plain layout on CPU, for speed: same values,
    gradients and running statistics as torch's own BatchNorm2d, output channels-last."""
    import torch
    from torch import nn

    from napari_dip.networks import _BatchNorm2d

    torch.manual_seed(0)
    x = torch.randn(1, 36, 20, 20).contiguous(memory_format=torch.channels_last)
    ours, plain = _BatchNorm2d(36), nn.BatchNorm2d(36)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(a), plain(b)
    assert ya.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ya, yb)
    grad = torch.randn_like(ya)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(ours.running_var, plain.running_var)


@pytest.mark.parametrize("name", NETWORKS)
def test_batch_norms_normalise_by_the_batch_and_keep_no_running_statistics(name):
    """A fit never leaves training mode: every BatchNorm uses the batch's own statistics and
    keeps no running ones (one operator call less per layer and step), in 2-D and 3-D."""
    from torch import nn

    nets = [build_network(name, 32 if name != "deep-decoder" else 16, 2, 8)]
    if name in NETWORKS_3D:
        nets.append(build_network(name, 32, 1, 8, spatial_dims=3, z_size=8))
    for net in nets:
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert norms and not any(m.track_running_stats for m in norms)
        assert list(net.buffers()) == []
        sides = [max(low, 2 * mult) // net.input_stride for low, mult in zip(net.min_size, net.multiple, strict=True)]
        z = torch.rand(1, net.in_channels, *sides)
        norm = norms[0]
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # copies: an in-place activation follows
        norm.register_forward_hook(lambda m, i, o, seen=seen: seen.append((i[0].clone(), o.clone())))
        net(z)
        x, y = seen[0]
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
        expected = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight.view_as(mean) + norm.bias.view_as(mean)
        torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_skip_branch_converts_its_few_channels_once():
    """The skip branch (conv, BatchNorm, LeakyReLU, BatchNorm of 4 channels) runs in the plain
    layout between one conversion in and one out on a channels-last CPU input: the same output
    and gradients as its layers one by one, each converting, and a channels-last output."""
    from napari_dip.networks import _Hourglass

    torch.manual_seed(0)
    level = _Hourglass(32, 32, 32, 4, None).to(memory_format=torch.channels_last)
    x = torch.randn(1, 32, 24, 24).contiguous(memory_format=torch.channels_last).requires_grad_()
    ours = level._skip(x)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    plain = level.skip_bn(level.skip(x))
    torch.testing.assert_close(ours, plain)
    params = [x, *level.skip.parameters(), *level.skip_bn.parameters()]
    grad = torch.randn_like(ours)
    expected = torch.autograd.grad(plain, params, grad, materialize_grads=True)  # the conv's bias: unused
    # Tolerance on the gradients' common scale: the conv bias's is zero but for rounding
    # (BatchNorm takes out the mean), so no relative check holds for it.
    scale = max(float(b.abs().max()) for b in expected)
    for a, b in zip(torch.autograd.grad(ours, params, grad, materialize_grads=True), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("name", ["skip", "unet", "resnet"])
def test_a_bias_that_a_batch_norm_cancels_is_kept_but_not_added(name):
    """Convolutions that feed a BatchNorm directly keep their bias as a parameter (the paper's
    network and parameter count) but do not add it: the network's output is the one with
    every bias added, to rounding; the head and layers before a ReLU still add theirs."""
    from torch import nn

    torch.manual_seed(0)
    net = build_network(name, 32, 2, 8).to(memory_format=torch.channels_last)
    convs = [m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    marked = [m for m in convs if m.before_norm]
    assert marked and len(marked) < len(convs)
    for m in convs:  # nonzero biases, so that leaving one out would show
        nn.init.uniform_(m.bias, -1, 1)
    side = max(net.min_size[0], 2 * net.multiple[0])
    z = torch.rand(1, net.in_channels, side, side).contiguous(memory_format=torch.channels_last)
    ours = net(z)
    for m in marked:
        m.before_norm = False
    torch.testing.assert_close(ours, net(z), rtol=1e-4, atol=1e-5)
    heads = [m for m in convs if m not in marked]
    for m in heads:  # a bias that is not cancelled does change the output
        m.bias.data += 1
    assert (net(z) - ours).abs().max() > 1e-3


def test_pointwise_convolution_as_a_matrix_product_gives_the_convolutions_numbers():
    """A 1x1 convolution of a channels-last CPU input of >= 2048 pixels runs as one
    matrix product over channels: same output (channels-last), input, weight and bias
    gradients as torch's convolution; smaller or plain inputs take the convolution."""
    import torch
    from torch import nn

    from napari_dip.networks import _PointwiseConv2d

    torch.manual_seed(0)
    for c_out in (4, 1):  # 1: a grey head, whose input gradient is a broadcast product
        ours = _PointwiseConv2d(32, c_out, 1).to(memory_format=torch.channels_last)
        conv = nn.Conv2d(32, c_out, 1).to(memory_format=torch.channels_last)
        conv.load_state_dict(ours.state_dict())
        for size, layout in ((64, torch.channels_last), (24, torch.channels_last), (64, torch.contiguous_format)):
            ours.weight.grad = conv.weight.grad = None
            x = torch.randn(1, 32, size, size).contiguous(memory_format=layout)
            a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
            ya, yb = ours(a), conv(b)
            layout_of = [y.is_contiguous(memory_format=torch.channels_last) for y in (ya, yb)]
            assert layout_of[0] == layout_of[1]
            torch.testing.assert_close(ya, yb)
            grad = torch.randn_like(yb)
            ya.backward(grad)
            yb.backward(grad)
            torch.testing.assert_close(a.grad, b.grad)
        torch.testing.assert_close(ours.weight.grad, conv.weight.grad)
        torch.testing.assert_close(ours.bias.grad, conv.bias.grad)


def test_weight_gradient_as_shifted_matrix_products_gives_the_convolutions_numbers():
    """The weight gradient of a stride-1 convolution as one matrix product per kernel tap
    (rows of the input shifted by i * width + j): same output, input, weight and bias
    gradients as torch's convolution, for batches, 5x5 and non-square kernels, non-square
    images, no bias and groups (a grouped ensemble's members); the weight gradient comes
    out channels-last, as the weight is."""
    import torch
    from torch.nn import functional as F

    from napari_dip.networks import _ShiftedWeightGrad

    torch.manual_seed(0)
    cl = torch.channels_last
    for n, c_in, c_out, (kh, kw), (h, w), bias, groups in (
        (1, 36, 32, (3, 3), (34, 34), True, 1),
        (2, 5, 7, (5, 5), (21, 17), True, 1),
        (1, 8, 3, (3, 1), (12, 20), False, 1),
        (1, 3 * 12, 3 * 8, (3, 3), (15, 18), True, 3),
        (2, 2 * 5, 2 * 4, (3, 2), (9, 11), False, 2),
    ):
        x = torch.randn(n, c_in, h, w).contiguous(memory_format=cl)
        weight = torch.randn(c_out, c_in // groups, kh, kw).contiguous(memory_format=cl)
        b = torch.randn(c_out) if bias else None
        leaves = [[t.clone().requires_grad_() if t is not None else None for t in (x, weight, b)] for _ in range(2)]
        ya = _ShiftedWeightGrad.apply(*leaves[0], groups)
        yb = F.conv2d(*leaves[1], groups=groups)
        torch.testing.assert_close(ya, yb)
        grad = torch.randn_like(yb)
        ya.backward(grad)
        yb.backward(grad)
        assert leaves[0][1].grad.is_contiguous(memory_format=cl)
        for a, b_ in zip(leaves[0], leaves[1], strict=True):
            if a is not None:
                torch.testing.assert_close(a.grad, b_.grad, rtol=1e-4, atol=1e-4)


def test_convolution_takes_the_shifted_weight_gradient_only_where_it_pays(monkeypatch):
    """On an AVX2 CPU (where oneDNN's channels-last weight gradient is 3x slower) a large
    channels-last stride-1 convolution takes the matrix products, with the reflection
    padding of the layer; small, plain, strided, no-grad and AVX-512 cases do not."""
    import torch
    from torch import nn

    from napari_dip import networks

    torch.manual_seed(0)
    cl = torch.channels_last
    ours = networks._conv(36, 32, 3).to(memory_format=cl)
    plain = nn.Conv2d(36, 32, 3, padding=1, padding_mode="reflect").to(memory_format=cl)
    plain.load_state_dict(ours.state_dict())
    monkeypatch.setattr(networks, "_cpu_capability", lambda: "AVX2")
    x = torch.randn(1, 36, 96, 96).contiguous(memory_format=cl)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(a), plain(b)
    assert type(ya.grad_fn).__name__ == "_ShiftedWeightGradBackward"
    torch.testing.assert_close(ya, yb)
    grad = torch.randn_like(yb)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(a.grad, b.grad)
    # Sums over 9216 pixels, rounded in another order: compare against the largest entry.
    for a_, b_ in ((ours.weight.grad, plain.weight.grad), (ours.bias.grad, plain.bias.grad)):
        torch.testing.assert_close(a_, b_, rtol=0, atol=1e-5 * float(b_.abs().max()))

    def path(conv: nn.Module, x: torch.Tensor) -> str:
        return type(conv(x).grad_fn).__name__

    assert path(ours, torch.randn(1, 36, 64, 64).contiguous(memory_format=cl)) != "_ShiftedWeightGradBackward"
    assert path(ours, torch.randn(1, 36, 96, 96)) != "_ShiftedWeightGradBackward"
    narrow = networks._conv(36, 16, 3).to(memory_format=cl)
    assert path(narrow, torch.randn(1, 36, 160, 160).contiguous(memory_format=cl)) != "_ShiftedWeightGradBackward"
    strided = networks._conv(36, 32, 3, stride=2).to(memory_format=cl)
    assert path(strided, x) != "_ShiftedWeightGradBackward"
    with torch.no_grad():
        torch.testing.assert_close(ours(x), plain(x))
    monkeypatch.setattr(networks, "_cpu_capability", lambda: "AVX512")
    assert path(ours, x) != "_ShiftedWeightGradBackward"


@pytest.mark.parametrize("keep", [0, 2**30])
def test_winograd_convolution_gives_the_convolutions_numbers(monkeypatch, keep):
    """Winograd's F(4x4, 3x3) (``_Winograd``): same output and input, weight and bias
    gradients as torch's convolution, for batches, non-square images, channel counts that
    are not multiples of anything, bands of one tile row and of the whole image, with the
    transformed tiles kept for the backward or made again; the input gradient comes out
    channels-last."""
    from torch.nn import functional as F

    from napari_dip.networks import _Winograd

    monkeypatch.setattr("napari_dip.networks.WINOGRAD_KEEP", keep)
    torch.manual_seed(0)
    cl = torch.channels_last
    for n, c_in, c_out, (h, w), rows, bias in (
        (1, 13, 11, (18, 26), 1, True),
        (2, 7, 9, (10, 14), 2, False),
        (1, 5, 6, (6, 6), 100, True),
    ):
        x = torch.randn(n, c_in, h, w).contiguous(memory_format=cl)
        weight = torch.randn(c_out, c_in, 3, 3)
        b = torch.randn(c_out) if bias else None
        leaves = [[t.clone().requires_grad_() if t is not None else None for t in (x, weight, b)] for _ in range(2)]
        ya = _Winograd.apply(*leaves[0], rows)
        yb = F.conv2d(*leaves[1])
        torch.testing.assert_close(ya, yb, rtol=0, atol=1e-5 * float(yb.abs().max()))
        grad = torch.randn_like(yb).contiguous(memory_format=cl)
        ya.backward(grad)
        yb.backward(grad)
        assert leaves[0][0].grad.is_contiguous(memory_format=cl)
        for a, b_ in zip(leaves[0], leaves[1], strict=True):
            if a is not None:
                torch.testing.assert_close(a.grad, b_.grad, rtol=0, atol=1e-5 * float(b_.grad.abs().max()))


def test_convolution_takes_winograd_only_where_it_pays(monkeypatch):
    """A wide, large, same-padded 3x3 float32 convolution on a channels-last CPU input takes
    Winograd's algorithm (with the layer's reflection padding: the plain layer's numbers);
    narrow, small, strided, grouped, plain-layout, bfloat16 and odd-sized ones do not."""
    from torch import nn

    from napari_dip import networks

    torch.manual_seed(0)
    cl = torch.channels_last
    monkeypatch.setattr(networks, "WINOGRAD_WORK", 2**18)
    ours = networks._conv(96, 96, 3).to(memory_format=cl)
    plain = nn.Conv2d(96, 96, 3, padding=1, padding_mode="reflect").to(memory_format=cl)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(1, 96, 8, 12).contiguous(memory_format=cl)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(a), plain(b)
    assert type(ya.grad_fn).__name__ == "_WinogradBackward"
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-5 * float(yb.abs().max()))
    grad = torch.randn_like(yb)
    ya.backward(grad)
    yb.backward(grad)
    for a_, b_ in ((a.grad, b.grad), (ours.weight.grad, plain.weight.grad), (ours.bias.grad, plain.bias.grad)):
        torch.testing.assert_close(a_, b_, rtol=0, atol=1e-5 * float(b_.abs().max()))

    def path(conv: nn.Module, x: torch.Tensor) -> str:
        return type(conv(x).grad_fn).__name__

    assert path(ours, torch.randn(1, 96, 4, 4).contiguous(memory_format=cl)) != "_WinogradBackward"  # small
    assert path(ours, torch.randn(1, 96, 10, 12).contiguous(memory_format=cl)) != "_WinogradBackward"  # 10 % 4
    assert path(ours, x.contiguous()) != "_WinogradBackward"
    assert path(networks._conv(96, 64, 3).to(memory_format=cl), x) != "_WinogradBackward"
    assert path(networks._conv(96, 96, 3, stride=2).to(memory_format=cl), x) != "_WinogradBackward"
    assert path(networks._conv(48, 96, 3, groups=2).to(memory_format=cl), x) != "_WinogradBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert path(ours, x) != "_WinogradBackward"
    monkeypatch.setattr(networks, "WINOGRAD_WORK", None)
    assert path(ours, x) != "_WinogradBackward"


def test_fit_with_winograd_convolutions_follows_the_direct_fit(monkeypatch):
    """A whole denoising fit whose wide convolutions take Winograd's algorithm runs the same
    course as with torch's convolutions, and the memory estimate of such a CPU fit counts
    the tiles its layers keep."""
    import numpy as np

    from napari_dip import memory, networks
    from napari_dip.fit import Fit

    rng = np.random.default_rng(0)
    image = (rng.random((1, 32, 32)) * 0.5 + 0.25).astype(np.float32)
    chosen = []
    rows = networks._winograd_rows
    monkeypatch.setattr(networks, "_winograd_rows", lambda *a: chosen.append(rows(*a)) or chosen[-1])
    results = {}
    for work in (None, 2**14):
        monkeypatch.setattr(networks, "WINOGRAD_WORK", work)
        monkeypatch.setattr(networks, "WINOGRAD_CHANNELS", 16)
        fit = Fit("denoise", image, width=16, iterations=30, stopping=None, seed=0, precision="float32", ensemble=1)
        records = list(fit)
        results[work] = (np.array([r.loss for r in records]), records[-1].preview)
        memory._step_bytes.cache_clear()
        results[work] += (memory.estimate_fit_bytes("skip", 128, 32, 1, (96, 96), "cpu"),)
    (loss_a, out_a, bytes_a), (loss_b, out_b, bytes_b) = results[None], results[2**14]
    assert any(r is not None for r in chosen)
    # Rounding differences grow along a fit (one thread against two drifts as far): the first
    # loss (the same weights) agrees to rounding, the next steps closely (oneDNN's kernels
    # differ by CPU: 2e-4 at the third step on an AMX Xeon), the end within a few percent.
    np.testing.assert_allclose(loss_b[0], loss_a[0], rtol=1e-5)
    np.testing.assert_allclose(loss_b[1:3], loss_a[1:3], rtol=2e-3)
    np.testing.assert_allclose(loss_b[-1], loss_a[-1], rtol=0.05)
    assert np.abs(out_b - out_a).mean() < 0.01
    assert bytes_b > bytes_a  # the kept tiles of the 96² layers


def test_layout_per_device_and_cpu(monkeypatch):
    """Channels-last on CPU, but 3-D networks stay plain on AVX2 CPUs (oneDNN's slow
    channels-last 3-D weight gradient there) and everything stays plain on a GPU."""
    import torch

    from napari_dip import networks

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(networks, "_cpu_capability", lambda: "AVX2")
    assert networks.memory_format(2, cpu) == torch.channels_last
    assert networks.memory_format(3, cpu) == torch.contiguous_format
    monkeypatch.setattr(networks, "_cpu_capability", lambda: "AVX512")
    assert networks.memory_format(3, cpu) == torch.channels_last_3d
    assert networks.memory_format(2, cuda) == networks.memory_format(3, cuda) == torch.contiguous_format


def test_concatenation_hands_each_part_a_dense_gradient():
    """The parts of a channels-last concatenation get channels-last gradients (torch's
    are strided slices, on which CPU BatchNorm's backward is 5x slower), same values."""
    import torch

    from napari_dip.networks import _concat

    torch.manual_seed(0)
    leaves = [torch.randn(1, c, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_() for c in (4, 32)]
    seen: dict[str, list] = {"ours": [], "torch's": []}

    def parts(name: str) -> tuple:
        # Non-leaf parts, as in a network: what reaches their grad_fn is what the hook sees.
        out = tuple(leaf * 1 for leaf in leaves)
        for part in out:
            part.register_hook(seen[name].append)
        return out

    ya, yb = _concat(parts("ours")), torch.cat(parts("torch's"), dim=1)
    torch.testing.assert_close(ya, yb)
    grad = torch.randn_like(yb)
    ya.backward(grad)
    yb.backward(grad)
    for a, b in zip(seen["ours"], seen["torch's"], strict=True):
        assert a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, b)
    assert not any(b.is_contiguous(memory_format=torch.channels_last) for b in seen["torch's"])  # slices


def test_skip_net_normalises_the_concatenation_per_part_as_the_paper_normalises_the_whole():
    """BatchNorm over [skip, deep] equals BatchNorm over each part: our split layer gives
    the paper's merged one's numbers (the reference network of the benchmarks)."""
    import torch
    from torch import nn

    from napari_dip.networks import _Hourglass

    torch.manual_seed(0)
    level = _Hourglass(8, 16, 16, 4, None)
    x = torch.randn(1, 8, 16, 16)
    merged = nn.BatchNorm2d(20)
    deep = level.upsample(level.down(x))
    expected = level.up(merged(torch.cat((level.skip(x), deep), dim=1)))
    torch.testing.assert_close(level(x), expected)
