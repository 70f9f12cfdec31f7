"""Resuming: 2 epochs straight == 1 epoch + resume + 1 (both models, also
from mid-epoch), SIGTERM saves a resume point, SIGKILL loses nothing."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.training import epoch_runner
from dldemos.VQVAE.runtime.files import load_file, load_model
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.configs import get_cfg
from dldemos.VQVAE.model import VQVAE
from dldemos.VQVAE.runtime.logs import read_jsonl

REPO = Path(__file__).resolve().parents[1]
# config 5 shrunk to a few seconds on a CPU
TINY = ['dim=8', 'n_embedding=8', 'batch_size=16', 'batch_size_2=16',
        'train_subset=48', 'eval_subset=16', 'pixelcnn_n_blocks=2',
        'pixelcnn_dim=8', 'pixelcnn_linear_dim=8', 'n_sample=4',
        'n_preview=4', 'num_workers=0']
# the codebook options on (restarts happen: see restarts()); EMA, usage and
# the step count live in the resume point's extra state
CODEBOOK = ('codebook_ema=True', 'dead_code_restart=True', 'kmeans_init=True',
            'ema_decay=0.5', 'restart_threshold=60')
# lr schedules span n_epochs: only a run that keeps n_epochs resumes onto
# the same lr (the mid-epoch test)
SCHEDULES = ('lr_schedule=cosine', 'lr_schedule_2=onecycle', 'warmup=0.3')
VQ = 'model_mnist_quick.pth'
GEN = 'gen_model_mnist_quick.pth'


def run_main(data_root, work_dir, stages, *options, resume=False):
    argv = ['-c', '5', '--data-root', str(data_root), '--work-dir',
            str(work_dir), '--stages', stages, '--cfg-options', *TINY,
            *options] + (['--resume'] if resume else [])
    main_mod.main(argv)


def weights(path):
    return load_file(path)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def restarts(work_dir):
    return int(load_file(work_dir / resume_path(VQ))['extra']
               ['_extra_state'][1])


@pytest.mark.parametrize('options', [(), CODEBOOK], ids=['tutorial',
                                                          'codebook'])
@pytest.mark.parametrize('stage', ['1', '3'])
def test_two_epochs_equal_one_plus_resume_plus_one(tiny_data_root, tmp_path,
                                                   stage, options):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    key = 'n_epochs' if stage == '1' else 'n_epochs_2'
    ckpt = VQ if stage == '1' else GEN
    if stage == '3':  # both priors train on the codes of one VQ-VAE
        run_main(tiny_data_root, straight, '1', 'n_epochs=1')
        split.mkdir()
        shutil.copy(straight / VQ, split / VQ)
    run_main(tiny_data_root, straight, stage, f'{key}=2', *options)
    run_main(tiny_data_root, split, stage, f'{key}=1', *options)
    after_one = weights(split / ckpt)
    run_main(tiny_data_root, split, stage, f'{key}=2', *options,
             resume=True)
    assert_same(weights(straight / ckpt), weights(split / ckpt))
    if options and stage == '1':  # the options did act
        assert restarts(straight) == restarts(split) > 0
    # the second epoch did train: resuming did not just copy the file
    assert not all(torch.equal(v, weights(split / ckpt)[k])
                   for k, v in after_one.items())
    assert load_file(split / resume_path(ckpt))['epoch'] == 2


class StopAt:
    """Stands in for a SIGINT arriving during batch `n` (counting from 1)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, stop, device):
        self.calls += 1
        return self.calls == self.n


@pytest.mark.parametrize('options', [(), CODEBOOK + SCHEDULES],
                         ids=['tutorial', 'codebook'])
@pytest.mark.parametrize('stage', ['1', '3'])
def test_resume_from_mid_epoch_equals_straight_run(tiny_data_root, tmp_path,
                                                   monkeypatch, stage,
                                                   options):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    key = 'n_epochs' if stage == '1' else 'n_epochs_2'
    ckpt = VQ if stage == '1' else GEN
    if stage == '3':
        run_main(tiny_data_root, straight, '1', 'n_epochs=1')
        split.mkdir()
        shutil.copy(straight / VQ, split / VQ)
    run_main(tiny_data_root, straight, stage, f'{key}=2', *options)
    # 3 batches an epoch: stop after batch 2 of epoch 0
    monkeypatch.setattr(epoch_runner, 'stop_requested', StopAt(2))
    with pytest.raises(SystemExit) as exit_info:
        run_main(tiny_data_root, split, stage, f'{key}=2', *options)
    assert exit_info.value.code == 130
    state = load_file(split / resume_path(ckpt))
    assert (state['epoch'], state['step']) == (0, 2)
    monkeypatch.undo()
    run_main(tiny_data_root, split, stage, f'{key}=2', *options,
             resume=True)
    assert_same(weights(straight / ckpt), weights(split / ckpt))
    if options and stage == '1':
        assert restarts(straight) == restarts(split) > 0
    log = 'log_vqvae.jsonl' if stage == '1' else 'log_pixelcnn.jsonl'
    # one record per epoch, and epoch 0's mean includes the batches done
    # before the stop
    losses = [[(r['epoch'], r['loss']) for r in read_jsonl(d / log)]
              for d in (split, straight)]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_resume_on_a_stage_never_started_starts_it(tiny_data_root, tmp_path,
                                                   capsys):
    run_main(tiny_data_root, tmp_path, '1,3', 'n_epochs=1', 'n_epochs_2=1',
             resume=True)
    assert 'training it from scratch' in capsys.readouterr().out
    assert load_file(tmp_path / resume_path(GEN))['epoch'] == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
        tiny_data_root, tmp_path, capsys):
    run_main(tiny_data_root, tmp_path, '1', 'n_epochs=1')
    good = (tmp_path / VQ).read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        run_main(tiny_data_root, tmp_path, '1', 'n_epochs=2', 'lr=1e3',
                 resume=True)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'loss became' in err and 'last good checkpoint' in err
    assert (tmp_path / VQ).read_bytes() == good
    assert load_file(tmp_path / resume_path(VQ))['epoch'] == 1


# ------------------------------------------------------- real signals
def spawn(data_root, work_dir, *options, resume=False):
    cmd = [sys.executable, str(REPO / 'dldemos' / 'VQVAE' / 'main.py'),
           '-c', '5', '--data-root', str(data_root), '--work-dir',
           str(work_dir), '--stages', '1', '--cfg-options', *TINY,
           'eval_subset=None', 'preview_every=0', *options]
    cmd += ['--resume'] if resume else []
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path, proc, timeout=120):
    t0 = time.monotonic()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f'{path} never appeared'
        time.sleep(0.05)


def all_loadable(work_dir):
    """Every checkpoint and resume point in work_dir loads."""
    vqvae = VQVAE(1, 8, 8)
    load_model(vqvae, os.path.join(work_dir, VQ))
    state = load_file(os.path.join(work_dir, resume_path(VQ)))
    return state


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tiny_data_root, tmp_path):
    proc = spawn(tiny_data_root, tmp_path, 'n_epochs=1000')
    wait_for(tmp_path / resume_path(VQ), proc)
    time.sleep(0.5)  # well into training: saves happen every epoch
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # no half-written checkpoint under a real name (a killed save leaves at
    # most a hidden temp file, which the next save removes)
    epoch = all_loadable(tmp_path)['epoch']
    assert 1 <= epoch < 1000
    proc = spawn(tiny_data_root, tmp_path, f'n_epochs={epoch + 1}',
                 resume=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f'resuming VQ-VAE at epoch {epoch}' in out
    assert all_loadable(tmp_path)['epoch'] == epoch + 1
    assert glob.glob(str(tmp_path / '.*tmp*')) == []


@pytest.mark.slow
def test_sigterm_saves_resume_point_and_exits_130(tiny_data_root, tmp_path):
    proc = spawn(tiny_data_root, tmp_path, 'n_epochs=1000')
    wait_for(tmp_path / resume_path(VQ), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert 'resume point saved' in err and 'Traceback' not in err
    state = all_loadable(tmp_path)
    proc = spawn(tiny_data_root, tmp_path,
                 f'n_epochs={state["epoch"] + 1}', resume=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f'resuming VQ-VAE at epoch {state["epoch"]} step ' \
        f'{state["step"]}' in out
    assert all_loadable(tmp_path)['epoch'] == state['epoch'] + 1


def test_config_is_stored_in_the_resume_point(tiny_data_root, tmp_path):
    run_main(tiny_data_root, tmp_path, '1', 'n_epochs=1')
    cfg = load_file(tmp_path / resume_path(VQ))['config']
    assert cfg['n_embedding'] == 8
    # every config key, and the --seed that decides the data order
    assert set(cfg) == set(get_cfg(5)) | {'seed', 'config_id'}
    assert cfg['config_id'] == 5  # evaluate.py without -c reads it
