"""Image folders: which files a dataset uses, and how one image is decoded.

A leaf module (stdlib, PIL and dldemos.utils.errors only): the folder dataset
(dldemos/VQVAE/dataset.py) and the LMDB converter and reader
(dldemos/lmdb_loader.py) both take their file lists, splits and skip rules
from here, so a folder and the LMDB made from it hold the same images in the
same train / test split.

A folder has no official split: the last 10% of the readable files by sorted
name are held out as 'test', 'train' is the rest, 'all' gives every file.
"""
import hashlib
import os
import sys
import warnings

from PIL import Image

from dldemos.utils.errors import DataError

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
HELD_OUT_FRACTION = 0.1
DEFAULT_HINT = 'put the images'

# What decoding a bad file raises: PIL raises many kinds (OSError covers
# UnidentifiedImageError and truncation); an image larger than
# Image.MAX_IMAGE_PIXELS (a decompression bomb) counts as unreadable too.
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError,
              Image.DecompressionBombError, Image.DecompressionBombWarning)


def warn(msg):
    print(f'warning: {msg}', file=sys.stderr, flush=True)


def printable(name):
    """A file name as text that prints (undecodable bytes as \\xNN)."""
    return name.encode('utf-8', 'surrogateescape').decode('utf-8',
                                                          'backslashreplace')


def utf8_ok(name):
    """Whether `name` is valid UTF-8 (os.listdir gives the bytes that are
    not as lone surrogates): an LMDB key must be, so such files are left out
    of the folder dataset as well, to keep both the same."""
    try:
        name.encode('utf-8')
        return True
    except UnicodeEncodeError:
        return False


def list_images(root):
    """Sorted image file names in `root` (other files are ignored)."""
    return sorted(f for f in os.listdir(root)
                  if f.lower().endswith(IMG_EXTENSIONS)
                  and os.path.isfile(os.path.join(root, f)))


def open_image(fp):
    """PIL image of a file path or file object, with a decompression bomb an
    error (PIL only warns below twice its pixel limit)."""
    with warnings.catch_warnings():
        warnings.simplefilter('error', Image.DecompressionBombWarning)
        return Image.open(fp)


def decode_rgb(fp):
    """The decoded RGB image of a file path or file object (raises one of
    UNREADABLE for a bad file)."""
    with warnings.catch_warnings():
        warnings.simplefilter('error', Image.DecompressionBombWarning)
        with Image.open(fp) as img:
            return img.convert('RGB')  # decodes now, before the file closes


_readable = {}  # (folder, names) -> readable names: checked once a process


def readable_images(root, label='images', hint=DEFAULT_HINT):
    """Sorted names of the images in `root` that PIL can open.

    Unreadable files (empty, partial downloads, macOS `._*` files, names that
    are not UTF-8, decompression bombs) are left out with a warning naming
    them; a missing or empty folder, or one where no image can be read, is a
    DataError saying what to do (`label` names the images, `hint` says how to
    get them, e.g. 'download ... and unpack its images').
    """
    if not os.path.isdir(root):
        raise DataError(f'{label} not found: {root} does not '
                        f'exist; {hint} into it (or pass --data-root)')
    names = list_images(root)
    if not names:
        subdirs = sorted(d for d in os.listdir(root)
                         if os.path.isdir(os.path.join(root, d)))
        nested = f' (it has the subfolder {printable(subdirs[0])}: move ' \
            'the images up into the folder itself)' if subdirs else ''
        raise DataError(f'{root} holds no image files ('
                        f'{", ".join(IMG_EXTENSIONS)}){nested}; {hint} '
                        'into it, or pass --data-root')
    key = (os.path.abspath(root), tuple(names))
    if key not in _readable:
        bad = []
        for name in names:
            if not utf8_ok(name):
                bad.append((name, 'name is not UTF-8'))
                continue
            try:
                with open_image(os.path.join(root, name)) as img:
                    img.size  # reads the header only
            except Exception as e:  # PIL raises many kinds on bad files
                bad.append((name, type(e).__name__))
        shown = ', '.join(f'{printable(n)} ({why})' for n, why in bad[:5])
        if len(bad) == len(names):
            raise DataError(f'none of the {len(names)} image files in {root} '
                            f'can be read (e.g. {shown}); {hint} again')
        if bad:
            more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
            warn(f'skipping {len(bad)} unreadable image file(s) in {root}: '
                 f'{shown}{more}')
        bad_names = {n for n, _ in bad}
        _readable[key] = [n for n in names if n not in bad_names]
    return list(_readable[key])


def split_files(filenames, split):
    """The `split` ('train', 'test' or 'all') of sorted file names."""
    n_test = max(1, int(round(len(filenames) * HELD_OUT_FRACTION)))
    if split == 'train':
        return filenames[:-n_test] if len(filenames) > 1 else filenames
    if split == 'test':
        return filenames[-n_test:]
    if split == 'all':
        return filenames
    raise ValueError(f"unknown split {split!r}: use 'train', 'test' or 'all'")


def names_checksum(names):
    """sha256 of a list of file names (recorded in an LMDB's meta record)."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode('utf-8', 'surrogateescape') + b'\0')
    return h.hexdigest()


def files_fingerprint(root, names):
    """sha256 over (name, size, mtime) of the files `names` in `root`: it
    changes when a file is added, removed, replaced or rewritten."""
    h = hashlib.sha256()
    for name in names:
        st = os.stat(os.path.join(root, name))
        h.update(f'{printable(name)}\0{st.st_size}\0{st.st_mtime_ns}\n'
                 .encode())
    return h.hexdigest()


def first_decodable(index, count, read, name_of, warned, where, remedy):
    """read(i) for i = index, index + 1, ... (wrapping around) until one
    decodes: a file whose header is fine can still fail to decode
    (truncated), and one bad image must not stop a long run. Each skipped
    image is warned about once (`warned`, a set, remembers them); when none
    of the `count` images decodes it is a DataError ending in `remedy`.
    An index out of range is an IndexError, as for a list (iter(dataset)
    stops there)."""
    if not -count <= index < count:
        raise IndexError(f'index {index} out of range for {count} images')
    index %= count
    for k in range(count):
        i = (index + k) % count
        try:
            return read(i)
        except UNREADABLE as e:
            name = name_of(i)
            if name not in warned:
                warned.add(name)
                warn(f'skipping unreadable image {name} '
                     f'({type(e).__name__}: {e})')
    raise DataError(f'none of the {count} images in {where} can be decoded; '
                    f'{remedy}')


def dataset_files(root, split='all', label='images', hint=DEFAULT_HINT):
    """The files a dataset on folder `root` uses: the readable images, then
    the split. The folder dataset reads these and the LMDB conversion stores
    dataset_files(root, 'all'), so both split alike."""
    return split_files(readable_images(root, label, hint), split)
