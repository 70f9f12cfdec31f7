"""Shared fixtures: tiny generated datasets (always available) and the real
data in ../shared/data (tests that need it skip when it is absent)."""
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tests use tiny models: a second intra-op thread buys nothing, and when the
# cores are shared its spin-waits make them 10-40x slower. Subprocesses
# (torchrun, main.py) inherit the setting through the environment.
os.environ.setdefault('OMP_NUM_THREADS', '1')
# The suite is a CPU suite (exact-equality checks assume fp32 CPU kernels);
# on a GPU machine keep it, and the subprocesses it starts, off the GPU.
os.environ['CUDA_VISIBLE_DEVICES'] = ''
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


def write_idx(path, array):
    """Write an MNIST IDX file (uint8 images [N, 28, 28] or labels [N])."""
    magic = 2051 if array.ndim == 3 else 2049
    with open(path, 'wb') as f:
        f.write(struct.pack('>I', magic))
        for d in array.shape:
            f.write(struct.pack('>I', d))
        f.write(array.astype(np.uint8).tobytes())


def fake_digits(n, rng):
    """n 28x28 uint8 images: a bright bar or box per image (learnable)."""
    imgs = np.zeros((n, 28, 28), np.uint8)
    labels = rng.integers(0, 10, n)
    for i, label in enumerate(labels):
        r, c = rng.integers(4, 12, 2)
        if label % 2:
            imgs[i, r:r + 12, c + 4:c + 8] = 255
        else:
            imgs[i, r:r + 10, c:c + 10] = 200
            imgs[i, r + 3:r + 7, c + 3:c + 7] = 0
    return imgs, labels


def make_mnist_root(root, n_train=64, n_test=32, seed=0):
    """A data root whose mnist/MNIST/raw holds tiny IDX files."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / 'mnist' / 'MNIST' / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        imgs, labels = fake_digits(n, rng)
        write_idx(raw / f'{prefix}-images-idx3-ubyte', imgs)
        write_idx(raw / f'{prefix}-labels-idx1-ubyte', labels)
    return Path(root)


def make_face_folder(folder, n=20, size=(178, 218), seed=0):
    """A folder of n small RGB JPEGs (plus one non-image file to ignore)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f'{i:06d}.jpg')
    (folder / 'README.txt').write_text('not an image')
    return folder


@pytest.fixture(scope='session')
def tiny_data_root(tmp_path_factory):
    """A data root with tiny MNIST, CelebA and CelebAHQ stand-ins."""
    root = tmp_path_factory.mktemp('data')
    make_mnist_root(root)
    make_face_folder(root / 'celebA' / 'img_align_celeba', 20)
    make_face_folder(root / 'celebA' / 'celeba_hq_256', 20, (256, 256), 1)
    return root


@pytest.fixture(scope='session')
def shared_data():
    """../shared/data with the real MNIST, or skip."""
    if not (SHARED_DATA / 'mnist' / 'MNIST' / 'raw' /
            't10k-images-idx3-ubyte').exists():
        pytest.skip('real data (../shared/data) not available')
    return SHARED_DATA
