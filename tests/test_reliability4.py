"""Reliability, round 3 continued (issue 22): damaged classifier caches are
retrained, the classifier shows its progress, unreadable / odd data paths
(permissions, FIFOs, /dev/zero links), forged MNIST labels and pickles,
missing MNIST files, damaged LMDB headers and paths that are not UTF-8 end
in one line (or just work)."""
import errno
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_face_folder, make_mnist_root, write_idx
from dldemos.lmdb_loader import folder_to_lmdb
from dldemos.utils.errors import DataError
from dldemos.utils.image_folder import decode_image
from dldemos.VQVAE.dataset import CELEBA_DIR, get_dataset
from dldemos.VQVAE.scoring import mnist_classifier as clf

REPO = Path(__file__).resolve().parents[1]


def one_line(e):
    msg = str(e.value)
    assert '\n' not in msg, msg
    return msg


# ------------------------------------ a. a damaged classifier cache
@pytest.fixture(scope='module')
def cached_classifier(tiny_data_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('clf')
    clf.load_or_train(work, tiny_data_root, 'cpu', epochs=1,
                      train_subset=32, log=lambda *a: None)
    return work


DAMAGED_INFO = {
    'garbage': b'\xff\xfe{{not json',
    'nested_too_deep': b'[' * 100000,
    'accuracy_a_string': None,  # filled in from the good file
    'no_accuracy': None,
    'a_list': b'[1, 2]',
}


@pytest.mark.parametrize('damage', sorted(DAMAGED_INFO))
def test_a_damaged_classifier_info_is_retrained(cached_classifier,
                                                tiny_data_root, tmp_path,
                                                damage):
    work = tmp_path / 'wd'
    shutil.copytree(cached_classifier, work)
    info_path = work / clf.INFO_NAME
    good = json.loads(info_path.read_text())
    data = DAMAGED_INFO[damage]
    if damage == 'accuracy_a_string':
        data = json.dumps(dict(good, test_accuracy='x')).encode()
    elif damage == 'no_accuracy':
        data = json.dumps({'settings': good['settings']}).encode()
    info_path.write_bytes(data)
    logs = []
    _, info = clf.load_or_train(work, tiny_data_root, 'cpu', epochs=1,
                                train_subset=32, log=logs.append)
    assert isinstance(info['test_accuracy'], float)
    warnings = [m for m in logs if m.startswith('warning:')]
    assert len(warnings) == 1 and 'damaged' in warnings[0] and \
        'training it again' in warnings[0], logs
    # the cache is whole again: the next call loads it without a word
    assert json.loads(info_path.read_text())['test_accuracy'] == \
        info['test_accuracy']
    logs.clear()
    clf.load_or_train(work, tiny_data_root, 'cpu', epochs=1,
                      train_subset=32, log=logs.append)
    assert logs == []


def test_a_damaged_classifier_checkpoint_is_retrained(
        cached_classifier, tiny_data_root, tmp_path):
    work = tmp_path / 'wd'
    shutil.copytree(cached_classifier, work)
    (work / clf.CKPT_NAME).write_bytes(b'not a checkpoint')
    logs = []
    clf.load_or_train(work, tiny_data_root, 'cpu', epochs=1,
                      train_subset=32, log=logs.append)
    assert sum(m.startswith('warning:') for m in logs) == 1, logs
    torch.load(work / clf.CKPT_NAME, weights_only=True)  # whole again


def test_the_classifier_info_is_written_atomically(tiny_data_root, tmp_path,
                                                   monkeypatch):
    written = []
    real = clf.write_text_atomic
    monkeypatch.setattr(clf, 'write_text_atomic',
                        lambda path, text: (written.append(path),
                                            real(path, text)))
    clf.load_or_train(tmp_path, tiny_data_root, 'cpu', epochs=1,
                      train_subset=32, log=lambda *a: None)
    assert written == [os.path.join(tmp_path, clf.INFO_NAME)]


# ------------------------------------ b. the classifier's progress
def test_classifier_training_shows_a_bar_and_says_it_is_cached(
        tiny_data_root, tmp_path, capsys):
    logs = []
    clf.load_or_train(tmp_path, tiny_data_root, 'cpu', epochs=2,
                      train_subset=32, log=logs.append)
    err = capsys.readouterr().err
    assert 'MNIST classifier epoch 0 of 0-1' in err
    assert 'MNIST classifier epoch 1 of 0-1' in err
    assert 'cached' in logs[0] and clf.CKPT_NAME in logs[0], logs


# ------------------------------------ c. an unreadable image folder
def deny(monkeypatch, folder):
    """os.listdir / os.scandir of `folder` fail as after chmod 000 (the
    tests run as root, whom chmod 000 does not stop)."""
    folder = os.path.abspath(folder)
    listdir, scandir = os.listdir, os.scandir

    def check(path):
        if os.path.abspath(os.fsdecode(path)) == folder:
            raise PermissionError(errno.EACCES, 'Permission denied', path)

    monkeypatch.setattr(os, 'listdir',
                        lambda p='.': (check(p), listdir(p))[1])
    monkeypatch.setattr(os, 'scandir',
                        lambda p='.': (check(p), scandir(p))[1])


def test_an_unreadable_celeba_folder_is_one_line(tmp_path, monkeypatch):
    folder = make_face_folder(tmp_path / CELEBA_DIR, 6, (32, 32))
    deny(monkeypatch, folder)
    with pytest.raises(DataError) as e:
        get_dataset('CelebA', (16, 16), str(tmp_path), 'train')
    msg = one_line(e)
    assert str(folder) in msg and 'Permission denied' in msg
    assert 'chmod' in msg


def test_an_unreadable_class_folder_is_one_line(tmp_path, monkeypatch):
    for c in 'ab':
        make_face_folder(tmp_path / 'own' / c, 4, (32, 32))
    deny(monkeypatch, tmp_path / 'own' / 'b')
    with pytest.raises(DataError) as e:
        get_dataset('ImageFolder', (16, 16), str(tmp_path / 'own'), 'train')
    msg = one_line(e)
    assert str(tmp_path / 'own' / 'b') in msg and 'Permission' in msg


# ------------------------------------ d. MNIST labels outside 0-9
@pytest.mark.parametrize('split, name', [('train', 'train-labels-idx1-ubyte'),
                                         ('test', 't10k-labels-idx1-ubyte')])
def test_an_mnist_label_outside_0_to_9_is_one_line(tmp_path, split, name):
    make_mnist_root(tmp_path, n_train=16, n_test=8)
    labels = tmp_path / 'mnist' / 'MNIST' / 'raw' / name
    values = np.zeros(16 if split == 'train' else 8, np.uint8)
    values[3] = 12
    write_idx(labels, values)
    with pytest.raises(DataError) as e:
        get_dataset('MNIST', (28, 28), str(tmp_path), split,
                    with_labels=True)
    msg = one_line(e)
    assert str(labels) in msg and 'label 12' in msg and '0-9' in msg


def test_a_forged_label_stops_a_conditional_run_before_training(
        tmp_path, capsys):
    from test_reliability import fails
    make_mnist_root(tmp_path / 'data')
    raw = tmp_path / 'data' / 'mnist' / 'MNIST' / 'raw'
    values = np.full(64, 12, np.uint8)
    write_idx(raw / 'train-labels-idx1-ubyte', values)
    msg = fails(capsys, tmp_path / 'data', tmp_path / 'wd', 'n_classes=10',
                stages='1,2,3')
    assert 'label 12' in msg
    assert not (tmp_path / 'wd').exists()


# ------------------------------------ e. a hostile processed/training.pt
class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_a_hostile_mnist_processed_file_is_one_line_and_never_runs(
        tmp_path, recwarn):
    make_mnist_root(tmp_path, n_train=16, n_test=8)
    processed = tmp_path / 'mnist' / 'MNIST' / 'processed'
    processed.mkdir()
    marker = tmp_path / 'ran'
    for name in ('training.pt', 'test.pt'):
        with open(processed / name, 'wb') as f:
            pickle.dump(Payload(marker), f)
    with pytest.raises(DataError) as e:
        get_dataset('MNIST', (28, 28), str(tmp_path), 'train')
    msg = one_line(e)
    assert str(processed / 'training.pt') in msg and 'delete' in msg
    assert 'weights_only' not in msg  # torch's advice would run it
    assert not marker.exists()
    assert not [w for w in recwarn if 'pickle' in str(w.message)]


# ------------------------------------ f. dataset.py --to-lmdb, no folder
def test_to_lmdb_without_a_folder_exits_2_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / 'dldemos/VQVAE/dataset.py'), '--to-lmdb',
         '--data-root', str(tmp_path)], capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and \
        'celebA' in lines[0], lines


# ------------------------------------ g. FIFOs and /dev/zero links
def fifo(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)
    return path


def zero_link(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink('/dev/zero', path)
    return path


@pytest.mark.parametrize('make, kind', [(fifo, 'FIFO'),
                                        (zero_link, 'character device')])
@pytest.mark.parametrize('dataset_type', ['ImageFolder', 'CelebA', 'MNIST'])
def test_a_data_root_that_is_no_folder_is_named(tmp_path, make, kind,
                                                dataset_type):
    root = make(str(tmp_path / 'root'))
    with pytest.raises(DataError) as e:
        get_dataset(dataset_type, None, root, 'train')
    msg = one_line(e)
    assert 'does not exist' not in msg and kind in msg and root in msg
    assert 'not a folder' in msg


def test_a_face_folder_that_is_a_fifo_is_named(tmp_path):
    fifo(str(tmp_path / CELEBA_DIR))
    with pytest.raises(DataError) as e:
        get_dataset('CelebA', (16, 16), str(tmp_path), 'train')
    assert 'FIFO' in one_line(e) and 'not a folder' in str(e.value)


def test_an_mnist_file_that_is_a_fifo_is_named(tmp_path):
    make_mnist_root(tmp_path, n_train=16, n_test=8)
    path = tmp_path / 'mnist' / 'MNIST' / 'raw' / 't10k-labels-idx1-ubyte'
    path.unlink()
    fifo(str(path))
    with pytest.raises(DataError) as e:
        get_dataset('MNIST', (28, 28), str(tmp_path), 'test')
    assert 'FIFO' in one_line(e) and 'not a regular file' in str(e.value)


class Hang(Exception):
    pass


@pytest.fixture
def alarm():
    """Fail instead of hanging: opening a FIFO blocks for a writer."""
    def ring(*a):
        raise Hang('blocked: a FIFO was opened')
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize('make', [fifo, zero_link])
def test_an_image_that_is_a_fifo_is_never_opened(tmp_path, alarm, make):
    path = make(str(tmp_path / 'x.png'))
    with pytest.raises(OSError, match='not a regular file'):
        decode_image(path)


@pytest.mark.parametrize('dataset_type', ['ImageFolder', 'CelebA'])
def test_image_fifos_in_a_folder_are_skipped(tmp_path, alarm, dataset_type):
    if dataset_type == 'CelebA':
        folder, root = tmp_path / CELEBA_DIR, tmp_path
        make_face_folder(folder, 6, (32, 32))
    else:
        folder = root = tmp_path / 'own'
        for c in 'ab':
            make_face_folder(root / c, 4, (32, 32))
        folder = root / 'a'
    fifo(str(folder / '000100.jpg'))
    zero_link(str(folder / '000101.jpg'))
    ds = get_dataset(dataset_type, (16, 16), str(root), 'all')
    assert all(not n.endswith(('000100.jpg', '000101.jpg'))
               for n in getattr(ds, 'filenames'))
    for i in range(len(ds)):
        ds[i]


# ------------------------------------ h. the missing MNIST file is named
MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
               't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


@pytest.mark.parametrize('missing', MNIST_FILES)
@pytest.mark.parametrize('download', [True, False])
def test_the_missing_mnist_file_is_named(tmp_path, missing, download,
                                         monkeypatch):
    def offline(*a, **k):
        raise RuntimeError(f'Error downloading {MNIST_FILES[0]}.gz')
    monkeypatch.setattr('torchvision.datasets.MNIST.download', offline)
    make_mnist_root(tmp_path, n_train=16, n_test=8)
    (tmp_path / 'mnist' / 'MNIST' / 'raw' / missing).unlink()
    with pytest.raises(DataError) as e:
        get_dataset('MNIST', (28, 28), str(tmp_path), 'test',
                    download=download)
    msg = one_line(e)
    others = [f for f in MNIST_FILES if f != missing]
    assert f'lacks {missing}' in msg and not any(f in msg for f in others)


# ------------------------------------ i. a damaged LMDB header
def damage_header(data_mdb, how):
    """Overwrite both meta pages (pages 0 and 1) past their magic number
    and version: lmdb then fails with an errno text."""
    raw = bytearray(data_mdb.read_bytes())
    for page in (0, 4096):
        if how == 'last_page':  # an absurd last page: ENOMEM when mapped
            raw[page + 140:page + 144] = struct.pack('<I', 0x7fffffff)
        else:  # garbage: EINVAL
            raw[page + 24:page + 4096] = b'\xff' * (4096 - 24)
    data_mdb.write_bytes(bytes(raw))


@pytest.mark.parametrize('how', ['last_page', 'garbage'])
def test_a_damaged_lmdb_header_says_so(tmp_path, how):
    for c in 'ab':
        make_face_folder(tmp_path / 'own' / c, 4, (32, 32))
    out = tmp_path / 'own.lmdb'
    folder_to_lmdb(str(tmp_path / 'own'), str(out), progress=False)
    damage_header(out / 'data.mdb', how)
    with pytest.raises(DataError) as e:
        get_dataset('ImageFolder', (16, 16), str(tmp_path / 'own'), 'train',
                    use_lmdb=True)
    msg = one_line(e)
    assert 'is damaged' in msg and 'use_lmdb=False' in msg
    assert '--to-lmdb' in msg
    assert 'Cannot allocate memory' not in msg
    assert 'Invalid argument' not in msg


# ------------------------------------ j. paths that are not UTF-8
TINY = ['dim=8', 'n_embedding=8', 'batch_size=16', 'batch_size_2=16',
        'train_subset=16', 'eval_subset=None', 'n_epochs=1', 'n_epochs_2=1',
        'num_workers=0', 'n_preview=0', 'pixelcnn_n_blocks=1',
        'pixelcnn_dim=8', 'pixelcnn_linear_dim=8', 'n_sample=4',
        'img_shape=(3,16,16)']


def run_bytes(*argv):
    proc = subprocess.run([sys.executable, *argv], capture_output=True,
                          timeout=600)
    err = proc.stderr.decode(errors='replace')
    assert proc.returncode == 0, err[-3000:]
    assert 'Traceback' not in err and 'UnicodeEncodeError' not in err
    return proc


def test_data_root_and_checkpoints_that_are_not_utf8(tmp_path):
    """Paths are bytes on Linux: an LMDB, the checkpoints and every file
    that records them take them as given."""
    base = bytes(tmp_path)
    root = base + b'/own\xff'
    for c in 'ab':
        make_face_folder(os.fsdecode(root + b'/' + c.encode()), 4, (32, 32))
    run_bytes(str(REPO / 'dldemos/lmdb_loader.py'), root, root + b'.lmdb')
    ckpts = [b'vqvae_path=' + base + b'/x\xff.pth',
             b'gen_model_path=' + base + b'/g\xff.pth']
    work = base + b'/wd'
    common = ['--device', 'cpu', '--threads', '1', '-c', '9',
              '--data-root', root, '--work-dir', work]
    run_bytes(str(REPO / 'dldemos/VQVAE/main.py'), *common, '--stages',
              '1,2,3', '--cfg-options', *TINY, 'use_lmdb=True', *ckpts)
    run_bytes(str(REPO / 'dldemos/VQVAE/evaluate.py'), *common,
              '--n-samples', '4', '--classifier-epochs', '1',
              '--cfg-options', *TINY, 'use_lmdb=True', *ckpts)
    assert os.path.isfile(base + b'/x\xff.pth')
    wd = os.fsdecode(work)
    assert b'x\xff.pth' in Path(wd, 'command.txt').read_bytes()
    config = json.loads(Path(wd, 'config.json').read_text())
    assert config['vqvae_path'].endswith('x\udcff.pth')
    metrics = json.loads(Path(wd, 'metrics.json').read_text())
    assert 'own\udcff' in json.dumps(metrics, ensure_ascii=False)
