"""bf16 autocast (amp) off vs on: the same VQ-VAE and prior, same seed.

    python benchmarks/speed/bench_amp.py --data-root DIR      # CUDA: config 0
    python benchmarks/speed/bench_amp.py --epochs 3 --epochs-2 3 --device cuda

Three runs of main.py (stages 1 and 3) and evaluate.py (--n-samples 0: the
VQ-VAE's test MSE / PSNR / SSIM and the prior's NLL on the full test split),
each as a subprocess in a fresh work dir <work-root>/<run>, exactly what a
user runs:

  fp32        amp=False: VQ-VAE and prior in fp32 (configs 0-4 train so)
  bf16        amp=True: both trained under bf16 autocast
  bf16_prior  amp=True for the prior only, over fp32's VQ-VAE: a prior's NLL
              compares priors over the same VQ-VAE only, so this row's NLL
              is the one to set against fp32's

Then it prints the device, a Markdown table (test PSNR, prior NLL,
images/s of both trainings from the per-epoch logs: the median over the
epochs after the first, which pays for warm-up) and the commands. One seed:
differences of a few hundredths of a dB or nat are within what another seed
moves. On a CPU without native bf16 amp is ignored: every run trains in fp32
and the rows must agree; the output says so.
"""
import argparse
import datetime
import json
import os
import shlex
import statistics
import sys

if __name__ == '__main__':  # run as a script: the repo root importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

from benchmarks.lib.common import REPO, dig, duration, sig  # noqa: E402
from benchmarks.lib.runs import (EVALUATE, MAIN, default_device,  # noqa: E402
                                 machine, timed)
from dldemos.utils.precision import cpu_has_native_bf16  # noqa: E402
from dldemos.VQVAE.configs import get_cfg  # noqa: E402
from dldemos.VQVAE.runtime.logs import read_jsonl  # noqa: E402

RUNS = [  # name, label, amp, stages, VQ-VAE from run
    ('fp32', 'amp off (fp32)', False, '1,3', None),
    ('bf16', 'amp on (bf16)', True, '1,3', None),
    ('bf16_prior', "amp on for the prior only, over fp32's VQ-VAE", True,
     '3', 'fp32'),
]


def build_parser():
    parser = argparse.ArgumentParser(
        description='bf16 autocast off vs on for the same VQ-VAE and prior '
        '(same seed): test PSNR, prior NLL, images/s.')
    parser.add_argument('-c', type=int, default=0, metavar='ID',
                        help='config id (default: %(default)s)')
    parser.add_argument('--data-root', default='data', metavar='DIR',
                        help='default: %(default)s')
    parser.add_argument('--work-root', default=None, metavar='DIR',
                        help='each run goes into a fresh DIR/<run> (default: '
                        'work_dirs/bench_amp_<date>_<time>)')
    parser.add_argument('--device', default=None,
                        help='default: cuda when available, else cpu')
    parser.add_argument('--seed', type=int, default=0, metavar='N',
                        help='default: %(default)s')
    parser.add_argument('--epochs', type=int, default=3, metavar='N',
                        help='VQ-VAE epochs (default: %(default)s)')
    parser.add_argument('--epochs-2', type=int, default=3, metavar='N',
                        help='prior epochs (default: %(default)s)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='added to every run, e.g. train_subset=300 for '
                        'a smoke run (default: none)')
    parser.add_argument('--eval-args', default='', metavar='FLAGS',
                        help="extra evaluate.py flags in one string, e.g. "
                        "'--eval-images 500' (default: none)")
    return parser


def commands(args, name, amp, stages, vqvae_from):
    work_dir = os.path.join(args.work_root, name)
    opts = [f'n_epochs={args.epochs}', f'n_epochs_2={args.epochs_2}',
            f'amp={amp}'] + args.cfg_options
    if vqvae_from:  # a path with a folder is used as given
        vqvae = get_cfg(args.c)['vqvae_path']
        opts.append('vqvae_path=' + os.path.join(args.work_root, vqvae_from,
                                                  vqvae))
    common = ['-c', str(args.c), '--data-root', args.data_root,
              '--work-dir', work_dir, '--seed', str(args.seed),
              '--device', args.device, '--cfg-options', *opts]
    main, evaluate = (os.path.relpath(os.path.join(REPO, p))
                      for p in (MAIN, EVALUATE))
    return work_dir, [
        ['python', main, *common, '--stages', stages],
        ['python', evaluate, *common, '--n-samples', '0',
         *shlex.split(args.eval_args)]]


def speed(work_dir, log_name):
    """(median images/s over the epochs after the first, or the only
    epoch's; training seconds as logged), or (None, None)."""
    records = read_jsonl(os.path.join(work_dir, log_name))
    if not records:
        return None, None
    rates = [r['images_per_s'] for r in records]
    rates = rates[1:] if len(rates) > 1 else rates
    return statistics.median(rates), records[-1]['elapsed_s']


def row(label, amp_text, m, vq_speed, prior_speed):
    v, p = m['vqvae'], m['prior']
    nll = p.get('nll_nats_per_latent')

    def rate(x):
        return '-' if x[0] is None else f'{x[0]:,.0f}'

    def secs(x):
        return '-' if x[1] is None else duration(x[1])
    return ('| ' + ' | '.join([
        label, amp_text, sig(v['mse']), f'{v["psnr"]:.2f}', f'{v["ssim"]:.4f}',
        f'{v["codes_used"]}/{v["n_embedding"]} ({v["perplexity"]:.1f})',
        '-' if nll is None else f'{nll:.4f}', rate(vq_speed),
        rate(prior_speed), secs(vq_speed), secs(prior_speed)]) + ' |')


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.device = args.device or default_device()
    args.work_root = args.work_root or os.path.join(
        'work_dirs', 'bench_amp_'
        + datetime.datetime.now().strftime('%Y%m%d_%H%M%S'))
    if os.path.exists(args.work_root):
        sys.exit(f'error: {args.work_root} exists: pick a fresh --work-root')
    results, argvs = {}, []
    for name, label, amp, stages, vqvae_from in RUNS:
        work_dir, (train, score) = commands(args, name, amp, stages,
                                            vqvae_from)
        os.makedirs(work_dir)
        argvs += [train, score]
        print(f'\n=== {name}: {label}', flush=True)
        wall = timed(train), timed(score)
        with open(os.path.join(work_dir, 'metrics.json')) as f:
            metrics = json.load(f)
        vq_dir = os.path.join(args.work_root, vqvae_from or name)
        results[name] = dict(label=label, metrics=metrics, wall=wall,
                             vq=speed(vq_dir, 'log_vqvae.jsonl'),
                             prior=speed(work_dir, 'log_pixelcnn.jsonl'))
    report(args, results, argvs)


def report(args, results, argvs):
    cfg = get_cfg(args.c)
    m = machine(args.device)
    print('\n## amp off vs on (bf16 autocast)')
    print(f'device: {m["hardware"]} (torch {m["torch"]}, {args.device})')
    print('command: ' + shlex.join(['python', os.path.relpath(
        sys.argv[0], REPO)] + sys.argv[1:]))
    print(f'config {args.c}: VQ-VAE {args.epochs} epochs (batch '
          f'{cfg["batch_size"]}), prior {args.epochs_2} epochs (batch '
          f'{cfg["batch_size_2"]}), seed {args.seed}'
          + (f', --cfg-options {" ".join(args.cfg_options)}'
             if args.cfg_options else '')
          + '; scored on the test split by evaluate.py --n-samples 0 '
          + args.eval_args)
    if args.device.startswith('cpu') and not cpu_has_native_bf16():
        print('note: on a CPU without native bf16 amp is ignored: '
              'every run trained in fp32, so the rows must agree and say '
              'nothing about bf16')
    print()
    print('| run | amp (VQ-VAE / prior) | test MSE | PSNR (dB) | SSIM | '
          'codes used (perplexity) | prior NLL nats/latent | VQ-VAE '
          'images/s | prior code grids/s | VQ-VAE train | prior train |')
    print('|' + '---|' * 11)
    amps = {'fp32': 'off / off', 'bf16': 'on / on', 'bf16_prior': 'off / on'}
    for name, r in results.items():
        print(row(r['label'], amps[name], r['metrics'], r['vq'],
                  r['prior']))
    print()
    a, b, c = (results[n] for n in ('fp32', 'bf16', 'bf16_prior'))
    parts = []
    psnr = [dig(r['metrics'], 'vqvae', 'psnr') for r in (a, b)]
    if None not in psnr:
        parts.append(f'test PSNR bf16 - fp32 {psnr[1] - psnr[0]:+.3f} dB')
    nll = [dig(r['metrics'], 'prior', 'nll_nats_per_latent') for r in (a, c)]
    if None not in nll:
        parts.append(f'prior NLL over the same VQ-VAE bf16 - fp32 '
                     f'{nll[1] - nll[0]:+.4f} nats/latent')
    for what, x, y in (('VQ-VAE', a['vq'][0], b['vq'][0]),
                       ('prior', a['prior'][0], c['prior'][0])):
        if x and y:
            parts.append(f'{what} training speed bf16 / fp32 {y / x:.2f}x')
    print('differences: ' + '; '.join(parts))
    print('(one seed: differences of a few hundredths of a dB or nat are '
          'within what another seed moves)')
    print('\nwall times: ' + '; '.join(
        f'{n} main.py {duration(r["wall"][0])}, evaluate.py '
        f'{duration(r["wall"][1])}' for n, r in results.items()))
    print('\n```bash')
    for argv in argvs:
        print(shlex.join(argv))
    print('```')


if __name__ == '__main__':
    main()
