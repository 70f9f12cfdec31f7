"""What the torchrun launchers (dist_train_vqvae.py, dist_train_pixelcnn.py)
add around main.py's training loops: the process group, per-rank seeds, one
download of the data, one-line errors, and teardown on every exit path.

The loops themselves are main.py's: under torchrun they wrap the model in
DistributedDataParallel, shard the data with a DistributedSampler, report the
mean loss over every sample of every rank, and write only on global rank 0.
"""
import argparse
import os
import sys

from dldemos.utils.dist_utils import (barrier, cleanup_distributed, get_backend,
                                get_world_size, is_main, setup_distributed)
from dldemos.utils.errors import UsageError, report_errors
from dldemos.utils.threads import configure_threads
from dldemos.VQVAE.runtime.cli import add_common_args, check_seed
from dldemos.VQVAE.runtime.config_check import load_cfg
from dldemos.VQVAE.runtime.context import (RunContext, check_outputs,
                                   prepare_work_dir, seed_everything)
from dldemos.VQVAE.loading.loaders import check_data
from dldemos.VQVAE.runtime.logs import log
from dldemos.VQVAE.runtime.work_lock import unlock_work_dir


def build_parser(doc):
    """main.py's flags; the description is the first paragraph of the
    launcher's docstring `doc`, whole."""
    parser = argparse.ArgumentParser(
        description=' '.join(doc.split('\n\n')[0].split()),
        epilog='Run under torchrun, e.g. `torchrun --nproc_per_node=2 '
        f'{sys.argv[0]} -c 4`. Each process uses the GPU of its LOCAL_RANK '
        '(-d is ignored); --device cpu trains on CPUs with gloo.')
    return add_common_args(parser)


def fetch_data_once(ctx, stage):
    """Rank 0 opens (and for MNIST downloads) the data `stage` reads while
    the others wait: N processes downloading into one folder would race. A
    missing dataset or LMDB is reported once, by rank 0, before the work dir
    is written to. Then the first process of every other node does the same
    for its own disk (on a shared filesystem it finds the files there)."""
    if is_main():
        check_data(ctx, [stage])
    barrier()
    if int(os.environ.get('LOCAL_RANK', 0)) == 0 and not is_main():
        check_data(ctx, [stage])
    barrier()


def launch(train, stage, doc, argv=None):
    """Parse main.py's flags, start the process group, call train(ctx) (the
    training of `stage`, 1 or 3) with the run context, and tear the group
    down however it ends."""
    argv = sys.argv if argv is None else [sys.argv[0]] + list(argv)
    args = build_parser(doc).parse_args(argv[1:])
    rank = int(os.environ.get('RANK', 0))
    if 'RANK' in os.environ and rank != 0:
        # bad flags or config keys fail alike on every rank: rank 0 says it
        try:
            load_cfg(args.c, args.cfg_options, check_seed(args.seed))
        except UsageError:
            sys.exit(2)

    def start_and_train():
        configure_threads(args.threads)
        if 'RANK' not in os.environ:
            raise UsageError('not launched by torchrun: run '
                             f'`torchrun --nproc_per_node=N {argv[0]} ...`')
        cfg = load_cfg(args.c, args.cfg_options, check_seed(args.seed),
                       args.data_root)
        device = setup_distributed('cpu' if args.device == 'cpu' else None)
        ctx = RunContext(cfg, device, args.work_dir, args.data_root,
                         args.seed, args.resume)
        check_outputs(ctx)
        log(f'device: {device} x {get_world_size()} processes '
            f'({get_backend()})')
        fetch_data_once(ctx, stage)  # no data: nothing written yet
        prepare_work_dir(ctx, argv)
        seed_everything(args.seed)  # + rank: each rank its own stream
        train(ctx)

    try:
        code = report_errors(start_and_train, args.debug,
                             f'error (rank {rank})' if rank else 'error',
                             catch_sigterm=False)  # see report_errors
    finally:
        unlock_work_dir(args.work_dir)
        cleanup_distributed()
    if code:
        sys.exit(code)
