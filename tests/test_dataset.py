"""Datasets and loaders: shapes, ranges, splits, subsets, seeded order."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DistributedSampler, Subset

from conftest import REPO, make_face_folder, make_mnist_root
from dldemos.VQVAE import dataset as ds
from dldemos.VQVAE.dataset import (CelebADataset, get_dataloader, get_dataset,
                                   list_images)



# ------------------------------------------------------------------ MNIST
@pytest.mark.parametrize('split,n', [('train', 64), ('test', 32)])
def test_mnist_tiny_shapes_range_and_split_sizes(tiny_data_root, split, n):
    data = get_dataset('MNIST', data_root=str(tiny_data_root), split=split)
    assert len(data) == n
    x = torch.stack([data[i] for i in range(len(data))])
    assert x.shape == (n, 1, 28, 28)
    assert x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x.max() == 1  # the fixture's bars are 255: scaled by 1/255


def test_mnist_train_and_test_differ(tiny_data_root):
    train = get_dataset('MNIST', data_root=str(tiny_data_root))
    test = get_dataset('MNIST', data_root=str(tiny_data_root), split='test')
    assert not torch.equal(train[0], test[0])


def test_mnist_resized(tiny_data_root):
    data = get_dataset('MNIST', (32, 32), data_root=str(tiny_data_root))
    x = data[0]
    assert x.shape == (1, 32, 32)
    assert 0 <= x.min() and x.max() <= 1


def test_mnist_has_no_all_split(tiny_data_root):
    with pytest.raises(ValueError):
        get_dataset('MNIST', data_root=str(tiny_data_root), split='all')


def test_unknown_dataset_type_and_split(tiny_data_root):
    with pytest.raises(ValueError, match='MNIST'):
        get_dataset('ImageNet', data_root=str(tiny_data_root))
    with pytest.raises(ValueError, match='train'):
        get_dataset('CelebA', data_root=str(tiny_data_root), split='val')


def test_missing_mnist_without_download_says_where(tmp_path):
    with pytest.raises(ds.DataError, match='--data-root'):
        get_dataset('MNIST', data_root=str(tmp_path), download=False)


def test_failed_mnist_download_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError('Error downloading x.gz:\nTried http://a, got:\n'
                           '<urlopen error>')
    monkeypatch.setattr(ds.torchvision.datasets, 'MNIST', offline)
    with pytest.raises(ds.DataError) as e:
        get_dataset('MNIST', data_root=str(tmp_path))
    assert '\n' not in str(e.value) and 'x.gz' in str(e.value)


def test_missing_or_empty_folder_says_where(tmp_path):
    with pytest.raises(ds.DataError, match='--data-root'):
        CelebADataset(str(tmp_path / 'nothing'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ds.DataError, match='no image files'):
        CelebADataset(str(tmp_path / 'empty'))


def test_real_mnist_sizes(shared_data):
    train = get_dataset('MNIST', data_root=str(shared_data), download=False)
    test = get_dataset('MNIST', data_root=str(shared_data), split='test',
                       download=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train[0].shape == (1, 28, 28)


# ---------------------------------------------------------- CelebA folders
@pytest.fixture
def face_folder(tmp_path):
    folder = make_face_folder(tmp_path / 'faces', n=18)
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 255, (218, 178), dtype=np.uint8)
    Image.fromarray(gray, 'L').save(folder / 'zz_gray.png')
    rgba = rng.integers(0, 255, (200, 200, 4), dtype=np.uint8)
    Image.fromarray(rgba, 'RGBA').save(folder / 'aa_rgba.PNG')
    (folder / 'notes.md').write_text('not an image either')
    os.mkdir(folder / 'subdir.jpg')  # a folder named like an image
    return folder


def test_only_image_files_are_listed(face_folder):
    names = list_images(face_folder)
    assert len(names) == 20
    assert names == sorted(names)
    assert 'README.txt' not in names and 'notes.md' not in names
    assert 'subdir.jpg' not in names
    assert 'zz_gray.png' in names and 'aa_rgba.PNG' in names


@pytest.mark.parametrize('img_shape', [(64, 64), (32, 48)])
def test_every_image_is_rgb_crop_resized(face_folder, img_shape):
    data = CelebADataset(str(face_folder), img_shape, split='all')
    assert len(data) == 20
    for i in range(len(data)):
        x = data[i]
        assert x.shape == (3, *img_shape), data.filenames[i]
        assert x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1


def test_center_crop_then_resize(tmp_path):
    # a 168x168 centre square of ones in a zero 178x218 image: after
    # CenterCrop(168) only the ones remain
    arr = np.zeros((218, 178, 3), np.uint8)
    top, left = (218 - 168) // 2, (178 - 168) // 2
    arr[top:top + 168, left:left + 168] = 255
    folder = tmp_path / 'one'
    folder.mkdir()
    Image.fromarray(arr).save(folder / 'a.png')
    x = CelebADataset(str(folder), (16, 16), split='all')[0]
    assert x.shape == (3, 16, 16)
    assert x.min() == 1


def test_default_celeba_shape_is_64(tiny_data_root):
    data = get_dataset('CelebA', data_root=str(tiny_data_root), split='all')
    assert data[0].shape == (3, 64, 64)


@pytest.mark.parametrize('n', [1, 2, 9, 20, 31])
def test_split_is_disjoint_covers_all_and_holds_out_the_last(tmp_path, n):
    folder = tmp_path / 'f'
    folder.mkdir()
    buf = io.BytesIO()
    Image.new('RGB', (4, 4)).save(buf, 'JPEG')  # a readable file is enough
    for i in range(n):
        (folder / f'{(i * 7919) % 1000:04d}_{i}.jpg').write_bytes(
            buf.getvalue())
    names = list_images(folder)
    train = CelebADataset(str(folder), split='train').filenames
    test = CelebADataset(str(folder), split='test').filenames
    everything = CelebADataset(str(folder), split='all').filenames
    assert everything == names
    n_test = max(1, round(n * 0.1))
    assert test == names[-n_test:]
    if n > 1:
        assert set(train).isdisjoint(test)
        assert sorted(train + test) == names
        assert train == names[:-n_test]


def test_celebahq_folder_via_get_dataset(tiny_data_root):
    train = get_dataset('CelebAHQ', (32, 32), str(tiny_data_root))
    test = get_dataset('CelebAHQ', (32, 32), str(tiny_data_root), 'test')
    assert (len(train), len(test)) == (18, 2)
    assert train[0].shape == (3, 32, 32)


# ---------------------------------------------------------------- loaders
def order(loader):
    return torch.cat([batch for batch in loader])


@pytest.mark.parametrize('subset,expected', [(5, 5), (64, 64), (1000, 64)])
def test_subset_caps_length(tiny_data_root, subset, expected):
    loader = get_dataloader('MNIST', 8, data_root=str(tiny_data_root),
                            subset=subset)
    assert len(loader.dataset) == expected
    assert order(loader).shape[0] == expected


def test_subset_is_the_first_images(tiny_data_root):
    full = get_dataset('MNIST', data_root=str(tiny_data_root))
    loader = get_dataloader('MNIST', 4, data_root=str(tiny_data_root),
                            subset=4, shuffle=False)
    expected = torch.stack([full[i] for i in range(4)])
    assert torch.equal(order(loader), expected)


def test_same_seed_same_order_and_set_epoch_changes_it(tiny_data_root):
    def make(seed):
        return get_dataloader('MNIST', 8, data_root=str(tiny_data_root),
                              seed=seed)
    a, b = make(3), make(3)
    assert torch.equal(order(a), order(b))
    first = order(a)
    a.sampler.set_epoch(1)
    second = order(a)
    assert not torch.equal(first, second)
    # an epoch is a permutation of the data: same images, new order
    torch.testing.assert_close(first.double().sum(0),
                               second.double().sum(0))
    b.sampler.set_epoch(1)
    assert torch.equal(order(b), second)
    assert not torch.equal(order(make(4)), first)


def test_no_shuffle_is_dataset_order(tiny_data_root):
    data = get_dataset('MNIST', data_root=str(tiny_data_root), split='test')
    loader = get_dataloader('MNIST', 5, data_root=str(tiny_data_root),
                            split='test', shuffle=False)
    assert torch.equal(order(loader),
                       torch.stack([data[i] for i in range(len(data))]))


def test_celeba_loader_with_workers(tiny_data_root):
    loader = get_dataloader('CelebA', 4, (32, 32), num_workers=2,
                            data_root=str(tiny_data_root), subset=8)
    batches = list(loader)
    assert len(batches) == 2 and batches[0].shape == (4, 3, 32, 32)


def test_dist_train_returns_loader_and_sampler(tiny_data_root, tmp_path):
    assert not dist.is_initialized()
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    try:
        loader, sampler = get_dataloader('MNIST', 8, dist_train=True,
                                         data_root=str(tiny_data_root),
                                         seed=1)
        assert isinstance(sampler, DistributedSampler)
        assert loader.sampler is sampler
        assert order(loader).shape == (64, 1, 28, 28)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- script
def test_dataset_script_writes_previews(tiny_data_root, tmp_path):
    out = tmp_path / 'work'
    proc = subprocess.run(
        [sys.executable, 'dldemos/VQVAE/dataset.py', '--data-root',
         str(tiny_data_root), '--work-dir', str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr
    for name in ('tmp_mnist.jpg', 'tmp_celebahq.jpg'):
        with Image.open(out / name) as img:
            assert img.size[0] > 0
    with Image.open(out / 'tmp_celebahq.jpg') as img:
        assert img.size == (4 * 64, 4 * 64) and img.mode == 'RGB'


def test_dataset_main_without_celebahq_writes_only_mnist(tmp_path):
    root = make_mnist_root(tmp_path / 'data', n_train=8, n_test=4)
    out = tmp_path / 'work'
    ds.main(['--data-root', str(root), '--work-dir', str(out)])
    assert sorted(os.listdir(out)) == ['tmp_mnist.jpg']


@pytest.mark.parametrize('max_pixels', [10000, 4000])  # PIL warns, raises
def test_decompression_bomb_is_skipped_by_the_folder_reader(
        tmp_path, capsys, monkeypatch, max_pixels):
    folder = make_face_folder(tmp_path / 'faces', 4, (32, 32))
    big = np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)
    Image.fromarray(big).save(folder / '000002.png')  # 16384 pixels
    data = CelebADataset(str(folder), (16, 16), split='all')
    assert '000002.png' in data.filenames
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', max_pixels)
    i = data.filenames.index('000002.png')
    assert torch.equal(data[i], data[i + 1])  # the next image instead
    err = capsys.readouterr().err
    assert 'skipping unreadable image' in err and '000002.png' in err


def test_lmdb_is_refused_for_mnist(tiny_data_root):
    for split in ('train', 'test'):
        with pytest.raises(ds.UsageError, match='use_lmdb') as e:
            get_dataset('MNIST', data_root=str(tiny_data_root), split=split,
                        use_lmdb=True)
        assert '\n' not in str(e.value) and 'CelebA' in str(e.value)


# ------------------------------------------------------- files fingerprint
def test_files_fingerprint_of_a_folder_follows_its_split_files(tmp_path):
    folder = make_face_folder(tmp_path / 'faces', 20, (32, 32))

    def fp(split='train'):
        return ds.files_fingerprint(CelebADataset(str(folder), split=split))
    before = fp()
    assert before == fp() and before != fp('test')
    os.utime(folder / '000003.jpg', ns=(1, 1))  # a file rewritten
    assert fp() != before
    before = fp()
    (folder / 'README.txt').write_text('changed')  # not an image: no change
    assert fp() == before
    (folder / '000003.jpg').unlink()
    assert fp() != before


def test_files_fingerprint_of_subsets_mnist_and_lmdb(tmp_path):
    from dldemos.lmdb_loader import LMDBImageDataset, folder_to_lmdb
    root = make_mnist_root(tmp_path / 'data', n_train=8, n_test=4)
    train = get_dataset('MNIST', data_root=str(root))
    test = get_dataset('MNIST', data_root=str(root), split='test')
    fps = {ds.files_fingerprint(d) for d in
           (train, test, Subset(train, range(4)), Subset(train, range(5)))}
    assert len(fps) == 4 and None not in fps
    before = ds.files_fingerprint(train)
    os.utime(root / 'mnist' / 'MNIST' / 'raw' / 'train-images-idx3-ubyte',
             ns=(1, 1))
    assert ds.files_fingerprint(get_dataset('MNIST', data_root=str(root))) \
        != before
    folder = make_face_folder(tmp_path / 'faces', 10, (32, 32))
    folder_to_lmdb(str(folder), str(tmp_path / 'a.lmdb'), progress=False)
    a = LMDBImageDataset(str(tmp_path / 'a.lmdb'), 'train')
    assert ds.files_fingerprint(a) == ds.files_fingerprint(
        LMDBImageDataset(str(tmp_path / 'a.lmdb'), 'train'))
    assert ds.files_fingerprint(a) != ds.files_fingerprint(
        LMDBImageDataset(str(tmp_path / 'a.lmdb'), 'test'))
    (folder / '000009.jpg').unlink()
    folder_to_lmdb(str(folder), str(tmp_path / 'b.lmdb'), progress=False)
    assert ds.files_fingerprint(a) != ds.files_fingerprint(
        LMDBImageDataset(str(tmp_path / 'b.lmdb'), 'train'))
