"""vdsr.color and vdsr.metrics against known values and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from vdsr.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from vdsr.metrics import gaussian_window, psnr, ssim


def test_known_colours():
    rgb = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    ycc = rgb_to_ycbcr(rgb.T[:, :, None]) * 255  # 3 x 5 x 1
    np.testing.assert_allclose(ycc[:, 0, 0].numpy(), [16, 128, 128], atol=1e-12)  # black
    np.testing.assert_allclose(ycc[:, 1, 0].numpy(), [235, 128, 128], atol=1e-9)  # white
    np.testing.assert_allclose(ycc[:, 2, 0].numpy(), [16 + 65.481, 128 - 37.797, 128 + 112], atol=1e-12)
    np.testing.assert_allclose(ycc[:, 3, 0].numpy(), [16 + 128.553, 128 - 74.203, 128 - 93.786], atol=1e-12)
    np.testing.assert_allclose(ycc[:, 4, 0].numpy(), [16 + 24.966, 128 + 112, 128 - 18.214], atol=1e-12)


def test_round_trip_and_y(rng):
    rgb = torch.from_numpy(rng.random((2, 3, 7, 9)))
    ycc = rgb_to_ycbcr(rgb)
    assert torch.allclose(ycbcr_to_rgb(ycc), rgb, atol=1e-12)
    assert torch.allclose(rgb_to_y(rgb), ycc[:, :1], atol=1e-15)
    assert rgb_to_y(rgb).shape == (2, 1, 7, 9)
    f32 = rgb.float()
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(f32)), f32, atol=1e-5)
    with pytest.raises(ValueError):
        rgb_to_y(torch.zeros(1, 2, 4, 4))


def test_psnr_known_values():
    a = torch.full((20, 20), 100.0)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-12)  # MSE 1: 48.1308 dB
    assert psnr(a, a + 10) == pytest.approx(20 * math.log10(25.5), abs=1e-12)
    assert psnr(a, a) == math.inf
    b = a.clone()
    b[0, :] += 50  # only the border differs: shaving it makes the images equal
    assert psnr(a, b, shave=1) == math.inf
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (50**2 * 20 / 400)), abs=1e-12)


def test_ssim_known_values(rng):
    a = torch.from_numpy(rng.random((32, 40)) * 255)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # constant images: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) (the contrast term is C2/C2)
    c1 = (0.01 * 255) ** 2
    m1, m2 = 80.0, 120.0
    expected = (2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1)
    assert ssim(torch.full((16, 16), m1), torch.full((16, 16), m2)) == pytest.approx(expected, abs=1e-12)
    w = gaussian_window()
    assert w.shape == (11, 11) and float(w.sum()) == pytest.approx(1.0)
    assert float(w[5, 5] / w[5, 6]) == pytest.approx(math.exp(1 / (2 * 1.5**2)))
    with pytest.raises(ValueError):
        ssim(torch.zeros(12, 12), torch.zeros(12, 12), shave=2)


@pytest.mark.parametrize("shave", [0, 3])
def test_ssim_matches_scikit_image(shave, rng):
    a = np.round(rng.random((60, 75)) * 255)
    b = np.clip(np.round(a + rng.normal(0, 12, a.shape)), 0, 255)
    want = structural_similarity(
        a[shave : a.shape[0] - shave, shave : a.shape[1] - shave],
        b[shave : b.shape[0] - shave, shave : b.shape[1] - shave],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(a, b, shave=shave) == pytest.approx(want, abs=1e-12)
