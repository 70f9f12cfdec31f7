"""The one way a run starts, for main.py, evaluate.py and the torchrun
launchers: flags -> config -> checks -> work dir -> seed.

Every check that can fail runs before anything is written, so bad input
leaves no half-made work dir behind; then the work dir gets config.json and
command.txt, and the seed is set.
"""
import json
import os
import sys
import time

from dldemos.utils.dist_utils import (barrier, get_backend,
                                      get_world_size, is_main,
                                      setup_distributed)
from dldemos.utils.errors import UsageError, report_errors
from dldemos.utils.threads import configure_threads
from dldemos.VQVAE.configs import CONFIG_NAMES, GPU_CONFIGS
from dldemos.VQVAE.dataset import IMAGE_FOLDER, data_options, get_dataset
from dldemos.VQVAE.runtime.cli import check_seed, pick_device
from dldemos.VQVAE.runtime.config_check import load_cfg
from dldemos.VQVAE.runtime.context import (RunContext, check_outputs,
                                           prepare_work_dir, seed_everything)
from dldemos.VQVAE.runtime.logs import log
from dldemos.VQVAE.runtime.work_lock import lock_work_dir, unlock_all

RANK_GRACE_S = 10  # seconds a failed rank > 0 waits for rank 0 to speak
# stage -> the checkpoints it reads, and the stage that writes each
STAGE_INPUTS = {2: [('vqvae_path', 1)], 3: [('vqvae_path', 1)],
                4: [('vqvae_path', 1), ('gen_model_path', 3)]}


def start_run(args, argv, stages, *, distributed=False, evaluating=False):
    """The RunContext of a run of `stages` (main.py: 1-4; a launcher: 1 or
    3; evaluate.py: none, it reads what they wrote), with every check done,
    the work dir prepared and the seed set."""
    configure_threads(args.threads)
    try:
        config_id, recorded = args.c, None
        if config_id is None:  # evaluate.py: the config the run used
            config_id, recorded = recorded_config(args.work_dir)
        cfg = load_cfg(config_id, args.cfg_options, check_seed(args.seed),
                       recorded, args.data_root)
        ctx = RunContext(cfg, None, args.work_dir, args.data_root,
                         getattr(args, 'resume', False))
        check_work_dir(ctx.work_dir, must_exist=evaluating)
        if not evaluating:
            check_outputs(ctx)
        check_stage_inputs(ctx, stages, evaluating)
    except UsageError:
        if distributed and get_rank_from_env() != 0:
            # every rank fails alike: rank 0 says it once. A rank that left
            # at once would have torchrun stop rank 0 before it could say
            # it; torchrun ends this one when rank 0 exits
            time.sleep(RANK_GRACE_S)
            sys.exit(2)
        raise
    ctx.device = setup_distributed('cpu' if args.device == 'cpu' else None) \
        if distributed else pick_device(args.device, args.d)
    announce(ctx, config_id, stages, distributed, evaluating)
    check_data(ctx, ['test'] if evaluating else splits_needed(cfg, stages),
               distributed)
    if not evaluating:
        prepare_work_dir(ctx, argv)
        lock_checkpoint_folders(ctx)
    seed_everything(ctx.seed)  # + rank: each rank its own stream
    return ctx


def run_entry(fn, debug=False, label='error', catch_sigterm=True):
    """Run an entry script's fn() and exit with its code: 0; 2 after bad
    input, said in one line (--debug: the traceback); 130 after a stop. The
    locks it took are released however it ends, so the next run in the
    same work dir does not find it locked."""
    try:
        code = report_errors(fn, debug, label, catch_sigterm)
    finally:
        unlock_all()
    if code:
        sys.exit(code)


def recorded_config(work_dir):
    """(config id, resolved config) from the work dir's config.json, so that
    evaluate.py without -c scores a run with the config it trained with;
    (0, None) without one."""
    path = os.path.join(work_dir, 'config.json')
    try:
        with open(path) as f:
            saved = json.load(f)
        config_id = int(saved['config_id'])
    except FileNotFoundError:
        return 0, None
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f'{path} does not name the config of the run '
                         '(damaged, or written by an older version): '
                         'pass -c with the config it trained with') from None
    log(f'config {config_id} and the values of the run, from {path}')
    return config_id, saved


def get_rank_from_env():
    return int(os.environ.get('RANK', 0))


def check_work_dir(work_dir, must_exist=False):
    """The one check of --work-dir: a folder (or, for a run that writes it,
    a path where one can be made; prepare_work_dir then proves it
    writable)."""
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise UsageError(f'--work-dir {work_dir} is a file: pick a folder')
    if must_exist and not os.path.isdir(work_dir):
        raise UsageError(f'--work-dir {work_dir} does not exist: pick the '
                         'folder the run trained in')


def check_stage_inputs(ctx, stages, evaluating=False):
    """A stage that reads a checkpoint no earlier stage of this run writes
    needs it on disk now, not after the stages before it have run.
    evaluate.py needs the VQ-VAE (a missing prior is scored as skipped)."""
    vqvae = ctx.ckpt('vqvae_path')
    if evaluating and not os.path.isfile(vqvae):
        raise UsageError(f'VQ-VAE checkpoint {vqvae} does not exist: train '
                         'first (main.py with the same -c, --work-dir and '
                         '--cfg-options)')
    for stage in sorted(stages):
        for key, maker in STAGE_INPUTS.get(stage, []):
            path = ctx.ckpt(key)
            if maker in stages or os.path.isfile(path):
                continue
            if os.path.islink(path):
                raise UsageError(f'{path} is a broken or looping symbolic '
                                 'link: point it at a checkpoint or delete '
                                 'it')
            what = 'VQ-VAE' if key == 'vqvae_path' else 'PixelCNN'
            raise UsageError(f'stage {stage} needs the {what} checkpoint '
                             f'{path}, which does not exist: run stage '
                             f'{maker} first (--stages {maker})')


def splits_needed(cfg, stages):
    """The data splits the given stages read: training reads 'train' (the
    prior through its code cache), held-out scores and previews 'test'."""
    splits = set()
    if {1, 3} & set(stages):
        splits.add('train')
        if cfg['eval_subset']:
            splits.add('test')
    if 1 in stages and cfg['n_preview'] and cfg['preview_every']:
        splits.add('test')
    if 2 in stages:  # reconstructs held-out images
        splits.add('test')
    return sorted(splits, reverse=True)  # train first: it downloads MNIST


def check_data(ctx, splits, distributed=False):
    """Open (and for MNIST download) the data the stages read, so missing
    data is said before the work dir is written to. Under torchrun rank 0
    does it while the others wait (N processes downloading into one folder
    would race), then the first process of every other node, for its own
    disk."""
    def open_splits():
        cfg = ctx.cfg
        for split in splits:
            get_dataset(cfg['dataset_type'], tuple(cfg['img_shape'][1:]),
                        ctx.data_root, split, cfg['use_lmdb'],
                        **data_options(cfg))
    if not distributed:
        return open_splits()
    if is_main():
        open_splits()
    barrier()
    if int(os.environ.get('LOCAL_RANK', 0)) == 0 and not is_main():
        open_splits()
    barrier()


def lock_checkpoint_folders(ctx):
    """A checkpoint outside the work dir is locked like the work dir: two
    runs saving to one folder would overwrite each other's weights."""
    if not is_main():
        return
    for key in ('vqvae_path', 'gen_model_path'):
        folder = os.path.dirname(os.path.abspath(ctx.ckpt(key)))
        if os.path.realpath(folder) != os.path.realpath(ctx.work_dir):
            lock_work_dir(folder, f'the folder of {key}',
                          f'give {key} a path in another folder')


def announce(ctx, config_id, stages, distributed, evaluating):
    cfg = ctx.cfg
    what = 'evaluate' if evaluating else \
        f'stages {",".join(map(str, stages))}'
    log(f'config {config_id} ({CONFIG_NAMES[config_id]}): {what}; VQ-VAE '
        f'{cfg["n_epochs"]} epochs, prior {cfg["n_epochs_2"]} epochs')
    device = f'{ctx.device} x {get_world_size()} processes ' \
        f'({get_backend()})' if distributed else f'{ctx.device}'
    log(f'device: {device} | data root: {ctx.data_root} | work dir: '
        f'{ctx.work_dir} | seed: {ctx.seed}')
    if ctx.device.type == 'cpu' and config_id in GPU_CONFIGS \
            and not evaluating:
        log('note: this config is sized for a GPU: on a 2-core CPU '
            'config 0 takes about 7 hours, configs 1-4 days. '
            '`-c 5` or `-c 7` (MNIST), `-c 8` (faces) and `-c 9` (your '
            'images) run all four stages on a CPU')
    if cfg['dataset_type'] == IMAGE_FOLDER:
        names = cfg.get('class_names')
        log(f'your images: {ctx.data_root}, ' + (
            f'{len(names)} classes ({", ".join(names[:8])}'
            f'{", ..." if len(names) > 8 else ""}): a class-conditional '
            'prior' if names else 'no classes: an unconditional prior'))
