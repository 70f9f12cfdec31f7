"""The run context: what every stage of one run shares.

A run is a config (which holds the seed), a device, a work dir, a data root
and whether to resume. They travel together as one `RunContext` instead of
five arguments through every call, and the context knows where its files go.
setup.py makes it; this module holds what the stages ask of it.
"""
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from dldemos.utils.dist_utils import get_rank, is_main
from dldemos.utils.errors import UsageError
from dldemos.VQVAE.dataset import data_options, get_dataset, split_names
from dldemos.VQVAE.runtime.files import (append_text_atomic, file_sha256,
                                         load_model, plain, probe_writable,
                                         write_text_atomic)
from dldemos.VQVAE.runtime.resume_point import read_provenance, resume_path
from dldemos.VQVAE.runtime.work_lock import lock_work_dir


@dataclass
class RunContext:
    cfg: dict
    device: torch.device
    work_dir: str = 'work_dirs'
    data_root: str = 'data'
    resume: bool = False

    @property
    def seed(self):
        """The run's seed, kept in one place: the config, which is saved
        with every checkpoint (it decides the data order of a resume)."""
        return self.cfg.get('seed', 0)

    def ckpt(self, key):
        """The checkpoint of cfg[key]: a bare file name goes into the work
        dir; a path with a folder is used as given."""
        path = self.cfg[key]
        return path if os.path.dirname(path) else \
            os.path.join(self.work_dir, path)

    def out(self, name):
        return os.path.join(self.work_dir, name)


# files every run may write into its work dir (main.py, evaluate.py)
RUN_FILES = ('config.json', 'command.txt', 'log_vqvae.jsonl',
             'log_pixelcnn.jsonl', 'loss_curves.png', 'metrics.json',
             'mnist_classifier.pth', 'mnist_classifier.json', '.lock')
RUN_PREFIXES = ('vqvae_reconstruct_', 'vqvae_sample_', 'eval_samples_',
                'eval_reconstruct_', 'code_usage_', 'previews' + os.sep)


def check_outputs(ctx):
    """Every file a run writes must be its own: a checkpoint, its resume
    point and its code caches (`<stem>.codes_*.pt`) may not be another
    checkpoint's, nor a file the run writes beside them (logs, images,
    config.json); and a checkpoint may not be a folder."""
    work = os.path.abspath(ctx.work_dir)
    taken = {os.path.join(work, name): 'a file the run writes'
             for name in RUN_FILES}
    families = []  # (path prefix of a checkpoint's code caches, its key)
    for key in ('vqvae_path', 'gen_model_path'):
        ckpt = os.path.abspath(ctx.ckpt(key))
        if os.path.isdir(ckpt):
            raise UsageError(f'{key} {ckpt} is a folder: give a file name')
        families.append((os.path.splitext(ckpt)[0] + '.codes_', key))
        for path in (ckpt, resume_path(ckpt)):
            if path in taken:
                raise UsageError(f'{key} and {taken[path]} resolve to the '
                                 f'same file {path}: give {key} another '
                                 'name')
            taken[path] = f'{key} (or its resume point)'
    for path, owner in taken.items():
        name = os.path.relpath(path, work)
        clash = [k for prefix, k in families if path.startswith(prefix)]
        if clash or name.startswith(RUN_PREFIXES) and owner != \
                'a file the run writes':
            what = (f'a code cache of {clash[0]}' if clash else
                    'an image the run writes')
            raise UsageError(f'{path} ({owner}) is named like {what}: give '
                             'the checkpoint another name')


def prepare_work_dir(ctx, argv):
    """Create the work dir, then record the resolved config and command.
    Nothing is written before every check that can fail has passed."""
    try:
        os.makedirs(ctx.work_dir, exist_ok=True)
        # rank: ranks on several nodes may share the dir and a pid
        probe_writable(ctx.work_dir, f'_{get_rank()}')
    except OSError as e:
        raise UsageError(f'work dir {ctx.work_dir} is not writable '
                         f'({e.strerror}): pick another with --work-dir') \
            from None
    if is_main():
        # one run per work dir: a second would overwrite the first's files
        lock_work_dir(ctx.work_dir)
        write_text_atomic(ctx.out('config.json'),
                          json.dumps(plain(ctx.cfg), indent=1))
        append_text_atomic(ctx.out('command.txt'),
                           ' '.join([sys.executable] + list(argv)) + '\n')


def load_stage_input(model, ctx, key, stage):
    """Load the checkpoint a stage needs, or say which stage makes it."""
    what, maker = {'vqvae_path': ('VQ-VAE', 1),
                   'gen_model_path': ('PixelCNN', 3)}[key]
    path = ctx.ckpt(key)
    if os.path.islink(path) and not os.path.exists(path):
        raise UsageError(f'{path} is a broken or looping symbolic link: '
                         f'point it at a {what} checkpoint or delete it')
    if not os.path.isfile(path):
        raise UsageError(f'stage {stage} needs the {what} checkpoint {path}, '
                         f'which does not exist: run stage {maker} first '
                         f'(--stages {maker})')
    return load_model(model, path, f'{what} checkpoint')


def vqvae_provenance(ctx):
    """What a prior is trained on: the exact VQ-VAE whose codes it models
    (recorded in its resume points, compared by prior_is_stale)."""
    return {'vqvae_sha256': file_sha256(ctx.ckpt('vqvae_path'))}


def prior_is_stale(ctx):
    """Whether the prior's resume point says it was trained on the codes of
    another VQ-VAE than the one at vqvae_path (False when it says nothing,
    e.g. a checkpoint of the tutorial's code)."""
    saved = read_provenance(ctx.ckpt('gen_model_path')).get('vqvae_sha256')
    return bool(saved) and saved != vqvae_provenance(ctx)['vqvae_sha256']


def check_prior_matches_vqvae(ctx):
    """A prior sampled through another VQ-VAE's decoder gives noise."""
    if prior_is_stale(ctx):
        raise UsageError(f'the PixelCNN {ctx.ckpt("gen_model_path")} was '
                         'trained on the codes of another VQ-VAE than '
                         f'{ctx.ckpt("vqvae_path")} (retrained since): train '
                         'the prior again with --stages 3,4')


def data_split(ctx):
    """{'train': sha256, 'test': sha256, 'n_train', 'n_test'} of the file
    names in each split of a folder or LMDB, recorded with every resume
    point: if files are later added to or removed from the folder, the last
    10% by name moves and held-out images may have been trained on. None for
    MNIST, whose split is fixed."""
    cfg, out = ctx.cfg, {}
    for split in ('train', 'test'):
        names = split_names(get_dataset(
            cfg['dataset_type'], tuple(cfg['img_shape'][1:]), ctx.data_root,
            split, cfg['use_lmdb'], **data_options(cfg)))
        if names is None:
            return None
        out[split] = hashlib.sha256('\n'.join(names).encode(
            'utf-8', 'surrogateescape')).hexdigest()
        out[f'n_{split}'] = len(names)
    return out


def split_changed(recorded, now):
    """'' or a one-line warning when the split a checkpoint was trained on
    (its resume point's record) is not the data's split now."""
    if not recorded or not now or recorded == now:
        return ''
    return (f'warning: the data\'s train/held-out split changed since this '
            f'model was trained ({recorded["n_train"]}/{recorded["n_test"]} '
            f'images then, {now["n_train"]}/{now["n_test"]} now): held-out '
            'scores may include images it was trained on; use the folder '
            'as it was, or train afresh')


def seed_everything(seed):
    """Same seed -> same run; each rank gets its own stream."""
    seed = seed + get_rank()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
