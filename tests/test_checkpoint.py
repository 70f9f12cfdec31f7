"""Checkpoint files: atomic writes, safe loading, errors, resume points."""
import glob
import os
import random
import socket
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dldemos.VQVAE.runtime import files, resume_point
from dldemos.VQVAE.runtime.files import (CheckpointError, load_file,
                                         load_model, save_atomic)
from dldemos.VQVAE.runtime.resume_point import (load_training_state,
                                                resume_path, rng_state,
                                                save_training_state,
                                                set_rng_state)
from dldemos.VQVAE.model import VQVAE


def leftovers(folder):
    return glob.glob(os.path.join(folder, '.*tmp*'))


def test_save_atomic_round_trip_leaves_no_temp(tmp_path):
    path = tmp_path / 'a.pth'
    save_atomic({'w': torch.arange(5)}, path)
    assert torch.equal(load_file(path)['w'], torch.arange(5))
    assert leftovers(tmp_path) == []


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'a.pth'
    save_atomic({'w': torch.zeros(3)}, path)
    real_save = torch.save

    def dying_save(obj, f):  # writes part of the file, then fails
        real_save(obj, f)
        f.truncate(10)
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', dying_save)
    with pytest.raises(CheckpointError, match='could not write'):
        save_atomic({'w': torch.ones(3)}, path)
    assert torch.equal(load_file(path)['w'], torch.zeros(3))
    assert leftovers(tmp_path) == []


def dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


def test_stale_temp_of_a_killed_save_is_removed(tmp_path):
    # named as before the host was in temp names
    path = tmp_path / 'a.pth'
    stale = tmp_path / f'.a.pth.tmp{dead_pid()}'
    stale.write_bytes(b'half a checkpoint')
    save_atomic({'w': torch.ones(1)}, path)
    assert not stale.exists()


def test_save_keeps_the_temp_files_of_other_live_writers(tmp_path):
    """Two runs saving to one path: neither may delete the other's temp
    file mid-write. Only a dead writer's temp file of this host goes."""
    host = socket.gethostname()
    writer = subprocess.Popen(['sleep', '30'])
    try:
        live = tmp_path / f'.a.pth.tmp.{host}.{writer.pid}'
        dead = tmp_path / f'.a.pth.tmp.{host}.{dead_pid()}'
        # a pid of another host cannot be checked from here
        remote = tmp_path / f'.a.pth.tmp.other-host.{dead_pid()}'
        for temp in (live, dead, remote):
            temp.write_bytes(b'half a checkpoint')
        save_atomic({'w': torch.ones(1)}, tmp_path / 'a.pth')
        assert live.exists() and remote.exists() and not dead.exists()
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all\n',
                                     'truncate'])
def test_unreadable_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / 'bad.pth'
    if content == 'truncate':
        torch.save(VQVAE(1, 8, 8).state_dict(), path)
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match='truncated, corrupt'):
        load_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        load_file(tmp_path / 'nope.pth')


CALLED = []


def _side_effect():
    CALLED.append(1)
    return 'ran'


class Payload:
    """Unpickling this would run _side_effect: weights_only must refuse."""

    def __reduce__(self):
        return (_side_effect, ())


def test_a_checkpoint_cannot_run_code(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'w': torch.ones(1), 'x': Payload()}, path)
    with pytest.raises(CheckpointError):
        load_file(path)
    assert CALLED == []


def test_mismatch_names_keys_and_shapes(tmp_path):
    path = tmp_path / 'm.pth'
    torch.save(VQVAE(1, 8, 8).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_model(VQVAE(1, 8, 16), path)
    msg = str(err.value)
    assert 'vq_embedding.weight' in msg and '[8, 8]' in msg \
        and '[16, 8]' in msg and 'config' in msg
    state = VQVAE(1, 8, 8).state_dict()
    state['extra.bias'] = state.pop('decoder.0.bias')
    torch.save(state, path)
    with pytest.raises(CheckpointError, match='missing decoder.0.bias.*'
                       'unexpected extra.bias'):
        load_model(VQVAE(1, 8, 8), path)


def draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(),
            np.random.randn(3).tolist(), [random.random() for _ in range(3)])


@pytest.mark.parametrize('warmup', [0, 1, 7])
def test_rng_state_round_trip(tmp_path, warmup):
    for _ in range(warmup):  # odd counts leave a cached gaussian in numpy
        draws()
    save_atomic(rng_state(), tmp_path / 'rng.pth')
    expected = draws()
    set_rng_state(load_file(tmp_path / 'rng.pth'))
    assert draws() == expected


def fake_gpus(monkeypatch, count):
    """Pretend `count` CUDA devices; return the states set on each."""
    restored = {}

    def set_state(state, device='cuda'):
        index = torch.device(device).index or 0
        if index >= count:  # as torch does for a device that is not there
            raise IndexError(f'device {index} of {count}')
        restored[index] = state

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: count > 0)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)
    monkeypatch.setattr(torch.cuda, 'set_rng_state', set_state)
    # what torch.cuda.set_rng_state_all calls
    monkeypatch.setattr(torch.cuda.random, 'set_rng_state', set_state)
    return restored


@pytest.mark.parametrize('gpus', [0, 1, 2, 4])
def test_resume_with_fewer_gpus_restores_the_cuda_states_that_fit(
        monkeypatch, gpus):
    state = rng_state()
    state['cuda'] = [torch.full((4,), i, dtype=torch.uint8)
                     for i in range(4)]  # saved on 4 GPUs
    restored = fake_gpus(monkeypatch, gpus)
    expected = draws()
    set_rng_state(state)
    assert sorted(restored) == list(range(gpus))
    assert all(restored[i][0] == i for i in restored)
    assert draws() == expected  # the CPU RNGs are restored all the same


def make_trained(seed=0):
    torch.manual_seed(seed)
    model = VQVAE(1, 8, 8)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x_hat, ze, zq = model(torch.rand(2, 1, 28, 28))
    (x_hat.square().mean() + (ze - zq).square().mean()).backward()
    opt.step()
    return model, opt


def test_training_state_round_trip(tmp_path):
    path = str(tmp_path / 'm.pth')
    model, opt = make_trained(0)
    save_training_state(path, model, opt, {'lr': 1e-3, 'img_shape': (1, 2)},
                        epoch=3, step=5, sums=[1.5, 2.0])
    fresh, fresh_opt = make_trained(1)
    epoch, step, sums = load_training_state(path, fresh, fresh_opt)
    assert (epoch, step, sums) == (3, 5, [1.5, 2.0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k])
    a, b = opt.state_dict()['state'], fresh_opt.state_dict()['state']
    assert all(torch.equal(a[i]['exp_avg_sq'], b[i]['exp_avg_sq']) for i in a)
    assert load_file(resume_path(path))['config']['img_shape'] == [1, 2]


def test_resume_point_is_consistent_if_killed_between_writes(tmp_path,
                                                             monkeypatch):
    """The resume point is written first and carries the weights: a crash
    before the model file is replaced still resumes the matching weights."""
    path = str(tmp_path / 'm.pth')
    model, opt = make_trained(0)
    save_training_state(path, model, opt, {}, epoch=1)
    model2, opt2 = make_trained(1)
    real = resume_point.save_atomic

    def die_on_model_file(obj, p):
        if str(p) == path:
            raise KeyboardInterrupt  # killed before the second write
        real(obj, p)

    monkeypatch.setattr(resume_point, 'save_atomic', die_on_model_file)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(path, model2, opt2, {}, epoch=2)
    fresh, fresh_opt = make_trained(2)
    assert load_training_state(path, fresh, fresh_opt)[0] == 2
    assert all(torch.equal(v, fresh.state_dict()[k])
               for k, v in model2.state_dict().items())
    load_model(VQVAE(1, 8, 8), path)  # the old model file is still whole


def test_resume_keeps_the_configured_lr(tmp_path):
    path = str(tmp_path / 'm.pth')
    model, opt = make_trained(0)
    save_training_state(path, model, opt, {}, epoch=1)
    fresh = VQVAE(1, 8, 8)
    fresh_opt = torch.optim.Adam(fresh.parameters(), 1e-5)
    load_training_state(path, fresh, fresh_opt)
    assert fresh_opt.param_groups[0]['lr'] == 1e-5


def test_extra_state_round_trip_and_resume_points_without_it(tmp_path):
    """Extra training state goes into the resume point, not the model
    file; a resume point without it loads and leaves the module fresh."""
    path = str(tmp_path / 'm.pth')
    model, opt = make_trained(0)
    extra = torch.nn.BatchNorm1d(3)  # any module with buffers
    extra.running_mean.fill_(7.0)
    save_training_state(path, model, opt, {}, epoch=1, train_state=extra)
    assert set(load_file(path)) == set(model.state_dict())
    loaded = torch.nn.BatchNorm1d(3)
    load_training_state(path, model, opt, train_state=loaded)
    assert torch.equal(loaded.running_mean, extra.running_mean)
    save_training_state(path, model, opt, {}, epoch=1)  # no extra state
    fresh = torch.nn.BatchNorm1d(3)
    assert load_training_state(path, model, opt, train_state=fresh)[0] == 1
    assert torch.equal(fresh.running_mean, torch.zeros(3))


def test_resume_without_resume_point_or_with_a_plain_file(tmp_path):
    path = str(tmp_path / 'm.pth')
    model, opt = make_trained(0)
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match='no resume point.*without '
                       '--resume'):
        load_training_state(path, model, opt)
    torch.save(model.state_dict(), resume_path(path))
    with pytest.raises(CheckpointError, match='is not a resume point'):
        load_training_state(path, model, opt)


@pytest.mark.parametrize('step, key, ok', [
    (0, 'batch_size', True),   # epoch end: any batch size resumes fine
    (4, 'lr', True),           # mid-epoch, batches unchanged
    (4, 'batch_size', False),  # mid-epoch, other batches: refused
    (4, 'train_subset', False),
    (4, 'seed', False),        # the seed decides the shuffled order
])
def test_mid_epoch_resume_refuses_changed_batches(tmp_path, step, key, ok):
    path = str(tmp_path / 'm.pth')
    cfg = {'batch_size': 16, 'train_subset': None, 'lr': 1e-3, 'seed': 0}
    model, opt = make_trained(0)
    save_training_state(path, model, opt, cfg, epoch=1, step=step)
    changed = dict(cfg, **{key: 32})
    if ok:
        assert load_training_state(path, model, opt, changed)[1] == step
    else:
        with pytest.raises(CheckpointError, match=f'{key} .* -> 32'):
            load_training_state(path, model, opt, changed)


def test_mid_epoch_resume_refuses_another_number_of_processes(tmp_path,
                                                             monkeypatch):
    # each rank's shard of an epoch depends on the world size
    path = str(tmp_path / 'm.pth')
    model, opt = make_trained(0)
    save_training_state(path, model, opt, {}, epoch=1, step=4)
    monkeypatch.setattr(resume_point, 'get_world_size', lambda: 2)
    with pytest.raises(CheckpointError, match='processes 1 -> 2'):
        load_training_state(path, model, opt, {})


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 1 MiB filesystem (tmpfs; needs root), to run out of space."""
    folder = tmp_path / 'fs'
    folder.mkdir()
    try:
        done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m',
                               'tmpfs', str(folder)], capture_output=True)
    except OSError as e:  # no mount command
        pytest.skip(f'cannot mount a small filesystem: {e}')
    if done.returncode:
        pytest.skip('cannot mount a small filesystem: '
                    f'{done.stderr.decode().strip()}')
    try:
        yield folder
    finally:
        subprocess.run(['umount', str(folder)], check=True)


def test_save_on_a_full_disk_says_so_and_keeps_the_old_file(tiny_fs):
    path = tiny_fs / 'a.pth'
    save_atomic({'w': torch.arange(10)}, path)
    with pytest.raises(CheckpointError, match=r'could not write .*a\.pth: '
                       r'the disk is full \(\d+ MiB free.*--work-dir'):
        save_atomic({'w': torch.zeros(600_000)}, path)  # 2.4 MB
    assert torch.equal(load_file(path)['w'], torch.arange(10))
    assert leftovers(tiny_fs) == []


def test_text_write_on_a_full_disk_says_so_and_keeps_the_old_file(tiny_fs):
    path = tiny_fs / 'config.json'
    files.write_text_atomic(path, '{"lr": 0.001}\n')
    with pytest.raises(CheckpointError, match='the disk is full'):
        files.write_text_atomic(path, 'x' * 2**21)
    assert path.read_text() == '{"lr": 0.001}\n'
    assert leftovers(tiny_fs) == []


def test_write_text_atomic_replaces_the_file(tmp_path):
    path = tmp_path / 'sub' / 'command.txt'
    files.write_text_atomic(path, 'one\n')
    files.write_text_atomic(path, 'two\n')
    assert path.read_text() == 'two\n'
    assert leftovers(path.parent) == []


@pytest.mark.parametrize('free, full', [(0, True), (2**40, False)])
def test_torch_write_error_is_judged_by_free_space(tmp_path, monkeypatch,
                                                   free, full):
    """torch's zip writer hides ENOSPC in a RuntimeError: free space tells
    a full disk from other errors, which pass through unchanged."""
    def failing_save(obj, f):
        raise RuntimeError('[enforce fail at inline_container.cc:672] . '
                           'unexpected pos 704 vs 598')

    monkeypatch.setattr(torch, 'save', failing_save)
    monkeypatch.setattr(files.shutil, 'disk_usage',
                        lambda p: SimpleNamespace(free=free))
    with pytest.raises(CheckpointError if full else RuntimeError) as err:
        save_atomic({'w': torch.ones(3)}, tmp_path / 'a.pth')
    assert ('disk is full' in str(err.value)) == full
    assert leftovers(tmp_path) == []
