"""Training throughput: ours vs the tutorial's loops, same starting weights.

    python benchmarks/speed/bench_training.py prior --device cpu --quick
    python benchmarks/speed/bench_training.py vqvae --device cpu --quick
    python benchmarks/speed/bench_training.py prior --device cuda [--compile]
    python benchmarks/speed/bench_training.py vqvae --device cuda [--compile]

prior: codes/s (latent positions per second) of PixelCNN training. Ours
  reads codes from the code cache (built once, its time reported apart) and
  runs main.py's step (kept-taps convolutions, bf16 autocast on CUDA or
  a CPU with native bf16,
  channels_last / torch.compile when asked); the tutorial encodes every
  image batch through its VQ-VAE (broadcast nearest neighbour) and trains
  in fp32 with masks multiplied into full 3x3 weights. On CUDA also the
  model FLOPs utilization (FLOPs of the prior's forward + backward, counted
  by torch.utils.flop_counter, / time / --peak-tflops).
vqvae: images/s of VQ-VAE training, main.py's step vs the tutorial's.

Before timing, both sides are checked to compute the same thing in fp32 on
the same weights (same codes, same losses). Data are random images held in
memory, so disk and decoding cost nothing on either side.
"""
import os
import sys
import time

if __name__ == '__main__':  # run as a script: the repo root importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from benchmarks.lib.common import (  # noqa: E402
    Table, base_parser, randomize_batch_norm, setup, sync, time_pair)
from benchmarks.lib.tutorial_reference import (  # noqa: E402
    TutorialPixelCNNWithEmbedding, TutorialVQVAE, train_prior_steps,
    train_vqvae_steps)
from dldemos.VQVAE.loading import code_cache  # noqa: E402
from dldemos.VQVAE.configs import get_cfg  # noqa: E402
from dldemos.VQVAE.runtime.build import (amp_enabled,  # noqa: E402
                                         autocast, build_models,
                                         prepare_for_training)


def loop(loader, steps):
    """steps batches, cycling through the loader (tuples unpacked)."""
    n = 0
    while True:
        for batch in loader:
            yield batch[0] if isinstance(batch, (list, tuple)) else batch
            n += 1
            if n == steps:
                return


def images_for(cfg, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *cfg['img_shape']), generator=g)  # [n, C, H, W]


def build(cfg, device, seed):
    """Our (vqvae, prior) and the tutorial's, with the same weights."""
    torch.manual_seed(seed)
    vqvae, prior = build_models(cfg)
    randomize_batch_norm(prior)
    ref_vqvae = TutorialVQVAE(cfg['img_shape'][0], cfg['dim'],
                              cfg['n_embedding'])
    ref_vqvae.load_state_dict(vqvae.state_dict())
    ref_prior = TutorialPixelCNNWithEmbedding(
        cfg['pixelcnn_n_blocks'], cfg['pixelcnn_dim'],
        cfg['pixelcnn_linear_dim'], True, cfg['n_embedding'])
    ref_prior.load_state_dict(prior.state_dict())
    return [m.to(device) for m in (vqvae, prior, ref_vqvae, ref_prior)]


def fp32_cfg(cfg):
    return dict(cfg, amp=False, channels_last=False, compile=False)


def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ---------------------------------------------------------------- prior
def prior_step(model, x, optimizer, loss_fn, cfg, device):
    """One step of main.train_generative_model's loop (code-cache path)."""
    x = x.to(device, non_blocking=True).long()
    with autocast(cfg, device):
        predict_x = model(x)  # [N, K, h, w]
    loss = loss_fn(predict_x.float(), x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def bench_prior(cfg, args, device, table):
    cuda = device.type == 'cuda'
    batch, steps = cfg['batch_size_2'], args.steps
    images = images_for(cfg, batch * min(steps, 8), args.seed)
    vqvae, prior, ref_vqvae, ref_prior = build(cfg, device, args.seed)
    vqvae.eval()
    img_loader = DataLoader(TensorDataset(images), batch_size=batch,
                            shuffle=False)
    # the code cache: encode every image once (what code_cache builds)
    t0 = time.perf_counter()
    codes = code_cache.encode_all(vqvae, loop(img_loader, len(img_loader)),
                                  device)  # [n, h, w] uint8 / int16
    sync(device)
    t_cache = time.perf_counter() - t0
    # check: same codes as the tutorial's encode, same fp32 loss
    with torch.no_grad():
        ref_codes = torch.cat([ref_vqvae.encode(x.to(device)).cpu()
                               for x in loop(img_loader, len(img_loader))])
    same = (codes.long() == ref_codes).float().mean().item()
    if same < 0.999:
        raise SystemExit(f'code cache and tutorial codes agree on only '
                         f'{same:.4%}')
    x = ref_codes[:batch].to(device)
    loss_fn = nn.CrossEntropyLoss()
    prior.train(), ref_prior.train()
    with torch.no_grad():
        a = loss_fn(prior(x).float(), x).item()
        b = loss_fn(ref_prior(x), x).item()
    if abs(a - b) > 1e-4 * max(1, abs(b)):
        raise SystemExit(f'prior losses differ: ours {a} tutorial {b}')
    print(f'checked: {same:.4%} of codes equal, fp32 loss {a:.6f} vs '
          f'{b:.6f}', flush=True)

    code_loader = DataLoader(TensorDataset(codes), batch_size=batch,
                             shuffle=True, pin_memory=cuda)
    run_cfg = dict(cfg, amp=args.amp, channels_last=args.channels_last,
                   compile=args.compile)
    model = prepare_for_training(prior, run_cfg, device)
    opt = torch.optim.Adam(prior.parameters(), cfg['lr_2'])
    ref_opt = torch.optim.Adam(ref_prior.parameters(), cfg['lr_2'])
    img_loader = DataLoader(TensorDataset(images), batch_size=batch,
                            shuffle=True)

    def ours():
        for x in loop(code_loader, steps):
            prior_step(model, x, opt, loss_fn, run_cfg, device)

    def ref():
        train_prior_steps(ref_vqvae, ref_prior, loop(img_loader, steps),
                          ref_opt, device)

    t_ours, t_ref = time_pair(ours, ref, device, args.repeats,
                              warmup=1)
    h, w = codes.shape[1:]
    n_codes = steps * batch * h * w
    flags = [f for f, on in (('bf16', amp_enabled(run_cfg, device)),
                             ('channels_last', args.channels_last and cuda),
                             ('compile', args.compile)) if on]
    what = (f'config {args.cfg_id} prior: {h}x{w} codes, '
            f'p={cfg["pixelcnn_dim"]}, {cfg["pixelcnn_n_blocks"]} blocks, '
            f'batch {batch}, {steps} steps')
    table.add(what + ' (codes/s)', f'{n_codes / t_ours:,.0f}',
              f'{n_codes / t_ref:,.0f}', f'{t_ref / t_ours:.2f}x',
              'ours: code cache, kept taps' + ''.join(', ' + f
                                                      for f in flags))
    table.add(f'config {args.cfg_id} code cache build (once)',
              f'{t_cache:.2f} s for {codes.shape[0]} images', '-', '-',
              f'= {codes.shape[0] / t_cache:,.0f} images/s')
    if cuda:
        fp32 = fp32_cfg(cfg)
        flops = count_flops(lambda: prior_step(
            prior, codes[:batch], opt, loss_fn, fp32, device))
        mfu_ours = flops * steps / t_ours / (args.peak_tflops * 1e12)
        mfu_ref = flops * steps / t_ref / (args.peak_tflops * 1e12)
        table.add(f'config {args.cfg_id} prior MFU', f'{mfu_ours:.1%}',
                  f'{mfu_ref:.1%}', f'{mfu_ours / mfu_ref:.2f}x',
                  f'{flops / 1e9:.1f} GFLOP/step (fwd+bwd), peak '
                  f'{args.peak_tflops:g} TFLOP/s')


# ---------------------------------------------------------------- vqvae
def vqvae_step(model, x, optimizer, mse_loss, cfg, device):
    """One step of main.train_vqvae's loop."""
    x = x.to(device, non_blocking=True)
    with autocast(cfg, device):
        x_hat, ze, zq = model(x)
    l_reconstruct = mse_loss(x, x_hat.float())
    l_embedding = mse_loss(ze.detach().float(), zq.float())
    l_commitment = mse_loss(ze.float(), zq.detach().float())
    loss = l_reconstruct + cfg['l_w_embedding'] * l_embedding + \
        cfg['l_w_commitment'] * l_commitment
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def bench_vqvae(cfg, args, device, table):
    cuda = device.type == 'cuda'
    batch, steps = cfg['batch_size'], args.steps
    images = images_for(cfg, batch * min(steps, 8), args.seed)
    vqvae, _, ref_vqvae, _ = build(cfg, device, args.seed)
    x = images[:batch].to(device)
    with torch.no_grad():
        ours_out = vqvae(x)
        ref_out = ref_vqvae(x)
    for name, a, b in zip(('x_hat', 'ze', 'zq'), ours_out, ref_out):
        if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
            raise SystemExit(f'VQ-VAE {name} differs from the tutorial')
    print('checked: same x_hat, ze, zq in fp32', flush=True)
    mse_loss = nn.MSELoss()
    run_cfg = dict(cfg, amp=args.amp, channels_last=args.channels_last,
                   compile=args.compile)
    model = prepare_for_training(vqvae, run_cfg, device)
    opt = torch.optim.Adam(vqvae.parameters(), cfg['lr'])
    ref_opt = torch.optim.Adam(ref_vqvae.parameters(), cfg['lr'])
    ours_loader = DataLoader(TensorDataset(images), batch_size=batch,
                             shuffle=True, pin_memory=cuda)
    ref_loader = DataLoader(TensorDataset(images), batch_size=batch,
                            shuffle=True)

    def ours():
        for x in loop(ours_loader, steps):
            vqvae_step(model, x, opt, mse_loss, run_cfg, device)

    def ref():
        train_vqvae_steps(ref_vqvae, loop(ref_loader, steps), ref_opt,
                          device, cfg['l_w_embedding'],
                          cfg['l_w_commitment'])

    t_ours, t_ref = time_pair(ours, ref, device, args.repeats,
                              warmup=1)
    n_images = steps * batch
    flags = [f for f, on in (('bf16', amp_enabled(run_cfg, device)),
                             ('channels_last', args.channels_last and cuda),
                             ('compile', args.compile)) if on]
    what = (f'config {args.cfg_id} VQ-VAE: {tuple(cfg["img_shape"])}, '
            f'dim {cfg["dim"]}, K={cfg["n_embedding"]}, batch {batch}, '
            f'{steps} steps')
    table.add(what + ' (images/s)', f'{n_images / t_ours:,.1f}',
              f'{n_images / t_ref:,.1f}', f'{t_ref / t_ours:.2f}x',
              'ours: chunked fp32 nearest neighbour' +
              ''.join(', ' + f for f in flags))


def main(argv=None):
    parser = base_parser('Training throughput, ours vs the tutorial.')
    parser.add_argument('what', choices=('prior', 'vqvae'))
    parser.add_argument('-c', dest='cfg_id', type=int, default=None,
                        help='config id for shapes (default: 0 with --quick,'
                        ' else 4)')
    parser.add_argument('--batch', type=int, default=None,
                        help="batch size (default: the config's; --quick: "
                        '32)')
    parser.add_argument('--steps', type=int, default=None,
                        help='timed steps per repeat (default 20; --quick 4)')
    parser.add_argument('--no-amp', dest='amp', action='store_false',
                        help='ours without bf16 autocast (CUDA, or a CPU '
                        'with native bf16)')
    parser.add_argument('--channels-last', action='store_true',
                        help='ours with channels_last (CUDA)')
    parser.add_argument('--compile', action='store_true',
                        help='ours with torch.compile')
    parser.add_argument('--peak-tflops', type=float, default=989.0,
                        help='peak dense bf16 TFLOP/s of the device, for '
                        'MFU (default: H100 SXM)')
    args = parser.parse_args(argv)
    device = setup(args)
    if args.cfg_id is None:
        args.cfg_id = 0 if args.quick else 4
    args.steps = args.steps or (4 if args.quick else 20)
    args.repeats = args.repeats or 3
    cfg = get_cfg(args.cfg_id)
    if args.batch or args.quick:
        key = 'batch_size_2' if args.what == 'prior' else 'batch_size'
        cfg[key] = args.batch or 32
    table = Table(f'{args.what} training throughput', device,
                  'ratio = ours / tutorial throughput (same run, median of '
                  'repeats)')
    (bench_prior if args.what == 'prior' else bench_vqvae)(cfg, args,
                                                           device, table)
    table.print()


if __name__ == '__main__':
    main()
