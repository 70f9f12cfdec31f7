"""Train a VQ-VAE, then a Gated PixelCNN prior over its codes: the tutorial's
four stages (1. train VQ-VAE, 2. reconstruct, 3. train PixelCNN, 4. sample).

    python dldemos/VQVAE/main.py -c 0                   # MNIST, all stages
    python dldemos/VQVAE/main.py -c 5                   # quick MNIST on a CPU
    python dldemos/VQVAE/main.py -c 4 --stages 3,4      # prior only
    python dldemos/VQVAE/main.py -c 0 --cfg-options n_epochs=5 train_subset=1000
    python dldemos/VQVAE/main.py -c 0 --resume          # continue a stopped run

Outputs go to --work-dir (default work_dirs/): checkpoints and their resume
points, vqvae_reconstruct_{dataset}.jpg, vqvae_sample_{dataset}.jpg,
config.json, command.txt, per-epoch logs (log_vqvae.jsonl,
log_pixelcnn.jsonl), loss_curves.png and previews/. Ctrl-C or SIGTERM saves
a resume point and exits with code 130; bad input exits with code 2 and one
line (--debug: traceback). The torchrun launchers run the same two training
functions (dist_train_vqvae.py, dist_train_pixelcnn.py).
"""
import argparse
import os
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))
    from dldemos.threads import passive_wait
    passive_wait()  # before torch loads OpenMP: idle threads sleep, not spin

import torch
import torch.nn as nn

from dldemos.dist_utils import get_world_size, is_dist
from dldemos.errors import UsageError, report_errors
from dldemos.threads import configure_threads
from dldemos.VQVAE.build import autocast, build_models, prepare_for_training
from dldemos.VQVAE.checkpoint import file_sha256, load_model, read_provenance
from dldemos.VQVAE.cli import add_common_args, check_seed, pick_device
from dldemos.VQVAE.config_check import load_cfg
from dldemos.VQVAE.configs import CONFIG_NAMES
from dldemos.VQVAE.context import (RunContext, check_outputs,
                                   prepare_work_dir, seed_everything)
from dldemos.VQVAE.epoch_runner import Stage, run_epochs
from dldemos.VQVAE.loaders import code_loader, image_loader
from dldemos.VQVAE.logs import log
from dldemos.VQVAE.model import VQVAE
from dldemos.VQVAE.monitor import prior_hooks, vqvae_hooks
from dldemos.VQVAE.plots import preview_reconstruction, save_grid
from dldemos.VQVAE.sampling import sample
from dldemos.VQVAE.work_lock import unlock_work_dir


# ------------------------------------------------------ 1. train the VQ-VAE
def train_vqvae(vqvae: VQVAE, ctx: RunContext):
    cfg, device = ctx.cfg, ctx.device
    log('batch size:', cfg['batch_size'], 'x', get_world_size(), 'ranks')
    dataloader, sampler = image_loader(ctx, cfg['batch_size'],
                                       subset=cfg['train_subset'],
                                       sharded=is_dist())
    # `model` runs the step (DDP / compiled as configured); the optimizer and
    # checkpoints hold `vqvae` itself
    model = prepare_for_training(vqvae, cfg, device)
    model.train()
    optimizer = torch.optim.Adam(vqvae.parameters(), cfg['lr'])
    mse_loss = nn.MSELoss()

    def step(x):
        x = x.to(device, non_blocking=True)
        with autocast(cfg, device):
            x_hat, ze, zq = model(x)
        # the paper's three terms, in fp32 even under bf16 autocast:
        # reconstruction; embedding (moves each code towards the encoder
        # outputs it stands for); commitment (keeps ze near its code)
        l_reconstruct = mse_loss(x, x_hat.float())
        l_embedding = mse_loss(ze.detach().float(), zq.float())
        l_commitment = mse_loss(ze.float(), zq.detach().float())
        loss = l_reconstruct + \
            cfg['l_w_embedding'] * l_embedding + \
            cfg['l_w_commitment'] * l_commitment
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # ze goes to the progress bar, which counts the codes in use
        return (loss, l_reconstruct, l_embedding, l_commitment), \
            x.shape[0], ze.detach()

    stage = Stage('VQ-VAE', vqvae, optimizer, ctx.ckpt('vqvae_path'),
                  'n_epochs', 'log_vqvae.jsonl',
                  ('loss', 'reconstruct', 'embedding', 'commitment'),
                  **vqvae_hooks(ctx, vqvae))
    run_epochs(ctx, stage, dataloader, sampler, step)


# ------------------------------------------------------ 2. reconstruct
def reconstruct(model, x, device, dataset_type='MNIST',
                out_path='work_dirs/vqvae_reconstruct_MNIST.jpg'):
    """Originals and reconstructions side by side (left, right)."""
    model.to(device)
    model.eval()
    preview_reconstruction(model, x.to(device), out_path, dataset_type)


# ------------------------------------------------------ 3. train the prior
def train_generative_model(vqvae: VQVAE, model, ctx: RunContext):
    cfg, device = ctx.cfg, ctx.device
    log('batch size:', cfg['batch_size_2'], 'x', get_world_size(), 'ranks')
    vqvae.to(device)
    vqvae.eval()
    # the frozen VQ-VAE gives the same codes every epoch: by default they are
    # encoded once and cached; use_code_cache=False is the tutorial's loop
    if cfg['use_code_cache']:
        dataloader, sampler = code_loader(ctx, vqvae, 'train',
                                          subset=cfg['train_subset'])
    else:
        dataloader, sampler = image_loader(ctx, cfg['batch_size_2'],
                                           subset=cfg['train_subset'],
                                           sharded=is_dist())
    net = prepare_for_training(model, cfg, device)  # see train_vqvae
    net.train()
    optimizer = torch.optim.Adam(model.parameters(), cfg['lr_2'])
    loss_fn = nn.CrossEntropyLoss()

    def step(batch):
        with torch.no_grad():  # codes are the input and the target
            if cfg['use_code_cache']:
                x = batch[0].to(device, non_blocking=True).long()
            else:  # fp32, like the cache
                x = vqvae.encode(batch.to(device, non_blocking=True))
        with autocast(cfg, device):
            predict_x = net(x)  # [N, K, h, w] logits of every position
        loss = loss_fn(predict_x.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return (loss,), x.shape[0], None

    # the prior models the codes of this exact VQ-VAE: recorded, so that a
    # resume after the VQ-VAE was retrained starts the prior afresh
    vqvae_sha = file_sha256(ctx.ckpt('vqvae_path'))
    stage = Stage('PixelCNN', model, optimizer, ctx.ckpt('gen_model_path'),
                  'n_epochs_2', 'log_pixelcnn.jsonl', ('loss',),
                  provenance={'vqvae_sha256': vqvae_sha},
                  **prior_hooks(ctx, vqvae, model))
    run_epochs(ctx, stage, dataloader, sampler, step)


# ------------------------------------------------------ 4. sample
def sample_imgs(vqvae: VQVAE, gen_model, img_shape, n_sample=81,
                device='cuda', dataset_type='MNIST',
                out_path='work_dirs/vqvae_sample_MNIST.jpg', **sampling):
    """n_sample new images in one grid; `sampling`: sampler, temperature,
    top_k, seed (see sampling.sample)."""
    vqvae = vqvae.to(device)
    vqvae.eval()
    gen_model = gen_model.to(device)
    imgs = sample(vqvae, gen_model, img_shape, n_sample, device, **sampling)
    save_grid(imgs, out_path, dataset_type)
    return imgs


# ------------------------------------------------------ the run
def load_stage_input(model, ctx, key, stage):
    """Load the checkpoint a stage needs, or say which stage makes it."""
    what, maker = {'vqvae_path': ('VQ-VAE', 1),
                   'gen_model_path': ('PixelCNN', 3)}[key]
    path = ctx.ckpt(key)
    if os.path.islink(path) and not os.path.exists(path):
        raise UsageError(f'{path} is a broken or looping symbolic link: '
                         f'point it at a {what} checkpoint or delete it')
    if not os.path.isfile(path):
        raise UsageError(f'stage {stage} needs the {what} checkpoint {path}, '
                         f'which does not exist: run stage {maker} first '
                         f'(--stages {maker})')
    return load_model(model, path, f'{what} checkpoint')


def check_prior_matches_vqvae(ctx):
    """A prior sampled through another VQ-VAE's decoder gives noise."""
    saved = read_provenance(ctx.ckpt('gen_model_path')).get('vqvae_sha256')
    if saved and saved != file_sha256(ctx.ckpt('vqvae_path')):
        raise UsageError(f'the PixelCNN {ctx.ckpt("gen_model_path")} was '
                         'trained on the codes of another VQ-VAE than '
                         f'{ctx.ckpt("vqvae_path")} (retrained since): train '
                         'the prior again with --stages 3,4')


def announce(ctx, config_id, stages):
    cfg = ctx.cfg
    log(f'config {config_id} ({CONFIG_NAMES[config_id]}): stages '
        f'{",".join(map(str, stages))}; VQ-VAE {cfg["n_epochs"]} epochs, '
        f'prior {cfg["n_epochs_2"]} epochs')
    log(f'device: {ctx.device} | data root: {ctx.data_root} | work dir: '
        f'{ctx.work_dir} | seed: {ctx.seed}')
    if ctx.device.type == 'cpu' and config_id < 5:
        log('note: the tutorial sized this config for a GPU: on a 2-core CPU '
            'config 0 takes about 7 hours, configs 1-4 days. '
            '`-c 5` runs all four stages on a CPU')


def run(args, argv):
    configure_threads(args.threads)
    stages = parse_stages(args.stages)
    cfg = load_cfg(args.c, args.cfg_options, check_seed(args.seed))
    ctx = RunContext(cfg, pick_device(args.device, args.d), args.work_dir,
                     args.data_root, args.seed, args.resume)
    check_outputs(ctx)
    announce(ctx, args.c, stages)
    prepare_work_dir(ctx, argv)
    seed_everything(ctx.seed)
    vqvae, gen_model = build_models(cfg)
    dataset = cfg['dataset_type']

    # 1. Train VQVAE
    if 1 in stages:
        train_vqvae(vqvae, ctx)

    # 2. Test VQVAE by visualizing reconstructions of held-out images
    if 2 in stages:
        load_stage_input(vqvae, ctx, 'vqvae_path', 2)
        loader, _ = image_loader(ctx, 16, 'test', subset=16, shuffle=False)
        out = ctx.out(f'vqvae_reconstruct_{dataset}.jpg')
        reconstruct(vqvae, next(iter(loader)), ctx.device, dataset, out)
        log('wrote', out)

    # 3. Train the generative model (Gated PixelCNN)
    if 3 in stages:
        load_stage_input(vqvae, ctx, 'vqvae_path', 3)
        train_generative_model(vqvae, gen_model, ctx)

    # 4. Sample
    if 4 in stages:
        load_stage_input(vqvae, ctx, 'vqvae_path', 4)
        load_stage_input(gen_model, ctx, 'gen_model_path', 4)
        check_prior_matches_vqvae(ctx)
        out = ctx.out(f'vqvae_sample_{dataset}.jpg')
        sample_imgs(vqvae, gen_model, cfg['img_shape'], cfg['n_sample'],
                    ctx.device, dataset, out, sampler=cfg['sampler'],
                    temperature=cfg['temperature'], top_k=cfg['top_k'],
                    seed=ctx.seed)
        log('wrote', out)


def parse_stages(text):
    try:
        stages = sorted({int(s) for s in text.split(',') if s.strip()})
    except ValueError:
        stages = []
    if not stages or not set(stages) <= {1, 2, 3, 4}:
        raise UsageError(f'--stages takes a subset of 1,2,3,4 such as 3,4; '
                         f'got {text!r}')
    return stages


def build_parser():
    parser = argparse.ArgumentParser(
        description='Train and sample a VQ-VAE with a PixelCNN prior (the '
        "tutorial's four stages).")
    add_common_args(parser)
    parser.add_argument('--stages', default='1,2,3,4',
                        help='comma-separated subset of 1,2,3,4 to run '
                        '(default: %(default)s)')
    return parser


def main(argv=None):
    argv = sys.argv if argv is None else ['main.py'] + list(argv)
    args = build_parser().parse_args(argv[1:])
    try:
        code = report_errors(lambda: run(args, argv), args.debug)
    finally:
        unlock_work_dir(args.work_dir)
    if code:
        sys.exit(code)


if __name__ == '__main__':
    main()
