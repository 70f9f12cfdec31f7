"""Nearest-neighbour (quantizer) time and peak memory: ours vs the tutorial.

    python benchmarks/speed/bench_nearest_neighbor.py --device cpu --quick
    python benchmarks/speed/bench_nearest_neighbor.py --device cuda

Ours: |e|^2 - 2 z.e in fp32, in row chunks ([M, K] at most). The tutorial:
an [N, K, C, H, W] broadcast of (e - z)^2. Same inputs for both; the codes
are checked equal (up to exact near-ties) before timing. The tutorial is
skipped where its temporaries would exceed --max-ref-gb.
"""
import os
import sys

if __name__ == '__main__':  # run as a script: the repo root importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

import torch  # noqa: E402

from benchmarks.lib.common import (  # noqa: E402
    Table, base_parser, fmt_ratio, fmt_s, peak_memory, setup, time_pair)
from benchmarks.lib.tutorial_reference import (  # noqa: E402
    broadcast_nearest_neighbor)
from dldemos.VQVAE.model import nearest_neighbor  # noqa: E402

# (name, batch N, dim C, codebook K, latent H = W)
SHAPES = [('config 0 (MNIST)', 256, 32, 32, 7),
          ('config 4 (CelebAHQ 64)', 64, 128, 32, 16),
          ('paper scale', 32, 256, 512, 32)]


def ours_codes(ze, embedding):
    N, C, H, W = ze.shape
    z = ze.permute(0, 2, 3, 1).reshape(-1, C)  # [N*H*W, C]
    return nearest_neighbor(z, embedding).reshape(N, H, W)


def check_same(ze, embedding, a, b):
    """Codes equal, or where not, both choices are equally near (a tie in
    fp32): compared in float64."""
    diff = a != b
    if not diff.any():
        return 0
    z = ze.permute(0, 2, 3, 1)[diff].double()  # [m, C]
    e = embedding.double()
    da = ((z - e[a[diff]])**2).sum(1)
    db = ((z - e[b[diff]])**2).sum(1)
    if not torch.allclose(da, db, rtol=1e-5, atol=1e-6):
        raise SystemExit('ours and the tutorial pick different codes')
    return int(diff.sum())


def fmt_mb(b):
    return f'{b / 2**20:.1f} MiB' if b < 2**30 else f'{b / 2**30:.2f} GiB'


def main(argv=None):
    parser = base_parser('Quantizer nearest neighbour: ours vs tutorial.')
    parser.add_argument('--max-ref-gb', type=float, default=None,
                        help="skip the tutorial's broadcast where its "
                        'temporary needs more (default: 4 on CPU, 60 on '
                        'CUDA)')
    args = parser.parse_args(argv)
    device = setup(args)
    cuda = device.type == 'cuda'
    max_gb = args.max_ref_gb or (60 if cuda else 4)
    repeats = args.repeats or (10 if cuda else 2 if args.quick else 3)
    shapes = SHAPES
    if args.quick:  # smaller batch at the paper's K, C, H, W
        shapes = SHAPES[:2] + [('paper scale, batch 2', 2, 256, 512, 32),
                               ('paper scale', 32, 256, 512, 32)]
    table = Table('Nearest neighbour (fp32)', device,
                  'time: median of repeats; memory: peak above inputs '
                  '(CUDA: max_memory_allocated, CPU: peak RSS); '
                  'ratio = tutorial / ours')
    for name, N, C, K, H in shapes:
        g = torch.Generator().manual_seed(args.seed)
        ze = torch.randn(N, C, H, H, generator=g).to(device)
        embedding = torch.randn(K, C, generator=g).to(device)
        what = f'{name}: N={N} C={C} K={K} {H}x{H}'
        ref_gb = N * K * C * H * H * 4 / 2**30  # one [N, K, C, H, W] fp32
        codes, mem_ours = peak_memory(lambda: ours_codes(ze, embedding),
                                      device)
        if ref_gb > max_gb:
            t_ours, _ = time_pair(lambda: ours_codes(ze, embedding),
                                  lambda: None, device, repeats)
            table.add(what + ' time', fmt_s(t_ours), 'skipped', 'n/a',
                      f'tutorial needs > {ref_gb:.1f} GiB (--max-ref-gb)')
            table.add(what + ' peak memory', fmt_mb(mem_ours),
                      f'>= {ref_gb:.1f} GiB (est.)', 'n/a')
            continue
        ref_codes, mem_ref = peak_memory(
            lambda: broadcast_nearest_neighbor(ze, embedding), device)
        n_ties = check_same(ze, embedding, codes, ref_codes)
        t_ours, t_ref = time_pair(
            lambda: ours_codes(ze, embedding),
            lambda: broadcast_nearest_neighbor(ze, embedding), device,
            repeats)
        table.add(what + ' time', fmt_s(t_ours), fmt_s(t_ref),
                  fmt_ratio(t_ref, t_ours),
                  f'{n_ties} exact ties picked differently' if n_ties else
                  'same codes')
        table.add(what + ' peak memory', fmt_mb(mem_ours), fmt_mb(mem_ref),
                  fmt_ratio(mem_ref, max(mem_ours, 1)))
        del ref_codes
    table.print()


if __name__ == '__main__':
    main()
