"""The command-line flags every entry point shares, and the device they name.

main.py, evaluate.py and the torchrun launchers take the same flags, so a run
and its evaluation are pointed at the same config, data and work dir.
"""
import torch

from dldemos.utils.errors import UsageError
from dldemos.VQVAE.configs import describe_configs

SEED_MAX = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer


def add_common_args(parser, resume=True, stages=False, evaluating=False):
    default = ("the run's, from the work dir's config.json (else 0)"
               if evaluating else '0')
    parser.add_argument('-c', type=int, default=None if evaluating else 0,
                        metavar='ID', help=f'config id (default: {default}): '
                        + describe_configs())
    parser.add_argument('-d', type=int, default=0, metavar='N',
                        help='CUDA device index, used when --device is not '
                        'given (default: 0)')
    parser.add_argument('--device', default=None,
                        help="'cpu', 'cuda', 'cuda:1' ... (default: cuda:N "
                        'when CUDA is available, else cpu)')
    parser.add_argument('--data-root', default='data', metavar='DIR',
                        help='folder holding mnist/ and celebA/ '
                        '(default: %(default)s)')
    parser.add_argument('--work-dir', default='work_dirs', metavar='DIR',
                        help='checkpoints, images and logs go here '
                        '(default: %(default)s)')
    parser.add_argument('--threads', type=int, default=None, metavar='N',
                        help="CPU threads for torch's kernels (default: "
                        "torch's, one per core or OMP_NUM_THREADS). Idle "
                        'threads sleep instead of spinning (OMP_WAIT_POLICY='
                        'PASSIVE unless set), so other processes on the '
                        'cores cost no more than their share; for the small '
                        'configs on a 2-core machine --threads 1 is often '
                        'faster (benchmarks/speed/bench_threads.py)')
    parser.add_argument('--seed', type=int, default=0, metavar='N',
                        help='random seed, 0 to 2^63-1 (default: '
                        '%(default)s)')
    if stages:  # main.py
        parser.add_argument('--stages', default='1,2,3,4', metavar='LIST',
                            help='comma-separated subset of 1,2,3,4 to run: '
                            '1 train VQ-VAE, 2 reconstruct, 3 train prior, '
                            '4 sample (default: %(default)s)')
    if resume:
        parser.add_argument('--resume', action='store_true',
                            help='continue training from the resume points '
                            '(default: start afresh)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='override config keys (those of '
                        'dldemos/VQVAE/configs.py), e.g. n_epochs=5 '
                        'sampler=naive (default: none)')
    parser.add_argument('--debug', action='store_true',
                        help='show tracebacks instead of one-line errors')
    return parser


def check_seed(seed):
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f'--seed {seed}: use an integer from 0 to {SEED_MAX}')
    return seed


def pick_device(device=None, index=0):
    """The torch device a run uses: `device` as given (checked), else
    cuda:`index` when CUDA is available, else the CPU."""
    if device is None:  # the tutorial's f'cuda:{args.d}', or the CPU
        return torch.device(f'cuda:{index}' if torch.cuda.is_available()
                            else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a device: use 'cpu', "
                         "'cuda' or 'cuda:N'") from None
    # said now, not as a CUDA error deep inside the first stage
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise UsageError(f'--device {device}: no CUDA GPU is available '
                             'here; use --device cpu')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f'--device {device}: only '
                             f'{torch.cuda.device_count()} GPU(s) here '
                             f'(cuda:0 to cuda:'
                             f'{torch.cuda.device_count() - 1})')
    elif dev.type != 'cpu':
        raise UsageError(f'--device {device}: this project runs on cpu or '
                         'cuda')
    return dev


def parse_stages(text):
    """'3,4' -> [3, 4]: sorted and deduplicated, because the stages always
    run in the tutorial's order whatever order they are named in."""
    try:
        stages = sorted({int(s) for s in text.split(',') if s.strip()})
    except ValueError:
        stages = []
    if not stages or not set(stages) <= {1, 2, 3, 4}:
        raise UsageError(f'--stages takes a subset of 1,2,3,4 such as 3,4; '
                         f'got {text!r}')
    return stages
