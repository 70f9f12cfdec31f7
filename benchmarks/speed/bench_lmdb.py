"""Images/s read through the folder dataset vs the LMDB dataset.

    python benchmarks/speed/bench_lmdb.py
    python benchmarks/speed/bench_lmdb.py --folder \
        path/to/data/celebA/img_align_celeba --img-size 64 --repeats 3

Converts the folder (default: the CelebA faces under the project's default
data root, data/celebA/img_align_celeba) to an LMDB in a temporary
directory, then times full passes of a DataLoader over both, with 0 and 2
workers: the whole pipeline (read, JPEG decode, crop, resize,
to-tensor) as training sees it, and the storage alone (encoded bytes, no
decoding). One warm-up pass per reader first, so both are timed from the page
cache: this compares file-per-image against one memory-mapped file, not a cold
disk. Reports the best of --repeats passes and the LMDB / folder ratio.
"""
import argparse
import os
import sys
import tempfile
import time

if __name__ == '__main__':  # run as a script: the repo root importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

import torch
from torch.utils.data import DataLoader, Dataset

from dldemos.lmdb_loader import LMDBImageDataset, folder_to_lmdb, \
    open_readonly
from dldemos.VQVAE.dataset import CelebADataset, list_images
from dldemos.VQVAE.runtime.hardware import cpu_name

# the CelebA faces under main.py's default --data-root
DEFAULT_FOLDER = os.path.join('data', 'celebA', 'img_align_celeba')


class FolderBytes(Dataset):
    """The encoded file of each image, as bytes (no decoding)."""

    def __init__(self, folder):
        self.folder = folder
        self.names = list_images(folder)

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        with open(os.path.join(self.folder, self.names[i]), 'rb') as f:
            return f.read()


class LMDBBytes(Dataset):
    def __init__(self, path):
        ds = LMDBImageDataset(path)
        self.path, self.keys = ds.path, ds.keys

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        with open_readonly(self.path).begin() as txn:
            return txn.get(self.keys[i])  # a copy, valid after the txn


def images_per_s(dataset, workers, batch_size, repeats):
    collate = None if isinstance(dataset, (CelebADataset, LMDBImageDataset)) \
        else list  # byte strings: no stacking
    best = float('inf')
    for _ in range(repeats):
        # fresh loader each pass: worker start-up is part of what we time
        loader = DataLoader(dataset, batch_size=batch_size,
                            num_workers=workers, collate_fn=collate)
        tic = time.perf_counter()
        n = sum(len(b) for b in loader)
        best = min(best, time.perf_counter() - tic)
    assert n == len(dataset)
    return n / best


def device_line():
    return (f'{cpu_name()}, {os.cpu_count()} cores, '
            f'torch {torch.__version__}, '
            f'{torch.get_num_threads()} threads')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--folder', default=DEFAULT_FOLDER, metavar='DIR',
                        help='a folder of images (default: %(default)s)')
    parser.add_argument('--img-size', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--repeats', type=int, default=2)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.folder):
        sys.exit(f'error: no folder {args.folder}: pass --folder')

    print('device:', device_line())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'faces.lmdb')
        tic = time.perf_counter()
        n = folder_to_lmdb(args.folder, path, progress=False)
        convert_s = time.perf_counter() - tic
        folder_mb = sum(os.path.getsize(os.path.join(args.folder, f))
                        for f in list_images(args.folder)) / 2**20
        lmdb_mb = os.path.getsize(os.path.join(path, 'data.mdb')) / 2**20
        print(f'{n} images from {args.folder}')
        print(f'conversion: {convert_s:.1f} s; folder {folder_mb:.1f} MiB of '
              f'files, LMDB {lmdb_mb:.1f} MiB')
        shape = (args.img_size, args.img_size)
        cases = {
            'decode+transform': (CelebADataset(args.folder, shape),
                                 LMDBImageDataset(path, 'all',
                                                  CelebADataset(
                                                      args.folder,
                                                      shape).pipeline)),
            'bytes only': (FolderBytes(args.folder), LMDBBytes(path)),
        }
        for folder_ds, lmdb_ds in cases.values():  # warm the page cache
            images_per_s(folder_ds, 0, args.batch_size, 1)
            images_per_s(lmdb_ds, 0, args.batch_size, 1)
        print(f'\n{"pipeline":<18}{"workers":>8}{"folder img/s":>14}'
              f'{"LMDB img/s":>12}{"LMDB/folder":>13}')
        for name, (folder_ds, lmdb_ds) in cases.items():
            for w in args.workers:
                a = images_per_s(folder_ds, w, args.batch_size, args.repeats)
                b = images_per_s(lmdb_ds, w, args.batch_size, args.repeats)
                print(f'{name:<18}{w:>8}{a:>14.0f}{b:>12.0f}{b / a:>12.2f}x',
                      flush=True)
    print('\ncommand:', ' '.join([sys.executable] + sys.argv))


if __name__ == '__main__':
    main()
