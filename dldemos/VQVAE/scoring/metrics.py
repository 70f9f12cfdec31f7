"""Held-out measures shared by training (per epoch) and evaluate.py."""
import math
import warnings

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F


def psnr_from_mse(mse, max_val=1.0):
    """PSNR in dB of a mean squared error on images in [0, max_val]."""
    if mse <= 0:
        return float('inf')
    return 10 * math.log10(max_val**2 / mse)


def perplexity(counts):
    """exp(entropy) of the code-usage distribution: the effective number of
    codes (K when all are used equally, 1 when one code is used)."""
    p = counts.double() / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(entropy.exp())


def ssim(x, y):
    """SSIM of each image pair in [0, 1]: [N] (Wang et al. 2004: 11x11
    Gaussian window, sigma 1.5, K1 0.01, K2 0.03, mean over channels)."""
    # torchmetrics is imported here, not at the top: it takes seconds to
    # import and only evaluate.py needs SSIM.
    from torchmetrics.functional.image import \
        structural_similarity_index_measure
    return structural_similarity_index_measure(
        x.float(), y.float(), gaussian_kernel=True, sigma=1.5, kernel_size=11,
        data_range=1.0, k1=0.01, k2=0.03, reduction='none')


@torch.no_grad()
def vqvae_heldout(vqvae, dataloader, device, with_ssim=False,
                  on_batch=None):
    """MSE / PSNR of clipped reconstructions and code usage on held-out data.

    with_ssim adds the mean SSIM; on_batch(x, x_hat) sees every batch (e.g. to
    collect classifier features of the reconstructions)."""
    was_training = vqvae.training
    vqvae.eval()
    counts = torch.zeros(vqvae.vq_embedding.num_embeddings, dtype=torch.long)
    se, ssim_sum, n_pixels, n_images = 0.0, 0.0, 0, 0
    for x in dataloader:
        x = x.to(device)
        codes = vqvae.encode(x)  # [N, h, w]
        x_hat = vqvae.decode(codes).float().clip(0, 1)  # [N, C, H, W]
        se += float(((x_hat - x)**2).sum())
        if with_ssim:
            ssim_sum += float(ssim(x_hat, x).sum())
        if on_batch is not None:
            on_batch(x, x_hat)
        n_pixels += x.numel()
        n_images += x.shape[0]
        counts += torch.bincount(codes.flatten().cpu(),
                                 minlength=counts.numel())
    vqvae.train(was_training)
    mse = se / max(n_pixels, 1)
    out = {'mse': mse, 'psnr': psnr_from_mse(mse),
           'codes_used': int((counts > 0).sum()),
           'perplexity': perplexity(counts), 'n_images': n_images,
           'code_counts': counts}
    if with_ssim:
        out['ssim'] = ssim_sum / max(n_images, 1)
    return out


@torch.no_grad()
def prior_nll(gen_model, code_batches, device, *, with_labels=False):
    """Mean negative log-likelihood of held-out codes, nats per latent.
    with_labels: batches are (codes, labels), and a class-conditional prior
    scores each image's codes given its true class."""
    was_training = gen_model.training
    gen_model.eval()
    total, n_latents, n_images = 0.0, 0, 0
    for batch in code_batches:
        codes, labels = batch if with_labels else (batch, None)
        codes = codes.to(device).long()  # [N, h, w]
        if labels is None:
            logits = gen_model(codes).float()  # [N, K, h, w]
        else:
            logits = gen_model(codes, labels.to(device).long()).float()
        total += float(F.cross_entropy(logits, codes, reduction='sum'))
        n_latents += codes.numel()
        n_images += codes.shape[0]
    gen_model.train(was_training)
    return {'nll_nats_per_latent': total / max(n_latents, 1),
            'n_images': n_images}


def bits_per_dim(nll_nats_per_latent, latent_hw, img_shape):
    """Total bits of an image's codes spread over its C*H*W pixel values."""
    h, w = latent_hw
    C, H, W = img_shape
    return nll_nats_per_latent * h * w / (math.log(2) * C * H * W)


def feature_stats(features):
    """Mean [D] and covariance [D, D] (float64) of features [N, D]."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f'need features [N >= 2, D], got {f.shape}')
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm(a, strict=True):
    """scipy's matrix square root; None when a is singular and strict."""
    with warnings.catch_warnings():
        warnings.simplefilter('error' if strict else 'ignore',
                              scipy.linalg.LinAlgWarning)
        try:
            root = scipy.linalg.sqrtm(a)
        except scipy.linalg.LinAlgWarning:
            return None
    return root if not strict or np.isfinite(root).all() else None


def _real_part(root, atol=1e-3):
    """Real part of the root of sigma1 @ sigma2. Rounding gives the root of a
    PSD product a tiny imaginary part, which is dropped. A large one (over
    atol on the diagonal, the only part the trace reads: pytorch-fid's test)
    means the inputs were not covariances: dropping it would hide that."""
    imag = np.abs(np.diagonal(root).imag).max(initial=0.0)
    if imag > atol:
        raise ValueError(
            f'frechet_distance: the square root of sigma1 @ sigma2 has an '
            f'imaginary component up to {imag:.3e} on its diagonal (over '
            f'{atol:g}): sigma1 and sigma2 must be positive semi-definite '
            f'covariance matrices')
    return np.real(root)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Squared Frechet distance of N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).
    This is FID when the statistics are Inception features. Raises
    ValueError when sigma1 @ sigma2 has no real root (not covariances)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if covmean is None:
        # singular product (fewer samples than dimensions): nudge both
        # covariances towards the identity so the root exists
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset), strict=False)
    covmean = _real_part(covmean)
    d = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - \
        2 * np.trace(covmean)
    return float(max(d, 0.0))
