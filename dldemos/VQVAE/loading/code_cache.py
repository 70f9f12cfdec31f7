"""Encode a dataset through the VQ-VAE once, for prior training.

The tutorial encodes every image in every batch of every epoch of prior
training, although the (frozen) VQ-VAE gives the same codes each time. Here the
codes are computed once and stored as a compact integer tensor next to the
VQ-VAE checkpoint (`<ckpt>.codes_<split>.pt`). The file records a hash of the
checkpoint, the data settings and a fingerprint of the image files
(dataset.files_fingerprint), and is rebuilt when any of them changes.
For a class-conditional prior the file also holds the images' labels, in
the order of the codes; a file without them is rebuilt when they are asked
for, and one with them serves unconditional runs too.
"""
import os

import torch

from dldemos.utils.dist_utils import barrier, is_main
from dldemos.utils.errors import CheckpointError
from dldemos.VQVAE.runtime.files import file_sha256, load_file, save_atomic
from dldemos.VQVAE.dataset import files_fingerprint


def cache_path(ckpt_path, split, subset=None):
    """One file per (split, subset), so training's per-epoch held-out check
    and evaluate.py, which read different subsets, do not evict each other."""
    part = split if subset is None else f'{split}{subset}'
    return f'{os.path.splitext(ckpt_path)[0]}.codes_{part}.pt'


def code_dtype(n_embedding):
    return torch.uint8 if n_embedding <= 256 else torch.int16


@torch.no_grad()
def encode_all(vqvae, dataloader, device, progress=None, *,
               with_labels=False):
    """Codes of every image of the (unshuffled) loader: [N, h, w] integers.
    with_labels: the loader yields (images, labels); returns (codes,
    labels [N]), labels read in the same pass, so they stay aligned."""
    vqvae.eval()
    dtype = code_dtype(vqvae.vq_embedding.num_embeddings)
    codes, labels = [], []
    for batch in (progress(dataloader) if progress else dataloader):
        x = batch[0] if with_labels else batch
        codes.append(vqvae.encode(x.to(device)).to('cpu', dtype))  # [n,h,w]
        if with_labels:
            labels.append(batch[1].to('cpu', torch.long))  # [n]
    if with_labels:
        return torch.cat(codes), torch.cat(labels)
    return torch.cat(codes)


def valid_cache(path, key, with_labels=False):
    """Whether path holds codes made for exactly `key` (and labels beside
    them when asked for). Anything else there (another key, a file of
    another kind, a damaged one) is rebuilt: the cache is derived data,
    never worth an error."""
    if not os.path.isfile(path):
        return False
    try:
        cached = load_file(path, 'code cache')
    except CheckpointError:
        return False
    if not (isinstance(cached, dict) and cached.get('key') == key and
            isinstance(cached.get('codes'), torch.Tensor)):
        return False
    labels = cached.get('labels')
    return not with_labels or (isinstance(labels, torch.Tensor) and
                               labels.shape == cached['codes'].shape[:1])


def load_or_build(vqvae, ckpt_path, key, make_loader, device, progress=None,
                  fingerprint=None, *, with_labels=False):
    """Codes for `key` (dict of data settings), from the cache if it is valid.

    The key also holds the VQ-VAE checkpoint's hash and, as 'files', what
    files the data are: the caller's key['files'] if it has one, else
    `fingerprint`, else dataset.files_fingerprint of make_loader()'s dataset
    (so images added, removed or rewritten rebuild the cache).
    Rank 0 builds the cache; other ranks wait at a barrier, then read it.
    with_labels: make_loader()'s batches are (images, labels), and the
    result is (codes, labels).
    """
    path = cache_path(ckpt_path, key.get('split', 'train'), key.get('subset'))
    key = dict(key, vqvae_sha256=file_sha256(ckpt_path))
    if is_main():
        loader = None
        if 'files' not in key:
            if fingerprint is None:
                loader = make_loader()  # no worker starts before iteration
                fingerprint = files_fingerprint(loader.dataset)
            key['files'] = fingerprint
        if not valid_cache(path, key, with_labels):
            out = encode_all(vqvae, loader or make_loader(), device,
                             progress, with_labels=with_labels)
            codes, labels = out if with_labels else (out, None)
            entry = {'key': key, 'codes': codes}
            if with_labels:
                entry['labels'] = labels
            save_atomic(entry, path)
    barrier()
    cached = load_file(path, 'code cache')
    if with_labels:
        return cached['codes'], cached['labels']
    return cached['codes']
