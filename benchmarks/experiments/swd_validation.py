"""Does the sample score (SWD over Laplacian-pyramid patches) rank real faces
against degraded copies of themselves in order?

    OMP_NUM_THREADS=1 python benchmarks/experiments/swd_validation.py \
        --data-root data

The held-out CelebA faces (the last 10% of the folder, 64x64 via the
project's CelebA crop) are the reference; compared with it: the same images
(other patch places: the finite-sample floor), as many random training
faces (what a perfect sampler would score), Gaussian-blurred copies and
copies with Gaussian noise (clipped to [0, 1]). Prints a markdown table of
SWD x 1e3 (per pyramid level and the mean of levels) for each seed, and the
command to repeat it.
"""
import argparse
import math
import os
import shlex
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
if REPO not in sys.path:  # run as `python benchmarks/experiments/...`
    sys.path.insert(0, REPO)

import torch  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402

from dldemos.VQVAE.dataset import get_dataset  # noqa: E402
from dldemos.VQVAE.runtime.hardware import cpu_name  # noqa: E402
from dldemos.VQVAE.scoring import swd as S  # noqa: E402


def blurred(x, sigma):
    return TF.gaussian_blur(x, 2 * math.ceil(3 * sigma) + 1, sigma)


def noised(x, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def load(dataset, indices):
    return torch.stack([dataset[i] for i in indices])  # [N, 3, 64, 64]


def comparisons(test, train, blurs, noises, seed):
    sets = {'held-out itself (floor)': test,
            f'train ({train.shape[0]} random) vs held-out': train}
    for s in blurs:
        sets[f'blur sigma {s:g}'] = blurred(test, s)
    for s in noises:
        sets[f'noise sigma {s:g}'] = noised(test, s, seed)
    return sets


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data-root', default='data')
    p.add_argument('--n-train', type=int, default=None,
                   help='random training faces (default: as many as '
                   'held-out ones)')
    p.add_argument('--blur', type=float, nargs='*', default=[0.5, 1, 2])
    p.add_argument('--noise', type=float, nargs='*',
                   default=[0.02, 0.05, 0.1])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--normalize', choices=('each', 'reference'),
                   default='each')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    test_set = get_dataset('CelebA', (64, 64), args.data_root, 'test')
    train_set = get_dataset('CelebA', (64, 64), args.data_root, 'train')
    test = load(test_set, range(len(test_set)))
    n_train = args.n_train or len(test_set)
    print(f'CelebA 64x64: {len(test_set)} held-out faces, {n_train} of '
          f'{len(train_set)} training faces (random per seed); SWD x 1e3, '
          f'{S.N_PATCHES} patches per image per level, '
          f'{S.N_DIRECTIONS * S.REPEATS} directions, normalize='
          f'{args.normalize}')
    print(f'CPU {cpu_name()}, {torch.get_num_threads()} thread(s), torch '
          f'{torch.__version__}\n')
    rows = {}
    for seed in args.seeds:
        pick = torch.randperm(len(train_set), generator=torch.Generator()
                              .manual_seed(seed))[:n_train]
        train = load(train_set, pick.tolist())
        res = S.swd_against(test, comparisons(test, train, args.blur,
                                              args.noise, seed),
                            seed, normalize=args.normalize)
        for name, v in res.items():
            rows.setdefault(name, []).append(v)
    levels = list(next(iter(rows.values()))[0]['levels'])
    print('| compared with the held-out faces | seed | '
          + ' | '.join(f'level {k}' for k in levels) + ' | mean |')
    print('| --- | --- |' + ' --- |' * (len(levels) + 1))
    for name, vals in rows.items():
        for seed, v in zip(args.seeds, vals):
            print(f'| {name} | {seed} | '
                  + ' | '.join(f'{v["levels"][k]:.1f}' for k in levels)
                  + f' | {v["mean"]:.1f} |')
    print(f'\n{time.perf_counter() - tic:.0f} s wall in all')
    print('repeat: OMP_NUM_THREADS=1 python '
          'benchmarks/experiments/swd_validation.py '
          + shlex.join(argv if argv is not None else sys.argv[1:]))


if __name__ == '__main__':
    main()
