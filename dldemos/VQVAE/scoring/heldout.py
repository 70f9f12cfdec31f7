"""Scores of one trained run on held-out data: the VQ-VAE's reconstructions,
the prior's likelihood of held-out codes, and the samples against held-out
images. evaluate.py calls these in order and writes what they return."""
import math
import os

import torch
import torch.nn.functional as F

from dldemos.utils.errors import CheckpointError, UsageError
from dldemos.VQVAE.loading.loaders import code_loader, image_loader
from dldemos.VQVAE.plots import save_code_usage, save_grid
from dldemos.VQVAE.runtime.context import prior_is_stale
from dldemos.VQVAE.runtime.files import load_file, load_model
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.sampling import sample_with_cfg
from dldemos.VQVAE.scoring.features import (FeatureSet, features_of_loader,
                                            fid_entry)
from dldemos.VQVAE.scoring.metrics import (bits_per_dim, feature_stats,
                                           prior_nll, vqvae_heldout)
from dldemos.VQVAE.scoring.swd import MAX_IMAGES, swd_scores

PSNR_CONVENTION = ('set-level: 10 log10(1 / MSE) of the mean squared error '
                   'over every pixel of every held-out image (clipped to '
                   '[0, 1]), not the mean of per-image PSNRs')
BITS_PER_DIM_NOTE = ('the bits of the discrete codes only (prior NLL of the '
                     'latents spread over C*H*W): not comparable with the '
                     "VQ-VAE paper's bits/dim, which also counts the "
                     'decoder\'s likelihood of the pixels')


# evaluate.py's grids are for looking at: 28x28 digits and 64x64 faces are
# upscaled (nearest neighbour) to cells at least this high
GRID_CELL = 128


def epochs_trained(path):
    """Completed epochs recorded in the checkpoint's resume point (a run
    stopped mid-epoch counts only whole epochs), or None without one."""
    try:
        return int(load_file(resume_path(path), 'resume point')['epoch'])
    except (CheckpointError, KeyError, TypeError):
        return None


def load_checkpoints(ctx, vqvae, gen_model):
    """Load what exists; (paths of the loaded ones, why the prior is not
    scored or None). A VQ-VAE alone is scored; no VQ-VAE is an error."""
    paths = {'vqvae': ctx.ckpt('vqvae_path'),
             'gen_model': ctx.ckpt('gen_model_path')}
    if not os.path.isfile(paths['vqvae']):
        raise UsageError(f'VQ-VAE checkpoint {paths["vqvae"]} does not '
                         'exist: train first (main.py with the same -c, '
                         '--work-dir and --cfg-options)')
    load_model(vqvae, paths['vqvae'], 'VQ-VAE checkpoint')
    vqvae.to(ctx.device).eval()
    why = None
    if not os.path.isfile(paths['gen_model']):
        why = (f'no PixelCNN checkpoint {paths["gen_model"]}: train it with '
               'main.py --stages 3')
    elif prior_is_stale(ctx):
        why = (f'the PixelCNN {paths["gen_model"]} was trained on the codes '
               'of another VQ-VAE: train it again with main.py --stages 3')
    if why:
        del paths['gen_model']
        return paths, why
    load_model(gen_model, paths['gen_model'], 'PixelCNN checkpoint')
    gen_model.to(ctx.device).eval()
    return paths, None


@torch.no_grad()
def score_vqvae(ctx, vqvae, opts, recon_feats):
    """Reconstructions and code usage on the held-out images; recon_feats
    (a FeatureSet or None) collects the reconstructions' features."""
    dataset = ctx.cfg['dataset_type']
    test_loader, _ = image_loader(ctx, opts.batch_size, 'test',
                                  subset=opts.eval_images, shuffle=False)
    m = vqvae_heldout(vqvae, test_loader, ctx.device, with_ssim=True,
                      on_batch=None if recon_feats is None else
                      (lambda x, x_hat: recon_feats.add(x_hat)))
    counts = m.pop('code_counts')
    # a grid to judge by eye: held-out originals beside reconstructions
    x = first_images(test_loader, 32).to(ctx.device)  # [n, C, H, W]
    x_hat = vqvae.decode(vqvae.encode(x)).float()
    grid = ctx.out(f'eval_reconstruct_{dataset}.jpg')
    save_grid(torch.cat((x, x_hat), 3), grid, dataset, min_cell=GRID_CELL)
    png = ctx.out(f'code_usage_{dataset}.png')
    save_code_usage(counts, png, f'code usage on {m["n_images"]} held-out '
                    f'{dataset} images ({m["codes_used"]}/{len(counts)} '
                    'used)')
    return dict(m, n_embedding=len(counts), code_counts=counts.tolist(),
                code_usage_png=png, reconstruction_grid=grid,
                psnr_convention=PSNR_CONVENTION)


def score_prior(ctx, vqvae, gen_model, opts):
    """Likelihood of the held-out codes under the prior (a class-conditional
    prior: given each image's true class)."""
    img_shape = tuple(ctx.cfg['img_shape'])
    codes, _ = code_loader(ctx, vqvae, 'test', subset=opts.eval_images,
                           shuffle=False, batch_size=opts.batch_size)
    with_labels = ctx.cfg['n_classes'] is not None
    p = prior_nll(gen_model, (b if with_labels else b[0] for b in codes),
                  ctx.device, with_labels=with_labels)
    latent_hw = vqvae.get_latent_HW(img_shape)
    K = ctx.cfg['n_embedding']
    return dict(
        p, bits_per_dim=bits_per_dim(p['nll_nats_per_latent'], latent_hw,
                                     img_shape),
        bits_per_dim_counts=BITS_PER_DIM_NOTE,
        uniform_nats_per_latent=math.log(K),
        uniform_bits_per_dim=bits_per_dim(math.log(K), latent_hw, img_shape),
        latent_shape=list(latent_hw))


def spread_labels(cfg, n):
    """Classes spread evenly over n samples (arange(n) % n_classes) for a
    class-conditional prior, so the samples' class mix is the data's
    (MNIST's is near uniform); None for an unconditional one."""
    n_classes = cfg['n_classes']
    return None if n_classes is None else torch.arange(n) % n_classes


def score_samples(ctx, vqvae, gen_model, opts, features, recon_feats):
    """Frechet distance of opts.n_samples samples to the held-out images,
    with two references: reconstructions (what the decoder allows) and real
    train images (the floor). features: feature_extractor's triple."""
    cfg, n = ctx.cfg, opts.n_samples
    extract, clf, fields = features
    labels = spread_labels(cfg, n)  # [n] or None
    imgs = sample_with_cfg(vqvae, gen_model, cfg, n, ctx.device, ctx.seed,
                           opts.sample_batch, labels)
    imgs = imgs.clip(0, 1).cpu()  # [n, C, H, W]
    grid = ctx.out(f'eval_samples_{cfg["dataset_type"]}.jpg')
    if labels is None:
        save_grid(imgs[:81], grid, cfg['dataset_type'], min_cell=GRID_CELL)
    else:
        save_grid(imgs, grid, cfg['dataset_type'], labels=labels,
                  max_columns=9, min_cell=GRID_CELL)
    out = dict(fields, n_samples=n, sampler=cfg['sampler'],
               temperature=cfg['temperature'], top_k=cfg['top_k'],
               seed=ctx.seed, grid=grid)
    if clf is None:  # no classifier: a patch score that needs no weights
        out.update(patch_scores(ctx, imgs, recon_feats.images(), opts))
    if extract is None:
        return out
    batch = opts.batch_size
    test_loader, _ = image_loader(ctx, batch, 'test',
                                  subset=opts.eval_images, shuffle=False)
    test_feats = features_of_loader(extract, test_loader)
    ref_stats = feature_stats(test_feats)
    # train images drawn at random, as many as samples, so that all three
    # distances carry the same small-sample bias
    train_loader, _ = image_loader(ctx, batch, 'train')
    train_feats = features_of_loader(extract, train_loader, n)
    sample_feats = FeatureSet(extract, n)
    for i in range(0, n, batch):
        sample_feats.add(imgs[i:i + batch])
    out.update(fid=fid_entry(sample_feats.array(), ref_stats)['fid'],
               reference={
                   'against': f'held-out images ({test_feats.shape[0]})',
                   'reconstructions_vs_test': fid_entry(recon_feats.array(),
                                                        ref_stats),
                   'train_vs_test': fid_entry(train_feats, ref_stats)})
    if clf is not None:
        out.update(classified(clf, sample_feats.array(), labels, ctx.device))
    return out


def first_images(loader, n):
    """The first n images of a loader [n, C, H, W] (fewer if it ends)."""
    out, have = [], 0
    for x in loader:
        out.append(x[:n - have].float())
        have += out[-1].shape[0]
        if have >= n:
            break
    return torch.cat(out)


def patch_scores(ctx, samples, recons, opts):
    """The sliced Wasserstein distance of Laplacian-pyramid patches
    (swd.py) of the samples to the held-out images, beside the same two
    references as the Frechet distance: the reconstructions of those
    held-out images, and as many random training images as samples."""
    n = min(samples.shape[0], MAX_IMAGES)
    test_loader, _ = image_loader(ctx, opts.batch_size, 'test',
                                  subset=opts.eval_images, shuffle=False)
    real = first_images(test_loader, MAX_IMAGES)  # [m, C, H, W]
    train_loader, _ = image_loader(ctx, opts.batch_size, 'train')
    train = first_images(train_loader, n)
    s = swd_scores(real, samples[:n], recons, train, seed=ctx.seed)
    return {k: s[k] for k in ('swd', 'swd_ref_reconstructions',
                              'swd_ref_train', 'swd_levels',
                              'swd_convention')}


@torch.no_grad()
def classified(clf, features, labels, device):
    """Which classes the classifier sees in the samples (features [n, D]),
    and for a class-conditional prior how often it is the one asked for."""
    probs = F.softmax(clf.head(torch.from_numpy(features).float()
                               .to(device)), -1).cpu()  # [n, classes]
    out = {'class_histogram': torch.bincount(
        probs.argmax(-1), minlength=probs.shape[1]).tolist(),
        'mean_confidence': float(probs.max(-1).values.mean())}
    if labels is not None:
        out['conditional_accuracy'] = float(
            (probs.argmax(-1) == labels[:probs.shape[0]]).float().mean())
    return out
