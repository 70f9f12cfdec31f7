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
    from dldemos.utils.threads import passive_wait, stop_quietly
    stop_quietly()  # Ctrl-C / SIGTERM while importing: one line, exit 130
    passive_wait()  # before torch loads OpenMP: idle threads sleep, not spin

import torch
import torch.nn as nn

from dldemos.utils.dist_utils import is_dist
from dldemos.utils.errors import report_errors
from dldemos.utils.threads import configure_threads
from dldemos.VQVAE.runtime.build import autocast, build_models, prepare_for_training
from dldemos.VQVAE.runtime.checkpoint import file_sha256
from dldemos.VQVAE.training.codebook import CodebookTrainer
from dldemos.VQVAE.runtime.cli import (add_common_args, check_seed, parse_stages,
                               pick_device)
from dldemos.VQVAE.runtime.config_check import load_cfg
from dldemos.VQVAE.runtime.context import (RunContext, announce, check_outputs,
                                   check_prior_matches_vqvae,
                                   load_stage_input, prepare_work_dir,
                                   seed_everything)
from dldemos.VQVAE.training.epoch_runner import Stage, run_epochs
from dldemos.VQVAE.loading.loaders import check_data, image_loader, prior_loader
from dldemos.VQVAE.runtime.logs import StageTimer, batch_line, log
from dldemos.VQVAE.training.lr_schedule import stage_lr
from dldemos.VQVAE.model import VQVAE
from dldemos.VQVAE.training.monitor import prior_hooks, vqvae_hooks
from dldemos.VQVAE.plots import preview_reconstruction, save_grid
from dldemos.VQVAE.sampling import grid_labels, sample
from dldemos.VQVAE.runtime.work_lock import unlock_work_dir


# ------------------------------------------------------ 1. train the VQ-VAE
def train_vqvae(vqvae: VQVAE, ctx: RunContext):
    cfg, device = ctx.cfg, ctx.device
    # under torchrun batch_size is per process: say the effective batch
    log(batch_line(cfg['batch_size']))
    # the sampler shards the data over the ranks and reshuffles per epoch
    dataloader, sampler = image_loader(ctx, cfg['batch_size'],
                                       subset=cfg['train_subset'],
                                       sharded=is_dist())
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

    def step(x):
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
                  lr_at=stage_lr(cfg, '', len(dataloader)), extra=codebook,
                  **vqvae_hooks(ctx, vqvae))
    run_epochs(ctx, stage, dataloader, sampler, step)


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
    log(batch_line(cfg['batch_size_2']))
    # the VQ-VAE is frozen here: it only turns images into codes
    vqvae.to(device)
    vqvae.eval()
    # codes (and, for a class-conditional prior, labels): from the code
    # cache by default, or encoded every batch as the tutorial does
    dataloader, sampler, to_codes = prior_loader(ctx, vqvae)
    net = prepare_for_training(model, cfg, device)  # see train_vqvae
    net.train()
    # lr_2 is the tutorial's hard-coded 1e-3, now a config key
    optimizer = torch.optim.Adam(model.parameters(), cfg['lr_2'])
    # codes are categories: a K-way cross-entropy at every latent position
    loss_fn = nn.CrossEntropyLoss()

    def step(batch):
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
    vqvae_sha = file_sha256(ctx.ckpt('vqvae_path'))
    stage = Stage('PixelCNN', model, optimizer, ctx.ckpt('gen_model_path'),
                  'n_epochs_2', 'log_pixelcnn.jsonl', ('loss',),
                  provenance={'vqvae_sha256': vqvae_sha},
                  lr_at=stage_lr(cfg, '_2', len(dataloader)),
                  **prior_hooks(ctx, vqvae, model))
    run_epochs(ctx, stage, dataloader, sampler, step)


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
    save_grid(imgs, out_path, dataset_type, n_rows=n_classes)
    return imgs


# ------------------------------------------------------ the run
def run(args, argv):
    configure_threads(args.threads)
    stages = parse_stages(args.stages)
    cfg = load_cfg(args.c, args.cfg_options, check_seed(args.seed))
    ctx = RunContext(cfg, pick_device(args.device, args.d), args.work_dir,
                     args.data_root, args.seed, args.resume)
    # every check that can fail runs before the work dir is written to
    check_outputs(ctx)
    announce(ctx, args.c, stages)
    check_data(ctx, stages)  # no data: nothing written yet
    prepare_work_dir(ctx, argv)
    # same seed, same run: on a CPU two runs give identical checkpoints
    seed_everything(ctx.seed)
    vqvae, gen_model = build_models(cfg)
    dataset = cfg['dataset_type']
    stage = StageTimer(stages)  # prints each stage's wall time as it ends

    # 1. Train VQVAE
    if stage.runs(1, 'train VQ-VAE'):
        train_vqvae(vqvae, ctx)

    # 2. Test VQVAE by visualizing reconstructions of held-out images
    if stage.runs(2, 'reconstruct'):
        load_stage_input(vqvae, ctx, 'vqvae_path', 2)
        loader, _ = image_loader(ctx, 16, 'test', subset=16, shuffle=False)
        out = ctx.out(f'vqvae_reconstruct_{dataset}.jpg')
        reconstruct(vqvae, next(iter(loader)), ctx.device, dataset, out)
        log('wrote', out)

    # 3. Train the generative model (Gated PixelCNN)
    if stage.runs(3, 'train PixelCNN'):
        # from the checkpoint, not stage 1's last weights in memory: stage 3
        # can run alone (--stages 3,4) and sees exactly what was saved
        load_stage_input(vqvae, ctx, 'vqvae_path', 3)
        train_generative_model(vqvae, gen_model, ctx)

    # 4. Sample
    if stage.runs(4, 'sample'):
        load_stage_input(vqvae, ctx, 'vqvae_path', 4)
        load_stage_input(gen_model, ctx, 'gen_model_path', 4)
        # a prior sampled through another VQ-VAE's decoder gives noise
        check_prior_matches_vqvae(ctx)
        out = ctx.out(f'vqvae_sample_{dataset}.jpg')
        sample_imgs(vqvae, gen_model, cfg['img_shape'], cfg['n_sample'],
                    ctx.device, dataset, out, sampler=cfg['sampler'],
                    temperature=cfg['temperature'], top_k=cfg['top_k'],
                    seed=ctx.seed)
        log('wrote', out)
    stage.runs(None)


def build_parser():
    parser = argparse.ArgumentParser(
        description='Train and sample a VQ-VAE with a PixelCNN prior (the '
        "tutorial's four stages).",
        epilog='Configs 0-4 are the tutorial\'s and want a GPU; on a CPU '
        'start with -c 5 (all four stages in minutes). Then score the run '
        'with evaluate.py and the same -c, --work-dir and --cfg-options.')
    add_common_args(parser)
    parser.add_argument('--stages', default='1,2,3,4', metavar='LIST',
                        help='comma-separated subset of 1,2,3,4 to run: '
                        '1 train VQ-VAE, 2 reconstruct, 3 train prior, '
                        '4 sample (default: %(default)s)')
    return parser


def main(argv=None):
    argv = sys.argv if argv is None else ['main.py'] + list(argv)
    args = build_parser().parse_args(argv[1:])
    try:  # bad input: one line and exit code 2; a stop: exit code 130
        code = report_errors(lambda: run(args, argv), args.debug)
    finally:  # the next run in this work dir must not find it locked
        unlock_work_dir(args.work_dir)
    if code:
        sys.exit(code)


if __name__ == '__main__':
    main()
