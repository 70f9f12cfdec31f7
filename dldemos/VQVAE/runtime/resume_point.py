"""The resume point: what continuing a stopped stage needs, beside its model file.

A model checkpoint is a plain state dict (what the tutorial's code saves and
loads). Beside it, `<name>.resume.pth` holds a copy of the weights, the
optimizer, next epoch and batch, RNG states, the resolved config and any
extra training state (codebook statistics), all as plain types so that
`torch.load(..., weights_only=True)` reads it.
"""
import os
import random

import numpy as np
import torch

from dldemos.utils.dist_utils import get_world_size
from dldemos.utils.errors import CheckpointError
from dldemos.VQVAE.runtime.files import (check_state_dict, load_file, plain,
                                         save_atomic)


def resume_path(ckpt_path):
    root, ext = os.path.splitext(ckpt_path)
    return f'{root}.resume{ext or ".pth"}'

def rng_state():
    """Every RNG a run draws from, as types weights_only loading accepts."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {'torch': torch.get_rng_state(),
            'cuda': (torch.cuda.get_rng_state_all()
                     if torch.cuda.is_available() else []),
            'numpy': [keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            'python': plain(random.getstate())}


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    set_cuda_rng_states(state.get('cuda') or [])
    keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state(('MT19937', np.array(keys, dtype=np.uint32), pos,
                         has_gauss, gauss))
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))


def set_cuda_rng_states(states):
    """Restore one state per visible GPU. A run resumed on fewer GPUs (or
    none) than it was saved on skips the states of the missing ones, which
    torch.cuda.set_rng_state_all would fail on."""
    if not states or not torch.cuda.is_available():
        return
    for index, s in enumerate(states[:torch.cuda.device_count()]):
        torch.cuda.set_rng_state(s, index)

def save_training_state(ckpt_path, model, optimizer, cfg, epoch, step=0,
                        sums=None, rng=None, provenance=None,
                        train_state=None, data_split=None):
    """Write the model (plain state dict) and its resume point, atomically.

    Resuming starts at batch `step` of epoch `epoch` (step 0: a fresh epoch);
    `sums` are the running loss sums of that epoch so far and `rng` the RNG
    states to restore (default: now). The resume point holds its own copy of
    the weights and is written first, so a crash between the two writes
    cannot pair a resume point with weights from another step.
    `provenance` records what the weights were trained on (the prior: which
    VQ-VAE made its codes), so a stale resume point is recognised.
    `train_state` (a module of training state, e.g. codebook statistics)
    goes into the resume point only: the model file stays the plain state
    dict. `data_split` records which files were trained on and held out
    (context.data_split).
    """
    state = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
             'param_names': param_names(model, optimizer),
             'epoch': int(epoch), 'step': int(step),
             'sums': [] if sums is None else [float(v) for v in sums],
             'rng': rng_state() if rng is None else rng,
             'config': plain(cfg), 'world_size': get_world_size(),
             'provenance': dict(provenance or {})}
    if data_split is not None:
        state['data_split'] = dict(data_split)
    if train_state is not None:  # the file's key stays 'extra': old
        state['extra'] = train_state.state_dict()  # resume points load
    save_atomic(state, resume_path(ckpt_path))
    save_atomic(state['model'], ckpt_path)

def param_names(model, optimizer):
    """The model's name of each parameter the optimizer trains, per param
    group: a resume point records them so that a run resumed with another
    set of trained parameters (codebook_ema switched on or off) keeps the
    optimizer state of the parameters both share."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), f'?{i}') for i, p in enumerate(g['params'])]
            for g in optimizer.param_groups]


def remap_optimizer_state(saved, saved_names, optimizer, names):
    """The saved optimizer state dict rearranged for `optimizer`, whose
    parameters are `names`: a parameter both train keeps its state, one
    newly trained starts afresh, one no longer trained is dropped."""
    current = optimizer.state_dict()
    index = {n: i for group, group_names in zip(saved['param_groups'],
                                                 saved_names)
             for i, n in zip(group['params'], group_names)}
    groups, state = [], {}
    for group, cur, group_names in zip(saved['param_groups'],
                                       current['param_groups'], names):
        groups.append(dict(group, params=cur['params']))
        for i, n in zip(cur['params'], group_names):
            if index.get(n) in saved['state']:
                state[i] = saved['state'][index[n]]
    return {'state': state, 'param_groups': groups}


RESUME_KEYS = ('model', 'optimizer', 'epoch', 'step', 'sums', 'rng')
# config keys that decide which images each batch of an epoch holds: a
# mid-epoch resume point is only valid if they are unchanged
ORDER_KEYS = ('dataset_type', 'batch_size', 'batch_size_2', 'train_subset',
              'use_code_cache', 'seed')


def check_batch_order(state, cfg, path):
    saved = state.get('config', {})
    changed = [f'{k} {saved[k]!r} -> {plain(cfg[k])!r}' for k in ORDER_KEYS
               if k in saved and k in cfg and saved[k] != plain(cfg[k])]
    if state.get('world_size', 1) != get_world_size():  # shards differ
        changed.append(f'processes {state.get("world_size", 1)} -> '
                       f'{get_world_size()}')
    if state['step'] and changed:
        raise CheckpointError(
            f'{path} stopped mid-epoch and the batches changed since '
            f'({", ".join(changed)}): resume with the old values, which '
            'would otherwise repeat or skip images')


class StaleResumePoint(CheckpointError):
    """The resume point was trained on something that has changed since."""


def stale_provenance(saved, expected):
    """The keys of `expected` whose recorded value differs ([] if none; a
    resume point from before provenance was recorded counts as current)."""
    saved = saved or {}
    return [k for k, v in (expected or {}).items()
            if k in saved and saved[k] != v]


def read_provenance(ckpt_path):
    """The provenance recorded in the resume point beside ckpt_path ({} when
    there is none)."""
    return read_resume_entry(ckpt_path, 'provenance') or {}


def read_resume_entry(ckpt_path, key):
    """One entry of the resume point beside ckpt_path (None when there is no
    resume point, or no such entry). Memory-mapped: the weights stay on
    disk."""
    path = resume_path(ckpt_path)
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location='cpu', weights_only=True,
                           mmap=True)
    except Exception:  # unreadable resume points are reported on resume
        return None
    return state.get(key) if isinstance(state, dict) else None


def load_training_state(ckpt_path, model, optimizer, cfg=None,
                        provenance=None, train_state=None):
    """Restore model, optimizer and RNG (and `train_state`, when the resume
    point has its state); return (epoch, step, sums).

    With `cfg`, a mid-epoch resume point whose batches the config changed is
    refused. With `provenance`, one recorded with other values raises
    StaleResumePoint before anything is restored. A resume point without
    extra state (older, or saved with the options off) leaves `train_state`
    as it is: fresh."""
    path = resume_path(ckpt_path)
    if not os.path.isfile(path):
        raise CheckpointError(
            f'no resume point {path} beside {ckpt_path}: run without '
            '--resume to train this stage from scratch')
    state = load_file(path, 'resume point')
    if not isinstance(state, dict) or any(k not in state
                                          for k in RESUME_KEYS):
        raise CheckpointError(f'{path} is not a resume point (no '
                              f'{", ".join(RESUME_KEYS)}); run without '
                              '--resume to start from scratch')
    stale = stale_provenance(state.get('provenance'), provenance)
    if stale:
        raise StaleResumePoint(f'{path} was trained on another '
                               f'{", ".join(stale)}')
    check_state_dict(model, state['model'], path, 'resume point')
    if cfg is not None:
        check_batch_order(state, cfg, path)
    has_extra = train_state is not None and 'extra' in state
    if has_extra:
        check_state_dict(train_state, state['extra'], path, 'resume point')
    model.load_state_dict(state['model'])
    if has_extra:
        train_state.load_state_dict(state['extra'])
    # the learning rate comes from the config, not the file, so a run that
    # diverged can be resumed with a lower lr
    lrs = [group['lr'] for group in optimizer.param_groups]
    saved_opt, names = state['optimizer'], param_names(model, optimizer)
    saved_names = state.get('param_names')
    if saved_names is not None and saved_names != names and \
            len(saved_names) == len(names):
        saved_opt = remap_optimizer_state(saved_opt, saved_names,
                                          optimizer, names)
    try:
        optimizer.load_state_dict(saved_opt)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f'optimizer state in {path} does not match the '
                              f'model ({e}); use the config it was trained '
                              'with') from None
    for group, lr in zip(optimizer.param_groups, lrs):
        group['lr'] = lr
    set_rng_state(state['rng'])
    return int(state['epoch']), int(state['step']), state['sums']
