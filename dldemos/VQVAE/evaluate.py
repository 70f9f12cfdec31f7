"""Score saved checkpoints on held-out data (the tutorial's closing lesson: a
falling training loss is not a better model; test metrics decide).

    python dldemos/VQVAE/evaluate.py -c 0              # same flags as main.py
    python dldemos/VQVAE/evaluate.py --work-dir work_dirs/c7  # its config
    python dldemos/VQVAE/evaluate.py -c 5 --work-dir work_dirs/quick \\
        --n-samples 1000

Held-out data: the MNIST test split; for image folders the last 10% of
files by sorted name (of each class for your own images: dataset.py), which
training never sees.
Writes into --work-dir: metrics.json, code_usage_{dataset}.png (how often
each code is used on held-out images), eval_samples_{dataset}.jpg (the first
generated images) and, for MNIST and your images in class subfolders, the
cached feature classifier. Every
printed row is named by its key in metrics.json.
"""
import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))
    from dldemos.utils.threads import passive_wait, stop_quietly
    stop_quietly()  # Ctrl-C / SIGTERM while importing: one line, exit 130
    passive_wait()  # before torch loads OpenMP: idle threads sleep, not spin

from dldemos.utils.errors import UsageError
from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.runtime.cli import add_common_args
from dldemos.VQVAE.runtime.context import data_split, split_changed
from dldemos.VQVAE.runtime.files import (file_sha256, plain, probe_writable,
                                         write_text_atomic)
from dldemos.VQVAE.runtime.hardware import describe as hardware
from dldemos.VQVAE.runtime.logs import log
from dldemos.VQVAE.runtime.resume_point import read_resume_entry
from dldemos.VQVAE.runtime.setup import run_entry, start_run
from dldemos.VQVAE.scoring.features import FeatureSet, feature_extractor
from dldemos.VQVAE.scoring.heldout import (epochs_trained, load_checkpoints,
                                           score_prior, score_samples,
                                           score_vqvae)
from dldemos.VQVAE.scoring.report import format_table
from dldemos.VQVAE.scoring.swd import MAX_IMAGES


@dataclass
class EvalOptions:
    """How much to score, and in what batches (evaluate.py's own flags)."""
    n_samples: int = 1000            # images generated and scored, 0: none
    sample_batch: int = 500          # images sampled at once
    eval_images: Optional[int] = None  # cap on held-out images (None: all)
    batch_size: Optional[int] = None   # scoring batch (None: the config's)
    classifier_epochs: int = 2       # the MNIST feature classifier's
    classifier_subset: Optional[int] = None  # its training images (all)

    # the smallest value each option can take: a Frechet distance needs
    # two images to estimate a covariance
    LOWEST = {'n_samples': 0, 'sample_batch': 1, 'eval_images': 2,
              'batch_size': 1, 'classifier_epochs': 1,
              'classifier_subset': 1}

    def check(self):
        """Values that would fail deep inside scoring, said up front."""
        for name, low in self.LOWEST.items():
            value = getattr(self, name)
            if value is not None and value < low:
                flag = '--' + name.replace('_', '-')
                raise UsageError(f'{flag} {value}: use an integer >= {low}')
        if self.n_samples == 1:
            raise UsageError('--n-samples 1: a sample distance needs at '
                             'least 2 samples; use 0 to skip samples')
        return self


HELD_OUT = {'MNIST': 'MNIST test split',
            'ImageFolder': 'your images: last 10% of each class (or of the '
            'flat folder) by sorted path'}


def evaluate(ctx, opts=None):
    """Every held-out metric of the config's checkpoints in the work dir:
    the metrics.json dict. Without a (matching) prior, only the VQ-VAE."""
    opts = opts or EvalOptions()
    tic = time.perf_counter()
    cfg, dataset = ctx.cfg, ctx.cfg['dataset_type']
    opts.batch_size = opts.batch_size or cfg['batch_size']
    vqvae, gen_model = build_models(cfg)
    paths, no_prior = load_checkpoints(ctx, vqvae, gen_model)
    # held-out images must be ones the models never saw: a folder whose
    # files changed since training moves the last 10% (said, and recorded)
    split_warning = split_changed(
        read_resume_entry(paths['vqvae'], 'data_split'), data_split(ctx))
    if split_warning:
        log(split_warning)
    if no_prior:
        log(f'prior and samples skipped: {no_prior}')
        opts.n_samples = 0
    result = {'config': plain(cfg),
              'checkpoints': {k: {'path': p, 'sha256': file_sha256(p),
                                  'epochs_trained': epochs_trained(p)}
                              for k, p in paths.items()},
              'held_out': HELD_OUT.get(
                  dataset, f'{dataset}: last 10% of files by sorted name'),
              'device': str(ctx.device), 'hardware': hardware(ctx.device),
              'split_changed': split_warning or None}
    # features of the reconstructions are collected while the VQ-VAE is
    # scored: the samples' distance has them as its reference
    features = feature_extractor(ctx, opts) if opts.n_samples else \
        (None, None, {})
    # without a classifier the samples also get a patch score (swd.py),
    # which compares them with the reconstructions' pixels
    patches = bool(opts.n_samples) and features[1] is None
    recon_feats = FeatureSet(features[0], opts.n_samples,
                             MAX_IMAGES if patches else 0)
    result['vqvae'] = score_vqvae(ctx, vqvae, opts, recon_feats)
    log(f'VQ-VAE scored ({time.perf_counter() - tic:.1f}s)')
    if no_prior:
        result['prior'] = result['samples'] = {'skipped': no_prior}
    else:
        result['prior'] = score_prior(ctx, vqvae, gen_model, opts)
        log(f'prior scored ({time.perf_counter() - tic:.1f}s)')
        result['samples'] = {'n_samples': 0}
        if opts.n_samples:
            result['samples'] = score_samples(ctx, vqvae, gen_model, opts,
                                              features, recon_feats)
            log(f'{opts.n_samples} samples scored '
                f'({time.perf_counter() - tic:.1f}s)')
    result['elapsed_s'] = time.perf_counter() - tic
    return result


def build_parser():
    parser = argparse.ArgumentParser(
        description='Score the saved checkpoints of a run (same -c, '
        '--work-dir and --cfg-options as its main.py) on held-out data: '
        'writes metrics.json into the work dir.')
    add_common_args(parser, resume=False, evaluating=True)
    int_flags = [
        ('--n-samples', 1000, 'images to generate and score, 0 for none '
         '(default: %(default)s)'),
        ('--sample-batch', 500, 'images sampled at once '
         '(default: %(default)s)'),
        ('--eval-images', None, 'cap on held-out images (default: all)'),
        ('--batch-size', None, "scoring batch size (default: the config's)"),
        ('--classifier-epochs', 2, 'epochs of the feature classifier (MNIST, '
         'your images in class subfolders) '
         '(default: %(default)s)'),
        ('--classifier-subset', None, 'train the classifier on this many '
         'images (default: all)'),
    ]
    for flag, default, text in int_flags:
        parser.add_argument(flag, type=int, default=default, metavar='N',
                            help=text)
    return parser


def options_of(args):
    return EvalOptions(args.n_samples, args.sample_batch, args.eval_images,
                       args.batch_size, args.classifier_epochs,
                       args.classifier_subset).check()


def run(args, argv=()):
    opts = options_of(args)  # before anything is loaded or written
    ctx = start_run(args, argv, [], evaluating=True)
    check_writable(ctx)
    result = evaluate(ctx, opts)
    out = ctx.out('metrics.json')
    write_text_atomic(out, json.dumps(result, indent=1))
    print(format_table(result))
    log('wrote', out)
    return result


def check_writable(ctx):
    """metrics.json and the pictures go into the work dir: find out that
    they cannot before minutes of scoring, not after."""
    try:
        probe_writable(ctx.work_dir)
    except OSError as e:
        raise UsageError(f'cannot write into the work dir {ctx.work_dir} '
                         f'({e.strerror}): make it writable or copy the '
                         'run elsewhere') from None
    dataset = ctx.cfg['dataset_type']
    for name in ('metrics.json', f'code_usage_{dataset}.png',
                 f'eval_samples_{dataset}.jpg',
                 f'eval_reconstruct_{dataset}.jpg'):
        if os.path.isdir(ctx.out(name)):  # a rename cannot replace it
            raise UsageError(f'{ctx.out(name)} is a folder, where '
                             'evaluate.py writes a file: move it away')


def main(argv=None):
    argv = sys.argv if argv is None else ['evaluate.py'] + list(argv)
    args = build_parser().parse_args(argv[1:])
    run_entry(lambda: run(args, argv), args.debug)


if __name__ == '__main__':
    main()
