"""The run context: what every stage of one run shares.

A run is a config, a device, a work dir, a data root, a seed and whether to
resume. They travel together as one `RunContext` instead of six arguments
through every call, and the context knows where its files go.
"""
import json
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from dldemos.utils.dist_utils import get_rank, is_main
from dldemos.utils.errors import UsageError
from dldemos.VQVAE.runtime.checkpoint import (file_sha256, load_model, plain,
                                      read_provenance, resume_path,
                                      write_text_atomic)
from dldemos.VQVAE.configs import CONFIG_NAMES, GPU_CONFIGS
from dldemos.VQVAE.runtime.logs import log
from dldemos.VQVAE.runtime.work_lock import lock_work_dir


@dataclass
class RunContext:
    cfg: dict
    device: torch.device
    work_dir: str = 'work_dirs'
    data_root: str = 'data'
    seed: int = 0
    resume: bool = False

    def ckpt(self, key):
        """The checkpoint of cfg[key]: a bare file name goes into the work
        dir; a path with a folder is used as given."""
        path = self.cfg[key]
        return path if os.path.dirname(path) else \
            os.path.join(self.work_dir, path)

    def out(self, name):
        return os.path.join(self.work_dir, name)


def check_outputs(ctx):
    """The files a run writes (checkpoints, resume points, code caches) must
    be distinct, and not folders: else one stage overwrites another's."""
    paths = {}
    for key in ('vqvae_path', 'gen_model_path'):
        ckpt = os.path.abspath(ctx.ckpt(key))
        # a set: a path without an extension is its own root
        for path in dict.fromkeys((ckpt, resume_path(ckpt),
                                   os.path.splitext(ckpt)[0])):
            if path in paths:
                raise UsageError(f'{key} and {paths[path]} resolve to the '
                                 f'same file {path}: give them different '
                                 'names')
            paths[path] = key
        if os.path.isdir(ckpt):
            raise UsageError(f'{key} {ckpt} is a folder: give a file name')


def prepare_work_dir(ctx, argv):
    """Create the work dir, then record the resolved config and command.
    Nothing is written before every check that can fail has passed."""
    if os.path.exists(ctx.work_dir) and not os.path.isdir(ctx.work_dir):
        raise UsageError(f'--work-dir {ctx.work_dir} is a file: pick a '
                         'folder')
    try:
        os.makedirs(ctx.work_dir, exist_ok=True)
        # pid and rank: ranks on several nodes may share the dir and a pid
        probe = ctx.out(f'.write_test{os.getpid()}_{get_rank()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        raise UsageError(f'work dir {ctx.work_dir} is not writable '
                         f'({e.strerror}): pick another with --work-dir') \
            from None
    if is_main():
        # one run per work dir: a second would overwrite the first's files
        lock_work_dir(ctx.work_dir)
        write_text_atomic(ctx.out('config.json'),
                          json.dumps(plain(ctx.cfg), indent=1))
        with open(ctx.out('command.txt'), 'a') as f:
            f.write(' '.join([sys.executable] + list(argv)) + '\n')


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


def prior_is_stale(ctx):
    """Whether the prior's resume point says it was trained on the codes of
    another VQ-VAE than the one at vqvae_path (False when it says nothing,
    e.g. a checkpoint of the tutorial's code)."""
    saved = read_provenance(ctx.ckpt('gen_model_path')).get('vqvae_sha256')
    return bool(saved) and saved != file_sha256(ctx.ckpt('vqvae_path'))


def check_prior_matches_vqvae(ctx):
    """A prior sampled through another VQ-VAE's decoder gives noise."""
    if prior_is_stale(ctx):
        raise UsageError(f'the PixelCNN {ctx.ckpt("gen_model_path")} was '
                         'trained on the codes of another VQ-VAE than '
                         f'{ctx.ckpt("vqvae_path")} (retrained since): train '
                         'the prior again with --stages 3,4')


def announce(ctx, config_id, stages):
    cfg = ctx.cfg
    log(f'config {config_id} ({CONFIG_NAMES[config_id]}): stages '
        f'{",".join(map(str, stages))}; VQ-VAE {cfg["n_epochs"]} epochs, '
        f'prior {cfg["n_epochs_2"]} epochs')
    log(f'device: {ctx.device} | data root: {ctx.data_root} | work dir: '
        f'{ctx.work_dir} | seed: {ctx.seed}')
    if ctx.device.type == 'cpu' and config_id in GPU_CONFIGS:
        log('note: this config is sized for a GPU: on a 2-core CPU '
            'config 0 takes about 7 hours, configs 1-4 days. '
            '`-c 5` or `-c 7` (MNIST) and `-c 8` (faces) run all four '
            'stages on a CPU')


def seed_everything(seed):
    """Same seed -> same run; each rank gets its own stream."""
    seed = seed + get_rank()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
