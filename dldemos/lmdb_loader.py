"""Image folders as LMDB databases: one memory-mapped file instead of many
small ones, which is what the tutorial's multi-GPU script reads from.

    python dldemos/lmdb_loader.py FOLDER OUT.lmdb      # any image folder
    python dldemos/VQVAE/dataset.py --to-lmdb ...       # the CelebA folders

    from dldemos.lmdb_loader import folder2lmdb, ImageFolderLMDB  # tutorial's
    folder2lmdb('data/celebA/celeba_hq_256', 'data/celebA/celeba_hq_256.lmdb')
    dataset = ImageFolderLMDB('data/celebA/celeba_hq_256.lmdb', transform)

The layout is the tutorial's, so its code and ours read each other's files:
keys b'0', b'1', ... in sorted file order, each value the file's encoded
bytes pickled (JPEG stays JPEG: a fraction of the decoded size); `__keys__`
the pickled list of those keys, `__len__` their pickled count. Ours adds a
`__meta__` record (JSON, which the tutorial's reader never looks at): format
version, dataset type (if given), the file names (relative paths: class
subfolders give the labels) with a checksum of the list, and a checksum of
each image's bytes, checked on read (an image altered since is skipped with
a warning, like one that does not decode). A database this tool did not
finish, a damaged one and one of another dataset are refused with a
one-line DataError.

Read as well: LMDBs written by the tutorial's own folder2lmdb (no
`__meta__`: the keys' order is the file order, no labels, no checksums), as
a single file or a folder, and this project's first format (file names as
keys, raw bytes, JSON key list, `__meta__` version 1). Pickled values are
read by an unpickler that admits plain data only (bytes, str, numbers,
lists, tuples, dicts): a value that asks to run code is refused in one line
naming its key, and the code never runs.
"""
import argparse
import hashlib
import io
import json
import os
import pickle
import shutil
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../..')))

import lmdb
from torch.utils.data import Dataset
from tqdm import tqdm

from dldemos.utils.errors import DataError
from dldemos.utils.image_folder import (classify, dataset_files, decode_image,
                                        first_decodable, names_checksum,
                                        printable,
                                        scan_folder, split_files,
                                        split_indices)

KEYS = b'__keys__'
LEN = b'__len__'
META = b'__meta__'
FORMAT_VERSION = 2  # 1: file names as keys, raw bytes, a JSON key list
TUTORIAL = 'tutorial'  # the format of an LMDB without our meta record
PICKLE_PROTOCOL = 4  # what the tutorial's pickle.dumps writes (Python 3.8+)
CHECKSUM_HEX = 32  # hex digits of sha256 kept per image (128 bits)
TXN_IMAGES = 1000  # images per write transaction: bounded memory
FACE_TYPES = ('CelebA', 'CelebAHQ')  # folders split by file name alone
CONVERT = ('`python dldemos/VQVAE/dataset.py --to-lmdb` (the CelebA folders) '
           'or `python dldemos/lmdb_loader.py FOLDER OUT`')


class LMDBNotFound(DataError, FileNotFoundError):
    """No LMDB at the path, or one without the records this tool writes."""


def first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def damaged(path, why):
    return DataError(f'LMDB {path} is damaged ({why}): delete it and convert '
                     f'again with {CONVERT}, or read the image folder '
                     'itself (use_lmdb=False)')


# What lmdb raises for header (meta) pages with values no LMDB writes: the
# errno texts ('Cannot allocate memory' for an absurd map size, 'Invalid
# argument') would send a user looking for a memory problem
BAD_HEADER = (lmdb.MemoryError, lmdb.InvalidParameterError,
              lmdb.VersionMismatchError, lmdb.CorruptedError,
              lmdb.IncompatibleError)


def fs_path(path):
    """`path` as lmdb.open takes it: lmdb encodes a str as strict UTF-8,
    which fails for a path that is not UTF-8 (bytes on Linux, which the
    str holds as surrogates); the bytes open any path."""
    return os.fsencode(path) if os.name == 'posix' else path


def map_size_for(n_bytes, n_files):
    """LMDB reserves its map size up front (sparse on Linux, so it costs
    address space, not disk). Values larger than a page go to overflow pages
    rounded up to 4 KiB, hence one extra page per file, plus B-tree slack
    (and the meta record's names and checksums)."""
    return int(n_bytes * 1.25) + n_files * 3 * 4096 + (64 << 20)


def checksum(data):
    return hashlib.sha256(data).hexdigest()[:CHECKSUM_HEX]


# ------------------------------------------------------------ plain unpickling
class HostilePickle(pickle.UnpicklingError):
    """A pickled value that asks to import and call something."""


def _latin1_encode(text, encoding='latin1'):
    # protocol 2 pickles bytes as _codecs.encode(text, 'latin1')
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise HostilePickle('_codecs.encode with other arguments')
    return text.encode('latin1')


def _bytearray(data=b''):
    if not isinstance(data, (bytes, bytearray)):  # bytearray(10**12): DoS
        raise HostilePickle('bytearray of something other than bytes')
    return bytearray(data)


class PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only (bytes, str, int, float, bool, None, list,
    tuple, dict, set): these need no import, so every import a pickle asks
    for (os.system in a `__reduce__` payload) is refused, except the two
    that protocol 2 needs to build bytes."""

    ALLOWED = {('_codecs', 'encode'): _latin1_encode,
               ('builtins', 'bytearray'): _bytearray,
               ('__builtin__', 'bytearray'): _bytearray}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise HostilePickle(f'{module}.{name}')


def plain_loads(data, path, key):
    """The plain value pickled in `data` (the value of `key`): a one-line
    DataError, naming the key, for a value that asks to run code or is no
    pickle at all."""
    name = key.decode('utf-8', 'backslashreplace')
    try:
        return PlainUnpickler(io.BytesIO(data)).load()
    except HostilePickle as e:
        raise DataError(f'LMDB {path}: the value of key {name!r} is a pickle '
                        f'that asks to run code ({e}); refused, nothing of it '
                        'ran: use only LMDBs you or this tool made') from None
    except Exception as e:  # truncated or not a pickle: many kinds
        raise damaged(path, f'the value of key {name!r} is not a readable '
                      f'pickle ({type(e).__name__})') from None


# ------------------------------------------------------------ writing
def list_folder(folder, dataset_type=None):
    """The files an LMDB of `folder` stores, those its folder dataset reads:
    the CelebA folders' readable images (dataset_files), else every image
    under the folder (image_folder.scan_folder, recursive; class
    subfolders are kept in the names)."""
    if dataset_type in FACE_TYPES:
        return dataset_files(folder, 'all', f'{dataset_type} images')
    return scan_folder(folder).names


def write_lmdb(folder, names, data_file, dataset_type=None, progress=True,
               write_frequency=TXN_IMAGES, out_path=None):
    """Write the images `names` of `folder` into a single-file LMDB at
    `data_file` (data.mdb of a folder-form LMDB, or the file itself), in the
    tutorial's layout plus our meta record. Written to `<data_file>.tmp` and
    renamed at the end: an interrupted conversion leaves nothing there."""
    tmp = data_file + '.tmp'
    n_bytes = sum(os.path.getsize(os.path.join(folder, n)) for n in names)
    env = lmdb.open(fs_path(tmp),
                    map_size=map_size_for(n_bytes, len(names)),
                    subdir=False, lock=False, meminit=False, map_async=True)
    txn, sums = None, []
    try:
        shown = os.path.basename(os.path.normpath(out_path or data_file))
        bar = tqdm(names, desc=f'-> {shown}',
                   disable=not progress, unit='img')
        txn = env.begin(write=True)
        for i, name in enumerate(bar):
            with open(os.path.join(folder, name), 'rb') as f:
                data = f.read()
            sums.append(checksum(data))
            txn.put(str(i).encode('ascii'),
                    pickle.dumps(data, protocol=PICKLE_PROTOCOL))
            if (i + 1) % write_frequency == 0:
                txn.commit()
                txn = env.begin(write=True)
        keys = [str(i).encode('ascii') for i in range(len(names))]
        meta = {'format_version': FORMAT_VERSION,
                'dataset_type': dataset_type, 'count': len(names),
                'names': names, 'names_sha256': names_checksum(names),
                'sha256': sums}
        txn.put(KEYS, pickle.dumps(keys, protocol=PICKLE_PROTOCOL))
        txn.put(LEN, pickle.dumps(len(keys), protocol=PICKLE_PROTOCOL))
        txn.put(META, json.dumps(meta).encode())
        txn.commit()
        txn = None
        env.sync()
    except BaseException:  # Ctrl-C included: no half-written file left
        if txn is not None:
            txn.abort()
        env.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    env.close()
    os.replace(tmp, data_file)
    return len(names)


def converting(folder, out_path, write):
    """Run write() with its errors as one-line DataErrors that say nothing
    was written."""
    try:
        return write()
    except OSError as e:
        where = f' {e.filename}' if e.filename else ''
        raise DataError(f'converting {folder} to {out_path} failed: could '
                        f'not access{where} ({e.strerror or first_line(e)}); '
                        'nothing was written') from None
    except lmdb.Error as e:
        raise DataError(f'converting {folder} to {out_path} failed: LMDB '
                        f'error ({first_line(e)}); nothing was written'
                        ) from None


def folder_to_lmdb(folder, out_path, dataset_type=None, progress=True):
    """Write every image of `folder` (list_folder: the files its folder
    dataset reads, so the LMDB splits as the folder does) into a new LMDB
    folder at `out_path`; `dataset_type` ('CelebA', ...) is recorded in the
    meta record for readers to check.

    Written to `<out_path>.tmp` and renamed at the end, so an interrupted
    or failed conversion never leaves a half-filled database at `out_path`
    (nor the .tmp folder). Returns the number of images stored.
    """
    if os.path.exists(out_path):
        raise FileExistsError(f'{out_path} exists: delete it to rebuild')
    names = list_folder(folder, dataset_type)  # DataError if none
    tmp = out_path.rstrip('/') + '.tmp'

    def write():
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        n = write_lmdb(folder, names, os.path.join(tmp, 'data.mdb'),
                       dataset_type, progress, out_path=out_path)
        os.replace(tmp, out_path)
        return n
    try:
        return converting(folder, out_path, write)
    finally:  # any failure, Ctrl-C included: no half-written folder left
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def folder2lmdb(img_dir, output_path, write_frequency=5000):
    """The tutorial's converter: the images of `img_dir` into an LMDB at
    `output_path`, a single file when that path does not exist, or data.mdb
    inside it when it is a folder (as the tutorial's does). Unlike the
    tutorial's it stores only image files (recursively, class subfolders
    kept in the names), with our meta record, and never overwrites an
    LMDB. Returns the number of images stored."""
    if os.path.isdir(output_path):
        data_file = os.path.join(output_path, 'data.mdb')
    else:
        data_file = output_path
    if os.path.exists(data_file):
        raise FileExistsError(f'{data_file} exists: delete it to rebuild')
    names = list_folder(img_dir)
    print(f'writing {len(names)} images of {printable(img_dir)} to '
          f'{printable(output_path)}')
    return converting(img_dir, output_path, lambda: write_lmdb(
        img_dir, names, data_file, write_frequency=write_frequency,
        out_path=output_path))


# ------------------------------------------------------------ reading
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


def data_file(path):
    """The file holding the LMDB at `path` (a folder's data.mdb, or the
    single file the tutorial's folder2lmdb writes), or None."""
    if os.path.isfile(path):
        return path
    data = os.path.join(path, 'data.mdb')
    return data if os.path.isfile(data) else None


def open_checked(path):
    """A read-only environment on `path`, or a one-line DataError.

    data.mdb is memory-mapped: reading a page past the end of a truncated
    file kills the process with SIGBUS, so its size is checked against the
    last page the meta page records before anything else is read.
    """
    data = data_file(path)
    if data is None:
        raise LMDBNotFound(f'LMDB {path} not found: make it with {CONVERT}')
    size = os.path.getsize(data)
    if size == 0:
        raise damaged(path, f'{os.path.basename(data)} is empty')
    try:  # reads (not maps) the two meta pages: an error if they are bad
        env = lmdb.open(fs_path(path), readonly=True, lock=False,
                        readahead=False, meminit=False, subdir=data != path)
    except lmdb.InvalidError:  # no LMDB magic number
        raise damaged(path, f'{os.path.basename(data)} is not an LMDB file'
                      ) from None
    except BAD_HEADER:
        raise damaged(path, f'the header pages of {os.path.basename(data)} '
                      'hold values no LMDB writes') from None
    except lmdb.Error as e:
        raise damaged(path, first_line(e)) from None
    try:
        need = (env.info()['last_pgno'] + 1) * env.stat()['psize']
    except lmdb.Error as e:
        env.close()
        raise damaged(path, first_line(e)) from None
    if size < need:
        env.close()
        raise damaged(path, f'{os.path.basename(data)} has {size} of its '
                      f'{need} bytes: truncated')
    return env


class Index:
    """What an LMDB holds, from its records: `names` (file names, or the
    keys of a tutorial LMDB), `keys` (the LMDB key of each), `sums` (each
    image's checksum, or None), `pickled` (values pickled, or raw bytes),
    `meta` (our meta record; {'format_version': 'tutorial'} without one)."""

    def __init__(self, meta, names, keys, sums=None, pickled=True):
        self.meta, self.names, self.keys = meta, names, keys
        self.sums, self.pickled = sums, pickled


def read_index(path):
    """The Index of the LMDB at `path`, checked: a DataError if it is
    missing, unfinished, of another format or damaged."""
    path = os.path.abspath(path)
    env = open_readonly(path, reopen=True)
    try:
        with env.begin() as txn:
            keys, n, meta = txn.get(KEYS), txn.get(LEN), txn.get(META)
    except lmdb.Error as e:
        drop(path)
        raise damaged(path, first_line(e)) from None
    if keys is None:
        raise LMDBNotFound(f'LMDB {path} has no {KEYS.decode()} record: it '
                           'was not written by folder2lmdb or its '
                           f'conversion did not finish; delete it and '
                           f'convert again with {CONVERT}')
    if meta is None:
        return tutorial_index(path, keys, n)
    try:
        meta = json.loads(meta)
    except ValueError:
        raise damaged(path, 'unreadable meta record') from None
    if not isinstance(meta, dict):
        raise damaged(path, 'unreadable meta record')
    version = meta.get('format_version')
    if version == 1:
        return first_format_index(path, meta, keys)
    if version != FORMAT_VERSION:
        raise DataError(f'LMDB {path} has format version {version!r}, this '
                        f'code reads 1 and {FORMAT_VERSION}; delete it and '
                        f'convert again with {CONVERT}')
    keys = plain_loads(keys, path, KEYS)
    n = plain_loads(n, path, LEN) if n is not None else None
    names, sums = meta.get('names'), meta.get('sha256')
    if not (is_list_of(keys, bytes) and is_list_of(names, str)
            and is_list_of(sums, str)) or not \
            n == meta.get('count') == len(keys) == len(names) == len(sums) \
            or meta.get('names_sha256') != names_checksum(names):
        raise damaged(path, 'its key list does not match the count and '
                      'checksum recorded at conversion')
    return Index(meta, names, keys, sums)


def tutorial_index(path, keys, n):
    """An LMDB of the tutorial's folder2lmdb: its keys in order, no
    labels, no checksums."""
    keys = plain_loads(keys, path, KEYS)
    if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
        keys = [k.encode() for k in keys]
    if not is_list_of(keys, bytes):
        raise damaged(path, f'{KEYS.decode()} is not a list of keys')
    if n is not None and plain_loads(n, path, LEN) != len(keys):
        raise damaged(path, f'{LEN.decode()} does not match the key list')
    names = [k.decode('utf-8', 'backslashreplace') for k in keys]
    return Index({'format_version': TUTORIAL, 'dataset_type': None}, names,
                 keys)


def first_format_index(path, meta, keys):
    """An LMDB of this project's first format (file names as keys)."""
    try:
        keys = json.loads(keys)
    except ValueError:
        raise damaged(path, 'unreadable key list') from None
    if not is_list_of(keys, str) or meta.get('count') != len(keys) \
            or meta.get('names_sha256') != names_checksum(keys):
        raise damaged(path, 'its key list does not match the count and '
                      'checksum recorded at conversion')
    return Index(meta, keys, [k.encode() for k in keys], pickled=False)


def is_list_of(value, kind):
    return isinstance(value, list) and all(isinstance(v, kind)
                                           for v in value)


class LMDBImageDataset(Dataset):
    """Images of an LMDB (ours, or the tutorial's), as the folder dataset
    gives them: PIL image in `mode` ('RGB' or 'L') -> transform; with
    with_labels, (image, class index) from the class subfolders in the
    stored names (`classes`: their names).

    split: 'train' / 'test' / 'all', the same rule on the same sorted names as
    the folder (image_folder), so held-out images stay held out.
    expect_type: the dataset type ('CelebA', ...) the LMDB must have been
    converted from (None: any). An image that does not decode, or whose
    bytes no longer match the checksum of its conversion, is skipped with a
    warning, as the folder dataset skips a bad file
    (image_folder.first_decodable).
    The environment is opened lazily in the process that reads (each
    DataLoader worker opens its own, see open_readonly); the dataset holds
    only the path and the keys, so it pickles to spawned workers as well.
    """

    def __init__(self, path, split='all', transform=None, expect_type=None,
                 mode='RGB', with_labels=False):
        super().__init__()
        self.path = os.path.abspath(path)  # the key of its shared handle
        self.transform, self.split, self.mode = transform, split, mode
        self.with_labels = with_labels
        index = read_index(self.path)
        self.meta, self.pickled = index.meta, index.pickled
        got = self.meta.get('dataset_type')
        if expect_type is not None and got != expect_type:
            what = f'{got} images' if got else \
                'images of no recorded dataset type'
            raise DataError(
                f'LMDB {self.path} holds {what}, not {expect_type}: use the '
                f'LMDB converted from the {expect_type} folder (made with '
                '`python dldemos/VQVAE/dataset.py --to-lmdb`, which records '
                'the type)')
        folder = classify(self.path, index.names, quiet=True)
        self.classes = folder.classes
        if got in FACE_TYPES or self.meta['format_version'] == 1:
            idx = split_files(list(range(len(index.names))), split)
        else:
            idx = split_indices(folder.labels or [0] * len(index.names),
                                split)
        if with_labels and folder.labels is None:
            raise DataError(f'LMDB {self.path} holds no class subfolders: '
                            'its images have no labels (set n_classes=None)')
        self.names = [index.names[i] for i in idx]
        self.keys = [index.keys[i] for i in idx]
        self.sums = None if index.sums is None else \
            [index.sums[i] for i in idx]
        self.labels = None if folder.labels is None else \
            [folder.labels[i] for i in idx]
        self.warned = set()  # images found unreadable (warned about once)

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, index: int):
        img, i = first_decodable(
            index, len(self.keys), self.decode, self.image_name, self.warned,
            f'LMDB {self.path}', f'delete it and convert again with {CONVERT}')
        img = self.transform(img) if self.transform else img
        return (img, self.labels[i]) if self.with_labels else img

    def image_name(self, i):
        return f'{self.names[i]} (in LMDB {self.path})'

    def raw(self, i):
        """The stored file bytes of image i (an OSError if missing or
        altered since conversion)."""
        try:
            with open_readonly(self.path).begin(buffers=True) as txn:
                buf = txn.get(self.keys[i])  # valid only inside the txn
                if buf is None:
                    raise OSError('not stored in the LMDB')
                data = plain_loads(buf, self.path, self.keys[i]) \
                    if self.pickled else bytes(buf)
        except lmdb.Error as e:
            raise damaged(self.path, first_line(e)) from None
        if not isinstance(data, (bytes, bytearray)):
            raise OSError(f'stored value is a {type(data).__name__}, not the '
                          'bytes of an image file')
        if self.sums is not None and checksum(data) != self.sums[i]:
            raise OSError('its bytes changed since conversion (checksum '
                          'mismatch)')
        return data

    def decode(self, i):
        """(decoded image of key i, i): an error of image_folder's
        UNREADABLE if it does not decode; a DataError if the LMDB fails."""
        return decode_image(io.BytesIO(self.raw(i)), self.mode), i


class ImageFolderLMDB(LMDBImageDataset):
    """The tutorial's reader: every image of the LMDB at `db_path` (ours or
    one its folder2lmdb wrote, file or folder), as a PIL RGB image through
    `transform`."""

    def __init__(self, db_path, transform=None):
        super().__init__(db_path, 'all', transform)
        self.db_path = db_path

    def __repr__(self):
        return f'{type(self).__name__} ({self.db_path})'


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an image folder (recursively; class '
        'subfolders kept) to an LMDB in the tutorial\'s layout.')
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
    print(f'wrote {n} images to {printable(args.out)}')


if __name__ == '__main__':
    main()
