"""Image folders as LMDB databases: one memory-mapped file instead of many
small ones, which is what the tutorial's multi-GPU script reads from.

    python dldemos/lmdb_loader.py FOLDER OUT.lmdb      # any image folder
    python dldemos/VQVAE/dataset.py --to-lmdb ...       # the CelebA folders

Each image is stored as its encoded file bytes (JPEG stays JPEG: a fraction of
the decoded size) under its file name. A `__keys__` record lists the names in
sorted order, so a dataset can take the same train / test split as the
folder it came from without scanning the database. A `__meta__` record holds
the format version, the dataset type (if given), the image count and a
checksum of the key list: a database this tool did not finish, a damaged one
and one of another dataset are refused with a one-line DataError.
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
from torch.utils.data import Dataset
from tqdm import tqdm

from dldemos.utils.errors import DataError
from dldemos.utils.image_folder import (dataset_files, decode_rgb, first_decodable,
                                  names_checksum, split_files)

KEYS = b'__keys__'
META = b'__meta__'
FORMAT_VERSION = 1
TXN_IMAGES = 1000  # images per write transaction: bounded memory
CONVERT = ('`python dldemos/VQVAE/dataset.py --to-lmdb` (the CelebA folders) '
           'or `python dldemos/lmdb_loader.py FOLDER OUT`')


class LMDBNotFound(DataError, FileNotFoundError):
    """No LMDB at the path, or one without the records this tool writes."""


def first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def damaged(path, why):
    return DataError(f'LMDB {path} is damaged ({why}): delete it and convert '
                     f'again with {CONVERT}')


def map_size_for(n_bytes, n_files):
    """LMDB reserves its map size up front (sparse on Linux, so it costs
    address space, not disk). Values larger than a page go to overflow pages
    rounded up to 4 KiB, hence one extra page per file, plus B-tree slack."""
    return int(n_bytes * 1.25) + n_files * 2 * 4096 + (64 << 20)


def folder_to_lmdb(folder, out_path, dataset_type=None, progress=True):
    """Write every readable image of `folder` into a new LMDB at `out_path`
    (image_folder.dataset_files: the files the folder dataset reads, so the
    LMDB splits as the folder does), with its meta record; `dataset_type`
    ('CelebA', ...) is recorded there for readers to check.

    Written to `<out_path>.tmp` and renamed at the end, so an interrupted
    or failed conversion never leaves a half-filled database at `out_path`
    (nor the .tmp folder). Returns the number of images stored.
    """
    if os.path.exists(out_path):
        raise FileExistsError(f'{out_path} exists: delete it to rebuild')
    label = f'{dataset_type} images' if dataset_type else 'images'
    names = dataset_files(folder, 'all', label)  # DataError if none
    meta = {'format_version': FORMAT_VERSION, 'dataset_type': dataset_type,
            'count': len(names), 'names_sha256': names_checksum(names)}
    tmp = out_path.rstrip('/') + '.tmp'
    try:
        n_bytes = sum(os.path.getsize(os.path.join(folder, n))
                      for n in names)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.dirname(os.path.abspath(tmp)), exist_ok=True)
        env = lmdb.open(tmp, map_size=map_size_for(n_bytes, len(names)),
                        subdir=True, meminit=False, map_async=True)
        txn = None
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
            txn.put(META, json.dumps(meta).encode())
            txn.commit()
            txn = None
            env.sync()
        finally:
            if txn is not None:
                txn.abort()
            env.close()
        os.replace(tmp, out_path)
    except OSError as e:
        where = f' {e.filename}' if e.filename else ''
        raise DataError(f'converting {folder} to {out_path} failed: could '
                        f'not access{where} ({e.strerror or first_line(e)}); '
                        'nothing was written') from None
    except lmdb.Error as e:
        raise DataError(f'converting {folder} to {out_path} failed: LMDB '
                        f'error ({first_line(e)}); nothing was written'
                        ) from None
    finally:  # any failure, Ctrl-C included: no half-written folder left
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
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
        drop(path)
        env = _ENVS[path] = open_checked(path)
    return env


def drop(path):
    """Close this process's handle on the LMDB at (absolute) `path`."""
    env = _ENVS.pop(path, None)
    if env is not None:
        env.close()


def open_checked(path):
    """A read-only environment on `path`, or a one-line DataError.

    data.mdb is memory-mapped: reading a page past the end of a truncated
    file kills the process with SIGBUS, so its size is checked against the
    last page the meta page records before anything else is read.
    """
    data = os.path.join(path, 'data.mdb')
    if not os.path.isfile(data):
        raise LMDBNotFound(f'LMDB {path} not found: make it with {CONVERT}')
    size = os.path.getsize(data)
    if size == 0:
        raise damaged(path, 'data.mdb is empty')
    try:  # reads (not maps) the two meta pages: an error if they are bad
        env = lmdb.open(path, readonly=True, lock=False, readahead=False,
                        meminit=False, subdir=True)
    except lmdb.Error as e:
        raise damaged(path, first_line(e)) from None
    try:
        need = (env.info()['last_pgno'] + 1) * env.stat()['psize']
    except lmdb.Error as e:
        env.close()
        raise damaged(path, first_line(e)) from None
    if size < need:
        env.close()
        raise damaged(path, f'data.mdb has {size} of its {need} bytes: '
                      'truncated')
    return env


def read_meta(path):
    """(meta record, sorted image names) of the LMDB at `path`, checked: a
    DataError if it is missing, unfinished, of another format or damaged."""
    path = os.path.abspath(path)
    env = open_readonly(path, reopen=True)
    try:
        with env.begin() as txn:
            keys, meta = txn.get(KEYS), txn.get(META)
    except lmdb.Error as e:
        drop(path)
        raise damaged(path, first_line(e)) from None
    redo = f'delete it and convert again with {CONVERT}'
    if keys is None:
        raise LMDBNotFound(f'LMDB {path} has no {KEYS.decode()} record: it '
                           'was not written by folder_to_lmdb or its '
                           f'conversion did not finish; {redo}')
    if meta is None:
        raise DataError(f'LMDB {path} has no {META.decode()} record: it was '
                        'not written by this version of folder_to_lmdb or '
                        f'its conversion did not finish; {redo}')
    try:
        meta, keys = json.loads(meta), json.loads(keys)
    except ValueError:
        raise damaged(path, 'unreadable key list or meta record') from None
    if not isinstance(meta, dict) or not isinstance(keys, list) \
            or not all(isinstance(k, str) for k in keys):
        raise damaged(path, 'unreadable key list or meta record')
    if meta.get('format_version') != FORMAT_VERSION:
        raise DataError(f'LMDB {path} has format version '
                        f'{meta.get("format_version")!r}, this code reads '
                        f'{FORMAT_VERSION}; {redo}')
    if meta.get('count') != len(keys) \
            or meta.get('names_sha256') != names_checksum(keys):
        raise damaged(path, 'its key list does not match the count and '
                      'checksum recorded at conversion')
    return meta, keys


def read_keys(path):
    """Sorted image names stored in the LMDB at `path`."""
    return read_meta(path)[1]


class LMDBImageDataset(Dataset):
    """Images of an LMDB made by folder_to_lmdb, as the folder dataset gives
    them: PIL RGB image -> transform.

    split: 'train' / 'test' / 'all', the same rule on the same sorted names as
    the folder (image_folder.split_files), so held-out images stay held out.
    expect_type: the dataset type ('CelebA', ...) the LMDB must have been
    converted from (None: any). An image that does not decode is skipped
    with a warning, as the folder dataset does (image_folder.first_decodable).
    The environment is opened lazily in the process that reads (each
    DataLoader worker opens its own, see open_readonly); the dataset holds
    only the path and the keys, so it pickles to spawned workers as well.
    """

    def __init__(self, path, split='all', transform=None, expect_type=None):
        super().__init__()
        self.path = os.path.abspath(path)  # the key of its shared handle
        self.transform = transform
        self.split = split
        self.meta, keys = read_meta(self.path)
        got = self.meta.get('dataset_type')
        if expect_type is not None and got != expect_type:
            what = f'{got} images' if got else \
                'images of no recorded dataset type'
            raise DataError(
                f'LMDB {self.path} holds {what}, not {expect_type}: use the '
                f'LMDB converted from the {expect_type} folder (made with '
                '`python dldemos/VQVAE/dataset.py --to-lmdb`, which records '
                'the type)')
        self.keys = [k.encode() for k in split_files(keys, split)]
        self.warned = set()  # images found unreadable (warned about once)

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index: int):
        img = first_decodable(
            index, len(self.keys), self.decode, self.image_name, self.warned,
            f'LMDB {self.path}', f'delete it and convert again with {CONVERT}')
        return self.transform(img) if self.transform else img

    def image_name(self, i):
        return f'{self.keys[i].decode()} (in LMDB {self.path})'

    def decode(self, i):
        """The decoded RGB image of key i (an error of image_folder's
        UNREADABLE if it does not decode; a DataError if the LMDB fails)."""
        try:
            with open_readonly(self.path).begin(buffers=True) as txn:
                buf = txn.get(self.keys[i])  # valid only inside the txn
                if buf is None:
                    raise OSError('not stored in the LMDB')
                return decode_rgb(io.BytesIO(buf))  # decoded now
        except lmdb.Error as e:
            raise damaged(self.path, first_line(e)) from None


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an image folder to an LMDB.')
    parser.add_argument('folder')
    parser.add_argument('out', help='the LMDB to write (a new folder)')
    parser.add_argument('--dataset-type', default=None,
                        help='recorded in the LMDB (e.g. CelebA); readers '
                        'that ask for a type refuse an LMDB of another')
    args = parser.parse_args(argv)
    try:
        n = folder_to_lmdb(args.folder, args.out, args.dataset_type)
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    print(f'wrote {n} images to {args.out}')


if __name__ == '__main__':
    main()
