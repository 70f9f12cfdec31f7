"""Held-out measures: PSNR, SSIM, perplexity, Frechet distance, prior NLL."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from dldemos.VQVAE.scoring.metrics import (bits_per_dim, feature_stats,
                                   frechet_distance,
                                   perplexity, prior_nll, psnr_from_mse, ssim)


# ----------------------------------------------------------------- PSNR
@pytest.mark.parametrize('delta', [0.5, 0.1, 0.01])
def test_psnr_of_uniformly_shifted_image(delta):
    x = torch.rand(2, 1, 8, 8) * (1 - delta)
    y = x + delta  # every pixel off by delta: MSE = delta^2
    mse = float(((x - y)**2).mean())
    assert psnr_from_mse(mse) == pytest.approx(-20 * math.log10(delta),
                                               abs=1e-4)


def test_psnr_scales_with_max_value_and_identical_is_inf():
    assert psnr_from_mse(0.0) == math.inf
    assert psnr_from_mse(1.0, max_val=255) == pytest.approx(
        20 * math.log10(255))


# ----------------------------------------------------------------- SSIM
@pytest.mark.parametrize('shape', [(3, 1, 28, 28), (2, 3, 32, 32)])
def test_ssim_of_identical_images_is_one(shape):
    x = torch.rand(shape)
    assert torch.allclose(ssim(x, x), torch.ones(shape[0]), atol=1e-5)


def test_ssim_is_symmetric_bounded_and_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    noise = torch.randn(x.shape, generator=g)
    values = [float(ssim(x, (x + s * noise).clip(0, 1)).mean())
              for s in (0.01, 0.05, 0.2, 0.5)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert all(-1 <= v < 1 for v in values)
    y = (x + 0.1 * noise).clip(0, 1)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-6)


# ----------------------------------------------------------------- codes
@pytest.mark.parametrize('K', [1, 8, 32])
def test_perplexity_of_uniform_and_single_code(K):
    assert perplexity(torch.full((K, ), 5)) == pytest.approx(K)
    one = torch.zeros(K, dtype=torch.long)
    one[0] = 100
    assert perplexity(one) == pytest.approx(1.0)


# ----------------------------------------------------------------- Frechet
def sym_sqrt(a):
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def closed_form(mu1, s1, mu2, s2):
    """tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) + |mu1 - mu2|^2, through
    eigendecompositions only (no scipy.linalg.sqrtm)."""
    r1 = sym_sqrt(s1)
    return float(((mu1 - mu2)**2).sum() + np.trace(s1) + np.trace(s2) -
                 2 * np.trace(sym_sqrt(r1 @ s2 @ r1)))


def random_cov(d, rng):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


@pytest.mark.parametrize('d', [1, 4, 16])
def test_frechet_of_two_gaussians_matches_closed_form(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_cov(d, rng), random_cov(d, rng)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        closed_form(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)


def test_frechet_of_diagonal_gaussians():
    # diagonal: |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    mu1, mu2 = np.array([0., 1., 2.]), np.array([1., 1., 0.])
    v1, v2 = np.array([1., 4., 9.]), np.array([4., 4., 1.])
    expected = 1 + 0 + 4 + (1 - 2)**2 + 0 + (3 - 1)**2
    assert frechet_distance(mu1, np.diag(v1), mu2,
                            np.diag(v2)) == pytest.approx(expected)


def test_frechet_of_samples_approaches_the_distance_of_their_gaussians():
    rng = np.random.default_rng(0)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = random_cov(d, rng), random_cov(d, rng)
    a = rng.multivariate_normal(mu1, s1, 20000)
    b = rng.multivariate_normal(mu2, s2, 20000)
    assert frechet_distance_of(a, b) == pytest.approx(
        closed_form(mu1, s1, mu2, s2), rel=0.05)


def frechet_distance_of(features1, features2):
    return frechet_distance(*feature_stats(features1),
                            *feature_stats(features2))


@pytest.mark.parametrize('n, d', [(500, 8), (10, 32)])
def test_frechet_of_a_set_with_itself_is_zero(n, d):
    # (10, 32): fewer samples than dimensions, a singular covariance
    f = np.random.default_rng(1).normal(size=(n, d))
    assert frechet_distance_of(f, f) == pytest.approx(0, abs=1e-5)


def test_frechet_rejects_a_large_imaginary_part_of_the_root():
    # not covariances (one negative variance): sqrtm(diag(1, -1)) = diag(1, i)
    mu = np.zeros(2)
    with pytest.raises(ValueError,
                       match=r'imaginary component up to 1\.000e\+00'):
        frechet_distance(mu, np.diag([1., -1.]), mu, np.eye(2))


def test_frechet_of_nearly_singular_covariances_still_works():
    # rank 3 in 6 dimensions: the root may pick up a rounding-size
    # imaginary part, which is dropped
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    s1, s2 = a @ a.T + 1e-9 * np.eye(6), b @ b.T + 1e-9 * np.eye(6)
    mu = np.zeros(6)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(
        closed_form(mu, s1, mu, s2), rel=1e-4, abs=1e-6)


def test_feature_stats_rejects_a_single_sample():
    with pytest.raises(ValueError, match='N >= 2'):
        feature_stats(np.zeros((1, 3)))


# ----------------------------------------------------------------- prior
class UniformPrior(nn.Module):
    """Same logits for every code: the uniform distribution over K codes."""

    def __init__(self, K):
        super().__init__()
        self.K = K

    def forward(self, x):
        return torch.zeros(x.shape[0], self.K, *x.shape[1:])  # [N, K, h, w]


@pytest.mark.parametrize('K', [2, 32, 512])
def test_uniform_prior_has_nll_log_k(K):
    codes = [torch.randint(0, K, (5, 7, 7)), torch.randint(0, K, (3, 7, 7))]
    out = prior_nll(UniformPrior(K), codes, 'cpu')
    assert out['nll_nats_per_latent'] == pytest.approx(math.log(K))
    assert out['n_images'] == 8


@pytest.mark.parametrize('img_shape, latent_hw',
                         [((1, 28, 28), (7, 7)), ((3, 64, 64), (16, 16))])
def test_bits_per_dim_counts_all_bits_of_an_image(img_shape, latent_hw):
    nll = 2.5  # nats per latent position
    total_bits = nll * latent_hw[0] * latent_hw[1] / math.log(2)
    assert bits_per_dim(nll, latent_hw, img_shape) * np.prod(img_shape) == \
        pytest.approx(total_bits)
