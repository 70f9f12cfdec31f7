"""Image folders as LMDB databases: one memory-mapped file instead of many
small ones, which is what the tutorial's multi-GPU script reads from.

    python dldemos/lmdb_loader.py FOLDER OUT.lmdb      # any image folder
    python dldemos/VQVAE/dataset.py --to-lmdb ...       # the CelebA folders

Each image is stored as its encoded file bytes (JPEG stays JPEG: a fraction of
the decoded size) under its file name. A `__keys__` record lists the names in
sorted order, so a dataset can take the same train / test split as the
folder it came from without scanning the database.
"""
import argparse
import io
import json
import os
import shutil
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../..')))

import lmdb
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from dldemos.image_folder import dataset_files, split_files

KEYS = b'__keys__'
TXN_IMAGES = 1000  # images per write transaction: bounded memory


class LMDBNotFound(FileNotFoundError):
    pass


def map_size_for(n_bytes, n_files):
    """LMDB reserves its map size up front (sparse on Linux, so it costs
    address space, not disk). Values larger than a page go to overflow pages
    rounded up to 4 KiB, hence one extra page per file, plus B-tree slack."""
    return int(n_bytes * 1.25) + n_files * 2 * 4096 + (64 << 20)


def folder_to_lmdb(folder, out_path, progress=True):
    """Write every readable image of `folder` into a new LMDB at `out_path`
    (image_folder.dataset_files: the files the folder dataset reads, so the
    LMDB splits as the folder does).

    Written to `<out_path>.tmp` and renamed at the end, so an interrupted
    conversion never leaves a half-filled database at `out_path`.
    Returns the number of images stored.
    """
    if os.path.exists(out_path):
        raise FileExistsError(f'{out_path} exists: delete it to rebuild')
    names = dataset_files(folder, 'all')  # DataError if there are none
    n_bytes = sum(os.path.getsize(os.path.join(folder, n)) for n in names)
    tmp = out_path.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(tmp)), exist_ok=True)
    env = lmdb.open(tmp, map_size=map_size_for(n_bytes, len(names)),
                    subdir=True, meminit=False, map_async=True)
    try:
        bar = tqdm(names, desc=f'-> {os.path.basename(out_path)}',
                   disable=not progress, unit='img')
        txn = env.begin(write=True)
        for i, name in enumerate(bar):
            with open(os.path.join(folder, name), 'rb') as f:
                txn.put(name.encode(), f.read())
            if (i + 1) % TXN_IMAGES == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(KEYS, json.dumps(names).encode())
        txn.commit()
        env.sync()
    finally:
        env.close()
    os.replace(tmp, out_path)
    return len(names)


_ENVS = {}  # absolute path -> read-only environment of this process
_ENVS_PID = None


def open_readonly(path, reopen=False):
    """One shared read-only environment per LMDB and process.

    lmdb refuses to open the same files twice in a process, and a handle
    inherited through fork() must not be used, so every dataset on `path` in
    this process shares one handle, and a forked DataLoader worker drops the
    parent's handles and opens its own. Read-only without the lock file: no
    one writes to a finished database. reopen=True (when a dataset is made)
    picks up a database rebuilt at the same path.
    """
    global _ENVS_PID
    if _ENVS_PID != os.getpid():
        for env in _ENVS.values():
            # Closing the inherited copy only unmaps this process's view;
            # with lock=False there is no shared reader table to disturb.
            env.close()
        _ENVS.clear()
        _ENVS_PID = os.getpid()
    env = _ENVS.get(path)  # the per-image path: a dict lookup
    if env is None or reopen:
        path = os.path.abspath(path)
        if path in _ENVS:
            _ENVS.pop(path).close()
        if not os.path.isfile(os.path.join(path, 'data.mdb')):
            raise LMDBNotFound(f'LMDB {path} not found: make it with `python '
                               f'dldemos/lmdb_loader.py FOLDER {path}`')
        env = _ENVS[path] = lmdb.open(path, readonly=True, lock=False,
                                      readahead=False, meminit=False,
                                      subdir=True)
    return env


def read_keys(path):
    """Sorted image names stored in the LMDB at `path`."""
    with open_readonly(path, reopen=True).begin() as txn:
        keys = txn.get(KEYS)
    if keys is None:
        raise LMDBNotFound(f'LMDB {path} has no {KEYS.decode()} record: it '
                           'was not written by folder_to_lmdb or its '
                           'conversion did not finish; delete it and convert '
                           'again')
    return json.loads(keys)


class LMDBImageDataset(Dataset):
    """Images of an LMDB made by folder_to_lmdb, as the folder dataset gives
    them: PIL RGB image -> transform.

    split: 'train' / 'test' / 'all', the same rule on the same sorted names as
    the folder (image_folder.split_files), so held-out images stay held out.
    The environment is opened lazily in the process that reads (each
    DataLoader worker opens its own, see open_readonly); the dataset holds
    only the path and the keys, so it pickles to spawned workers as well.
    """

    def __init__(self, path, split='all', transform=None):
        super().__init__()
        self.path = os.path.abspath(path)  # the key of its shared handle
        self.transform = transform
        self.keys = [k.encode() for k in split_files(read_keys(path), split)]

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index: int):
        with open_readonly(self.path).begin(buffers=True) as txn:
            buf = txn.get(self.keys[index])  # valid only inside the txn
            img = Image.open(io.BytesIO(buf)).convert('RGB')  # decoded now
        return self.transform(img) if self.transform else img


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an image folder to an LMDB.')
    parser.add_argument('folder')
    parser.add_argument('out', help='the LMDB to write (a new folder)')
    args = parser.parse_args(argv)
    try:
        n = folder_to_lmdb(args.folder, args.out)
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    print(f'wrote {n} images to {args.out}')


if __name__ == '__main__':
    main()
