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

from dldemos.dist_utils import get_rank, is_main
from dldemos.errors import UsageError
from dldemos.VQVAE.checkpoint import plain, resume_path, write_text_atomic
from dldemos.VQVAE.work_lock import lock_work_dir


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
        for path in (ckpt, resume_path(ckpt), os.path.splitext(ckpt)[0]):
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


def seed_everything(seed):
    """Same seed -> same run; each rank gets its own stream."""
    seed = seed + get_rank()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
