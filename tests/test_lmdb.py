"""LMDB: folder -> LMDB conversion, and a dataset that reads back exactly what
the folder dataset gives, split for split, also from DataLoader workers."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import lmdb
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from PIL import Image

from conftest import REPO, make_face_folder
from dldemos import lmdb_loader
from dldemos.utils.errors import DataError
from dldemos.lmdb_loader import (KEYS, META, LMDBImageDataset, LMDBNotFound,
                                 folder_to_lmdb)
from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.dataset import (CELEBA_DIR, CELEBA_HQ_DIR, CelebADataset,
                                   celeba_transform, get_dataloader,
                                   get_dataset, list_images, to_lmdb)
from dldemos.utils.errors import UsageError


@pytest.fixture(scope='module')
def lmdb_root(tiny_data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp('lmdb_root')
    to_lmdb(str(tiny_data_root), str(root))
    return root


def test_to_lmdb_stores_the_file_bytes(tiny_data_root, lmdb_root):
    for d in (CELEBA_DIR, CELEBA_HQ_DIR):
        folder = tiny_data_root / d
        env = lmdb.open(str(lmdb_root / (d + '.lmdb')), readonly=True,
                        lock=False)
        with env, env.begin() as txn:  # closed also when an assert fails
            names = list_images(folder)
            # + the key list, its length and the meta record
            assert txn.stat()['entries'] == len(names) + 3
            meta = json.loads(txn.get(META))
            assert meta['count'] == len(names) and meta['names'] == names
            assert meta['dataset_type'] == ('CelebA' if d == CELEBA_DIR
                                            else 'CelebAHQ')
            # the tutorial's layout: keys '0', '1', ..., pickled file bytes
            assert pickle.loads(txn.get(KEYS)) == \
                [str(i).encode() for i in range(len(names))]
            assert pickle.loads(txn.get(b'__len__')) == len(names)
            for i, name in enumerate(names):  # encoded, not decoded pixels
                assert pickle.loads(txn.get(str(i).encode())) == \
                    (folder / name).read_bytes()
        env.close()


@pytest.mark.parametrize('type_', ['CelebA', 'CelebAHQ'])
@pytest.mark.parametrize('split', ['train', 'test', 'all'])
def test_lmdb_dataset_equals_folder_dataset(tiny_data_root, lmdb_root, type_,
                                            split):
    folder = get_dataset(type_, (32, 32), str(tiny_data_root), split)
    db = get_dataset(type_, (32, 32), str(lmdb_root), split, use_lmdb=True)
    assert len(db) == len(folder) > 0
    for i in range(len(folder)):
        assert torch.equal(db[i], folder[i])


def test_splits_are_disjoint_and_cover_all(lmdb_root):
    path = str(lmdb_root / (CELEBA_DIR + '.lmdb'))
    keys = {s: set(LMDBImageDataset(path, s).keys)
            for s in ('train', 'test', 'all')}
    assert keys['train'].isdisjoint(keys['test'])
    assert keys['train'] | keys['test'] == keys['all']


def test_two_worker_dataloader_reads_the_same_tensors(tiny_data_root,
                                                      lmdb_root):
    path = str(lmdb_root / (CELEBA_HQ_DIR + '.lmdb'))
    db = LMDBImageDataset(path, 'all', celeba_transform((32, 32)))
    db[0]  # the parent opens its environment: forked workers must not use it
    folder = CelebADataset(str(tiny_data_root / CELEBA_HQ_DIR), (32, 32),
                           'all')
    got = torch.cat(list(DataLoader(db, batch_size=3, num_workers=2)))
    want = torch.cat(list(DataLoader(folder, batch_size=3)))
    assert torch.equal(got, want)
    # and through the project's loader, shuffled alike for both
    a = get_dataloader('CelebAHQ', 4, (32, 32), num_workers=2, use_lmdb=True,
                       data_root=str(lmdb_root), split='all', seed=3)
    b = get_dataloader('CelebAHQ', 4, (32, 32), num_workers=0,
                       data_root=str(tiny_data_root), split='all', seed=3)
    assert torch.equal(torch.cat(list(a)), torch.cat(list(b)))


def test_missing_lmdb_names_the_command(tmp_path):
    with pytest.raises(UsageError, match='dataset.py --to-lmdb'):
        get_dataset('CelebAHQ', (32, 32), str(tmp_path), 'train',
                    use_lmdb=True)


def test_main_reports_missing_lmdb_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main_mod.main(['-c', '5', '--data-root', str(tmp_path), '--work-dir',
                       str(tmp_path / 'w'), '--stages', '1', '--cfg-options',
                       'dataset_type=CelebA', 'img_shape=(3,32,32)',
                       'use_lmdb=True'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: LMDB') and '--to-lmdb' in err
    assert '\n' not in err


def test_unfinished_lmdb_is_not_read(tmp_path):
    path = str(tmp_path / 'x.lmdb')
    env = lmdb.open(path, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b'000000.jpg', b'...')  # no key list: conversion cut short
    env.close()
    with pytest.raises(LMDBNotFound, match=KEYS.decode()):
        LMDBImageDataset(path)


def test_conversion_refuses_to_overwrite(tiny_data_root, tmp_path):
    out = tmp_path / 'faces.lmdb'
    n = folder_to_lmdb(str(tiny_data_root / CELEBA_DIR), str(out),
                       progress=False)
    assert n == len(list_images(tiny_data_root / CELEBA_DIR))
    assert not os.path.exists(str(out) + '.tmp')
    with pytest.raises(FileExistsError):
        folder_to_lmdb(str(tiny_data_root / CELEBA_DIR), str(out),
                       progress=False)


def junk_folder(folder, n=20, n_junk=10):
    """n faces and n_junk macOS `._*.jpg` files (AppleDouble, not images)."""
    folder = make_face_folder(folder, n, (32, 32))
    for i in range(n_junk):
        (folder / f'._{i:06d}.jpg').write_bytes(b'\x00\x05\x16\x07' * 8)
    return folder


def test_folder_and_lmdb_split_alike_with_unreadable_files(tmp_path):
    folder = junk_folder(tmp_path / 'faces')
    out = tmp_path / 'faces.lmdb'
    assert folder_to_lmdb(str(folder), str(out), 'CelebA',
                          progress=False) == 20
    for split in ('train', 'test', 'all'):
        by_folder = CelebADataset(str(folder), (16, 16), split)
        db = LMDBImageDataset(str(out), split, celeba_transform((16, 16)))
        assert db.names == by_folder.filenames, split
        for i in range(len(db)):  # every stored image decodes
            assert torch.equal(db[i], by_folder[i])
    assert len(CelebADataset(str(folder), (16, 16), 'test')) == 2


# ------------------------------------------------------------ robustness
def one_line_damaged(msg, path):
    assert '\n' not in msg
    assert f'LMDB {os.path.abspath(path)} is damaged' in msg, msg
    assert 'convert again' in msg, msg


def test_lmdb_without_meta_record_nor_a_pickled_key_list_is_refused(
        tmp_path):
    path = str(tmp_path / 'old.lmdb')  # a JSON key list, no meta: foreign
    env = lmdb.open(path, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b'000000.jpg', b'...')
        txn.put(KEYS, json.dumps(['000000.jpg']).encode())
    env.close()
    with pytest.raises(DataError, match=KEYS.decode()) as e:
        LMDBImageDataset(path)
    assert '\n' not in str(e.value)


def test_key_list_not_matching_its_checksum_is_damage(tiny_data_root,
                                                     tmp_path):
    path = tmp_path / 'x.lmdb'
    folder_to_lmdb(str(tiny_data_root / CELEBA_DIR), str(path),
                   progress=False)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        keys = pickle.loads(txn.get(KEYS))
        txn.put(KEYS, pickle.dumps(keys[1:]))  # one key lost
    env.close()
    with pytest.raises(DataError) as e:
        LMDBImageDataset(str(path))
    one_line_damaged(str(e.value), path)


DAMAGE = ('truncated_half', 'truncated_to_two_pages', 'empty',
          'garbage_meta_page', 'garbage_data_pages')

READER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from dldemos.utils.errors import DataError
from dldemos.lmdb_loader import LMDBImageDataset
for path in sys.argv[2:]:
    try:
        db = LMDBImageDataset(path, 'all')
        for i in range(len(db)):
            db[i]
        print(path, 'read', flush=True)
    except DataError as e:
        print(path, 'DataError', str(e).replace('\n', '<NL>'), flush=True)
"""


@pytest.fixture(scope='module')
def damaged_reads(tiny_data_root, tmp_path_factory):
    """{damage: what reading a copy damaged so gives}, read in a subprocess:
    a truncated file can kill the reader with SIGBUS."""
    root = tmp_path_factory.mktemp('damaged')
    good = root / 'good.lmdb'
    folder_to_lmdb(str(tiny_data_root / CELEBA_DIR), str(good),
                   progress=False)
    data = (good / 'data.mdb').read_bytes()
    psize = 4096
    assert len(data) > 4 * psize
    rng = np.random.default_rng(0)
    paths = {}
    for damage in DAMAGE:
        path = root / f'{damage}.lmdb'
        shutil.copytree(good, path)
        b = bytearray(data)
        if damage == 'truncated_half':
            b = b[:len(b) // 2]
        elif damage == 'truncated_to_two_pages':  # the meta pages only
            b = b[:2 * psize]
        elif damage == 'empty':
            b = b''
        elif damage == 'garbage_meta_page':
            b[:psize] = rng.integers(0, 256, psize, np.uint8).tobytes()
        elif damage == 'garbage_data_pages':  # every B-tree page zeroed
            b[2 * psize:] = bytes(len(b) - 2 * psize)
        (path / 'data.mdb').write_bytes(bytes(b))
        paths[damage] = str(path)
    proc = subprocess.run([sys.executable, '-c', READER, str(REPO),
                           *paths.values()], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ,
                                                OMP_NUM_THREADS='1'))
    lines = dict(line.split(' ', 1) for line in proc.stdout.splitlines())
    return {d: (proc.returncode, proc.stderr, paths[d], lines.get(paths[d]))
            for d in DAMAGE}


@pytest.mark.parametrize('damage', DAMAGE)
def test_damaged_lmdb_is_one_line_data_error(damaged_reads, damage):
    rc, err, path, line = damaged_reads[damage]
    assert rc == 0, f'reader died (rc {rc}): {err[-2000:]}'
    assert line is not None and line.startswith('DataError '), (line, err)
    one_line_damaged(line[len('DataError '):], path)


def store(path, name, value):
    """Replace the stored bytes of image `name` (pickled, at its key)."""
    key = str(LMDBImageDataset(str(path)).names.index(name)).encode()
    lmdb_loader.drop(os.path.abspath(path))
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(key, pickle.dumps(value))
    env.close()


def test_empty_stored_image_is_skipped_with_a_warning(tmp_path, capsys):
    folder = make_face_folder(tmp_path / 'faces', 5, (32, 32))
    path = tmp_path / 'faces.lmdb'
    folder_to_lmdb(str(folder), str(path), progress=False)
    store(path, '000001.jpg', b'')
    db = LMDBImageDataset(str(path), 'all', celeba_transform((16, 16)))
    got = [db[i] for i in range(len(db))] + [db[1]]
    assert torch.equal(got[1], got[2])  # the next image instead
    err = capsys.readouterr().err
    assert err.count('000001.jpg') == 1  # warned once
    assert 'skipping unreadable image' in err


@pytest.mark.parametrize('max_pixels', [10000, 4000])  # warning, error
def test_decompression_bomb_stored_is_skipped(tmp_path, capsys, monkeypatch,
                                              max_pixels):
    folder = make_face_folder(tmp_path / 'faces', 4, (32, 32))
    big = np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)
    Image.fromarray(big).save(folder / '000002.png')  # 16384 pixels
    path = tmp_path / 'faces.lmdb'
    folder_to_lmdb(str(folder), str(path), progress=False)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', max_pixels)
    db = LMDBImageDataset(str(path), 'all', celeba_transform((16, 16)))
    i = db.names.index('000002.png')
    assert torch.equal(db[i], db[i + 1])
    assert 'skipping unreadable image' in capsys.readouterr().err


def test_non_utf8_file_name_is_skipped_with_a_warning(tmp_path, capsys):
    folder = make_face_folder(tmp_path / 'faces', 10, (32, 32))
    bad = os.path.join(os.fsencode(folder), b'\xff_face.jpg')
    try:
        with open(bad, 'wb') as f:
            f.write((folder / '000000.jpg').read_bytes())
    except OSError:
        pytest.skip('the filesystem refuses non-UTF-8 names')
    out = tmp_path / 'faces.lmdb'
    assert folder_to_lmdb(str(folder), str(out), progress=False) == 10
    assert not os.path.exists(str(out) + '.tmp')
    err = capsys.readouterr().err
    assert '\\xff_face.jpg' in err and 'not UTF-8' in err
    # the folder dataset leaves it out too: both split alike
    assert CelebADataset(str(folder), (16, 16), 'all').filenames == \
        LMDBImageDataset(str(out)).names


def fail_third_open(monkeypatch):
    """The third file lmdb_loader opens is unreadable (PermissionError), as
    an image might be mid-conversion."""
    opened = []

    def failing_open(path, *args, **kwargs):
        opened.append(path)
        if len(opened) == 3:
            raise PermissionError(13, 'Permission denied', path)
        return open(path, *args, **kwargs)
    monkeypatch.setattr(lmdb_loader, 'open', failing_open, raising=False)


def test_failed_conversion_leaves_no_tmp_folder(tmp_path, monkeypatch):
    folder = make_face_folder(tmp_path / 'faces', 6, (32, 32))
    fail_third_open(monkeypatch)
    out = tmp_path / 'faces.lmdb'
    with pytest.raises(DataError) as e:
        folder_to_lmdb(str(folder), str(out), progress=False)
    assert '\n' not in str(e.value) and '000002.jpg' in str(e.value)
    assert not os.path.exists(out)
    assert not os.path.exists(str(out) + '.tmp')


def test_lmdb_of_another_dataset_type_is_refused(tmp_path):
    digits = make_face_folder(tmp_path / 'digits', 4, (28, 28))
    root = tmp_path / 'root'
    path = root / (CELEBA_HQ_DIR + '.lmdb')  # placed as the CelebAHQ LMDB
    folder_to_lmdb(str(digits), str(path), dataset_type='MNIST',
                   progress=False)
    with pytest.raises(DataError) as e:
        get_dataset('CelebAHQ', (32, 32), str(root), 'train', use_lmdb=True)
    msg = str(e.value)
    assert 'MNIST' in msg and 'CelebAHQ' in msg and '\n' not in msg
    # one made without a type is no CelebAHQ LMDB either
    shutil.rmtree(path)
    folder_to_lmdb(str(digits), str(path), progress=False)
    with pytest.raises(DataError, match='CelebAHQ'):
        get_dataset('CelebAHQ', (32, 32), str(root), 'train', use_lmdb=True)
    # but reading it without asking for a type works
    assert len(LMDBImageDataset(str(path), 'all')) == 4


def test_iterating_a_dataset_stops_at_its_end(tmp_path):
    """Skipping to the next image wraps around, but an index past the end is
    an IndexError, so list(dataset) ends (it looped forever)."""
    folder = make_face_folder(tmp_path / 'faces', 5, (32, 32))
    folder_to_lmdb(str(folder), str(tmp_path / 'f.lmdb'), progress=False)
    for data in (CelebADataset(str(folder), (16, 16), 'all'),
                 LMDBImageDataset(str(tmp_path / 'f.lmdb'), 'all',
                                  celeba_transform((16, 16)))):
        assert len(list(data)) == 5
        assert torch.equal(data[-1], data[4])
        with pytest.raises(IndexError):
            data[5]
