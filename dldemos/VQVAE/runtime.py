"""What every entry point shares: command line, config overrides, device,
seeding, output paths, logs and stopping on a signal."""
import ast
import json
import os
import platform
import signal
import sys
import time

import numpy as np
import torch

from dldemos.dist_utils import get_rank, is_main
from dldemos.errors import (Interrupted, NonFiniteLoss,  # noqa: F401
                            UsageError, report_errors)
from dldemos.VQVAE.checkpoint import plain
from dldemos.VQVAE.configs import get_cfg


def add_common_args(parser):
    parser.add_argument('-c', type=int, default=0, help='config id')
    parser.add_argument('-d', type=int, default=0, help='CUDA device index')
    parser.add_argument('--device', default=None,
                        help="'cpu', 'cuda', 'cuda:1' ... (default: cuda:D "
                        'when CUDA is available, else cpu)')
    parser.add_argument('--data-root', default='data')
    parser.add_argument('--work-dir', default='work_dirs')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--resume', action='store_true',
                        help='continue training from the resume points')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE', help='override config keys')
    parser.add_argument('--debug', action='store_true',
                        help='show tracebacks instead of one-line errors')
    return parser


def parse_value(text, default):
    """Parse `text` to the type of the key's current value."""
    if isinstance(default, bool):
        if text.lower() in ('1', 'true', 'yes', 'on'):
            return True
        if text.lower() in ('0', 'false', 'no', 'off'):
            return False
        raise ValueError(f'{text!r} is not a boolean')
    if isinstance(default, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if default is None:
            return text
        raise ValueError(f'{text!r} is not a {type(default).__name__}')
    if default is None or value is None:
        return value
    # type(...) is int: a bool is an int to isinstance, and True is no lr
    if isinstance(default, float) and type(value) is int:
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    if type(value) is not type(default):
        raise ValueError(f'{text!r} is a {type(value).__name__}, expected '
                         f'{type(default).__name__}')
    if isinstance(value, tuple) and default:
        kinds = {type(v) for v in default}
        if not all(type(v) in kinds for v in value):
            raise ValueError(f'{text!r} should hold only '
                             f'{"/".join(k.__name__ for k in kinds)} values')
    return value


def apply_overrides(cfg, options):
    for option in options:
        if '=' not in option:
            raise UsageError(f'--cfg-options takes KEY=VALUE, got {option!r}')
        key, text = option.split('=', 1)
        if key not in cfg:
            raise UsageError(f'unknown config key {key!r}; valid keys: '
                             f'{", ".join(sorted(cfg))}')
        try:
            cfg[key] = parse_value(text, cfg[key])
        except ValueError as e:
            raise UsageError(f'bad value for {key}: {e}') from None
    return cfg


def check_img_shape(cfg):
    """The VQ-VAE halves H and W twice and the data has a fixed channel
    count: anything else fails deep inside training, so say it up front."""
    shape = cfg['img_shape']
    channels = 1 if cfg['dataset_type'] == 'MNIST' else 3
    if len(shape) != 3 or shape[0] != channels or shape[1] % 4 \
            or shape[2] % 4 or min(shape[1:]) < 4:
        raise UsageError(f'img_shape {tuple(shape)} does not fit: use '
                         f'({channels}, H, W) for {cfg["dataset_type"]} '
                         'with H and W multiples of 4')


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_ranges(cfg):
    """Values of the right type but out of range (batch_size=0,
    save_every=0, lr=None ...) fail deep inside a run: say so up front."""
    rules = [(('dim', 'n_embedding', 'batch_size', 'batch_size_2',
               'pixelcnn_dim', 'pixelcnn_linear_dim', 'n_sample',
               'save_every'), False, 1),
             (('n_epochs', 'n_epochs_2', 'pixelcnn_n_blocks'), False, 0),
             (('train_subset', 'top_k'), True, 1),
             (('eval_subset',), True, 0)]
    for keys, none_ok, low in rules:
        for k in keys:
            v = cfg[k]
            if not (v is None and none_ok) and not (_is_int(v) and v >= low):
                raise UsageError(f'{k}={v!r}: use an integer >= {low}'
                                 + (' or None' if none_ok else ''))
    for k in ('lr', 'lr_2', 'temperature'):
        v = cfg[k]
        if not (isinstance(v, (int, float)) and not isinstance(v, bool)
                and v > 0):
            raise UsageError(f'{k}={v!r}: use a number > 0')
    # names that are only looked up late (at the first sample or load)
    from dldemos.VQVAE.dataset import DATASET_TYPES
    from dldemos.VQVAE.sampling import SAMPLERS
    for k, valid in (('sampler', SAMPLERS), ('dataset_type', DATASET_TYPES)):
        if cfg[k] not in valid:
            raise UsageError(f'{k}={cfg[k]!r}: use one of '
                             f'{", ".join(valid)}')


def load_cfg(args):
    try:
        cfg = get_cfg(args.c)
    except ValueError as e:
        raise UsageError(str(e)) from None
    cfg = apply_overrides(cfg, args.cfg_options)
    # recorded with the config (config.json, resume points): it decides the
    # data order, so a mid-epoch resume must use the same one
    cfg['seed'] = args.seed
    check_ranges(cfg)
    check_img_shape(cfg)
    return cfg


def pick_device(args):
    if args.device is not None:
        return torch.device(args.device)
    if torch.cuda.is_available():
        return torch.device(f'cuda:{args.d}')
    return torch.device('cpu')


def cpu_name():
    """The CPU's model name (from /proc/cpuinfo where there is one), for the
    hardware lines of results and benchmarks."""
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            name = next(line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return name


def seed_everything(seed):
    """Same seed -> same run; each rank gets its own stream."""
    seed = seed + get_rank()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    import random
    random.seed(seed)


def ckpt_path(cfg, key, work_dir):
    """A bare file name goes into the work dir; a path is used as given."""
    path = cfg[key]
    return path if os.path.dirname(path) else os.path.join(work_dir, path)


def prepare_work_dir(work_dir, cfg, argv):
    """Create the work dir, record the resolved config and command line."""
    try:
        os.makedirs(work_dir, exist_ok=True)
        # pid and rank: ranks on several nodes may share the dir and a pid
        probe = os.path.join(work_dir,
                             f'.write_test{os.getpid()}_{get_rank()}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        raise UsageError(f'work dir {work_dir} is not writable '
                         f'({e.strerror}): pick another with --work-dir') \
            from None
    if is_main():
        with open(os.path.join(work_dir, 'config.json'), 'w') as f:
            json.dump(plain(cfg), f, indent=1)
        with open(os.path.join(work_dir, 'command.txt'), 'a') as f:
            f.write(' '.join([sys.executable] + list(argv)) + '\n')


def append_jsonl(path, record):
    with open(path, 'a') as f:
        f.write(json.dumps(plain(record)) + '\n')


def read_jsonl(path):
    """The records of a JSONL log ([] if absent); a line cut short by a
    killed run is skipped."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def start_jsonl(path, start_epoch):
    """Keep the records of epochs before start_epoch: a fresh run starts an
    empty log, a resumed one drops the epochs it is about to redo."""
    if is_main():
        kept = [r for r in read_jsonl(path)
                if r.get('epoch', -1) < start_epoch]
        with open(path, 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in kept)


def log(*args):
    if is_main():
        print(*args, flush=True)


class StopFlag:
    """Turns SIGINT / SIGTERM into a flag the training loop polls, so it can
    save a resume point and exit cleanly instead of dying mid-write."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)

    def __bool__(self):
        return self.signum is not None


def timer():
    return time.perf_counter()
