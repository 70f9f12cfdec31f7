"""Bad input ends in one line `error: ...` saying what to do, exit code 2,
no traceback (unless --debug)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import make_face_folder, make_mnist_root
from dldemos.VQVAE import dataset as dataset_mod
from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.dataset import DataError, get_dataset
from dldemos.VQVAE.model import VQVAE

REPO = Path(__file__).resolve().parents[1]
TINY = ['dim=8', 'n_embedding=8', 'batch_size=16', 'train_subset=16',
        'eval_subset=None', 'n_epochs=1', 'num_workers=0', 'n_preview=2']
FACES = ['img_shape=(3,32,32)', 'pixelcnn_n_blocks=1', 'pixelcnn_dim=8',
         'pixelcnn_linear_dim=8'] + TINY


def fails(capsys, *argv):
    """Run main.py with argv; return its one-line error (asserting exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main_mod.main([str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: ') and 'Traceback' not in err
    return err[-1]


def test_unknown_config_id(capsys, tmp_path):
    msg = fails(capsys, '-c', 99, '--work-dir', tmp_path)
    assert 'unknown config id 99' in msg and 'valid ids are 0-' in msg


@pytest.mark.parametrize('option, expected', [
    ('no_such_key=1', "unknown config key 'no_such_key'"),
    ('n_epochs=abc', 'bad value for n_epochs'),
    ('n_epochs', 'KEY=VALUE'),
])
def test_bad_config_option(capsys, tmp_path, option, expected):
    assert expected in fails(capsys, '-c', 5, '--work-dir', tmp_path,
                             '--cfg-options', option)


@pytest.mark.parametrize('cfg, hint', [
    (3, 'kaggle.com/datasets/badasstechie/celebahq-resized-256x256'),
    (0, 'could not be downloaded'),
])
def test_missing_dataset(capsys, tmp_path, monkeypatch, cfg, hint):
    def offline(self):  # as on a machine without internet
        raise RuntimeError('Error downloading train-images-idx3-ubyte.gz:\n'
                           '<urlopen error [Errno -2] Name or service not '
                           'known>')

    monkeypatch.setattr(torchvision.datasets.MNIST, 'download', offline)
    msg = fails(capsys, '-c', cfg, '--data-root', tmp_path / 'data',
                '--work-dir', tmp_path / 'wd', '--cfg-options',
                *(FACES if cfg else TINY))
    assert hint in msg and str(tmp_path / 'data') in msg
    if cfg == 3:
        assert 'celebA/celeba_hq_256' in msg and 'unpack' in msg
    else:
        assert 'train-images-idx3-ubyte' in msg


@pytest.mark.parametrize('data_exists', [False, True])
def test_missing_data_leaves_nothing_behind(capsys, tmp_path, monkeypatch,
                                            data_exists):
    def offline(self):  # as torchvision does: make the folder, then fail
        os.makedirs(self.raw_folder, exist_ok=True)
        raise RuntimeError('Error downloading train-images-idx3-ubyte.gz')

    monkeypatch.setattr(torchvision.datasets.MNIST, 'download', offline)
    data, work_dir = tmp_path / 'data', tmp_path / 'wd'
    if data_exists:
        data.mkdir()
    fails(capsys, '-c', 5, '--data-root', data, '--work-dir', work_dir,
          '--cfg-options', *TINY)
    assert not work_dir.exists()  # no config.json, command.txt or lock
    # only the folders the download made are gone
    assert (list(data.iterdir()) == []) if data_exists else not data.exists()


def test_missing_test_split_is_said_before_the_work_dir(capsys, tmp_path):
    # stage 2 reads only held-out images: no faces there, nothing written
    folder = tmp_path / 'celebA' / 'celeba_hq_256'
    folder.mkdir(parents=True)
    fails(capsys, '-c', 3, '--data-root', tmp_path, '--work-dir',
          tmp_path / 'wd', '--stages', 2, '--cfg-options', *FACES)
    assert not (tmp_path / 'wd').exists()


def test_corrupt_mnist_files(capsys, tmp_path):
    make_mnist_root(tmp_path)
    raw = tmp_path / 'mnist' / 'MNIST' / 'raw'
    path = raw / 'train-images-idx3-ubyte'
    path.write_bytes(path.read_bytes()[:100])
    msg = fails(capsys, '-c', 5, '--data-root', tmp_path, '--work-dir',
                tmp_path / 'wd', '--cfg-options', *TINY)
    assert 'could not be read' in msg and 'delete them' in msg


def test_mnist_file_with_a_bad_magic_number(capsys, tmp_path):
    make_mnist_root(tmp_path)
    path = tmp_path / 'mnist' / 'MNIST' / 'raw' / 'train-images-idx3-ubyte'
    data = bytearray(path.read_bytes())
    data[:4] = b'\x00\x00\x09\x99'  # IDX magic of no known type
    path.write_bytes(bytes(data))
    msg = fails(capsys, '-c', 5, '--data-root', tmp_path, '--work-dir',
                tmp_path / 'wd', '--cfg-options', *TINY)
    assert 'could not be read' in msg and 'delete them' in msg


def test_empty_folder_and_nested_folder(capsys, tmp_path):
    folder = tmp_path / 'celebA' / 'celeba_hq_256'
    folder.mkdir(parents=True)
    (folder / 'notes.txt').write_text('no images here')
    argv = ['-c', 3, '--data-root', tmp_path, '--work-dir', tmp_path / 'wd',
            '--cfg-options', *FACES]
    msg = fails(capsys, *argv)
    assert 'holds no image files' in msg and 'kaggle.com' in msg
    make_face_folder(folder / 'celeba_hq_256', 2, (64, 64))  # unzipped 1 deep
    assert 'move the images up' in fails(capsys, *argv)


def write_bad_files(folder):
    (folder / 'zz_empty.jpg').write_bytes(b'')
    (folder / 'zz_text.png').write_text('not a png')
    (folder / '._000001.jpg').write_bytes(b'\x00\x05\x16\x07' * 8)  # macOS


def test_unreadable_images_are_skipped_with_a_warning(capsys, tmp_path):
    folder = make_face_folder(tmp_path / 'celebA' / 'celeba_hq_256', 6,
                              (64, 64))
    write_bad_files(folder)
    dataset = get_dataset('CelebAHQ', (32, 32), tmp_path, split='all')
    err = capsys.readouterr().err
    assert 'skipping 3 unreadable' in err
    assert all(name in err for name in ('zz_empty.jpg', 'zz_text.png',
                                        '._000001.jpg'))
    assert len(dataset) == 6
    assert all(dataset[i].shape == (3, 32, 32) for i in range(len(dataset)))


def test_truncated_image_is_replaced_by_the_next(capsys, tmp_path):
    folder = make_face_folder(tmp_path / 'faces', 3, (64, 64))
    path = folder / '000001.jpg'
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # header fine, data cut short
    dataset = dataset_mod.CelebADataset(str(folder), (32, 32))
    assert len(dataset) == 3 and torch.equal(dataset[1], dataset[2])
    assert '000001.jpg' in capsys.readouterr().err


def test_no_readable_image_is_an_error(capsys, tmp_path):
    folder = tmp_path / 'celebA' / 'celeba_hq_256'
    folder.mkdir(parents=True)
    write_bad_files(folder)
    msg = fails(capsys, '-c', 3, '--data-root', tmp_path, '--work-dir',
                tmp_path / 'wd', '--cfg-options', *FACES)
    assert 'none of the 3 image files' in msg and 'zz_empty.jpg' in msg


@pytest.mark.parametrize('stage', [2, 3, 4])
def test_missing_vqvae_checkpoint_says_run_stage_1(capsys, tmp_path,
                                                   tiny_data_root, stage):
    msg = fails(capsys, '-c', 5, '--data-root', tiny_data_root, '--work-dir',
                tmp_path, '--stages', stage, '--cfg-options', *TINY)
    assert f'stage {stage} needs the VQ-VAE checkpoint' in msg
    assert 'run stage 1 first' in msg


def test_missing_prior_checkpoint_says_run_stage_3(capsys, tmp_path,
                                                   tiny_data_root):
    torch.save(VQVAE(1, 8, 8).state_dict(), tmp_path / 'model_mnist_quick.pth')
    msg = fails(capsys, '-c', 5, '--data-root', tiny_data_root, '--work-dir',
                tmp_path, '--stages', 4, '--cfg-options', *TINY)
    assert 'run stage 3 first' in msg


@pytest.mark.parametrize('bad', ['truncated', 'text', 'mismatch'])
def test_bad_vqvae_checkpoint(capsys, tmp_path, tiny_data_root, bad):
    path = tmp_path / 'model_mnist_quick.pth'
    torch.save(VQVAE(1, 8, 16 if bad == 'mismatch' else 8).state_dict(), path)
    if bad == 'truncated':
        path.write_bytes(path.read_bytes()[:1000])
    if bad == 'text':
        path.write_text('{"weights": "not really"}')
    msg = fails(capsys, '-c', 5, '--data-root', tiny_data_root, '--work-dir',
                tmp_path, '--stages', 2, '--cfg-options', *TINY)
    assert str(path) in msg
    if bad == 'mismatch':
        assert 'does not match the config' in msg
        assert 'vq_embedding.weight: file [16, 8] vs model [8, 8]' in msg
    else:
        assert 'truncated, corrupt' in msg


def test_unwritable_work_dir(capsys, tmp_path, tiny_data_root):
    blocker = tmp_path / 'a_file'
    blocker.write_text('')  # no folder can be made in a file, even by root
    msg = fails(capsys, '-c', 5, '--data-root', tiny_data_root,
                '--work-dir', blocker / 'wd', '--cfg-options', *TINY)
    assert 'is not writable' in msg and '--work-dir' in msg


def test_resume_without_resume_point(capsys, tmp_path, tiny_data_root):
    torch.save(VQVAE(1, 8, 8).state_dict(), tmp_path / 'model_mnist_quick.pth')
    msg = fails(capsys, '-c', 5, '--data-root', tiny_data_root, '--work-dir',
                tmp_path, '--stages', 1, '--resume', '--cfg-options', *TINY)
    assert 'no resume point' in msg and 'without --resume' in msg


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(DataError, match='kaggle.com'):
        main_mod.main(['-c', '3', '--data-root', str(tmp_path), '--work-dir',
                       str(tmp_path / 'w'), '--debug', '--cfg-options',
                       *FACES])


def test_command_line_prints_one_line(tmp_path):
    """The real script: exit 2, one line on stderr, no traceback."""
    proc = subprocess.run(
        [sys.executable, str(REPO / 'dldemos' / 'VQVAE' / 'main.py'), '-c',
         '3', '--data-root', str(tmp_path), '--work-dir', str(tmp_path / 'w'),
         '--cfg-options', *FACES], capture_output=True, text=True,
        timeout=120, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ')
    assert 'kaggle.com' in lines[0]


# ---------------------------------------- refused before anything is written
def one_line_error(capsys, *argv):
    """Run main.py with argv: exit 2 and exactly one stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main_mod.main([str(a) for a in argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


@pytest.mark.parametrize('flags, options, expected', [
    (['--device', 'foo'], [], "--device 'foo' is not a device"),
    (['--device', 'cuda'], [], 'no CUDA GPU'),  # conftest hides the GPUs
    (['--seed', '18446744073709551616'], [], '--seed'),
    (['--seed', '-1'], [], '--seed -1'),
    ([], ['n_preview=-1'], 'n_preview=-1'),
    ([], ['num_workers=-1'], 'num_workers=-1'),
    ([], ['preview_every=-1'], 'preview_every=-1'),
    ([], ['temperature=inf'], 'temperature'),
    ([], ['temperature=1e999'], 'finite'),
    ([], ['use_lmdb=True'], 'use_lmdb'),
    ([], ['n_classes=3'], 'MNIST has 10 classes'),
    ([], ['img_shape=(1,4096,4096)'], 'larger than'),
    ([], ['vqvae_path=same.pth', 'gen_model_path=same.pth'], 'same file'),
    ([], ['vqvae_path='], 'vqvae_path'),
    ([], ['gen_model_path= '], 'gen_model_path'),
    ([], ['lr_schedule_2=linear'], 'lr_schedule_2'),
    ([], ['warmup=1'], 'warmup=1.0'),
    ([], ['ema_decay=-0.1'], 'ema_decay'),
    ([], ['restart_threshold=-1'], 'restart_threshold'),
])
def test_refused_before_the_work_dir_is_made(capsys, tmp_path,
                                             tiny_data_root, flags, options,
                                             expected):
    work_dir = tmp_path / 'wd'
    msg = one_line_error(capsys, '-c', 5, '--data-root', tiny_data_root,
                         '--work-dir', work_dir, '--stages', 1, *flags,
                         '--cfg-options', *TINY, *options)
    assert expected in msg
    assert not work_dir.exists()


def test_work_dir_that_is_a_file(capsys, tmp_path, tiny_data_root):
    work_dir = tmp_path / 'wd'
    work_dir.write_text('not a folder')
    msg = one_line_error(capsys, '-c', 5, '--data-root', tiny_data_root,
                         '--work-dir', work_dir, '--cfg-options', *TINY)
    assert 'is a file' in msg
    assert work_dir.read_text() == 'not a folder'


@pytest.mark.parametrize('resume', [[], ['--resume']])
def test_zero_epochs_on_a_fresh_work_dir(capsys, tmp_path, tiny_data_root,
                                         resume):
    # with --resume too: nothing was restored, so nothing may be saved
    msg = one_line_error(capsys, '-c', 5, '--data-root', tiny_data_root,
                         '--work-dir', tmp_path, '--stages', 1, *resume,
                         '--cfg-options', *[o for o in TINY if not o.startswith('n_epochs=')],
                         'n_epochs=0')
    assert 'n_epochs=0 trains nothing' in msg
    assert not (tmp_path / 'model_mnist_quick.pth').exists()


# ---------------------------------------- a checkpoint path that is no file
@pytest.mark.parametrize('stage', [2, 4])
def test_checkpoint_path_is_a_symlink_loop(capsys, tmp_path, tiny_data_root,
                                           stage):
    a, b = tmp_path / 'model_mnist_quick.pth', tmp_path / 'loop.pth'
    os.symlink(a, b)
    os.symlink(b, a)
    msg = one_line_error(capsys, '-c', 5, '--data-root', tiny_data_root,
                         '--work-dir', tmp_path, '--stages', stage,
                         '--cfg-options', *TINY)
    assert 'symbolic link' in msg and str(a) in msg


@pytest.mark.parametrize('key, name, stage', [
    ('vqvae_path', 'model_mnist_quick.pth', 2),
    ('gen_model_path', 'gen_model_mnist_quick.pth', 4)])
def test_checkpoint_path_is_a_folder(capsys, tmp_path, tiny_data_root, key,
                                     name, stage):
    torch.save(VQVAE(1, 8, 8).state_dict(), tmp_path / 'model_mnist_quick.pth')
    (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / name).mkdir()
    msg = one_line_error(capsys, '-c', 5, '--data-root', tiny_data_root,
                         '--work-dir', tmp_path, '--stages', stage,
                         '--cfg-options', *TINY)
    assert 'is a folder' in msg and key in msg
