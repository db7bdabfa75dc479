import pytest
import torch

from napari_dip.networks import NETWORKS, build_network


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_default_skip_has_the_papers_parameter_count():
    assert n_params(build_network("skip", 32, 3, 128)) == 2_217_831


@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_maps_z_to_an_image_in_unit_range(name):
    torch.manual_seed(0)
    net = build_network(name, 32 if name != "deep-decoder" else 16, 2, 16)
    side = max(net.min_size, 2 * net.multiple)
    z = torch.rand(1, net.in_channels, side // net.input_stride, side // net.input_stride)
    out = net(z)
    assert out.shape == (1, 2, side, side)
    assert 0 < out.min() and out.max() < 1
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_skip_family_geometry():
    skip = build_network("skip", 32, 1, 8)
    assert (skip.multiple, skip.min_size) == (32, 64)
    encdec = build_network("encoder-decoder", 32, 1, 8)
    assert (encdec.multiple, encdec.min_size) == (64, 128)
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
