"""Reliability of a run: a prior retrained when its VQ-VAE changed, repeated
--cfg-options keys, one run per work dir, non-finite losses before any
checkpoint, a deleted model file on --resume, signals (SIGTERM outside the
training loops, a second Ctrl-C during the save), the DDP stop-check
cadence and DistributedSampler padding left out of the epoch mean."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from dldemos.VQVAE import evaluate
from dldemos.VQVAE.training import epoch_runner
from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.runtime.files import file_sha256, load_file
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.runtime.logs import read_jsonl

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / 'dldemos' / 'VQVAE' / 'main.py')
# config 5 (MNIST quick) shrunk: 2 batches an epoch, every stage in seconds
TINY = ['dim=8', 'n_embedding=16', 'pixelcnn_n_blocks=1', 'pixelcnn_dim=8',
        'pixelcnn_linear_dim=8', 'batch_size=16', 'batch_size_2=16',
        'train_subset=32', 'n_epochs=1', 'n_epochs_2=1', 'n_sample=4',
        'eval_subset=8', 'n_preview=2', 'num_workers=0']
VQ = 'model_mnist_quick.pth'
GEN = 'gen_model_mnist_quick.pth'


def argv_for(data_root, work_dir, *options, stages='1,2,3,4', extra=()):
    """main.py's argv: TINY with `options` in place of its keys (a key given
    twice would print a warning)."""
    keys = {o.split('=', 1)[0] for o in options}
    tiny = [o for o in TINY if o.split('=', 1)[0] not in keys]
    return ['-c', '5', '--device', 'cpu', '--data-root', str(data_root),
            '--work-dir', str(work_dir), '--stages', stages, *extra,
            '--cfg-options', *tiny, *options]


def run_main(data_root, work_dir, *options, stages='1,2,3,4', extra=()):
    main_mod.main(argv_for(data_root, work_dir, *options, stages=stages,
                           extra=extra))


def fails(capsys, data_root, work_dir, *options, stages='1,2,3,4',
          extra=()):
    """Run main.py expecting exit 2: its single stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(data_root, work_dir, *options, stages=stages, extra=extra)
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.strip() and '%|' not in line]  # tqdm bars aside
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


def changed(a, b):
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope='module')
def trained(tiny_data_root, tmp_path_factory):
    """All four stages of the tiny config, 1 epoch each (copied per test)."""
    work_dir = tmp_path_factory.mktemp('trained')
    run_main(tiny_data_root, work_dir)
    return work_dir


def copy_of(trained, tmp_path):
    work_dir = tmp_path / 'wd'
    shutil.copytree(trained, work_dir)
    return work_dir


# ------------------------------------------- a prior of a retrained VQ-VAE
def test_resume_retrains_prior_of_a_retrained_vqvae(trained, tiny_data_root,
                                                    tmp_path, capsys):
    wd = copy_of(trained, tmp_path)
    old_sha = file_sha256(wd / VQ)
    old_prior = load_file(wd / GEN)
    assert load_file(wd / resume_path(GEN))['provenance'] == \
        {'vqvae_sha256': old_sha}
    capsys.readouterr()
    # one more VQ-VAE epoch: its file changes, the prior's codes with it
    run_main(tiny_data_root, wd, 'n_epochs=2', extra=['--resume'])
    out = capsys.readouterr().out
    new_sha = file_sha256(wd / VQ)
    assert new_sha != old_sha
    assert 'resuming VQ-VAE at epoch 1' in out
    assert 'training the PixelCNN from scratch' in out
    assert 'resuming PixelCNN' not in out
    state = load_file(wd / resume_path(GEN))
    assert state['provenance']['vqvae_sha256'] == new_sha
    # trained afresh for n_epochs_2=1, not kept as "already at epoch 1"
    assert state['epoch'] == 1
    assert [r['epoch'] for r in read_jsonl(wd / 'log_pixelcnn.jsonl')] == [0]
    assert changed(old_prior, load_file(wd / GEN))


def test_stale_prior_refused_by_stage_4_and_skipped_by_evaluate(
        trained, tiny_data_root, tmp_path, capsys):
    wd = copy_of(trained, tmp_path)
    old_sha = file_sha256(wd / VQ)
    run_main(tiny_data_root, wd, 'n_epochs=2', stages='1',
             extra=['--resume'])  # the VQ-VAE alone moves on
    assert file_sha256(wd / VQ) != old_sha
    msg = fails(capsys, tiny_data_root, wd, stages='4')
    assert 'another VQ-VAE' in msg and '--stages 3' in msg
    # evaluate.py scores the VQ-VAE and says why the prior is not scored
    evaluate.main(['-c', '5', '--device', 'cpu', '--data-root',
                   str(tiny_data_root), '--work-dir', str(wd),
                   '--eval-images', '8', '--cfg-options', *TINY])
    m = json.loads((wd / 'metrics.json').read_text())
    assert m['vqvae']['mse'] > 0 and m['vqvae']['n_images'] == 8
    assert set(m['prior']) == {'skipped'}
    assert 'another VQ-VAE' in m['prior']['skipped']
    assert m['samples'] == m['prior']
    assert set(m['checkpoints']) == {'vqvae'}


# ------------------------------------------------- repeated --cfg-options
def test_repeated_cfg_option_warns_once_and_last_wins(tiny_data_root,
                                                      tmp_path, capsys):
    run_main(tiny_data_root, tmp_path, 'n_epochs=3', 'n_epochs=1',
             stages='1')
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines()
                if 'warning: --cfg-options sets n_epochs more than once'
                in line]
    assert len(warnings) == 1 and '1' in warnings[0].split('value')[-1]
    assert json.loads((tmp_path / 'config.json').read_text())['n_epochs'] \
        == 1
    assert load_file(tmp_path / resume_path(VQ))['epoch'] == 1


# ------------------------------------------------- one run per work dir
def test_second_run_in_a_locked_work_dir_names_the_holder(
        tiny_data_root, tmp_path, capsys):
    config = tmp_path / 'config.json'
    config.write_text('{"from": "the first run"}')
    holder = subprocess.Popen(
        [sys.executable, '-c',
         'import sys, time\n'
         'from dldemos.VQVAE.runtime.work_lock import lock_work_dir\n'
         'lock_work_dir(sys.argv[1])\n'
         'print("locked", flush=True)\n'
         'time.sleep(120)\n', str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == 'locked'
        msg = fails(capsys, tiny_data_root, tmp_path, stages='1')
    finally:
        holder.kill()
        holder.wait()
    assert 'is in use by another run' in msg
    assert f'pid {holder.pid}' in msg
    assert config.read_text() == '{"from": "the first run"}'
    assert not (tmp_path / VQ).exists()


# ------------------------------------------------- non-finite losses
def test_non_finite_loss_before_any_checkpoint(tiny_data_root, tmp_path,
                                               capsys):
    # a huge but finite lr: the second batch's loss is no longer finite
    msg = fails(capsys, tiny_data_root, tmp_path, 'lr=1e3', stages='1')
    assert 'loss became' in msg
    assert 'no checkpoint was saved yet' in msg
    assert 'last good checkpoint' not in msg and '--resume' not in msg
    assert not (tmp_path / VQ).exists()


# ------------------------------------------------- --resume, file deleted
def test_resume_at_final_epoch_rewrites_a_deleted_model_file(
        tiny_data_root, tmp_path, capsys):
    run_main(tiny_data_root, tmp_path, stages='1')
    (tmp_path / VQ).unlink()
    capsys.readouterr()
    run_main(tiny_data_root, tmp_path, stages='1', extra=['--resume'])
    assert 'resuming VQ-VAE at epoch 1' in capsys.readouterr().out
    saved = load_file(tmp_path / resume_path(VQ))
    assert saved['epoch'] == 1
    rewritten = load_file(tmp_path / VQ)
    assert rewritten.keys() == saved['model'].keys()
    for k, v in saved['model'].items():
        assert torch.equal(rewritten[k], v), k


# ------------------------------------------------- real signals
def spawn(data_root, work_dir, *options, stages):
    cmd = [sys.executable, MAIN, *argv_for(data_root, work_dir, *options,
                                           stages=stages)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))


def spawn_in_epoch_2(data_root, work_dir):
    """A long stage-1 run, returned once its first resume point exists (it
    is in epoch 2 then), for signals to hit mid-epoch."""
    # batch_size=1 over the 64 tiny MNIST images: 64 batches an epoch
    proc = spawn(data_root, work_dir, 'batch_size=1', 'train_subset=None',
                 'eval_subset=None', 'preview_every=0', 'n_epochs=1000',
                 stages='1')
    try:
        t0 = time.monotonic()
        while not (work_dir / resume_path(VQ)).exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 120
            time.sleep(0.02)
    except BaseException:
        proc.kill()
        raise
    return proc


@pytest.mark.slow
def test_sigterm_while_sampling_exits_130_with_a_message(
        trained, tiny_data_root, tmp_path):
    wd = copy_of(trained, tmp_path)
    # the tutorial's sampler on many images: stage 4 runs for seconds
    proc = spawn(tiny_data_root, wd, 'sampler=naive', 'n_sample=6000',
                 stages='4')
    try:
        line = proc.stdout.readline()
        assert line.startswith('config 5'), (line, proc.stderr.read())
        time.sleep(2)  # loading is done; sampling is under way
        assert proc.poll() is None, 'stage 4 ended before the signal'
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    # besides the sampling bar, one line
    lines = [line for line in err.splitlines()
             if line.strip() and not line.startswith('sampling ')]
    assert lines == ['stopped by SIGTERM']
    assert 'wrote' not in out


@pytest.mark.slow
def test_second_sigint_does_not_abort_the_save(tiny_data_root, tmp_path):
    proc = spawn_in_epoch_2(tiny_data_root, tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    assert 'resume point saved' in err
    state = load_file(tmp_path / resume_path(VQ))  # whole and readable
    assert state['epoch'] >= 1 and 'model' in state
    load_file(tmp_path / VQ)


def test_stop_flag_second_signal_keeps_going_third_quits():
    with epoch_runner.StopFlag() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        assert stop and stop.count == 2 and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    # the run is ending: later signals are ignored until the process exits
    assert signal.getsignal(signal.SIGINT) is \
        epoch_runner.ignore_late_signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ------------------------------------------------- the epoch runner, DDP
def epoch_setup(n, sampler=None, batch_size=1):
    dataset = TensorDataset(torch.arange(n, dtype=torch.float32))
    sampler = sampler or DistributedSampler(dataset, num_replicas=1, rank=0,
                                            shuffle=False)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    model = torch.nn.Linear(1, 1)
    stage = epoch_runner.Stage('toy', model,
                               torch.optim.SGD(model.parameters(), 0.1),
                               'unused.pth', 'n_epochs', 'unused.jsonl',
                               ('loss',))
    ctx = SimpleNamespace(device=torch.device('cpu'), cfg={'n_epochs': 1})

    def step(batch):  # loss of a batch = mean of its values
        x = batch[0]
        return (x.mean(),), x.shape[0], None
    return ctx, stage, loader, sampler, step


class CountStops:
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = 0, stop_at

    def __call__(self, stop, device):
        self.calls += 1
        return self.calls == self.stop_at


@pytest.mark.parametrize('dist, n', [(True, 40), (True, 48), (False, 40)])
def test_stop_checks_every_batch_or_every_stop_check_every(monkeypatch,
                                                           dist, n):
    counter = CountStops()
    monkeypatch.setattr(epoch_runner, 'is_dist', lambda: dist)
    monkeypatch.setattr(epoch_runner, 'stop_requested', counter)
    ctx, stage, loader, sampler, step = epoch_setup(n)
    sums, n_seen, _ = epoch_runner.run_epoch(ctx, stage, loader, sampler,
                                             step, 0, 0, [], None)
    every = epoch_runner.STOP_CHECK_EVERY if dist else 1
    assert counter.calls == n // every
    assert n_seen == n and sums[-1].item() == n


def test_stop_under_ddp_lands_on_a_check_boundary(monkeypatch):
    monkeypatch.setattr(epoch_runner, 'is_dist', lambda: True)
    monkeypatch.setattr(epoch_runner, 'stop_requested', CountStops(1))
    saved = []

    def save(ctx, stage, epoch, step=0, sums=(), rng=None):
        saved.append((epoch, step))
        raise epoch_runner.Interrupted('stopped')
    monkeypatch.setattr(epoch_runner, 'save_resume_point_and_stop', save)
    ctx, stage, loader, sampler, step = epoch_setup(40)
    with pytest.raises(epoch_runner.Interrupted):
        epoch_runner.run_epoch(ctx, stage, loader, sampler, step, 0, 0, [],
                               None)
    assert saved == [(0, epoch_runner.STOP_CHECK_EVERY)]


@pytest.mark.parametrize('n, replicas', [(10, 4), (10, 3), (2, 4), (7, 7),
                                         (9, 2)])
@pytest.mark.parametrize('shuffle', [False, True])
def test_real_samples_leave_out_the_padding(n, replicas, shuffle):
    dataset = TensorDataset(torch.arange(n))
    seen = []
    for rank in range(replicas):
        sampler = DistributedSampler(dataset, num_replicas=replicas,
                                     rank=rank, shuffle=shuffle, seed=3)
        indices = list(sampler)
        k = epoch_runner.real_samples(sampler)
        assert 0 <= k <= len(indices)
        seen += indices[:k]  # the padding comes last in a rank's list
    assert sorted(seen) == list(range(n))  # every sample once, no repeat


def test_real_samples_without_padding():
    dataset = TensorDataset(torch.arange(10))
    sampler = DistributedSampler(dataset, num_replicas=4, rank=3,
                                 drop_last=True)
    assert epoch_runner.real_samples(sampler) == len(sampler) == 2
    plain = DataLoader(dataset, batch_size=3).sampler
    assert epoch_runner.real_samples(plain) == 10


@pytest.mark.parametrize('batch_size', [1, 2, 4])
def test_epoch_mean_over_ranks_counts_every_sample_once(monkeypatch,
                                                        batch_size):
    # each rank's run_epoch in turn, as 4 ranks would run it: the summed
    # sample counts and losses are those of the 10 samples, padding left out
    monkeypatch.setattr(epoch_runner, 'is_dist', lambda: True)
    monkeypatch.setattr(epoch_runner, 'stop_requested', CountStops())
    total = torch.zeros(2)
    for rank in range(4):
        ctx, stage, loader, sampler, step = epoch_setup(
            10, DistributedSampler(TensorDataset(torch.arange(10)),
                                   num_replicas=4, rank=rank, shuffle=True,
                                   seed=1), batch_size)
        sums, _, _ = epoch_runner.run_epoch(ctx, stage, loader, sampler,
                                            step, 0, 0, [], None)
        total += sums
    assert total[-1].item() == 10
    if batch_size == 1:  # per-sample losses: the mean of 0..9
        assert total[0].item() / total[1].item() == pytest.approx(4.5)
