"""Held-out measures shared by training (per epoch) and evaluate.py."""
import math

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


@torch.no_grad()
def vqvae_heldout(vqvae, dataloader, device, max_images=None):
    """MSE / PSNR of clipped reconstructions and code usage on held-out data."""
    was_training = vqvae.training
    vqvae.eval()
    counts = torch.zeros(vqvae.vq_embedding.num_embeddings, dtype=torch.long)
    se, n_pixels, n_images = 0.0, 0, 0
    for x in dataloader:
        if max_images is not None and n_images >= max_images:
            break
        if max_images is not None:
            x = x[:max_images - n_images]
        x = x.to(device)
        codes = vqvae.encode(x)  # [N, h, w]
        x_hat = vqvae.decode(codes).float().clip(0, 1)  # [N, C, H, W]
        se += float(((x_hat - x)**2).sum())
        n_pixels += x.numel()
        n_images += x.shape[0]
        counts += torch.bincount(codes.flatten().cpu(),
                                 minlength=counts.numel())
    vqvae.train(was_training)
    mse = se / max(n_pixels, 1)
    return {'mse': mse, 'psnr': psnr_from_mse(mse),
            'codes_used': int((counts > 0).sum()),
            'perplexity': perplexity(counts), 'n_images': n_images,
            'code_counts': counts}


@torch.no_grad()
def prior_nll(gen_model, code_batches, device):
    """Mean negative log-likelihood of held-out codes, nats per latent."""
    was_training = gen_model.training
    gen_model.eval()
    total, n_latents, n_images = 0.0, 0, 0
    for codes in code_batches:
        codes = codes.to(device).long()  # [N, h, w]
        logits = gen_model(codes).float()  # [N, K, h, w]
        total += float(F.cross_entropy(logits, codes, reduction='sum'))
        n_latents += codes.numel()
        n_images += codes.shape[0]
    gen_model.train(was_training)
    return {'nll_nats_per_latent': total / max(n_latents, 1),
            'n_images': n_images}
