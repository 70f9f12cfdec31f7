"""The VQ-VAE codebook options one by one and together, against the
tutorial's training: config 0's VQ-VAE (dim 32, 32 codes, MNIST) for its 20
epochs, every option at every seed, scored on the full MNIST test split.

    python benchmarks/experiments/ablation_codebook.py --data-root path/to/data
    python benchmarks/experiments/ablation_codebook.py --variants \
        tutorial,restart --seeds 0
    python benchmarks/experiments/ablation_codebook.py --from-work-root W  # re-print

Each (variant, seed) trains stage 1 with main.py and scores it with
evaluate.py (the VQ-VAE alone: the prior and samples are skipped), both as
subprocesses, in a fresh work dir <work-root>/<variant>_seed<seed>. Then it
prints one Markdown row per variant: the mean over seeds of test MSE, PSNR
(set-level, from the mean MSE), SSIM, codes used and perplexity, with the
range over seeds, and the command that repeats it. Each run's commands, wall
times and load average are in its ablation_run.json. About 7 minutes a run
on 2 CPU cores.
"""
import argparse
import json
import os
import sys

if __name__ == '__main__':  # run as a script: the repo root importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

from benchmarks.lib.common import REPO  # noqa: E402
from benchmarks.lib.runs import EVALUATE, MAIN, timed  # noqa: E402

# name -> (what it is, --cfg-options); 'tutorial' is config 0's training
VARIANTS = {
    'tutorial': ("the tutorial's training (lr 2e-4, constant)", []),
    'restart': ('dead-code restarts', ['dead_code_restart=True']),
    'ema': ('EMA codebook updates', ['codebook_ema=True']),
    'kmeans': ('k-means init', ['kmeans_init=True']),
    'onecycle': ('one-cycle lr, peak 2e-3',
                 ['lr=2e-3', 'lr_schedule=onecycle']),
    'onecycle_4e3': ('one-cycle lr, peak 4e-3',
                     ['lr=4e-3', 'lr_schedule=onecycle']),
    'onecycle_8e3': ('one-cycle lr, peak 8e-3',
                     ['lr=8e-3', 'lr_schedule=onecycle']),
    'onecycle_16e3': ('one-cycle lr, peak 1.6e-2',
                      ['lr=1.6e-2', 'lr_schedule=onecycle']),
    'onecycle_ema': ('EMA + one-cycle 2e-3',
                     ['codebook_ema=True', 'lr=2e-3', 'lr_schedule=onecycle']),
    'all': ('restarts + EMA + k-means + one-cycle 2e-3',
            ['dead_code_restart=True', 'codebook_ema=True',
             'kmeans_init=True', 'lr=2e-3', 'lr_schedule=onecycle']),
}
METRICS = (('mse', 'test MSE', '{:.5f}'), ('psnr', 'PSNR (dB)', '{:.2f}'),
           ('ssim', 'SSIM', '{:.4f}'), ('codes_used', 'codes used', '{:.1f}'),
           ('perplexity', 'perplexity', '{:.1f}'))


def commands(variant, seed, work_dir, args):
    common = ['-c', '0', '--data-root', args.data_root, '--work-dir',
              work_dir, '--seed', str(seed)]
    options = VARIANTS[variant][1] + args.cfg_options
    if options:  # the tutorial's training with no extra keys has none
        common += ['--cfg-options', *options]
    return [['python', os.path.join(REPO, MAIN), '--stages', '1', *common],
            ['python', os.path.join(REPO, EVALUATE), '--n-samples', '0',
             *common]]


def run_one(variant, seed, args):
    work_dir = os.path.join(args.work_root, f'{variant}_seed{seed}')
    if os.path.exists(work_dir):
        sys.exit(f'error: {work_dir} exists: pick another --work-root')
    os.makedirs(work_dir)
    argvs = commands(variant, seed, work_dir, args)
    record = {'variant': variant, 'seed': seed, 'commands': argvs,
              'loadavg_before': os.getloadavg(),
              'train_s': timed(argvs[0]), 'evaluate_s': timed(argvs[1]),
              'loadavg_after': os.getloadavg()}
    with open(os.path.join(work_dir, 'ablation_run.json'), 'w') as f:
        json.dump(record, f, indent=1)


def scores(work_root):
    """{variant: [vqvae metrics of each seed]} of the finished runs."""
    out = {}
    for name in sorted(os.listdir(work_root)):
        path = os.path.join(work_root, name, 'metrics.json')
        if '_seed' in name and os.path.isfile(path):
            with open(path) as f:
                out.setdefault(name.rsplit('_seed', 1)[0], []).append(
                    json.load(f)['vqvae'])
    return out


def table(results):
    """Markdown rows: mean over seeds, with [min, max] where seeds > 1."""
    head = ['variant', 'seeds'] + [title for _, title, _ in METRICS]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for variant in [v for v in VARIANTS if v in results]:
        runs = results[variant]
        cells = [VARIANTS[variant][0], str(len(runs))]
        for key, _, fmt in METRICS:
            values = [r[key] for r in runs]
            cell = fmt.format(sum(values) / len(values))
            if len(values) > 1:
                cell += (f' [{fmt.format(min(values))}, '
                         f'{fmt.format(max(values))}]')
            cells.append(cell)
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        description='Ablation of the VQ-VAE codebook options on config 0.')
    parser.add_argument('--data-root', default='data', metavar='DIR',
                        help='(default: %(default)s)')
    parser.add_argument('--work-root', default='work_dirs/ablation',
                        metavar='DIR', help='(default: %(default)s)')
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        metavar='LIST', help='comma-separated, of: ' +
                        '; '.join(f'{k} = {d}' for k, (d, _) in
                                  VARIANTS.items()) +
                        ' (default: all of them)')
    parser.add_argument('--seeds', default='0,1', metavar='LIST',
                        help='(default: %(default)s)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='added to every run (default: none; e.g. '
                        'n_epochs=5 for a shorter ablation)')
    parser.add_argument('--from-work-root', default=None, metavar='DIR',
                        help='only re-print the table of finished runs')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.from_work_root is None:
        variants = [v for v in args.variants.split(',') if v]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            sys.exit(f'error: unknown variant {", ".join(unknown)}: use '
                     f'{", ".join(VARIANTS)}')
        for variant in variants:
            for seed in (int(s) for s in args.seeds.split(',') if s):
                run_one(variant, seed, args)
    print(table(scores(args.from_work_root or args.work_root)))
    print('\n    python benchmarks/experiments/ablation_codebook.py '
          + ' '.join(argv if argv is not None else sys.argv[1:]))


if __name__ == '__main__':
    main()
