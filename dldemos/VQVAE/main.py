"""Train a VQ-VAE, then a Gated PixelCNN prior over its codes (the tutorial's
four stages: train VQ-VAE, reconstruct, train PixelCNN, sample).

    python dldemos/VQVAE/main.py -c 0                   # MNIST, all stages
    python dldemos/VQVAE/main.py -c 5                   # quick MNIST on a CPU
    python dldemos/VQVAE/main.py -c 4 --stages 3,4      # prior only
    python dldemos/VQVAE/main.py -c 0 --cfg-options n_epochs=5 train_subset=1000
    python dldemos/VQVAE/main.py -c 0 --resume          # continue a stopped run

Outputs go to --work-dir (default work_dirs/): checkpoints, their resume
points, vqvae_reconstruct_{dataset}.jpg, vqvae_sample_{dataset}.jpg,
config.json, command.txt, per-epoch logs (log_vqvae.jsonl,
log_pixelcnn.jsonl), loss_curves.png and previews/ (grids every
preview_every epochs). Ctrl-C or SIGTERM saves a resume point and exits with
code 130; bad input exits with code 2 and one line (--debug: traceback). The
training loops below are also what the torchrun launchers run.
"""
import argparse
import math
import os
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dldemos.dist_utils import (all_reduce_sum, barrier, get_world_size,
                                is_dist, is_main)
from dldemos.VQVAE import code_cache
from dldemos.VQVAE.checkpoint import (load_model, load_training_state,
                                      resume_path,
                                      rng_state, save_training_state)
from dldemos.VQVAE.dataset import get_dataloader, get_dataset
from dldemos.VQVAE.metrics import prior_nll, vqvae_heldout
from dldemos.VQVAE.model import VQVAE
from dldemos.VQVAE.pixelcnn_model import PixelCNNWithEmbedding
from dldemos.VQVAE.plots import (preview_path, preview_reconstruction,
                                 preview_samples, save_grid,
                                 update_loss_plot)
from dldemos.VQVAE.runtime import (Interrupted, NonFiniteLoss, StopFlag,
                                   UsageError, add_common_args, append_jsonl,
                                   ckpt_path, load_cfg, log, pick_device,
                                   prepare_work_dir, report_errors,
                                   seed_everything, start_jsonl, timer)
from dldemos.VQVAE.sampling import sample_images


# ----------------------------------------------------------------- helpers
def build_models(cfg):
    img_shape = cfg['img_shape']
    vqvae = VQVAE(img_shape[0], cfg['dim'], cfg['n_embedding'])
    gen_model = PixelCNNWithEmbedding(cfg['pixelcnn_n_blocks'],
                                      cfg['pixelcnn_dim'],
                                      cfg['pixelcnn_linear_dim'],
                                      cfg['pixelcnn_bn'], cfg['n_embedding'])
    return vqvae, gen_model


def image_loader(cfg, data_root, batch_size, split='train', subset=None,
                 shuffle=True, seed=0, device=torch.device('cpu'),
                 dist_train=False):
    """(loader, sampler) of the config's images; the sampler has set_epoch."""
    out = get_dataloader(cfg['dataset_type'], batch_size,
                         img_shape=tuple(cfg['img_shape'][1:]),
                         dist_train=dist_train,
                         num_workers=cfg['num_workers'],
                         use_lmdb=cfg['use_lmdb'], data_root=data_root,
                         split=split, subset=subset, shuffle=shuffle,
                         seed=seed, pin_memory=device.type == 'cuda')
    return out if dist_train else (out, out.sampler)


def prepare_for_training(model, cfg, device):
    """Move to device; channels_last / DDP / torch.compile as configured."""
    model.to(device)
    if cfg['channels_last'] and device.type == 'cuda':
        model.to(memory_format=torch.channels_last)
    if is_dist():
        model = DistributedDataParallel(
            model, device_ids=[device] if device.type == 'cuda' else None)
    if cfg['compile']:
        model = torch.compile(model)
    return model


def autocast(cfg, device):
    # bf16 needs no loss scaling; the quantizer keeps its distances in fp32
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=bool(cfg['amp']) and device.type == 'cuda')


def stop_requested(stop, device):
    """True on every rank once any rank got a signal, so all stop together.
    In one process no tensor is made: a host-to-GPU copy per step would
    make the CPU wait for the GPU."""
    if not is_dist():
        return bool(stop)
    flag = torch.tensor([float(bool(stop))], device=device)
    return bool(all_reduce_sum(flag) > 0)


def progress(loader, e, n_epochs, name, done=0, total=None):
    return tqdm(loader, desc=f'{name} {e + 1}/{n_epochs}', leave=False,
                initial=done, total=total, disable=not is_main(),
                dynamic_ncols=True)


def remaining_batches(loader, sampler, skip):
    """The batches of this epoch after the first `skip` (a mid-epoch resume):
    the sampler's order of this epoch, without loading the skipped images."""
    if not skip:
        return loader
    indices = list(sampler)[skip * loader.batch_size:]
    return DataLoader(loader.dataset, batch_size=loader.batch_size,
                      sampler=indices, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory,
                      collate_fn=loader.collate_fn,
                      drop_last=loader.drop_last)


def check_finite(values, what, path):
    if not all(math.isfinite(v) for v in values):
        raise NonFiniteLoss(
            f'{what} loss became {values[0]}: training stopped; the last good '
            f'checkpoint {path} is kept. Lower the learning rate (lr) or '
            'turn off amp and run again with --resume')


def resume_or_start(path, model, optimizer, resume, what, cfg):
    """(epoch, step, sums) to start from. --resume on a stage that never
    wrote anything starts it from scratch, so `--resume` can rerun all
    stages of a run that was stopped in stage 1."""
    if resume and (os.path.exists(resume_path(path)) or
                   os.path.exists(path)):
        epoch, step, sums = load_training_state(path, model, optimizer, cfg)
        log(f'resuming {what} at epoch {epoch} step {step}')
        return epoch, step, sums
    if resume:
        log(f'no {what} checkpoint {path} yet: training it from scratch')
    return 0, 0, []


def stop_with_resume_point(path, model, optimizer, cfg, epoch, step, sums,
                           rng, what):
    """A signal arrived: save where to go on from, then stop cleanly.

    `sums` (this rank's running sums) are summed over the ranks first, so the
    resume point holds the global sums and every rank sees the same check.
    """
    if len(sums):
        sums = all_reduce_sum(sums).tolist()
    check_finite(sums, what, path)  # never replace good weights by NaNs
    if is_main():
        save_training_state(path, model, optimizer, cfg, epoch, step, sums,
                            rng)
    barrier()
    raise Interrupted(f'stopped in {what} epoch {epoch}; resume point saved '
                      f'in {path}: rerun with --resume to go on')


def preview_images(cfg, data_root):
    """The first few held-out images, read without a DataLoader (which would
    draw from the global RNG)."""
    dataset = get_dataset(cfg['dataset_type'], tuple(cfg['img_shape'][1:]),
                          data_root, 'test', cfg['use_lmdb'])
    n = min(cfg['n_preview'], len(dataset))
    return torch.stack([dataset[i] for i in range(n)])  # [n, C, H, W]


# ----------------------------------------------------------------- stage 1
def train_vqvae(vqvae: VQVAE, cfg, device, work_dir='work_dirs',
                data_root='data', seed=0, resume=False):
    path = ckpt_path(cfg, 'vqvae_path', work_dir)
    log('batch size:', cfg['batch_size'], 'x', get_world_size(), 'ranks')
    dataloader, sampler = image_loader(cfg, data_root, cfg['batch_size'],
                                       subset=cfg['train_subset'], seed=seed,
                                       device=device, dist_train=is_dist())
    heldout = None
    if cfg['eval_subset']:
        heldout, _ = image_loader(cfg, data_root, cfg['batch_size'], 'test',
                                  subset=cfg['eval_subset'], shuffle=False)
    preview_every = cfg['preview_every'] if cfg['n_preview'] else 0
    if preview_every and is_main():
        preview_x = preview_images(cfg, data_root).to(device)
    model = prepare_for_training(vqvae, cfg, device)
    model.train()
    optimizer = torch.optim.Adam(vqvae.parameters(), cfg['lr'])
    mse_loss = nn.MSELoss()
    start_epoch, start_step, start_sums = resume_or_start(
        path, vqvae, optimizer, resume, 'VQ-VAE', cfg)
    log_path = os.path.join(work_dir, 'log_vqvae.jsonl')
    start_jsonl(log_path, start_epoch)
    n_epochs = cfg['n_epochs']
    tic = timer()
    with StopFlag() as stop:
        for e in range(start_epoch, n_epochs):
            sampler.set_epoch(e)
            skip = start_step if e == start_epoch else 0
            # a resume point saved mid-epoch restores the RNG as it was here,
            # so the resumed run draws exactly what this one draws
            epoch_rng = rng_state()
            epoch_tic, n_seen = timer(), 0
            # sum over samples of: loss, reconstruction, embedding,
            # commitment, and the sample count
            sums = torch.zeros(5, device=device)
            one = torch.ones((), device=device)  # counts samples in sums
            if skip and is_main():  # saved sums are global: add them once
                sums += torch.tensor(start_sums, device=device)
            bar = progress(remaining_batches(dataloader, sampler, skip), e,
                           n_epochs, 'vqvae', skip, len(dataloader))
            for step, x in enumerate(bar, start=skip):
                x = x.to(device, non_blocking=True)
                with autocast(cfg, device):
                    x_hat, ze, zq = model(x)
                l_reconstruct = mse_loss(x, x_hat.float())
                l_embedding = mse_loss(ze.detach().float(), zq.float())
                l_commitment = mse_loss(ze.float(), zq.detach().float())
                loss = l_reconstruct + \
                    cfg['l_w_embedding'] * l_embedding + \
                    cfg['l_w_commitment'] * l_commitment
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = x.shape[0]
                sums += torch.stack([loss.detach(), l_reconstruct.detach(),
                                     l_embedding.detach(),
                                     l_commitment.detach(),
                                     one]) * n
                n_seen += n
                if is_main() and step % 20 == 0:
                    # distinct codes in this batch: few means a dying codebook
                    codes = vqvae.quantize(ze.detach()).unique().numel()
                    bar.set_postfix(
                        rec=f'{l_reconstruct.item():.4f}',
                        emb=f'{l_embedding.item():.4f}',
                        com=f'{l_commitment.item():.4f}',
                        codes=f'{codes}/{cfg["n_embedding"]}',
                        img_s=f'{n_seen / (timer() - epoch_tic):.0f}')
                if stop_requested(stop, device):
                    stop_with_resume_point(path, vqvae, optimizer, cfg, e,
                                           step + 1, sums,
                                           epoch_rng, 'VQ-VAE')
            # the true mean over every sample on every rank
            totals = all_reduce_sum(sums)
            means = (totals[:4] / totals[4]).tolist()
            check_finite(means, 'VQ-VAE', path)
            toc = timer()
            record = {'epoch': e, 'loss': means[0], 'reconstruct': means[1],
                      'embedding': means[2], 'commitment': means[3],
                      'images_per_s': get_world_size() * n_seen /
                      max(toc - epoch_tic, 1e-9),
                      'elapsed_s': toc - tic}
            if is_main():
                if heldout is not None:
                    m = vqvae_heldout(vqvae, heldout, device)
                    record.update(test_mse=m['mse'], test_psnr=m['psnr'],
                                  test_codes_used=m['codes_used'])
                if (e + 1) % cfg['save_every'] == 0 or e + 1 == n_epochs:
                    save_training_state(path, vqvae, optimizer, cfg, e + 1)
                append_jsonl(log_path, record)
                print(f'epoch {e} loss: {means[0]} elapsed {(toc - tic):.2f}s'
                      + ('' if heldout is None else
                         f' | test mse {record["test_mse"]:.5f} psnr '
                         f'{record["test_psnr"]:.2f} dB codes used '
                         f'{record["test_codes_used"]}/{cfg["n_embedding"]}'),
                      flush=True)
                update_loss_plot(work_dir)
                if preview_every and (e + 1) % preview_every == 0:
                    preview_reconstruction(
                        vqvae, preview_x,
                        preview_path(work_dir, 'vqvae_reconstruct', e + 1),
                        cfg['dataset_type'])
            barrier()
            if stop_requested(stop, device):  # arrived during eval or save
                stop_with_resume_point(path, vqvae, optimizer, cfg, e + 1, 0,
                                       [], None, 'VQ-VAE')
    log('Done')


# ----------------------------------------------------------------- stage 2
def reconstruct(model, x, device, dataset_type='MNIST',
                out_path='work_dirs/vqvae_reconstruct_MNIST.jpg'):
    """Originals and reconstructions side by side (left, right)."""
    model.to(device)
    model.eval()
    preview_reconstruction(model, x.to(device), out_path, dataset_type)


# ----------------------------------------------------------------- stage 3
def code_loader(vqvae, cfg, device, work_dir, data_root, seed, split,
                subset, shuffle, batch_size):
    """(loader, sampler) over the VQ-VAE codes of a split, from the cache."""
    vqvae.to(device)

    def make_loader():
        loader, _ = image_loader(cfg, data_root, batch_size, split,
                                 subset=subset, shuffle=False, device=device)
        return loader

    key = {'dataset_type': cfg['dataset_type'],
           'img_shape': list(cfg['img_shape']), 'split': split,
           'subset': subset, 'use_lmdb': cfg['use_lmdb'],
           'data_root': os.path.abspath(data_root)}
    codes = code_cache.load_or_build(
        vqvae, ckpt_path(cfg, 'vqvae_path', work_dir), key, make_loader,
        device, lambda it: tqdm(it, desc=f'encoding {split} set',
                                leave=False, disable=not is_main()))
    dataset = torch.utils.data.TensorDataset(codes)
    # only training is sharded: held-out codes are scored whole by rank 0
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed,
                                 **({} if is_dist() and shuffle else
                                    {'num_replicas': 1, 'rank': 0}))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    return loader, sampler


def train_generative_model(vqvae: VQVAE, model, cfg, device,
                           work_dir='work_dirs', data_root='data', seed=0,
                           resume=False):
    path = ckpt_path(cfg, 'gen_model_path', work_dir)
    batch_size = cfg['batch_size_2']
    log('batch size:', batch_size, 'x', get_world_size(), 'ranks')
    vqvae.to(device)
    vqvae.eval()
    if cfg['use_code_cache']:
        dataloader, sampler = code_loader(vqvae, cfg, device, work_dir,
                                          data_root, seed, 'train',
                                          cfg['train_subset'], True,
                                          batch_size)
    else:  # the tutorial's path: encode every batch, every epoch
        dataloader, sampler = image_loader(cfg, data_root, batch_size,
                                           subset=cfg['train_subset'],
                                           seed=seed, device=device,
                                           dist_train=is_dist())
    heldout = None
    if cfg['eval_subset']:
        heldout, _ = code_loader(vqvae, cfg, device, work_dir, data_root,
                                 seed, 'test', cfg['eval_subset'], False,
                                 batch_size)
    gen_model = model
    model = prepare_for_training(gen_model, cfg, device)
    model.train()
    optimizer = torch.optim.Adam(gen_model.parameters(), cfg['lr_2'])
    loss_fn = nn.CrossEntropyLoss()
    start_epoch, start_step, start_sums = resume_or_start(
        path, gen_model, optimizer, resume, 'PixelCNN', cfg)
    log_path = os.path.join(work_dir, 'log_pixelcnn.jsonl')
    start_jsonl(log_path, start_epoch)
    preview_every = cfg['preview_every'] if cfg['n_preview'] else 0
    n_epochs = cfg['n_epochs_2']
    tic = timer()
    with StopFlag() as stop:
        for e in range(start_epoch, n_epochs):
            sampler.set_epoch(e)
            skip = start_step if e == start_epoch else 0
            epoch_rng = rng_state()  # see train_vqvae
            epoch_tic, n_seen = timer(), 0
            sums = torch.zeros(2, device=device)  # loss sum, sample count
            one = torch.ones((), device=device)
            if skip and is_main():  # saved sums are global: add them once
                sums += torch.tensor(start_sums, device=device)
            bar = progress(remaining_batches(dataloader, sampler, skip), e,
                           n_epochs, 'pixelcnn', skip, len(dataloader))
            for step, batch in enumerate(bar, start=skip):
                if cfg['use_code_cache']:
                    x = batch[0].to(device, non_blocking=True).long()
                else:
                    with torch.no_grad():  # fp32, like the code cache
                        x = vqvae.encode(batch.to(device, non_blocking=True))
                with autocast(cfg, device):
                    predict_x = model(x)  # [N, K, h, w]
                loss = loss_fn(predict_x.float(), x)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = x.shape[0]
                sums += torch.stack([loss.detach(), one]) * n
                n_seen += n
                if is_main() and step % 20 == 0:
                    bar.set_postfix(
                        ce=f'{loss.item():.4f}',
                        img_s=f'{n_seen / (timer() - epoch_tic):.0f}')
                if stop_requested(stop, device):
                    stop_with_resume_point(path, gen_model, optimizer, cfg, e,
                                           step + 1, sums,
                                           epoch_rng, 'PixelCNN')
            totals = all_reduce_sum(sums)
            mean = float(totals[0] / totals[1])
            check_finite([mean], 'PixelCNN', path)
            toc = timer()
            record = {'epoch': e, 'loss': mean,
                      'images_per_s': get_world_size() * n_seen /
                      max(toc - epoch_tic, 1e-9),
                      'elapsed_s': toc - tic}
            if is_main():
                if heldout is not None:
                    nll = prior_nll(gen_model, (b[0] for b in heldout),
                                    device)['nll_nats_per_latent']
                    record.update(test_nll=nll)
                if (e + 1) % cfg['save_every'] == 0 or e + 1 == n_epochs:
                    save_training_state(path, gen_model, optimizer, cfg, e + 1)
                append_jsonl(log_path, record)
                print(f'epoch {e} loss: {mean} elapsed {(toc - tic):.2f}s'
                      + ('' if heldout is None else
                         f' | test nll {record["test_nll"]:.4f} nats/latent '
                         f'(uniform {math.log(cfg["n_embedding"]):.4f})'),
                      flush=True)
                update_loss_plot(work_dir)
                if preview_every and (e + 1) % preview_every == 0:
                    preview_samples(
                        vqvae, gen_model, cfg,
                        preview_path(work_dir, 'pixelcnn_sample', e + 1),
                        seed, device)
            barrier()
            if stop_requested(stop, device):  # arrived during eval or save
                stop_with_resume_point(path, gen_model, optimizer, cfg, e + 1,
                                       0, [], None, 'PixelCNN')
    log('Done')


# ----------------------------------------------------------------- stage 4
def sample_imgs(vqvae: VQVAE,
                gen_model,
                img_shape,
                n_sample=81,
                device='cuda',
                dataset_type='MNIST',
                out_path='work_dirs/vqvae_sample_MNIST.jpg',
                sampler='cached',
                temperature=1.0,
                top_k=None,
                seed=None):
    vqvae = vqvae.to(device)
    vqvae.eval()
    gen_model = gen_model.to(device)
    imgs = sample_images(vqvae, gen_model, img_shape, n_sample, device,
                         sampler, temperature, top_k, seed)
    save_grid(imgs, out_path, dataset_type)
    return imgs


# ----------------------------------------------------------------- main
def build_parser():
    parser = argparse.ArgumentParser(
        description='Train and sample a VQ-VAE with a PixelCNN prior.')
    add_common_args(parser)
    parser.add_argument('--stages', default='1,2,3,4',
                        help='comma-separated subset of 1,2,3,4 to run')
    return parser


def parse_stages(text):
    try:
        stages = sorted({int(s) for s in text.split(',') if s.strip()})
    except ValueError:
        stages = []
    if not stages or not set(stages) <= {1, 2, 3, 4}:
        raise UsageError(f'--stages takes a subset of 1,2,3,4 such as 3,4; '
                         f'got {text!r}')
    return stages


def load_vqvae_for(stage, vqvae, path):
    if not os.path.isfile(path):
        raise UsageError(f'stage {stage} needs the VQ-VAE checkpoint {path}, '
                         'which does not exist: run stage 1 first '
                         '(--stages 1)')
    return load_model(vqvae, path, 'VQ-VAE checkpoint')


def run(args, argv):
    stages = parse_stages(args.stages)
    cfg = load_cfg(args)
    device = pick_device(args)
    log(f'device: {device}')
    prepare_work_dir(args.work_dir, cfg, argv)
    seed_everything(args.seed)
    vqvae, gen_model = build_models(cfg)
    vqvae_path = ckpt_path(cfg, 'vqvae_path', args.work_dir)
    gen_path = ckpt_path(cfg, 'gen_model_path', args.work_dir)
    img_shape = tuple(cfg['img_shape'])
    common = dict(work_dir=args.work_dir, data_root=args.data_root,
                  seed=args.seed, resume=args.resume)

    # 1. Train VQVAE
    if 1 in stages:
        train_vqvae(vqvae, cfg, device, **common)

    # 2. Test VQVAE by visualizing reconstructions of held-out images
    if 2 in stages:
        load_vqvae_for(2, vqvae, vqvae_path)
        loader, _ = image_loader(cfg, args.data_root, 16, 'test',
                                 subset=16, shuffle=False)
        img = next(iter(loader))
        out = os.path.join(args.work_dir,
                           f'vqvae_reconstruct_{cfg["dataset_type"]}.jpg')
        reconstruct(vqvae, img, device, cfg['dataset_type'], out)
        log('wrote', out)

    # 3. Train the generative model (Gated PixelCNN)
    if 3 in stages:
        load_vqvae_for(3, vqvae, vqvae_path)
        train_generative_model(vqvae, gen_model, cfg, device, **common)

    # 4. Sample
    if 4 in stages:
        load_vqvae_for(4, vqvae, vqvae_path)
        if not os.path.isfile(gen_path):
            raise UsageError(f'stage 4 needs the PixelCNN checkpoint '
                             f'{gen_path}, which does not exist: run stage 3 '
                             'first (--stages 3)')
        load_model(gen_model, gen_path, 'PixelCNN checkpoint')
        out = os.path.join(args.work_dir,
                           f'vqvae_sample_{cfg["dataset_type"]}.jpg')
        sample_imgs(vqvae, gen_model, img_shape, cfg['n_sample'], device,
                    cfg['dataset_type'], out, cfg['sampler'],
                    cfg['temperature'], cfg['top_k'], seed=args.seed)
        log('wrote', out)


def main(argv=None):
    argv = sys.argv if argv is None else ['main.py'] + list(argv)
    args = build_parser().parse_args(argv[1:])
    code = report_errors(lambda: run(args, argv), args.debug)
    if code:
        sys.exit(code)


if __name__ == '__main__':
    main()
