"""Cost of the sample score (SWD over Laplacian-pyramid patches) on a CPU.

    python benchmarks/speed/bench_swd.py                 # 1000 vs 600, 64x64
    python benchmarks/speed/bench_swd.py --quick         # 200 vs 120

Times what evaluate.py would add for an image dataset without a classifier:
swd() of n_fake samples against n_real held-out images, and swd_scores()
(samples, reconstructions of the held-out images and as many train images as
samples, against the held-out ones). Reports wall and CPU seconds (CPU time
is less disturbed by other processes on a shared machine) and the peak
resident memory. The images are random: the cost does not depend on what
they show.
"""
import argparse
import os
import resource
import shlex
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
if REPO not in sys.path:  # run as `python benchmarks/speed/bench_swd.py`
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from dldemos.VQVAE.runtime.hardware import cpu_name  # noqa: E402
from dldemos.VQVAE.scoring import swd as S  # noqa: E402


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n-fake', type=int, default=1000)
    p.add_argument('--n-real', type=int, default=600)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--channels', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--quick', action='store_true',
                   help='200 samples vs 120 held-out images')
    args = p.parse_args(argv)
    if args.quick:
        args.n_fake, args.n_real = 200, 120
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.channels, args.size, args.size)
    real = torch.rand(args.n_real, *shape, generator=g)
    fake = torch.rand(args.n_fake, *shape, generator=g)
    train = torch.rand(args.n_fake, *shape, generator=g)
    recon = torch.rand(args.n_real, *shape, generator=g)
    S.swd(real[:20], fake[:20])  # warm-up: first-call allocations
    base_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _, wall1, cpu1 = timed(lambda: S.swd(real, fake, args.seed))
    _, wall3, cpu3 = timed(lambda: S.swd_scores(real, fake, recon, train,
                                                args.seed))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    levels = S.n_levels(args.size, args.size)
    print(f'SWD cost: {args.n_fake} samples vs {args.n_real} held-out '
          f'images, {args.channels}x{args.size}x{args.size}, {levels} '
          f'levels, {S.N_PATCHES} patches per image per level, '
          f'{S.N_DIRECTIONS * S.REPEATS} directions')
    print(f'device: CPU {cpu_name()}, {torch.get_num_threads()} thread(s), '
          f'torch {torch.__version__}; load average at the end: '
          f'{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores')
    print(f'  swd(held-out, samples):             {wall1:7.1f} s wall, '
          f'{cpu1:7.1f} s CPU')
    print(f'  swd_scores (samples, recon, train): {wall3:7.1f} s wall, '
          f'{cpu3:7.1f} s CPU')
    print(f'  peak resident memory: {peak_mib:.0f} MiB, of which '
          f'{peak_mib - base_mib:.0f} MiB above the process after import '
          'and warm-up (images included)')
    print('repeat: OMP_NUM_THREADS=1 python benchmarks/speed/bench_swd.py '
          + shlex.join(argv if argv is not None else sys.argv[1:]))


if __name__ == '__main__':
    main()
