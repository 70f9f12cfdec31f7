"""What a training run shows after each epoch, besides its loss: held-out
scores (the tutorial's closing lesson: a falling training loss is not a
better model) and preview grids. Each function returns the hooks the epoch
runner's Stage takes (heldout, describe, preview, bar_info)."""
import math

import torch

from dldemos.utils.dist_utils import is_main
from dldemos.VQVAE.loading.loaders import code_loader, image_loader, preview_images
from dldemos.VQVAE.sampling import sample_with_cfg
from dldemos.VQVAE.scoring.metrics import prior_nll, vqvae_heldout
from dldemos.VQVAE.scoring.swd import swd
from dldemos.VQVAE.plots import (preview_path, preview_reconstruction,
                                 preview_samples)


class CollapseWatch:
    """Warns when the held-out codes used fall below half the most this run
    has reached: the codebook collapsed, which a too-high lr does (config
    0's VQ-VAE with a one-cycle lr peaking at 1.6e-2 fell from 32 codes to 2
    in one epoch, and the PSNR to 10.5 dB, without a non-finite loss)."""

    def __init__(self, n_embedding):
        self.K, self.most = n_embedding, 0

    def __call__(self, codes_used):
        """'' or a one-line warning that says what to do."""
        self.most = max(self.most, codes_used)
        if 2 * codes_used >= self.most:
            return ''
        return (f'warning: held-out codes used fell from {self.most} to '
                f'{codes_used} of {self.K}: the codebook collapsed; lower lr '
                'and train again')


def vqvae_hooks(ctx, vqvae):
    cfg, device = ctx.cfg, ctx.device
    K = cfg['n_embedding']
    hooks = {'bar_info': lambda ze: {
        # distinct codes in the last batch: few means a dying codebook
        'codes': f'{vqvae.quantize(ze).unique().numel()}/{K}'}}
    if cfg['eval_subset']:
        heldout, _ = image_loader(ctx, cfg['batch_size'], 'test',
                                  subset=cfg['eval_subset'], shuffle=False)

        def score():
            m = vqvae_heldout(vqvae, heldout, device)
            return {'test_mse': m['mse'], 'test_psnr': m['psnr'],
                    'test_codes_used': m['codes_used']}
        hooks['heldout'] = score
        watch = CollapseWatch(K)

        def describe(r):
            line = (f'test mse {r["test_mse"]:.5f} psnr {r["test_psnr"]:.2f} '
                    f'dB codes used {r["test_codes_used"]}/{K}')
            warning = watch(r['test_codes_used'])
            return line + (f'\n{warning}' if warning else '')
        hooks['describe'] = describe
    if cfg['n_preview'] and cfg['preview_every']:
        # only rank 0 draws previews
        x = preview_images(ctx).to(device) if is_main() else None
        hooks['preview'] = lambda epoch: preview_reconstruction(
            vqvae, x, preview_path(ctx.work_dir, 'vqvae_reconstruct', epoch),
            cfg['dataset_type'])
    return hooks


def with_sample_swd(ctx, vqvae, gen_model, heldout_nll):
    """The held-out NLL plus, each epoch, the patch score (swd.py) of a few
    samples against held-out images: the NLL says how well the prior fits
    codes, not how the images it draws look. A private generator draws the
    samples (the training RNG stream is untouched), the same seed each
    epoch, so the curve moves only with the prior."""
    cfg = ctx.cfg
    n = cfg['epoch_swd_samples']
    loader, _ = image_loader(ctx, cfg['batch_size'], 'test',
                             subset=cfg['eval_subset'], shuffle=False)
    real = torch.cat(list(loader))  # [m, C, H, W], held-out
    labels = None if cfg['n_classes'] is None else \
        torch.arange(n) % cfg['n_classes']

    def score():
        imgs = sample_with_cfg(vqvae, gen_model, cfg, n, ctx.device,
                               ctx.seed, labels=labels)  # [n, C, H, W]
        return dict(heldout_nll(), sample_swd=swd(
            real, imgs.clip(0, 1).cpu(), ctx.seed)['mean'])
    return score


def prior_hooks(ctx, vqvae, gen_model):
    cfg, device = ctx.cfg, ctx.device
    hooks = {}
    if cfg['eval_subset']:
        heldout, _ = code_loader(ctx, vqvae, 'test',
                                 subset=cfg['eval_subset'], shuffle=False)
        # a class-conditional prior is scored given each image's class
        with_labels = cfg['n_classes'] is not None
        hooks['heldout'] = lambda: {'test_nll': prior_nll(
            gen_model, (b if with_labels else b[0] for b in heldout), device,
            with_labels=with_labels)['nll_nats_per_latent']}
        hooks['describe'] = lambda r: (
            f'test nll {r["test_nll"]:.4f} nats/latent (uniform '
            f'{math.log(cfg["n_embedding"]):.4f})' + (
                f' sample swd {r["sample_swd"]:.1f}' if 'sample_swd' in r
                else ''))
        if cfg['epoch_swd_samples'] and is_main():
            hooks['heldout'] = with_sample_swd(ctx, vqvae, gen_model,
                                               hooks['heldout'])
    if cfg['n_preview'] and cfg['preview_every']:
        hooks['preview'] = lambda epoch: preview_samples(
            vqvae, gen_model, cfg,
            preview_path(ctx.work_dir, 'pixelcnn_sample', epoch), ctx.seed,
            device)
    return hooks
