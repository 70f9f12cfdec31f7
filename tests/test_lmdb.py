"""LMDB: folder -> LMDB conversion, and a dataset that reads back exactly what
the folder dataset gives, split for split, also from DataLoader workers."""
import os

import lmdb
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_face_folder
from dldemos.lmdb_loader import (KEYS, LMDBImageDataset, LMDBNotFound,
                                 folder_to_lmdb)
from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.dataset import (CELEBA_DIR, CELEBA_HQ_DIR, CelebADataset,
                                   celeba_transform, get_dataloader,
                                   get_dataset, list_images, to_lmdb)
from dldemos.VQVAE.runtime import UsageError


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
        with env.begin() as txn:
            names = list_images(folder)
            assert txn.stat()['entries'] == len(names) + 1  # + the key list
            for name in names:  # the encoded file, not decoded pixels
                assert txn.get(name.encode()) == (folder / name).read_bytes()
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
    assert folder_to_lmdb(str(folder), str(out), progress=False) == 20
    for split in ('train', 'test', 'all'):
        by_folder = CelebADataset(str(folder), (16, 16), split)
        db = LMDBImageDataset(str(out), split, celeba_transform((16, 16)))
        assert [k.decode() for k in db.keys] == by_folder.filenames, split
        for i in range(len(db)):  # every stored image decodes
            assert torch.equal(db[i], by_folder[i])
    assert len(CelebADataset(str(folder), (16, 16), 'test')) == 2
