"""Encode a dataset through the VQ-VAE once, for prior training.

The tutorial encodes every image in every batch of every epoch of prior
training, although the (frozen) VQ-VAE gives the same codes each time. Here the
codes are computed once and stored as a compact integer tensor next to the
VQ-VAE checkpoint (`<ckpt>.codes_<split>.pt`). The file records a hash of the
checkpoint and the data settings, and is rebuilt when either changes.
"""
import os

import torch

from dldemos.dist_utils import barrier, is_main
from dldemos.VQVAE.checkpoint import (file_sha256, load_file,
                                      save_atomic)


def cache_path(ckpt_path, split, subset=None):
    """One file per (split, subset), so training's per-epoch held-out check
    and evaluate.py, which read different subsets, do not evict each other."""
    part = split if subset is None else f'{split}{subset}'
    return f'{os.path.splitext(ckpt_path)[0]}.codes_{part}.pt'


def code_dtype(n_embedding):
    return torch.uint8 if n_embedding <= 256 else torch.int16


@torch.no_grad()
def encode_all(vqvae, dataloader, device, progress=None):
    """Codes of every image of the (unshuffled) loader: [N, h, w] integers."""
    vqvae.eval()
    dtype = code_dtype(vqvae.vq_embedding.num_embeddings)
    out = []
    for x in (progress(dataloader) if progress else dataloader):
        out.append(vqvae.encode(x.to(device)).to('cpu', dtype))  # [n, h, w]
    return torch.cat(out)


def load_or_build(vqvae, ckpt_path, key, make_loader, device, progress=None):
    """Codes for `key` (dict of data settings), from the cache if it is valid.

    Rank 0 builds the cache; other ranks wait at a barrier, then read it.
    """
    path = cache_path(ckpt_path, key.get('split', 'train'), key.get('subset'))
    key = dict(key, vqvae_sha256=file_sha256(ckpt_path))
    if is_main():
        cached = load_file(path, 'code cache') if os.path.exists(path) \
            else None
        if cached is None or cached.get('key') != key:
            codes = encode_all(vqvae, make_loader(), device, progress)
            save_atomic({'key': key, 'codes': codes}, path)
    barrier()
    return load_file(path, 'code cache')['codes']
