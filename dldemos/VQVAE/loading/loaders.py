"""The batches the stages read: images of a split, or their VQ-VAE codes.

Every loader draws its order from a seeded DistributedSampler (one replica
when not distributed), so epoch e's batches depend only on (seed, e): runs
repeat, and a resumed run sees the batches an uninterrupted one would.
"""
import os

import torch
from torch.utils.data import (DataLoader, Dataset, DistributedSampler,
                              TensorDataset)
from tqdm import tqdm

from dldemos.utils.dist_utils import is_dist, is_main
from dldemos.VQVAE.loading import code_cache
from dldemos.VQVAE.dataset import (data_options, files_fingerprint,
                                   get_dataloader, get_dataset)


def usable_workers(requested):
    """DataLoader workers beyond the cores this process may use only add
    contention (and torch warns about it once per loader)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(0, min(requested, cores))


def image_loader(ctx, batch_size, split='train', *, subset=None,
                 shuffle=True, sharded=False, with_labels=False):
    """(loader, sampler) over the config's images of `split`; the sampler
    has set_epoch. `sharded` (training): under torchrun each rank reads its
    own part. `with_labels` (MNIST, your images in class subfolders):
    batches of (images, labels)."""
    cfg = ctx.cfg
    sharded = sharded and is_dist()
    out = get_dataloader(cfg['dataset_type'], batch_size,
                         img_shape=tuple(cfg['img_shape'][1:]),
                         dist_train=sharded,
                         num_workers=usable_workers(cfg['num_workers']),
                         use_lmdb=cfg['use_lmdb'], data_root=ctx.data_root,
                         split=split, subset=subset, shuffle=shuffle,
                         seed=ctx.seed,
                         pin_memory=ctx.device.type == 'cuda',
                         with_labels=with_labels, **data_options(cfg))
    return out if sharded else (out, out.sampler)


def code_loader(ctx, vqvae, split='train', *, subset=None, shuffle=True,
                batch_size=None):
    """(loader, sampler) over the VQ-VAE codes of `split`, encoded once and
    cached beside the VQ-VAE checkpoint. Training batches are sharded over
    the ranks; held-out codes are scored whole by rank 0. Batches are
    (codes,), or (codes, labels) for a class-conditional prior."""
    cfg = ctx.cfg
    batch_size = batch_size or cfg['batch_size_2']
    with_labels = cfg['n_classes'] is not None
    vqvae.to(ctx.device)

    def make_loader():  # images in file order: the cache is read by index
        loader, _ = image_loader(ctx, batch_size, split, subset=subset,
                                 shuffle=False, with_labels=with_labels)
        return loader

    key = {'dataset_type': cfg['dataset_type'],
           'img_shape': list(cfg['img_shape']), 'split': split,
           'img_fit': cfg['img_fit'],
           'subset': subset, 'use_lmdb': cfg['use_lmdb'],
           'data_root': os.path.abspath(ctx.data_root)}

    def load(key, make_loader, fingerprint=None):
        return code_cache.load_or_build(
            vqvae, ctx.ckpt('vqvae_path'), key, make_loader, ctx.device,
            lambda it: tqdm(it, desc=f'encoding {key["split"]} set',
                            leave=False, disable=not is_main()),
            fingerprint, with_labels=with_labels)
    out = load(key, make_loader)
    if cfg['prior_hflip'] and split == 'train':
        # A mirrored face is a face: the codes of every training image
        # mirrored left-right double the data of a prior that overfits a
        # few thousand images. Encoded (not the code grid flipped: the
        # encoder is not mirror-symmetric) and cached beside the others.
        fingerprint = files_fingerprint(make_loader().dataset) \
            if is_main() else None  # of the files, as the unmirrored cache
        mirrored = load(dict(key, split='train_mirrored'),
                        lambda: mirrored_loader(make_loader(), with_labels),
                        fingerprint)
        out = tuple(torch.cat(pair) for pair in zip(out, mirrored)) \
            if with_labels else torch.cat([out, mirrored])
    # codes [N, h, w] (and labels [N]): batches of (codes,) or (codes, labels)
    dataset = TensorDataset(*(out if with_labels else (out,)))
    sharded = is_dist() and shuffle
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=ctx.seed,
                                 **({} if sharded else
                                    {'num_replicas': 1, 'rank': 0}))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler), \
        sampler


class Mirrored(Dataset):
    """`dataset`'s images mirrored left-right (labels, if any, kept)."""

    def __init__(self, dataset, with_labels):
        self.dataset, self.with_labels = dataset, with_labels

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        if self.with_labels:
            return item[0].flip(-1), item[1]  # [C, H, W] mirrored, label
        return item.flip(-1)  # [C, H, W] mirrored


def mirrored_loader(loader, with_labels):
    """A loader like `loader` (unshuffled) over its images mirrored."""
    return DataLoader(Mirrored(loader.dataset, with_labels),
                      batch_size=loader.batch_size, shuffle=False,
                      num_workers=loader.num_workers)


def prior_loader(ctx, vqvae):
    """(loader, sampler, to_codes) of prior training: to_codes(batch) ->
    (codes [N, h, w], labels [N] or None) on the device. The frozen VQ-VAE
    gives the same codes every epoch, so by default they are encoded once
    (code_loader); use_code_cache=False is the tutorial's loop, which
    encodes every batch (fp32, like the cache)."""
    cfg, device = ctx.cfg, ctx.device
    conditional = cfg['n_classes'] is not None  # the labels come along
    if cfg['use_code_cache']:
        loader, sampler = code_loader(ctx, vqvae, 'train',
                                      subset=cfg['train_subset'])
    else:
        loader, sampler = image_loader(ctx, cfg['batch_size_2'],
                                       subset=cfg['train_subset'],
                                       sharded=is_dist(),
                                       with_labels=conditional)

    def to_codes(batch):
        y = batch[1].to(device, non_blocking=True).long() \
            if conditional else None
        if cfg['use_code_cache']:
            return batch[0].to(device, non_blocking=True).long(), y
        imgs = batch[0] if conditional else batch
        return vqvae.encode(imgs.to(device, non_blocking=True)), y
    return loader, sampler, to_codes


def preview_images(ctx):
    """The first few held-out images, read without a DataLoader (which would
    draw from the global RNG and change the training run)."""
    cfg = ctx.cfg
    dataset = get_dataset(cfg['dataset_type'], tuple(cfg['img_shape'][1:]),
                          ctx.data_root, 'test', cfg['use_lmdb'],
                          **data_options(cfg))
    n = min(cfg['n_preview'], len(dataset))
    return torch.stack([dataset[i] for i in range(n)])  # [n, C, H, W]
