"""Image folders: which files a dataset uses, and how one image is decoded.

A leaf module (stdlib, PIL and dldemos.utils.errors only): the folder dataset
(dldemos/VQVAE/dataset.py) and the LMDB converter and reader
(dldemos/lmdb_loader.py) both take their file lists, splits and skip rules
from here, so a folder and the LMDB made from it hold the same images in the
same train / test split.

A folder has no official split: the last 10% of the readable files by sorted
name are held out as 'test', 'train' is the rest, 'all' gives every file.

Your own images (scan_folder): every file PIL can open, found recursively;
when the images sit in first-level subfolders, each subfolder is a class (as
torchvision's ImageFolder), and the last 10% of each class by sorted path is
held out, so every class with two or more images has held-out images.
"""
import hashlib
import math
import os
import stat
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


KINDS = ((stat.S_ISDIR, 'a folder'), (stat.S_ISREG, 'a regular file'),
         (stat.S_ISFIFO, 'a FIFO (named pipe)'),
         (stat.S_ISCHR, 'a character device'),
         (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'))


def shown(path):
    """A path (str, bytes or Path) as text that prints."""
    return printable(os.fsdecode(path))


def kind_of(mode, path):
    kind = next((k for test, k in KINDS if test(mode)), 'an odd file')
    if os.path.islink(path):
        kind += f' (a link to {shown(os.path.realpath(path))})'
    return kind


def path_problem(path, want):
    """None when `path` is `want` ('a folder' or 'a regular file'); else
    why not, in words for a one-line error: '<path> does not exist',
    '<p> is a FIFO (named pipe), not a folder' (p: path, or the first of
    its parent folders that is not one), '<path> cannot be reached
    (Permission denied)'. A FIFO or a device must be named, not called
    missing (os.path.isdir/isfile say False for them), and never opened:
    reading a FIFO waits for a writer forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f'{shown(path)} does not exist'
    except NotADirectoryError:  # a parent is a file, a FIFO, ...
        parent = os.path.dirname(os.path.abspath(path))
        while parent != os.path.dirname(parent):
            problem = path_problem(parent, 'a folder')
            if problem is not None:
                return problem
            parent = os.path.dirname(parent)
        return f'{shown(path)} does not exist'
    except OSError as e:
        return f'{shown(path)} cannot be reached ({e.strerror or e})'
    if want == 'a folder' and stat.S_ISDIR(mode) or \
            want == 'a regular file' and stat.S_ISREG(mode):
        return None
    return f'{shown(path)} is {kind_of(mode, path)}, not {want}'


def not_a_folder(path):
    return path_problem(path, 'a folder')


def not_a_regular_file(path):
    return path_problem(path, 'a regular file')


def list_images(root):
    """Sorted image file names in `root` (other files are ignored)."""
    return sorted(f for f in os.listdir(root)
                  if f.lower().endswith(IMG_EXTENSIONS)
                  and os.path.isfile(os.path.join(root, f)))


def check_regular(fp):
    """An OSError (an unreadable image: skipped with a warning) when the
    path fp is no regular file: opening a FIFO would block forever, a
    /dev/zero link would be read without end. File lists hold regular
    files only, but a file can be replaced after it was listed."""
    if isinstance(fp, (str, bytes, os.PathLike)):
        mode = os.stat(fp).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f'{kind_of(mode, fp)}, not a regular file')


def open_image(fp):
    """PIL image of a file path or file object, with a decompression bomb an
    error (PIL only warns below twice its pixel limit)."""
    check_regular(fp)
    with warnings.catch_warnings():
        warnings.simplefilter('error', Image.DecompressionBombWarning)
        return Image.open(fp)


def decode_rgb(fp):
    """The decoded RGB image of a file path or file object (raises one of
    UNREADABLE for a bad file)."""
    return decode_image(fp, 'RGB')


def decode_image(fp, mode='RGB'):
    """The decoded image of a file path or file object in `mode` ('RGB' or
    'L'), high bit depths scaled to 8 bits (to_8bit); raises one of
    UNREADABLE for a bad file."""
    check_regular(fp)
    with warnings.catch_warnings():
        warnings.simplefilter('error', Image.DecompressionBombWarning)
        with Image.open(fp) as img:
            # decodes now, before the file closes
            return to_8bit(img).convert(mode)


def to_8bit(img):
    """16-bit, 32-bit integer and float grey images scaled to 8-bit 'L'
    (other modes as they are). PIL's convert() clips such values at 255,
    which turns a 16-bit photo white. Values already in 0-255 stay; 16-bit
    ranges (integers up to 65535) scale by 255 / 65535; floats in [0, 1] by
    255; anything else is stretched from its own minimum and maximum."""
    if img.mode.startswith('I;16'):
        img = img.convert('I')
    if img.mode not in ('I', 'F'):
        return img
    lo, hi = img.getextrema()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f'{img.mode} image with non-finite pixel values')
    if img.mode == 'F' and 0 <= lo and hi <= 1:
        scale, offset = 255.0, 0.0
    elif 0 <= lo and hi <= 255:
        scale, offset = 1.0, 0.0
    elif img.mode == 'I' and 0 <= lo and hi <= 65535:
        scale, offset = 255 / 65535, 0.0
    else:
        scale = 255 / (hi - lo)
        offset = -lo * scale
    return img.point(lambda v: v * scale + offset).convert('L')


_readable = {}  # (folder, names) -> readable names: checked once a process


def readable_images(root, label='images', hint=DEFAULT_HINT):
    """Sorted names of the images in `root` that PIL can open.

    Unreadable files (empty, partial downloads, macOS `._*` files, names that
    are not UTF-8, decompression bombs) are left out with a warning naming
    them; a missing or empty folder, or one where no image can be read, is a
    DataError saying what to do (`label` names the images, `hint` says how to
    get them, e.g. 'download ... and unpack its images').
    """
    problem = not_a_folder(root)
    if problem is not None:
        raise DataError(f'{label} not found: {problem}; {hint} into it (or '
                        'pass --data-root)')
    try:
        names = list_images(root)
        subdirs = [] if names else sorted(
            d for d in os.listdir(root)
            if os.path.isdir(os.path.join(root, d)))
    except OSError as e:  # chmod 000, or a folder on a lost mount
        raise unlistable(label, root, e) from None
    if not names:
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


def unlistable(label, folder, e):
    """The DataError of a folder that cannot be listed (chmod 000)."""
    folder = shown(folder)
    return DataError(f'{label}: could not list {folder} ({e.strerror or e}); '
                     f'make it readable (chmod -R u+rX {folder}) or pass '
                     'another --data-root')


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
        except DataError:  # the store itself is bad, not this image
            raise
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


# ------------------------------------------------------------ your own images
def image_extensions():
    """Every file extension PIL registers a reader for ('.jpg', '.png',
    '.tif', '.gif', '.webp', ...; not the formats it can only write)."""
    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions()
                        .items() if fmt in Image.OPEN))


def _walk(root, rel, exts, out):
    """Relative paths ('a/b.png') of the image files under root/rel, by
    extension only (no file is opened: a folder of 100,000 images lists in
    a second). Hidden folders (.git, .ipynb_checkpoints) are left out."""
    with os.scandir(os.path.join(root, rel) if rel else root) as it:
        entries = list(it)
    for e in entries:
        name = f'{rel}/{e.name}' if rel else e.name
        if e.is_dir():
            if not e.name.startswith('.'):
                _walk(root, name, exts, out)
        elif e.name.lower().endswith(exts) and e.is_file():
            out.append(name)


class Folder:
    """What scan_folder found: `names` (sorted relative paths), `labels`
    (class index per name, or None for a flat folder) and `classes` (the
    class folder names, or None)."""

    def __init__(self, root, names, labels=None, classes=None):
        self.root, self.names = root, names
        self.labels, self.classes = labels, classes

    def split(self, split):
        """(names, labels or None) of 'train', 'test' or 'all'."""
        idx = split_indices(self.labels or [0] * len(self.names), split)
        return ([self.names[i] for i in idx],
                None if self.labels is None else
                [self.labels[i] for i in idx])


_scanned = {}  # (absolute root, _folder_times) -> Folder


def _folder_times(root):
    """mtimes of root and its first-level folders: a file added or removed
    there (or in a class folder) lists the folder again."""
    try:
        with os.scandir(root) as it:
            subdirs = sorted((e.name, e.stat().st_mtime_ns) for e in it
                             if e.is_dir())
        return os.stat(root).st_mtime_ns, tuple(subdirs)
    except OSError:
        return None


def scan_folder(root, label='images'):
    """The images under `root` (recursively, any format PIL reads), with
    classes when they sit in first-level subfolders: a Folder. A DataError
    in one line when root is not a folder or holds no image file."""
    if os.path.isfile(root):
        raise DataError(f'--data-root {root} is a file: give the folder that '
                        'holds your images (or, with use_lmdb=True, an LMDB)')
    problem = not_a_folder(root)
    if problem is not None:
        raise DataError(f'{label} not found: {problem}; pass the folder '
                        'that holds them as --data-root')
    key = (os.path.abspath(root), _folder_times(root))
    if key in _scanned:
        return _scanned[key]
    names = []
    try:
        _walk(root, '', image_extensions(), names)
    except OSError as e:
        raise unlistable(label, e.filename or root, e) from None
    if not all(map(utf8_ok, names)):
        names = _drop_non_utf8(names, root)
    if not names:
        raise DataError(f'{root} holds no image file (none of '
                        f'{len(image_extensions())} extensions PIL reads, '
                        'e.g. .jpg .png .tif, in it or its subfolders): '
                        'pass the folder with your images as --data-root')
    names.sort()
    check_one_readable(root, names)
    folder = classify(root, names)
    single = single_image_classes(folder)
    if single:
        warn(f'{len(single)} class(es) of {root} have one image, which '
             f'cannot be held out (used for training only): '
             f'{", ".join(map(printable, single[:5]))}'
             + (' ...' if len(single) > 5 else ''))
    if not folder.split('test')[0]:
        raise DataError(f'{root} has {len(names)} image(s), too few to hold '
                        'any out for scoring: add images (two or more per '
                        'class)')
    _scanned[key] = folder
    return folder


def check_one_readable(root, names):
    """A DataError unless some file's header opens. Files are tried in
    order, so a good folder costs one open; the others are found (and
    skipped with a warning) when they are read."""
    for name in names:
        try:
            with open_image(os.path.join(root, name)) as img:
                img.size  # reads the header only
            return
        except Exception:  # PIL raises many kinds on bad files
            continue
    raise DataError(f'none of the {len(names)} image files under {root} can '
                    f'be read (e.g. {printable(names[0])}): put readable '
                    'images there')


def _drop_non_utf8(names, root):
    bad = [n for n in names if not utf8_ok(n)]
    warn(f'skipping {len(bad)} image file(s) in {root} whose names are not '
         f'UTF-8, e.g. {printable(bad[0])}: rename them to use them')
    return [n for n in names if utf8_ok(n)]


def classify(root, names, quiet=False):
    """A labelled Folder when every image sits in a first-level subfolder
    and there are two or more of them; else a flat one (one subfolder is
    no choice of class; images at the top level beside subfolders make the
    classes ambiguous, said in a warning)."""
    tops = sorted({n.split('/', 1)[0] for n in names if '/' in n})
    at_top = sum('/' not in n for n in names)
    if len(tops) < 2:
        return Folder(root, names)
    if at_top:
        if not quiet:
            warn(f'{root} has {at_top} image(s) at its top level beside the '
                 f'subfolders {printable(tops[0])}, ...: using all images '
                 'without classes (move them into class subfolders for a '
                 'class-conditional prior)')
        return Folder(root, names)
    index = {c: i for i, c in enumerate(tops)}
    labels = [index[n.split('/', 1)[0]] for n in names]
    return Folder(root, names, labels, tops)


def split_indices(labels, split):
    """Indices (into sorted names) of `split` per class: the last
    HELD_OUT_FRACTION of each class is 'test' (at least one image of each
    class that has two or more), the rest 'train', 'all' every index."""
    if split not in ('train', 'test', 'all'):
        raise ValueError(f"unknown split {split!r}: use 'train', 'test' or "
                         "'all'")
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    out = []
    for idx in by_class.values():
        n_test = max(1, int(round(len(idx) * HELD_OUT_FRACTION))) \
            if len(idx) > 1 else 0
        out += {'train': idx[:len(idx) - n_test],
                'test': idx[len(idx) - n_test:], 'all': idx}[split]
    return sorted(out)


def single_image_classes(folder):
    """Names of the classes of a Folder with one image (none held out)."""
    if folder.classes is None:
        return []
    counts = [0] * len(folder.classes)
    for y in folder.labels:
        counts[y] += 1
    return [c for c, n in zip(folder.classes, counts) if n == 1]
