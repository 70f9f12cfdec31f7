"""The torchrun launchers on 2 CPU processes (gloo), on tiny data.

Each launcher runs once, for one optimizer step per rank (batch b per rank,
2b training images), and is checked three ways:
- the checkpoint exists, written once, and loads into the single-process model;
- the printed epoch loss is the mean over all 2b samples of the loss of the
  initial model (rebuilt here from the same seed), which differs from rank
  0's own mean, so a loop that reported only rank 0's loss, or summed the
  ranks' losses, fails;
- the parameters equal those of one single-process step (main.py) on the same
  2b samples. This holds exactly (up to float summation order) only when no
  layer mixes samples of a batch: the VQ-VAE has no BatchNorm, and the prior
  runs with pixelcnn_bn=False (with BatchNorm each rank normalises with its own
  batch statistics, so a DDP step is not a 2b-batch step).
"""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from dldemos.VQVAE import dist_train_pixelcnn, main as main_mod
from dldemos.VQVAE.runtime.files import load_file, load_model
from dldemos.VQVAE.loading.code_cache import cache_path
from dldemos.VQVAE.configs import get_cfg
from dldemos.VQVAE.dataset import get_dataset
from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.runtime.config_check import apply_overrides
from dldemos.VQVAE.runtime.logs import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = 8  # batch per rank; 2 ranks -> 2B training images, one step each
TINY = ['dim=8', 'n_embedding=8', 'num_workers=0', 'eval_subset=0',
        f'train_subset={2 * B}', 'n_epochs=1', 'n_epochs_2=1', 'lr=1e-3',
        'lr_2=1e-3', 'pixelcnn_n_blocks=1', 'pixelcnn_dim=8',
        'pixelcnn_linear_dim=8', 'pixelcnn_bn=False']
LOSS_LINE = re.compile(r'^epoch 0 loss: (\S+)', re.M)


def tiny_cfg(*extra):
    return apply_overrides(get_cfg(5), TINY + list(extra))


def torchrun(script, args, timeout=240, ok=True):
    """2 processes on this machine; returns stdout + stderr."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node=2', os.path.join(REPO, 'dldemos', 'VQVAE',
                                              script)] + args
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert (r.returncode == 0) == ok, out[-3000:]
    return out


def test_bad_config_key_is_said_once_by_rank_0(tmp_path):
    out = torchrun('dist_train_vqvae.py',
                   ['-c', '5', '--device', 'cpu', '--work-dir',
                    str(tmp_path), '--cfg-options', 'no_such_key=1'],
                   ok=False)
    errors = [line for line in out.splitlines()
              if line.startswith('error')]
    assert len(errors) == 1 and 'no_such_key' in errors[0], out[-3000:]


def test_a_missing_vqvae_is_said_once_and_nothing_is_written(tmp_path):
    """Stage 3 without its VQ-VAE: every rank finds it missing, rank 0 says
    so, before the work dir is made."""
    work = tmp_path / 'wd'
    out = torchrun('dist_train_pixelcnn.py',
                   ['-c', '5', '--device', 'cpu', '--work-dir', str(work),
                    '--cfg-options', *TINY], ok=False)
    errors = [line for line in out.splitlines()
              if line.startswith('error')]
    assert len(errors) == 1 and 'VQ-VAE checkpoint' in errors[0], \
        out[-3000:]
    # (torchrun prints its own ChildFailedError summary: none of ours)
    assert not any('File "' in line and 'dldemos' in line
                   for line in out.splitlines())
    assert not work.exists()


def printed_loss(out, log_path):
    """The epoch's loss: printed once (rank 0 only), rounded; exact in the
    JSONL log."""
    losses = LOSS_LINE.findall(out)
    assert len(losses) == 1, f'expected one loss line (rank 0 only):\n{out}'
    logged = read_jsonl(log_path)[0]['loss']
    assert float(losses[0]) == pytest.approx(logged, rel=1e-3)
    return logged


def rank_indices(n, rank):
    """The training samples rank `rank` of 2 saw in epoch 0 (seed 0)."""
    sampler = DistributedSampler(range(n), num_replicas=2, rank=rank,
                                 shuffle=True, seed=0)
    sampler.set_epoch(0)
    return list(sampler)


def train_images(data_root):
    ds = get_dataset('MNIST', (28, 28), str(data_root), 'train')
    return torch.stack([ds[i] for i in range(2 * B)])  # [2B, 1, 28, 28]


def assert_one_step_equal(ddp_state, single_state, init_state):
    moved = max((single_state[k] - init_state[k]).abs().max().item()
                for k in init_state)
    assert moved > 1e-4  # the step did something the comparison can see
    for k in single_state:
        torch.testing.assert_close(ddp_state[k], single_state[k], rtol=1e-4,
                                   atol=1e-6, msg=k)


def assert_global_mean(printed, per_sample):
    """printed: the loop's epoch loss; per_sample: [2B] losses."""
    true_mean = per_sample.mean().item()
    rank0_mean = per_sample[rank_indices(2 * B, 0)].mean().item()
    # the data must tell the two apart for this check to mean anything
    assert abs(rank0_mean - true_mean) > 1e-3 * abs(true_mean)
    assert printed == pytest.approx(true_mean, rel=1e-5)


@pytest.mark.slow
def test_vqvae_launcher_2_processes(tiny_data_root, tmp_path):
    cfg = tiny_cfg()
    common = ['-c', '5', '--data-root', str(tiny_data_root), '--seed', '0']
    out = torchrun('dist_train_vqvae.py',
                   common + ['--work-dir', str(tmp_path / 'ddp'),
                             '--cfg-options'] + TINY + [f'batch_size={B}'])
    main_mod.main(common + ['--stages', '1', '--work-dir',
                            str(tmp_path / 'single'), '--cfg-options'] + TINY
                  + [f'batch_size={2 * B}'])

    ckpt = tmp_path / 'ddp' / cfg['vqvae_path']
    ddp_vqvae, _ = build_models(cfg)
    load_model(ddp_vqvae, str(ckpt))  # a plain, unwrapped state dict
    assert not any(k.startswith('module.') for k in load_file(str(ckpt)))
    assert not list((tmp_path / 'ddp').glob('.*tmp*'))  # atomic writes

    torch.manual_seed(0)  # what rank 0 (seed 0 + rank 0) built
    init, _ = build_models(cfg)
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    x = train_images(tiny_data_root)
    with torch.no_grad():
        x_hat, ze, zq = init(x)
    dims = (1, 2, 3)
    per_sample = ((x - x_hat)**2).mean(dims) + \
        (1 + 0.25) * ((ze - zq)**2).mean(dims)  # l_w_embedding, commitment
    logged = printed_loss(out, tmp_path / 'ddp' / 'log_vqvae.jsonl')
    assert_global_mean(logged, per_sample)

    single = load_file(str(tmp_path / 'single' / cfg['vqvae_path']))
    assert_one_step_equal(ddp_vqvae.state_dict(), single, init_state)


def make_vqvae_ckpt(cfg, data_root, path):
    """A VQ-VAE whose codebook is drawn from the encoder's outputs, so the
    images get varied codes (a fresh codebook maps almost all to one)."""
    torch.manual_seed(1)
    vqvae, _ = build_models(cfg)
    with torch.no_grad():
        ze = vqvae.encoder(train_images(data_root))  # [2B, C, h, w]
        z = ze.permute(0, 2, 3, 1).reshape(-1, ze.shape[1])
        pick = torch.randperm(z.shape[0])[:cfg['n_embedding']]
        vqvae.vq_embedding.weight.copy_(z[pick])
    torch.save(vqvae.state_dict(), path)


@pytest.mark.slow
def test_pixelcnn_launcher_2_processes(tiny_data_root, tmp_path):
    cfg = tiny_cfg()
    for d in ('ddp', 'single'):
        (tmp_path / d).mkdir()
    make_vqvae_ckpt(cfg, tiny_data_root, tmp_path / 'ddp' / cfg['vqvae_path'])
    shutil.copy(tmp_path / 'ddp' / cfg['vqvae_path'], tmp_path / 'single')
    common = ['-c', '5', '--data-root', str(tiny_data_root), '--seed', '0']
    out = torchrun('dist_train_pixelcnn.py',
                   common + ['--work-dir', str(tmp_path / 'ddp'),
                             '--cfg-options'] + TINY + [f'batch_size_2={B}'])
    main_mod.main(common + ['--stages', '3', '--work-dir',
                            str(tmp_path / 'single'), '--cfg-options'] + TINY
                  + [f'batch_size_2={2 * B}'])

    _, ddp_gen = build_models(cfg)
    load_model(ddp_gen, str(tmp_path / 'ddp' / cfg['gen_model_path']))

    torch.manual_seed(0)  # rank 0 built the VQ-VAE, then the prior
    _, init = build_models(cfg)
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    codes = load_file(cache_path(str(tmp_path / 'ddp' / cfg['vqvae_path']),
                                 'train', 2 * B))['codes'].long()  # [2B, h, w]
    assert codes.shape[0] == 2 * B
    with torch.no_grad():
        logits = init(codes)  # [2B, K, h, w]
    per_sample = F.cross_entropy(logits, codes, reduction='none').mean((1, 2))
    logged = printed_loss(out, tmp_path / 'ddp' / 'log_pixelcnn.jsonl')
    assert_global_mean(logged, per_sample)

    single = load_file(str(tmp_path / 'single' / cfg['gen_model_path']))
    assert_one_step_equal(ddp_gen.state_dict(), single, init_state)


def test_launcher_outside_torchrun_says_how(monkeypatch, capsys):
    monkeypatch.delenv('RANK', raising=False)
    with pytest.raises(SystemExit) as e:
        dist_train_pixelcnn.main(['-c', '5'])
    assert e.value.code == 2
    assert 'torchrun --nproc_per_node' in capsys.readouterr().err
