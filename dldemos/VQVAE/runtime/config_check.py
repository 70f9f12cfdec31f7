"""From a config id and `--cfg-options` to a checked config dict.

configs.py holds the values (plain dicts, edited by hand); this module parses
`KEY=VALUE` overrides to each key's type and rejects values that would only
fail deep inside a run (a zero batch size, an image shape the VQ-VAE cannot
halve twice, two outputs at one path), with one line that says what to do.
"""
import ast
import math
import sys

from dldemos.utils.errors import UsageError
from dldemos.VQVAE.configs import get_cfg
from dldemos.VQVAE.dataset import (FITS, IMAGE_FOLDER, check_dataset_type,
                                   data_classes)
from dldemos.utils.lr_schedule import SCHEDULES

SAMPLER_NAMES = ('cached', 'naive')
# Largest image side we accept: the VQ-VAE's activations grow with H * W, and
# a typo such as (3, 6400, 6400) would otherwise end in the kernel's OOM kill.
MAX_IMG_SIDE = 1024
# Largest learning rate accepted: an Adam step moves each weight by about
# lr, so anything near this already diverges; far larger values (1e300) fail
# inside the optimizer's fp32 arithmetic with a traceback.
MAX_LR = 1e3
# classes of the datasets with labels (a class-conditional prior needs them;
# your own images: as many as class subfolders, resolve_classes)
N_CLASSES = {'MNIST': 10}
AUTO = 'auto'  # n_classes of config 9: the count of class subfolders
# checkpoint paths of the two stages; their resume points and code caches sit
# beside them, so two equal paths would overwrite each other's files
PATH_KEYS = ('vqvae_path', 'gen_model_path')


def warn(msg):
    print(f'warning: {msg}', file=sys.stderr, flush=True)


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
    # numbers are numbers: a weight such as l_w_embedding=1 takes 0.5; the
    # keys that must be whole numbers are held to it by check_ranges
    if type(default) is int and type(value) is float:
        return value
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
            # n_classes is None, a number or 'auto': None is no type to
            # parse to, so 'None' and '10' are read as literals
            cfg[key] = parse_value(text, None if key == 'n_classes'
                                   else cfg[key])
        except ValueError as e:
            raise UsageError(f'bad value for {key}: {e}') from None

    return cfg


def check_img_shape(cfg):
    """The VQ-VAE halves H and W twice and the data has a fixed channel
    count: anything else fails deep inside training, so say it up front."""
    shape = cfg['img_shape']
    channels = {'MNIST': (1,), IMAGE_FOLDER: (1, 3)}.get(
        cfg['dataset_type'], (3,))
    if not isinstance(shape, (tuple, list)) or len(shape) != 3 \
            or not all(_is_int(v) for v in shape) \
            or shape[0] not in channels or shape[1] % 4 \
            or shape[2] % 4 or min(shape[1:]) < 4:
        use = ' or '.join(f'({c}, H, W)' for c in channels)
        raise UsageError(f'img_shape {tuple(shape)} does not fit: use {use} '
                         f'for {cfg["dataset_type"]} with H and W multiples '
                         'of 4 (the VQ-VAE halves them twice)')
    if max(shape[1:]) > MAX_IMG_SIDE:
        raise UsageError(f'img_shape {tuple(shape)} is larger than '
                         f'{MAX_IMG_SIDE} pixels a side, which would exhaust '
                         'memory: the tutorial uses 28, 64 or 128')


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# (keys, None allowed, lowest value) of the integer keys
INT_RULES = [(('dim', 'n_embedding', 'batch_size', 'batch_size_2',
               'pixelcnn_dim', 'pixelcnn_linear_dim', 'n_sample',
               'save_every'), False, 1),
             (('n_epochs', 'n_epochs_2', 'pixelcnn_n_blocks', 'num_workers',
               'preview_every', 'n_preview'), False, 0),
             (('train_subset', 'top_k'), True, 1),
             (('eval_subset',), True, 0)]


# Largest model and sample sizes accepted, each 8x or more above what any
# config uses: beyond them the models or their activations outgrow any one
# machine's memory (the codebook search alone is [batch * h * w,
# n_embedding] floats), and a typo such as pixelcnn_n_blocks=100000000 would
# otherwise spend minutes building modules before an allocation error.
MAX_SIZES = {'dim': 2048, 'n_embedding': 65536, 'pixelcnn_dim': 4096,
             'pixelcnn_linear_dim': 4096, 'pixelcnn_n_blocks': 256,
             'n_sample': 10000}


def check_ranges(cfg):
    """Values of the right type but out of range (batch_size=0,
    save_every=0, lr=None, temperature=inf ...) fail deep inside a run, or
    not at all: say so up front."""
    for keys, none_ok, low in INT_RULES:
        for k in keys:
            v = cfg[k]
            if not (v is None and none_ok) and not (_is_int(v) and v >= low):
                raise UsageError(f'{k}={v!r}: use an integer >= {low}'
                                 + (' or None' if none_ok else ''))
    for k, high in MAX_SIZES.items():
        if cfg[k] > high:
            raise UsageError(f'{k}={cfg[k]}: use at most {high} (larger '
                             'models or sample grids would exhaust memory)')
    # an infinite lr (lr=1e999 parses to inf) turns the weights to NaN in
    # one step, and one beyond fp32's range fails inside the optimizer; an
    # infinite temperature divides every logit to 0 (uniform codes) and NaN
    # poisons them: none of them is a usable value
    for k in ('lr', 'lr_2', 'temperature'):
        v = cfg[k]
        if not (isinstance(v, (int, float)) and not isinstance(v, bool)
                and v > 0 and math.isfinite(v)):
            raise UsageError(f'{k}={v!r}: use a finite number > 0')
    for k in ('l_w_embedding', 'l_w_commitment'):  # loss weights
        v = cfg[k]
        if not (_is_number(v) and 0 <= v < math.inf):
            raise UsageError(f'{k}={v!r}: use a finite number >= 0')
    for k in ('lr', 'lr_2'):
        if cfg[k] > MAX_LR:
            raise UsageError(f'{k}={cfg[k]!r}: use a learning rate <= '
                             f'{MAX_LR:g} (the configs use 1e-4 to 1e-2)')
    check_dataset_type(cfg['dataset_type'])
    for k, valid in (('sampler', SAMPLER_NAMES),
                     ('img_fit', FITS),
                     ('lr_schedule', SCHEDULES),
                     ('lr_schedule_2', SCHEDULES)):
        if cfg[k] not in valid:
            raise UsageError(f'{k}={cfg[k]!r}: use one of '
                             f'{", ".join(valid)}')
    if cfg['use_lmdb'] and cfg['dataset_type'] == 'MNIST':
        raise UsageError('use_lmdb=True reads the CelebA / CelebAHQ folders '
                         'converted to LMDB; MNIST is read from its own '
                         'files: set use_lmdb=False')
    if cfg['prior_hflip'] and not cfg['use_code_cache']:
        raise UsageError('prior_hflip=True mirrors the images whose codes '
                         'are cached: set use_code_cache=True (or '
                         'prior_hflip=False)')


def check_n_classes(cfg):
    """A class-conditional prior needs a label per image, and one class
    bias per label: an index error deep in training otherwise."""
    n, dataset = cfg['n_classes'], cfg['dataset_type']
    if n is None:
        return
    if dataset == IMAGE_FOLDER:
        if n != AUTO and not (_is_int(n) and n >= 2):
            raise UsageError(f'n_classes={n!r}: use {AUTO!r} (the class '
                             'subfolders of --data-root), their count, or '
                             'None (an unconditional prior)')
        return
    if not _is_int(n) or n < 1:
        raise UsageError(f'n_classes={n!r}: use an integer >= 1 or None')
    if dataset not in N_CLASSES:
        raise UsageError(f'n_classes={n}: {dataset} images have no labels, '
                         'so the prior cannot be class-conditional: set '
                         'n_classes=None')
    if n != N_CLASSES[dataset]:
        raise UsageError(f'n_classes={n}: {dataset} has '
                         f'{N_CLASSES[dataset]} classes: set n_classes='
                         f'{N_CLASSES[dataset]} or None')


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_fractions(cfg):
    """A decay of 1 never moves the codebook, a warmup of 1 never reaches
    the lr, a negative threshold hides a typo: said up front."""
    for k in ('ema_decay', 'warmup'):
        if not (_is_number(cfg[k]) and 0 <= cfg[k] < 1):
            raise UsageError(f'{k}={cfg[k]!r}: use a number in [0, 1)')
    v = cfg['restart_threshold']
    if not (_is_number(v) and 0 <= v < math.inf):
        raise UsageError(f'restart_threshold={v!r}: use a number >= 0 '
                         '(encoder outputs per batch)')


def check_paths(cfg):
    """Empty checkpoint paths, or two outputs at one file, would lose a
    trained model only after an epoch: refuse before training."""
    for k in PATH_KEYS:
        if not isinstance(cfg[k], str) or not cfg[k].strip():
            raise UsageError(f'{k}={cfg[k]!r}: give a file name such as '
                             'model.pth')
    # whether the files they name collide is context.check_outputs' one
    # check, once the work dir they resolve in is known


def resolve_classes(cfg, data_root):
    """Your own images: n_classes 'auto' becomes the count of class
    subfolders of data_root (None for a flat folder) and class_names their
    names, recorded in config.json and the resume points; a number given
    must match the folder. Other datasets are left as they are."""
    if cfg['dataset_type'] != IMAGE_FOLDER:
        return cfg
    n = cfg['n_classes']
    classes = None if n is None else \
        data_classes(IMAGE_FOLDER, data_root, cfg['use_lmdb'])
    if n not in (None, AUTO) and classes is None:
        raise UsageError(f'n_classes={n}: {data_root} has no class '
                         'subfolders (two or more first-level folders '
                         "holding the images): set n_classes='auto' or None")
    if n not in (None, AUTO) and n != len(classes):
        raise UsageError(f'n_classes={n}: {data_root} has {len(classes)} '
                         "class subfolders: set n_classes='auto' or None")
    cfg['n_classes'] = None if classes is None else len(classes)
    cfg['class_names'] = classes
    return cfg


def load_cfg(config_id, options=(), seed=0, recorded=None, data_root=None):
    """Config `config_id` with `options` (KEY=VALUE strings) applied, checked.
    The seed is recorded in it: it decides the data order, so a mid-epoch
    resume must use the same one. `recorded`: a run's saved config.json,
    whose values (the run's own --cfg-options) come before `options`. With
    `data_root`, the classes of your own images are resolved
    (resolve_classes)."""
    try:
        cfg = get_cfg(config_id)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for key, value in (recorded or {}).items():
        if key in cfg and key not in ('seed', 'config_id'):
            cfg[key] = tuple(value) if isinstance(cfg[key], tuple) else value
    cfg = apply_overrides(cfg, options)
    cfg['seed'] = seed
    cfg['config_id'] = config_id  # in config.json: evaluate.py finds it
    check_ranges(cfg)
    check_fractions(cfg)
    check_img_shape(cfg)
    check_n_classes(cfg)
    check_paths(cfg)
    if data_root is not None:
        resolve_classes(cfg, data_root)
    # the last of repeated keys wins, as in most CLIs; said (once the config
    # is known to be valid), since one of the two is often a typo
    keys = [o.split('=', 1)[0] for o in options]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        warn(f'--cfg-options sets {key} more than once: using the last '
             f'value, {cfg[key]!r}')
    return cfg
