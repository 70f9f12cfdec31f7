"""Sampling time: cached incremental sampler vs the tutorial's loop.

    python benchmarks/speed/bench_sampling.py --device cpu --quick
    python benchmarks/speed/bench_sampling.py --device cuda

Both samplers get the same random weights (batch-norm statistics made
non-trivial). Before timing, the cached sampler's logits at every position
are checked against the tutorial model's full pass over the same codes, and
the tutorial loop's draws against ours with the same generator.
The tutorial loop does the same full pass at every position, so with
--naive-steps S it is timed on its first S positions and scaled by H*W / S
(the table says so).
"""
import os
import sys

if __name__ == '__main__':  # run as a script: the repo root importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

import torch  # noqa: E402

from benchmarks.lib.common import (  # noqa: E402
    Table, base_parser, fmt_ratio, fmt_s, randomize_batch_norm, setup,
    time_pair)
from benchmarks.lib.tutorial_reference import (  # noqa: E402
    TutorialPixelCNNWithEmbedding, sample_naive)
from dldemos.VQVAE.configs import get_cfg  # noqa: E402
from dldemos.VQVAE.pixelcnn_model import PixelCNNWithEmbedding  # noqa: E402
from dldemos.VQVAE.sampling import sample_codes  # noqa: E402


def latent_hw(cfg):
    return cfg['img_shape'][1] // 4, cfg['img_shape'][2] // 4


def build_pair(cfg, device, seed):
    args = (cfg['pixelcnn_n_blocks'], cfg['pixelcnn_dim'],
            cfg['pixelcnn_linear_dim'], True, cfg['n_embedding'])
    torch.manual_seed(seed)
    ours = PixelCNNWithEmbedding(*args)
    randomize_batch_norm(ours)
    ref = TutorialPixelCNNWithEmbedding(*args)
    ref.load_state_dict(ours.state_dict())
    return ours.to(device).eval(), ref.to(device).eval()


def check_same(ours, ref, n, H, W, device, check_steps, seed):
    """Cached logits == tutorial model's logits on the sampled codes, and
    the tutorial loop draws the same codes with the same generator."""
    steps = []
    g = torch.Generator(device).manual_seed(seed)
    codes = sample_codes(ours, n, H, W, device, 'cached', generator=g,
                         on_step=lambda i, j, z: steps.append((i, j, z)))
    with torch.no_grad():
        full = ref(codes).float()  # [n, K, H, W]
    err = max(float((logits - full[:, :, i, j]).abs().max())
              for i, j, logits in steps)
    scale = float(full.abs().max())
    if err > 1e-4 * max(1.0, scale):
        raise SystemExit(f'cached logits differ from the tutorial model by '
                         f'{err:g} (logit scale {scale:g})')
    g = torch.Generator(device).manual_seed(seed)
    naive = sample_naive(ref, n, H, W, device, g, max_steps=check_steps)
    k = min(check_steps, H * W)
    if not torch.equal(naive.flatten(1)[:, :k], codes.flatten(1)[:, :k]):
        raise SystemExit('the tutorial loop drew different codes')
    return err, k


def main(argv=None):
    parser = base_parser('Sampling time, cached vs the tutorial loop.')
    parser.add_argument('--configs', default='0,4',
                        help='config ids whose prior / latent shapes to use')
    parser.add_argument('--batch', type=int, default=None,
                        help='samples per run (default: 2 on CPU, 81 on GPU)')
    parser.add_argument('--naive-steps', type=int, default=None,
                        help='time the tutorial loop on this many positions '
                        'and scale to H*W (default: all; --quick: 8 on '
                        'grids over 100 positions)')
    args = parser.parse_args(argv)
    device = setup(args)
    cuda = device.type == 'cuda'
    # TF32 (cuDNN's default for convolutions on CUDA) would put 1e-3 errors
    # into the checks: they run in true fp32, the timing with the defaults
    tf32 = (torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32)
    n = args.batch or (81 if cuda else 2)
    repeats = args.repeats or (3 if cuda else 1)
    table = Table('Sampling (codes of one batch, fp32)', device,
                  'ratio = tutorial time / ours (median of repeats; ours '
                  "always runs in full fp32, the tutorial's loop with "
                  "PyTorch's default TF32 settings)")
    for cid in [int(c) for c in args.configs.split(',')]:
        cfg = get_cfg(cid)
        H, W = latent_hw(cfg)
        ours, ref = build_pair(cfg, device, args.seed)
        naive_steps = args.naive_steps or \
            (8 if args.quick and H * W > 100 else None)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        err, k = check_same(ours, ref, n, H, W, device,
                            min(H * W, naive_steps or H * W, 64), args.seed)
        (torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = tf32
        steps = min(naive_steps or H * W, H * W)
        print(f'config {cid}: checked logits at all {H * W} positions (max '
              f'|diff| {err:.1e}) and the first {k} draws', flush=True)

        def run_ours():  # no bar: the reference loop has none either
            sample_codes(ours, n, H, W, device, 'cached', progress=False)

        def run_ref():
            sample_naive(ref, n, H, W, device, max_steps=steps)

        t_ours, t_ref = time_pair(run_ours, run_ref, device, repeats,
                                  warmup=1 if cuda else 0)
        t_ref_full = t_ref * (H * W) / steps
        note = '' if steps == H * W else \
            f'tutorial timed on {steps}/{H * W} positions, scaled'
        table.add(f'config {cid}: {H}x{W} codes, p={cfg["pixelcnn_dim"]}, '
                  f'{cfg["pixelcnn_n_blocks"]} blocks, batch {n}',
                  fmt_s(t_ours), fmt_s(t_ref_full),
                  fmt_ratio(t_ref_full, t_ours), note)
    table.print()


if __name__ == '__main__':
    main()
