"""One training step on a CPU: fp32 vs bf16 autocast (amp), same weights.

    python benchmarks/speed/bench_cpu.py                      # the table
    python benchmarks/speed/bench_cpu.py --threads 1 2        # 1 vs 2 threads
    python benchmarks/speed/bench_cpu.py --channels-last      # + NHWC rows
    python benchmarks/speed/bench_cpu.py --compile            # + torch.compile
    python benchmarks/speed/bench_cpu.py --loader --data-root DIR  # MNIST
    python benchmarks/speed/bench_cpu.py --quick              # a smoke run

A step is main.py's: forward under `autocast(cfg, device)` (bf16 where amp
is on and the CPU computes bf16 natively), the losses in fp32, backward and
the Adam step (the VQ-VAE's with its codebook options: EMA updates, restarts).
Every variant of a model starts from the same weights with its own Adam, and
the variants take turns within each repeat (the order rotating), so load from
other processes hits them alike; the median ms per step is reported and the
ratio is fp32's time over the variant's (> 1: faster). Data are random
images / codes held in memory, at the config's batch size.

Sizes: the VQ-VAE of configs 0, 5 and 7 (the same network) and of config 8;
the prior of configs 0, 5, 7 and 8. `--loader` times one pass over MNIST's
training images as main.py reads them (in memory, no workers) against a
DataLoader with worker processes over the same dataset.
"""
import argparse
import copy
import os
import shlex
import statistics
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
if REPO not in sys.path:  # run as `python benchmarks/speed/bench_cpu.py`
    sys.path.insert(0, REPO)
from dldemos.utils.threads import passive_wait  # noqa: E402

passive_wait()  # as main.py: idle OpenMP threads sleep, not spin

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from dldemos.utils.precision import cpu_has_native_bf16  # noqa: E402
from dldemos.VQVAE.configs import get_cfg  # noqa: E402
from dldemos.VQVAE.runtime.build import (amp_enabled,  # noqa: E402
                                         autocast, build_models)
from dldemos.VQVAE.runtime.hardware import cpu_name  # noqa: E402
from dldemos.VQVAE.training.codebook import CodebookTrainer  # noqa: E402

CPU = torch.device('cpu')
# (model, config whose sizes it takes, which configs share those sizes)
TARGETS = [('VQ-VAE', 5, (0, 5, 7)), ('VQ-VAE', 8, (8,)),
           ('prior', 0, (0,)), ('prior', 5, (5,)), ('prior', 7, (7,)),
           ('prior', 8, (8,))]


# ---------------------------------------------------------------- steps
class VQVAEStep:
    """main.py's VQ-VAE step on one model copy."""

    def __init__(self, vqvae, cfg, x, channels_last):
        self.cfg, self.vqvae = cfg, vqvae
        self.model = vqvae
        self.x = x.contiguous(memory_format=torch.channels_last) \
            if channels_last else x
        self.codebook = CodebookTrainer(cfg)
        self.opt = torch.optim.Adam(self.codebook.optimized(vqvae), cfg['lr'])
        self.mse = nn.MSELoss()

    def __call__(self):
        x, cfg = self.x, self.cfg
        self.codebook.before_step(self.vqvae, x)
        with autocast(cfg, CPU):
            x_hat, ze, zq = self.model(x)
        loss = self.mse(x, x_hat.float()) + \
            self.codebook.l_w_embedding * self.mse(ze.detach().float(),
                                                    zq.float()) + \
            cfg['l_w_commitment'] * self.mse(ze.float(), zq.detach().float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.codebook.after_step(self.vqvae, ze.detach())


class PriorStep:
    """main.py's prior step on one model copy."""

    def __init__(self, prior, cfg, batch):
        self.cfg, self.model = cfg, prior
        self.x, self.y = batch  # [N, h, w] codes, [N] labels or None
        self.opt = torch.optim.Adam(prior.parameters(), cfg['lr_2'])
        self.loss_fn = nn.CrossEntropyLoss()

    def __call__(self):
        x, y = self.x, self.y
        with autocast(self.cfg, CPU):
            logits = self.model(x) if y is None else self.model(x, y)
        loss = self.loss_fn(logits.float(), x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def inputs(kind, cfg, batch, generator):
    """Random data of the config's shapes: images [N, C, H, W] in [0, 1],
    or (codes [N, h, w], labels [N] or None)."""
    if kind == 'VQ-VAE':
        return torch.rand((batch, *cfg['img_shape']), generator=generator)
    vqvae, _ = build_models(cfg)
    h, w = vqvae.get_latent_HW(tuple(cfg['img_shape']))
    codes = torch.randint(0, cfg['n_embedding'], (batch, h, w),
                          generator=generator)
    labels = None if cfg['n_classes'] is None else torch.randint(
        0, cfg['n_classes'], (batch,), generator=generator)
    return codes, labels


def make_step(kind, cfg, base, data, variant):
    """A step over a fresh copy of `base` (the same starting weights for
    every variant), configured as `variant` says."""
    model = copy.deepcopy(base).train()
    cfg = dict(cfg, amp=variant['amp'])
    if variant['channels_last']:
        model.to(memory_format=torch.channels_last)
    step = VQVAEStep(model, cfg, data, variant['channels_last']) \
        if kind == 'VQ-VAE' else PriorStep(model, cfg, data)
    if variant['compile']:
        step.model = torch.compile(model)
    return step


# ---------------------------------------------------------------- timing
def time_variants(steps, n_steps, repeats):
    """Median seconds per step of each step function, taking turns (the
    order rotating each repeat) after one untimed warm-up step each (whose
    time is returned apart: it holds torch.compile's compilation)."""
    first = []
    for step in steps:
        tic = time.perf_counter()
        step()
        first.append(time.perf_counter() - tic)
    times = [[] for _ in steps]
    for r in range(repeats):
        order = list(range(len(steps)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            tic = time.perf_counter()
            for _ in range(n_steps):
                steps[i]()
            times[i].append((time.perf_counter() - tic) / n_steps)
    return [statistics.median(t) for t in times], first


def variants(args):
    """What each timed step function runs as: precision (amp), layout,
    compile, threads; every thread count gets every other variant, all
    timed in turns."""
    kinds = [dict(name='fp32', amp=False, channels_last=False, compile=False),
             dict(name='bf16', amp=True, channels_last=False, compile=False)]
    if args.channels_last:
        kinds += [dict(name='fp32 channels_last', amp=False,
                       channels_last=True, compile=False),
                  dict(name='bf16 channels_last', amp=True,
                       channels_last=True, compile=False)]
    if args.compile:
        kinds += [dict(name='fp32 compile', amp=False, channels_last=False,
                       compile=True),
                  dict(name='bf16 compile', amp=True, channels_last=False,
                       compile=True)]
    many = len(args.threads) > 1
    return [dict(v, threads=t, name=f'{v["name"]} {t}t' if many else v['name'])
            for t in args.threads for v in kinds]


def batch_of(kind, cfg, args):
    batch = cfg['batch_size'] if kind == 'VQ-VAE' else cfg['batch_size_2']
    return min(batch, args.batch) if args.batch else batch


def describe_target(kind, cfg_id, cfg, batch):
    if kind == 'VQ-VAE':
        return (f"{tuple(cfg['img_shape'])}, dim {cfg['dim']}, "
                f"K={cfg['n_embedding']}, batch {batch}")
    return (f"{cfg['pixelcnn_n_blocks']} blocks, p={cfg['pixelcnn_dim']}, "
            f"linear {cfg['pixelcnn_linear_dim']}"
            + (', conditional' if cfg['n_classes'] else '')
            + f', batch {batch}')


def bench_steps(args):
    runs = variants(args)
    names = [v['name'] for v in runs]
    print('| model (configs) | sizes | '
          + ' | '.join(f'{n} ms' for n in names) + ' | '
          + ' | '.join(f'{names[0]} / {n}' for n in names[1:]) + ' |')
    print('|' + ' --- |' * (2 + 2 * len(names) - 1))
    firsts = []
    for kind, cfg_id, shared in TARGETS:
        if args.configs and not set(shared) & set(args.configs):
            continue
        shared = ', '.join(map(str, shared))
        cfg = get_cfg(cfg_id)
        batch = batch_of(kind, cfg, args)
        g = torch.Generator().manual_seed(args.seed)
        torch.manual_seed(args.seed)
        vqvae, prior = build_models(cfg)
        base = vqvae if kind == 'VQ-VAE' else prior
        data = inputs(kind, cfg, batch, g)
        steps = [with_threads(make_step(kind, cfg, base, data, v),
                              v['threads']) for v in runs]
        t, first = time_variants(steps, args.steps, args.repeats)
        ms = [f'{1e3 * s:,.0f}' for s in t]
        ratios = [f'{t[0] / s:.2f}x' for s in t[1:]]
        print(f'| {kind} ({shared}) | '
              f'{describe_target(kind, cfg_id, cfg, batch)} | '
              + ' | '.join(ms) + ' | ' + ' | '.join(ratios) + ' |',
              flush=True)
        firsts.append((kind, shared, first))
    if args.compile:
        print('\nfirst step (s), which holds the compilation:')
        for kind, shared, first in firsts:
            print(f'- {kind} ({shared}): ' + ', '.join(
                f'{v["name"]} {s:.1f}' for v, s in zip(runs, first)))


def with_threads(step, threads):
    def run():
        torch.set_num_threads(threads)
        step()
    run.model = step.model
    return run


# ---------------------------------------------------------------- loader
def bench_loader(args):
    """One pass over MNIST's training images: main.py's in-memory loader
    (no workers) vs a DataLoader with `w` worker processes."""
    from torch.utils.data import DataLoader

    from dldemos.VQVAE.dataset import get_dataloader, get_dataset
    cfg = get_cfg(7)
    dataset = get_dataset('MNIST', (28, 28), args.data_root, 'train')

    def one_pass(loader):
        tic = time.perf_counter()
        n = sum(batch.shape[0] for batch in loader)
        return time.perf_counter() - tic, n

    print('\n| MNIST train images, batch 256 | s per pass | images |')
    print('| --- | --- | --- |')
    ours = get_dataloader('MNIST', cfg['batch_size'], (28, 28),
                          data_root=args.data_root, num_workers=4)
    rows = [('in memory, no workers (main.py)', ours)]
    for w in args.workers:
        rows.append((f'DataLoader, {w} workers',
                     DataLoader(dataset, batch_size=cfg['batch_size'],
                                shuffle=True, num_workers=w,
                                persistent_workers=w > 0)))
    for name, loader in rows:
        one_pass(loader)  # warm-up: starts the workers
        t = statistics.median(one_pass(loader)[0]
                              for _ in range(args.repeats))
        print(f'| {name} | {t:.2f} | {len(dataset)} |', flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='fp32 vs bf16 (and other CPU variants) per training '
        'step, same weights, interleaved repeats.')
    parser.add_argument('--threads', type=int, nargs='+', default=[1],
                        help='thread counts to time, each with every variant,'
                        ' all in turns (default: 1)')
    parser.add_argument('--configs', type=int, nargs='+', default=None,
                        help='only the sizes of these configs (0 5 7 8)')
    parser.add_argument('--steps', type=int, default=1,
                        help='steps per timed repeat (default 1: the '
                        'variants alternate step by step, so a change of '
                        'load hits them alike)')
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed repeats; the median is reported '
                        '(default 7)')
    parser.add_argument('--batch', type=int, default=None,
                        help="cap on the batch size (default: the config's)")
    parser.add_argument('--channels-last', action='store_true',
                        help='also time channels_last (NHWC) variants')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile variants (compiles '
                        'every model: minutes)')
    parser.add_argument('--loader', action='store_true',
                        help='also time a pass over MNIST (needs '
                        '--data-root)')
    parser.add_argument('--workers', type=int, nargs='+', default=[2],
                        help='DataLoader workers for --loader (default 2)')
    parser.add_argument('--data-root', default='data',
                        help='folder holding mnist/ (for --loader)')
    parser.add_argument('--no-steps', dest='steps_table',
                        action='store_false',
                        help='skip the training-step table')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: batch <= 16, 1 step, 2 repeats')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch = min(args.batch or 16, 16)
        args.steps, args.repeats = 1, 2

    print('## CPU: one training step, fp32 vs bf16 autocast (amp)')
    print(f'CPU: {cpu_name()}; {os.cpu_count()} cores; native bf16 '
          f'(oneDNN): {cpu_has_native_bf16()}; torch {torch.__version__}; '
          f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    if not amp_enabled({'amp': True}, CPU):
        print('note: without native bf16 the bf16 rows train in fp32 '
              '(amp is ignored): they only repeat fp32')
    print(f'{args.steps} steps per repeat, median of {args.repeats} '
          'repeats; ms per step (Adam step included)')
    print('command: ' + shlex.join(
        ['python', os.path.relpath(os.path.abspath(__file__), REPO)]
        + (sys.argv[1:] if argv is None else list(argv))))
    print()
    if args.steps_table:
        bench_steps(args)
    if args.loader:
        torch.set_num_threads(args.threads[0])
        bench_loader(args)


if __name__ == '__main__':
    main()
