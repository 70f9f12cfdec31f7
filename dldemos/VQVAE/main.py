"""Train a VQ-VAE, then a Gated PixelCNN prior over its codes: the tutorial's
four stages (1. train VQ-VAE, 2. reconstruct, 3. train PixelCNN, 4. sample).

    python dldemos/VQVAE/main.py -c 0                   # MNIST, all stages
    python dldemos/VQVAE/main.py -c 5                   # quick MNIST on a CPU
    python dldemos/VQVAE/main.py -c 4 --stages 3,4      # prior only
    python dldemos/VQVAE/main.py -c 0 --cfg-options n_epochs=5 train_subset=1000
    python dldemos/VQVAE/main.py -c 0 --resume          # continue a stopped run

Outputs go to --work-dir (default work_dirs/): checkpoints and resume
points, vqvae_reconstruct_{dataset}.jpg, vqvae_sample_{dataset}.jpg, config,
command, per-epoch logs, loss_curves.png, previews/. Ctrl-C / SIGTERM saves a
resume point (exit 130); bad input is one line (exit 2). The torchrun
launchers run the same two training functions.
"""
import argparse
import os
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))
    from dldemos.utils.threads import passive_wait, stop_quietly
    stop_quietly()  # Ctrl-C / SIGTERM while importing: one line, exit 130
    passive_wait()  # before torch loads OpenMP: idle threads sleep, not spin

import torch
import torch.nn as nn

from dldemos.VQVAE.loading.loaders import image_loader, prior_loader
from dldemos.VQVAE.model import VQVAE
from dldemos.VQVAE.plots import preview_reconstruction, save_grid
from dldemos.VQVAE.runtime.build import (autocast, build_models,
                                         prepare_for_training)
from dldemos.VQVAE.runtime.cli import add_common_args, parse_stages
from dldemos.VQVAE.runtime.context import (RunContext,
                                           check_prior_matches_vqvae,
                                           load_stage_input, vqvae_provenance)
from dldemos.VQVAE.runtime.logs import StageTimer, log, log_batch_size
from dldemos.VQVAE.runtime.setup import run_entry, start_run
from dldemos.VQVAE.sampling import grid_labels, sample
from dldemos.VQVAE.training.codebook import CodebookTrainer
from dldemos.VQVAE.training.epoch_runner import Stage, run_epochs
from dldemos.VQVAE.training.monitor import prior_hooks, vqvae_hooks


# ------------------------------------------------------ 1. train the VQ-VAE
def train_vqvae(vqvae: VQVAE, ctx: RunContext):
    cfg, device = ctx.cfg, ctx.device
    log_batch_size(cfg['batch_size'])  # per process under torchrun
    # under torchrun the sampler shards the data over the ranks
    dataloader, sampler = image_loader(ctx, cfg['batch_size'],
                                       subset=cfg['train_subset'],
                                       sharded=True)
    # `model` runs the step (DDP / compiled as configured); the optimizer and
    # checkpoints hold `vqvae` itself
    model = prepare_for_training(vqvae, cfg, device)
    model.train()
    # codebook options (restarts, EMA updates, k-means init; off: tutorial)
    codebook = CodebookTrainer(cfg).to(device)
    # the tutorial's optimizer; lr comes from the config (and lr_schedule),
    # never from a resume point, so a diverged run can go on with a lower one
    optimizer = torch.optim.Adam(codebook.optimized(vqvae), cfg['lr'])
    mse_loss = nn.MSELoss()

    def train_step(x):
        x = x.to(device, non_blocking=True)
        codebook.before_step(vqvae, x)  # k-means init at the first step
        with autocast(cfg, device):
            x_hat, ze, zq = model(x)
        # the paper's three terms, in fp32 even under bf16 autocast:
        # reconstruction; embedding (moves each code towards the encoder
        # outputs it stands for); commitment (keeps ze near its code)
        l_reconstruct = mse_loss(x, x_hat.float())
        l_embedding = mse_loss(ze.detach().float(), zq.float())
        l_commitment = mse_loss(ze.float(), zq.detach().float())
        loss = l_reconstruct + \
            codebook.l_w_embedding * l_embedding + \
            cfg['l_w_commitment'] * l_commitment
        # set_to_none: no memset of the gradients, same update
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        codebook.after_step(vqvae, ze.detach())  # EMA update, restarts
        # ze goes to the progress bar, which counts the codes in use
        return (loss, l_reconstruct, l_embedding, l_commitment), \
            x.shape[0], ze.detach()

    # everything around the step (resume, sums over ranks, Ctrl-C, held-out
    # scores, checkpoints, logs, previews) is the epoch runner's
    stage = Stage('VQ-VAE', vqvae, optimizer, ctx.ckpt('vqvae_path'),
                  'n_epochs', 'log_vqvae.jsonl',
                  ('loss', 'reconstruct', 'embedding', 'commitment'),
                  train_state=codebook, **vqvae_hooks(ctx, vqvae))
    run_epochs(ctx, stage, dataloader, sampler, train_step)


# ------------------------------------------------------ 2. reconstruct
def reconstruct(model, x, device, dataset_type='MNIST',
                out_path='work_dirs/vqvae_reconstruct_MNIST.jpg'):
    """Originals and reconstructions side by side (left, right)."""
    model.to(device)
    model.eval()  # inference, as in the tutorial
    preview_reconstruction(model, x.to(device), out_path, dataset_type)


# ------------------------------------------------------ 3. train the prior
def train_generative_model(vqvae: VQVAE, model, ctx: RunContext):
    cfg, device = ctx.cfg, ctx.device
    log_batch_size(cfg['batch_size_2'])
    # the VQ-VAE is frozen here: it only turns images into codes
    vqvae.to(device).eval()
    # codes (and, for a class-conditional prior, labels): from the code
    # cache by default, or encoded every batch as the tutorial does
    dataloader, sampler, to_codes = prior_loader(ctx, vqvae)
    net = prepare_for_training(model, cfg, device)  # see train_vqvae
    net.train()
    # lr_2 is the tutorial's hard-coded 1e-3, now a config key
    optimizer = torch.optim.Adam(model.parameters(), cfg['lr_2'])
    # codes are categories: a K-way cross-entropy at every latent position
    loss_fn = nn.CrossEntropyLoss()

    def train_step(batch):
        with torch.no_grad():  # codes are the input and the target
            x, y = to_codes(batch)  # [N, h, w], [N] or None
        with autocast(cfg, device):
            # [N, K, h, w] logits of every position (given each class)
            predict_x = net(x) if y is None else net(x, y)
        # the PixelCNN's masks let position (i, j) see only the codes before
        # it in raster order, so predicting x from x is no cheat
        loss = loss_fn(predict_x.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return (loss,), x.shape[0], None

    # the prior models the codes of this exact VQ-VAE: recorded, so that a
    # resume after the VQ-VAE was retrained starts the prior afresh
    stage = Stage('PixelCNN', model, optimizer, ctx.ckpt('gen_model_path'),
                  'n_epochs_2', 'log_pixelcnn.jsonl', ('loss',),
                  provenance=vqvae_provenance(ctx),
                  **prior_hooks(ctx, vqvae, model))
    run_epochs(ctx, stage, dataloader, sampler, train_step)


# ------------------------------------------------------ 4. sample
def sample_imgs(vqvae: VQVAE, gen_model, img_shape, n_sample=81,
                device='cuda', dataset_type='MNIST',
                out_path='work_dirs/vqvae_sample_MNIST.jpg', **sampling):
    """n_sample new images in one grid; `sampling`: sampler, temperature,
    top_k, seed (see sampling.sample). A class-conditional prior draws a
    grid of one row per class instead, max(1, n_sample // n_classes) wide."""
    vqvae = vqvae.to(device)
    vqvae.eval()
    # sample() puts the prior in eval mode (batch norm's running statistics)
    gen_model = gen_model.to(device)
    n_classes = gen_model.n_classes
    labels = None
    if n_classes is not None:  # classes in order: row c shows class c
        labels = grid_labels(n_classes, n_sample)  # [n_classes * columns]
        n_sample = len(labels)
    imgs = sample(vqvae, gen_model, img_shape, n_sample, device,
                  labels=labels, **sampling)
    save_grid(imgs, out_path, dataset_type, labels=labels)
    return imgs


# ------------------------------------------------------ the run
def run(args, argv):
    stages = parse_stages(args.stages)
    # every check that can fail runs before the work dir is written to;
    # same seed, same run: on a CPU two runs give identical checkpoints
    ctx = start_run(args, argv, stages)
    cfg, device = ctx.cfg, ctx.device
    vqvae, gen_model = build_models(cfg)
    dataset = cfg['dataset_type']
    timer = StageTimer(stages)  # prints each stage's wall time as it ends

    # 1. Train VQVAE
    if timer.runs(1, 'train VQ-VAE'):
        train_vqvae(vqvae, ctx)

    # 2. Test VQVAE by visualizing reconstructions of held-out images
    if timer.runs(2, 'reconstruct'):
        load_stage_input(vqvae, ctx, 'vqvae_path', 2)
        loader, _ = image_loader(ctx, 16, 'test', subset=16, shuffle=False)
        out = ctx.out(f'vqvae_reconstruct_{dataset}.jpg')
        reconstruct(vqvae, next(iter(loader)), device, dataset, out)
        log('wrote', out)

    # 3. Train the generative model (Gated PixelCNN)
    if timer.runs(3, 'train PixelCNN'):
        # from the checkpoint, not stage 1's last weights in memory: stage 3
        # can run alone (--stages 3,4) and sees exactly what was saved
        load_stage_input(vqvae, ctx, 'vqvae_path', 3)
        train_generative_model(vqvae, gen_model, ctx)

    # 4. Sample
    if timer.runs(4, 'sample'):
        load_stage_input(vqvae, ctx, 'vqvae_path', 4)
        load_stage_input(gen_model, ctx, 'gen_model_path', 4)
        # a prior sampled through another VQ-VAE's decoder gives noise
        check_prior_matches_vqvae(ctx)
        out = ctx.out(f'vqvae_sample_{dataset}.jpg')
        sample_imgs(vqvae, gen_model, cfg['img_shape'], cfg['n_sample'],
                    device, dataset, out, sampler=cfg['sampler'],
                    temperature=cfg['temperature'], top_k=cfg['top_k'],
                    seed=ctx.seed)
        log('wrote', out)
    timer.runs(None)


def build_parser():
    parser = argparse.ArgumentParser(
        description='Train and sample a VQ-VAE with a PixelCNN prior (the '
        "tutorial's four stages).",
        epilog='Configs 0-4 are the tutorial\'s and want a GPU; on a CPU '
        'start with -c 5 (all four stages in minutes). Then score the run '
        'with evaluate.py and the same -c, --work-dir and --cfg-options.')
    return add_common_args(parser, stages=True)


def main(argv=None):
    argv = sys.argv if argv is None else ['main.py'] + list(argv)
    args = build_parser().parse_args(argv[1:])
    # bad input: one line and exit code 2; a stop: exit code 130
    run_entry(lambda: run(args, argv), args.debug)


if __name__ == '__main__':
    main()
