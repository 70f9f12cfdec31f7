"""What the torchrun launchers (dist_train_vqvae.py, dist_train_pixelcnn.py)
add around main.py's training loops: their flags and the process group, on
the run set-up path main.py and evaluate.py take too (runtime/setup.py:
per-rank seeds, one download of the data, one-line errors said once).

The loops themselves are main.py's: under torchrun they wrap the model in
DistributedDataParallel, shard the data with a DistributedSampler, report the
mean loss over every sample of every rank, and write only on global rank 0.
"""
import argparse
import os
import sys

from dldemos.utils.dist_utils import cleanup_distributed
from dldemos.utils.errors import UsageError
from dldemos.VQVAE.runtime.cli import add_common_args
from dldemos.VQVAE.runtime.setup import run_entry, start_run


def build_parser(doc):
    """main.py's flags; the description is the first paragraph of the
    launcher's docstring `doc`, whole."""
    parser = argparse.ArgumentParser(
        description=' '.join(doc.split('\n\n')[0].split()),
        epilog='Run under torchrun, e.g. `torchrun --nproc_per_node=2 '
        f'{sys.argv[0]} -c 4`. Each process uses the GPU of its LOCAL_RANK '
        '(-d is ignored); --device cpu trains on CPUs with gloo.')
    return add_common_args(parser)


def launch(train, stage, doc, argv=None):
    """Parse main.py's flags, start the process group, call train(ctx) (the
    training of `stage`, 1 or 3) with the run context, and tear the group
    down however it ends."""
    argv = sys.argv if argv is None else [sys.argv[0]] + list(argv)
    args = build_parser(doc).parse_args(argv[1:])
    rank = int(os.environ.get('RANK', 0))

    def start_and_train():
        if 'RANK' not in os.environ:
            raise UsageError('not launched by torchrun: run '
                             f'`torchrun --nproc_per_node=N {argv[0]} ...`')
        train(start_run(args, argv, [stage], distributed=True))

    try:
        # torchrun ends the other ranks with SIGTERM when one fails, and a
        # rank blocked in a collective would not run a Python handler: the
        # launchers leave SIGTERM alone (see report_errors)
        run_entry(start_and_train, args.debug,
                  f'error (rank {rank})' if rank else 'error',
                  catch_sigterm=False)
    finally:
        cleanup_distributed()
