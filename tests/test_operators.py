import numpy as np
import pytest
import torch

from napari_dip.operators import Identity, LanczosDownsample, Mask, data_loss, lanczos2_taps, total_variation


def paper_kernel(factor: int) -> np.ndarray:
    """The 2-D lanczos2 kernel as the paper's get_kernel(phase=0.5) writes it, loop by loop."""
    size = 4 * factor
    centre = (4 * factor + 2) / 2
    k = np.zeros((size, size))
    for i in range(1, size + 1):
        for j in range(1, size + 1):
            val = 1.0
            for d in (abs(i + 0.5 - centre) / factor, abs(j + 0.5 - centre) / factor):
                if d != 0:
                    val *= 2 * np.sin(np.pi * d) * np.sin(np.pi * d / 2) / (np.pi**2 * d**2)
            k[i - 1, j - 1] = val
    return k / k.sum()


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_lanczos_taps_normalised_and_symmetric(factor):
    taps = lanczos2_taps(factor)
    assert taps.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(taps, taps[::-1], atol=1e-15)
    assert taps.argmax() in (len(taps) // 2 - 1, len(taps) // 2)
    assert len(taps) == (4 * factor if factor % 2 == 0 else 4 * factor - 1)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_lanczos_matches_the_papers_kernel(factor):
    taps = lanczos2_taps(factor)
    np.testing.assert_allclose(np.outer(taps, taps), paper_kernel(factor), atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_linear_ramp_lands_on_low_resolution_pixel_centres(factor):
    lr = 12
    n = lr * factor
    rows = torch.arange(n, dtype=torch.float64)
    ramp = (3.0 * rows[:, None] + 0.5 * rows[None, :]).float()[None, None].repeat(1, 2, 1, 1)
    down = LanczosDownsample(factor, (slice(None), slice(None)))(ramp)
    assert down.shape == (1, 2, lr, lr)
    # Centres as scikit-image / PIL resize define them: (j + 0.5) * factor - 0.5.
    centres = (torch.arange(lr, dtype=torch.float64) + 0.5) * factor - 0.5
    expected = 3.0 * centres[:, None] + 0.5 * centres[None, :]
    inner = slice(2, lr - 2)  # the kernel reaches 2 LR pixels; edges are replicated there
    np.testing.assert_allclose(down[0, 0, inner, inner].double(), expected[inner, inner], atol=1e-3)
    np.testing.assert_allclose(down[0, 1].double(), down[0, 0].double())


def test_downsample_keeps_constants_and_crops_region():
    x = torch.full((1, 3, 64, 64), 0.25)
    down = LanczosDownsample(4, (slice(2, 14), slice(1, 11)))(x)
    assert down.shape == (1, 3, 12, 10)
    np.testing.assert_allclose(down, 0.25, atol=1e-6)


def test_bad_factor_rejected():
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="factor"):
            lanczos2_taps(bad)


def test_mask_ignores_missing_pixels_in_the_loss():
    known = torch.ones(8, 8, dtype=torch.bool)
    known[2:5, 3:6] = False
    op = Mask(known, (slice(1, 9), slice(0, 8)))
    target = torch.rand(1, 1, 8, 8)
    canvas = torch.zeros(1, 1, 10, 8)
    canvas[..., 1:9, :] = target
    wrong_where_missing = canvas.clone()
    wrong_where_missing[..., 1:9, :][..., ~known] = 5.0
    measured = target * known
    assert data_loss(op(canvas), measured) == 0
    assert data_loss(op(wrong_where_missing), measured) == 0
    assert data_loss(Identity((slice(1, 9), slice(0, 8)))(wrong_where_missing), target) > 0


def test_lanczos_on_a_volume_downsamples_each_plane():
    torch.manual_seed(0)
    volume = torch.rand(1, 2, 3, 32, 24)
    down = LanczosDownsample(4, (slice(0, 3), slice(1, 7), slice(0, 5)))(volume)
    assert down.shape == (1, 2, 3, 6, 5)
    flat = LanczosDownsample(4, (slice(1, 7), slice(0, 5)))
    for plane in range(3):
        torch.testing.assert_close(down[:, :, plane], flat(volume[:, :, plane]), rtol=0, atol=0)


def test_mask_and_identity_on_a_volume():
    known = torch.ones(3, 8, 8, dtype=torch.bool)
    known[1, 2:5, 3:6] = False
    region = (slice(1, 4), slice(1, 9), slice(0, 8))
    target = torch.rand(1, 2, 3, 8, 8)
    canvas = torch.zeros(1, 2, 4, 10, 8)
    canvas[(..., *region)] = target
    wrong_where_missing = canvas.clone()
    wrong_where_missing[(..., *region)][..., ~known] = 5.0
    measured = target * known
    op = Mask(known, region)
    assert op(canvas).shape == (1, 2, 3, 8, 8)
    assert data_loss(op(canvas), measured) == 0
    assert data_loss(op(wrong_where_missing), measured) == 0
    assert data_loss(Identity(region)(wrong_where_missing), target) > 0


def test_mask_dims_must_match_region():
    with pytest.raises(ValueError, match="mask"):
        Mask(torch.ones(3, 8, 8), (slice(0, 8), slice(0, 8)))
    with pytest.raises(ValueError, match="mask"):
        Mask(torch.ones(8), (slice(0, 8),))


def test_total_variation_counts_edges_per_axis_over_their_spacing():
    flat = torch.full((2, 1, 8, 8), 0.3)
    assert float(total_variation(flat, (1.0, 1.0))) == 0.0
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0  # one vertical edge: 8 of the 8 x 7 horizontal differences are 1
    assert float(total_variation(step, (1.0, 1.0))) == pytest.approx(8 / 56)
    volume = torch.zeros(1, 1, 4, 8, 8)
    volume[:, :, 2:] = 1.0  # an edge between planes 2 Z-steps of 3 pixels apart
    assert float(total_variation(volume, (3.0, 1.0, 1.0))) == pytest.approx((64 / 192) / 3)
