"""Datasets of the tutorial (MNIST, CelebA and CelebAHQ image folders) and
your own images (dataset_type 'ImageFolder': any folder, --data-root).

    python dldemos/VQVAE/dataset.py            # download MNIST, write previews
    python dldemos/VQVAE/dataset.py --data-root /path/to/data
    python dldemos/VQVAE/dataset.py --to-lmdb --data-root /path/to/data \
        --lmdb-root data      # CelebA(HQ) folders -> data/celebA/*.lmdb

Images come out as float tensors in [0, 1], [C, H, W]; MNIST with
with_labels=True gives (image, label) pairs instead (for a class-conditional
prior; the tutorial's loaders give images only).
Splits: MNIST uses its official train / test split. A CelebA(HQ) folder has no
official split, so the last 10% of files by sorted name are held out as
'test' and 'train' is the rest ('all' gives every file). An ImageFolder
holds out the last 10% of each class (image_folder.split_indices); its class
subfolders give labels (with_labels) as MNIST's digits do.
"""
import argparse
import hashlib
import os
import pickle
import shutil
import sys
import warnings

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

import einops
import torchvision
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision import transforms

import torchvision.transforms.functional as TF

from dldemos.utils import image_folder
from dldemos.utils.errors import DataError, UsageError, report_errors
from dldemos.utils.image_folder import (  # noqa: F401 (re-exported)
    HELD_OUT_FRACTION, IMG_EXTENSIONS, list_images, printable, split_files,
    warn)

DATA_ROOT = 'data'
MNIST_DIR = 'mnist'
CELEBA_DIR = 'celebA/img_align_celeba'
CELEBA_HQ_DIR = 'celebA/celeba_hq_256'
IMAGE_FOLDER = 'ImageFolder'  # your own images: --data-root is the folder
DATASET_TYPES = ('MNIST', 'CelebA', 'CelebAHQ', IMAGE_FOLDER)
# how an image is fitted to img_shape: 'auto' is the tutorial's CelebA crop
# for CelebA(HQ) and 'crop' for your own images; MNIST is only resized
FITS = ('auto', 'crop', 'stretch', 'celeba')
DOWNLOAD_HINTS = {
    'CelebAHQ': 'download the archive from https://www.kaggle.com/datasets/'
    'badasstechie/celebahq-resized-256x256 and unpack its images',
    'CelebA': 'download img_align_celeba.zip from '
    'https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and unpack its images',
}


def check_dataset_type(type):
    """The one check of a dataset type (configs and get_dataset use it)."""
    if type not in DATASET_TYPES:
        raise UsageError(f'dataset_type={type!r}: use one of '
                         f'{", ".join(DATASET_TYPES)}')


def first_missing(path):
    """The top folder of `path` that does not exist yet (None: it exists):
    what os.makedirs(path) would create."""
    path, top = os.path.abspath(path), None
    while not os.path.exists(path):
        top, parent = path, os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return top


MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
               't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
# torchvision reads these instead of the raw files when both are there
MNIST_LEGACY = ('training.pt', 'test.pt')


def load_mnist(root, train, download):
    """torchvision's MNIST, or a DataError saying how to get the files."""
    raw = os.path.join(root, 'MNIST', 'raw')
    check_mnist_paths(root, raw)
    created = first_missing(raw) if download else None
    try:
        with warnings.catch_warnings():
            # torch.load's note on a processed/*.pt of another pickle
            # protocol would come before the one-line error about it
            warnings.filterwarnings('ignore', 'Detected pickle protocol')
            mnist = torchvision.datasets.MNIST(root=root, train=train,
                                               download=download)
    # torchvision asserts on a bad IDX magic number; torch.load of a
    # processed/*.pt that holds more than tensors (a pickle that would run
    # code) is refused unread with an UnpicklingError
    except (RuntimeError, OSError, ValueError, AssertionError,
            pickle.UnpicklingError) as e:
        if created:  # a failed download leaves no empty folders of ours
            shutil.rmtree(created, ignore_errors=True)
        raise mnist_error(root, raw, train, e) from None
    check_mnist_labels(mnist, mnist_labels_file(root, raw, train))
    return mnist


def legacy_mnist(root):
    """torchvision's processed/ files, when it would read them (both
    there) instead of the raw files; else None."""
    paths = [os.path.join(root, 'MNIST', 'processed', f)
             for f in MNIST_LEGACY]
    return paths if all(os.path.isfile(p) for p in paths) else None


def mnist_labels_file(root, raw, train):
    legacy = legacy_mnist(root)
    if legacy:
        return legacy[0 if train else 1]
    return os.path.join(raw, MNIST_FILES[1 if train else 3])


def mnist_error(root, raw, train, e):
    """The DataError of a failed MNIST load (error e), naming the file at
    fault."""
    legacy = legacy_mnist(root)
    if legacy:
        # not torch's text: it suggests weights_only=False, which would run
        # the code a hostile file holds
        path = legacy[0 if train else 1]
        return DataError(f'MNIST file {path} could not be read '
                         f'({type(e).__name__}: it is damaged or holds more '
                         'than tensors; nothing in it ran): delete '
                         f'{os.path.dirname(path)} to read the raw files')
    reason = str(e).strip().splitlines()[0].rstrip(':') if str(e).strip() \
        else type(e).__name__
    missing = [f for f in MNIST_FILES
               if not os.path.isfile(os.path.join(raw, f))]
    if not missing:
        return DataError(f'MNIST files in {raw} could not be read '
                         f'({reason}): delete them to download them again')
    if len(missing) < len(MNIST_FILES):
        # torchvision's reason names the first file it tried to download,
        # not the one that is missing
        return DataError(f'MNIST in {raw} lacks {" and ".join(missing)}: '
                         f'copy {"it" if len(missing) == 1 else "them"} '
                         'there, or run once with internet access')
    return DataError(
        f'MNIST not found in {raw} and could not be downloaded '
        f'({reason}): run once with internet access, or copy '
        'train-images-idx3-ubyte, train-labels-idx1-ubyte, '
        't10k-images-idx3-ubyte and t10k-labels-idx1-ubyte there (or '
        'pass --data-root)')


def check_mnist_paths(root, raw):
    """A DataError when the MNIST folder, or one of its files, is there but
    is something else (a FIFO: reading it would wait forever; a device)."""
    problem = image_folder.not_a_folder(raw)
    if problem and not problem.endswith('does not exist'):
        raise DataError(f'MNIST: {problem}; --data-root must be a folder '
                        'you can read, holding mnist/MNIST/raw')
    for name in MNIST_FILES:
        path = os.path.join(raw, name)
        problem = image_folder.not_a_regular_file(path)
        if problem and not problem.endswith('does not exist'):
            raise DataError(f'MNIST: {problem}; put the file itself there')


def check_mnist_labels(mnist, path):
    """MNIST's labels are the digits 0-9: another value (a forged or
    damaged labels file) would index past the prior's 10 class rows in
    the middle of training."""
    targets = mnist.targets
    bad = (targets < 0) | (targets > 9)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise DataError(f'MNIST labels file {path} holds the label '
                        f'{int(targets[i])} (image {i}); MNIST labels are '
                        '0-9: the file is damaged, replace it (delete it to '
                        'download it again)')


class MNISTImageDataset(Dataset):
    """MNIST images, as in the tutorial; with_labels: (image, label)."""

    def __init__(self, img_shape=(28, 28), root=os.path.join(DATA_ROOT,
                                                             MNIST_DIR),
                 train=True, download=True, with_labels=False):
        super().__init__()
        self.img_shape = tuple(img_shape)
        self.with_labels = with_labels
        self.mnist = load_mnist(root, train, download)
        # At the native size ToTensor() is just uint8 / 255: doing it once for
        # the whole set keeps __getitem__ an index, so no workers are needed.
        if self.img_shape == (28, 28):
            self.images = self.mnist.data.unsqueeze(1).float() / 255
        else:
            self.images = None
            self.pipeline = transforms.Compose(
                [transforms.Resize(self.img_shape),
                 transforms.ToTensor()])

    def __len__(self):
        return len(self.mnist)

    def __getitem__(self, index: int):
        if self.images is not None:
            img = self.images[index]  # [1, 28, 28]
        else:
            img = self.pipeline(self.mnist[index][0])  # [1, H, W]
        if self.with_labels:
            return img, self.mnist.targets[index]  # label: 0-d int64
        return img


def readable_images(root, dataset_type='CelebAHQ'):
    """Sorted names of the readable images in `root` (image_folder's, with
    the download hint of `dataset_type` in its errors)."""
    return image_folder.readable_images(
        root, f'{dataset_type} images',
        DOWNLOAD_HINTS.get(dataset_type, image_folder.DEFAULT_HINT))


def celeba_transform(img_shape):
    # Centre crop makes the face larger and squares CelebA's 178x218 images.
    return transforms.Compose([
        transforms.CenterCrop(168),
        transforms.Resize(img_shape),
        transforms.ToTensor()
    ])


class CelebADataset(Dataset):

    def __init__(self, root, img_shape=(64, 64), split='all',
                 dataset_type='CelebAHQ'):
        super().__init__()
        self.root = root
        self.img_shape = tuple(img_shape)
        self.filenames = image_folder.dataset_files(
            root, split, f'{dataset_type} images',
            DOWNLOAD_HINTS.get(dataset_type, image_folder.DEFAULT_HINT))
        self.pipeline = celeba_transform(self.img_shape)
        self.warned = set()

    def __len__(self) -> int:
        return len(self.filenames)

    def __getitem__(self, index: int):
        # A file whose header is fine can still fail to decode (truncated):
        # warn once and use the next file, so one bad image does not stop a
        # long run (the LMDB dataset skips alike).
        img = image_folder.first_decodable(
            index, len(self.filenames), self.decode, self.path, self.warned,
            self.root, 'download and unpack them again')
        return self.pipeline(img)  # [3, H, W]

    def path(self, i):
        return os.path.join(self.root, self.filenames[i])

    def decode(self, i):
        return image_folder.decode_rgb(self.path(i))


class CropFit:
    """Resize so the image covers (H, W), keeping its aspect, then cut the
    centre: the whole frame of a square image, the middle of a long one."""

    def __init__(self, img_shape):
        self.H, self.W = img_shape

    def __call__(self, img):
        w, h = img.size
        scale = max(self.H / h, self.W / w)
        size = [max(self.H, round(h * scale)), max(self.W, round(w * scale))]
        img = TF.resize(img, size, antialias=True)
        return TF.center_crop(img, [self.H, self.W])


def fit_transform(img_shape, fit='auto', dataset_type=IMAGE_FOLDER):
    """PIL image -> tensor [C, H, W] in [0, 1] fitted to img_shape (H, W)
    by `fit` (FITS)."""
    if fit not in FITS:
        raise UsageError(f'img_fit={fit!r}: use one of {", ".join(FITS)}')
    if fit == 'celeba' or (fit == 'auto' and dataset_type != IMAGE_FOLDER):
        return celeba_transform(img_shape)
    first = transforms.Resize(tuple(img_shape)) if fit == 'stretch' \
        else CropFit(tuple(img_shape))
    return transforms.Compose([first, transforms.ToTensor()])


class ImageFolderDataset(Dataset):
    """Your own images: every image under `root` (image_folder.scan_folder:
    recursive, any format PIL reads), decoded to `channels` (1: grey, 3:
    RGB; high bit depths scaled to 8 bits) and fitted to img_shape (H, W).
    with_labels: (image, class index) of its first-level subfolder."""

    def __init__(self, root, img_shape=(64, 64), split='train', channels=3,
                 fit='auto', with_labels=False):
        super().__init__()
        self.root = root
        self.folder = image_folder.scan_folder(root, 'your images')
        if with_labels and self.folder.classes is None:
            raise DataError(f'{root} has no class subfolders (two or more '
                            'first-level folders holding the images): its '
                            'images have no labels; set n_classes=None')
        self.filenames, self.labels = self.folder.split(split)
        self.classes = self.folder.classes
        self.with_labels = with_labels
        self.mode = 'L' if channels == 1 else 'RGB'
        self.pipeline = fit_transform(tuple(img_shape), fit)
        self.warned = set()

    def __len__(self):
        return len(self.filenames)

    def __getitem__(self, index: int):
        # a bad file is skipped (warned once) for the next one, its label
        # coming along with it
        img, i = image_folder.first_decodable(
            index, len(self.filenames), self.decode, self.path, self.warned,
            self.root, 'replace or remove them')
        x = self.pipeline(img)  # [C, H, W]
        return (x, self.labels[i]) if self.with_labels else x

    def path(self, i):
        return os.path.join(self.root, self.filenames[i])

    def decode(self, i):
        return image_folder.decode_image(self.path(i), self.mode), i


def data_options(cfg):
    """get_dataset's keywords for how a config's images are read: channels
    (your own images: 1 grey, 3 RGB) and how they are fitted to img_shape."""
    return {'channels': cfg['img_shape'][0], 'fit': cfg['img_fit']}


def lmdb_path_of(data_root):
    """The LMDB of your own images: --data-root itself when it is one (a
    file, or a folder with data.mdb), else <data_root>.lmdb beside it."""
    if os.path.isfile(data_root) or \
            os.path.isfile(os.path.join(data_root, 'data.mdb')):
        return data_root
    return data_root.rstrip('/\\') + '.lmdb'


def data_classes(type, data_root, use_lmdb=False):
    """Class names of the dataset's labels (MNIST's digits, the class
    subfolders of your images), or None when it has none."""
    if type == 'MNIST':
        return [str(d) for d in range(10)]
    if type != IMAGE_FOLDER:
        return None
    if use_lmdb:
        return open_lmdb(data_root, 'all').classes
    return image_folder.scan_folder(data_root, 'your images').classes


def open_lmdb(data_root, split, transform=None, mode='RGB',
              with_labels=False):
    """The LMDB dataset of your own images (see lmdb_path_of)."""
    path = lmdb_path_of(data_root)
    return lmdb_dataset(
        path, f'no LMDB at {data_root} or {path}: make it with `python '
        f'dldemos/lmdb_loader.py {data_root} {path}`, or set use_lmdb=False',
        split=split, transform=transform, mode=mode,
        with_labels=with_labels)


def lmdb_dataset(path, missing, **kwargs):
    """LMDBImageDataset(path, **kwargs); a missing LMDB is the one-line
    DataError `missing`, which says how to make it (one that is there but
    unfinished or foreign keeps its own error)."""
    from dldemos.lmdb_loader import LMDBImageDataset, LMDBNotFound
    try:
        return LMDBImageDataset(path, **kwargs)
    except LMDBNotFound:
        if os.path.exists(path):
            raise
        raise DataError(missing) from None


def files_fingerprint(dataset):
    """A sha256 hex string of the files `dataset` reads, for caches of what
    was computed from them (the code cache): it changes when images are
    added, removed or rewritten. Folder: (name, size, mtime) of its split's
    files; LMDB: the key-list checksum recorded at conversion, data.mdb's
    size and mtime, and the split; MNIST: its raw files and split; Subset:
    the inner dataset's and the indices. None for a dataset of another kind.
    """
    if isinstance(dataset, Subset):
        inner = files_fingerprint(dataset.dataset)
        if inner is None:
            return None
        idx = dataset.indices
        idx = f'range({idx.start},{idx.stop},{idx.step})' \
            if isinstance(idx, range) else ','.join(map(str, idx))
        return _sha256(f'subset:{inner}:{idx}')
    if isinstance(dataset, CelebADataset):
        return image_folder.files_fingerprint(dataset.root,
                                              dataset.filenames)
    if isinstance(dataset, ImageFolderDataset):
        return _sha256('folder:' + image_folder.files_fingerprint(
            dataset.root, dataset.filenames) + f':{dataset.mode}')
    if isinstance(dataset, MNISTImageDataset):
        raw = dataset.mnist.raw_folder
        names = sorted(f for f in os.listdir(raw)
                       if os.path.isfile(os.path.join(raw, f)))
        return _sha256(f'mnist:train={dataset.mnist.train}:'
                       + image_folder.files_fingerprint(raw, names))
    from dldemos.lmdb_loader import LMDBImageDataset
    if isinstance(dataset, LMDBImageDataset):
        from dldemos.lmdb_loader import data_file
        st = os.stat(data_file(dataset.path))
        names = dataset.meta.get('names_sha256') or \
            image_folder.names_checksum(dataset.names)
        return _sha256(f'lmdb:{names}:{st.st_size}:{st.st_mtime_ns}:'
                       f'{dataset.split}:{dataset.mode}')
    return None


def split_names(dataset):
    """The names of the files a folder or LMDB dataset reads, in order, or
    None for MNIST (its test split is a fixed file)."""
    if isinstance(dataset, Subset):
        return split_names(dataset.dataset)
    for attr in ('filenames', 'names'):  # folders / LMDB
        if hasattr(dataset, attr):
            return list(getattr(dataset, attr))
    return None


def _sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def get_dataset(type, img_shape=None, data_root=DATA_ROOT, split='train',
                use_lmdb=False, download=True, with_labels=False,
                channels=3, fit='auto'):
    """The dataset of `type`; `channels` and `fit` (FITS) are for your own
    images (ImageFolder), whose folder (or LMDB) is data_root itself."""
    check_dataset_type(type)
    if with_labels and type not in ('MNIST', IMAGE_FOLDER):
        raise UsageError(f'{type} images have no labels: only MNIST and '
                         'your own images in class subfolders can feed a '
                         'class-conditional prior')
    if type == IMAGE_FOLDER:
        shape = tuple(img_shape or (64, 64))
        if use_lmdb:
            return open_lmdb(data_root, split, fit_transform(shape, fit),
                             'L' if channels == 1 else 'RGB', with_labels)
        return ImageFolderDataset(data_root, shape, split, channels, fit,
                                  with_labels)
    if type == 'MNIST':
        if use_lmdb:
            raise UsageError('use_lmdb=True is for the CelebA and CelebAHQ '
                             'image folders; MNIST is read from its own '
                             'files: set use_lmdb=False')
        if split == 'all':
            raise ValueError("MNIST has train and test splits, not 'all'")
        return MNISTImageDataset(img_shape or (28, 28),
                                 os.path.join(data_root, MNIST_DIR),
                                 train=(split == 'train'), download=download,
                                 with_labels=with_labels)
    folder = os.path.join(data_root,
                          CELEBA_DIR if type == 'CelebA' else CELEBA_HQ_DIR)
    kwargs = {} if img_shape is None else {'img_shape': img_shape}
    if use_lmdb:  # the LMDB sits beside the folder's place in data_root
        path = folder + '.lmdb'
        return lmdb_dataset(
            path, f'LMDB {path} not found: make it with `python '
            'dldemos/VQVAE/dataset.py --to-lmdb --data-root <root with the '
            f'celebA/ folders> --lmdb-root {data_root}` or set '
            'use_lmdb=False', split=split, expect_type=type,
            transform=fit_transform(kwargs.get('img_shape', (64, 64)), fit,
                                    type))
    dataset = CelebADataset(folder, split=split, dataset_type=type, **kwargs)
    if fit not in ('auto', 'celeba'):
        dataset.pipeline = fit_transform(dataset.img_shape, fit, type)
    return dataset


def get_dataloader(type,
                   batch_size,
                   img_shape=None,
                   dist_train=False,
                   num_workers=4,
                   use_lmdb=False,
                   data_root=DATA_ROOT,
                   split='train',
                   subset=None,
                   shuffle=True,
                   seed=0,
                   pin_memory=False,
                   download=True,
                   with_labels=False,
                   channels=3,
                   fit='auto',
                   **kwargs):
    """The tutorial's loader factory, plus data root, split and subset;
    with_labels (MNIST): batches of (images, labels) instead of images.

    With dist_train=True it returns (dataloader, sampler) as the tutorial's
    does; the sampler's set_epoch(e) must be called each epoch. Either way the
    sampler is a seeded DistributedSampler (one replica when not distributed),
    so the order of epoch e depends only on (seed, e): runs are repeatable and
    a resumed run sees the same batches as an uninterrupted one.
    """
    dataset = get_dataset(type, img_shape, data_root, split, use_lmdb,
                          download, with_labels, channels, fit)
    if subset is not None:
        dataset = Subset(dataset, range(min(int(subset), len(dataset))))
    if isinstance(getattr(dataset, 'dataset', dataset), MNISTImageDataset) \
            and (img_shape is None or tuple(img_shape) == (28, 28)):
        num_workers = 0  # in-memory tensors: workers only add overhead
    if dist_train:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0,
                                     shuffle=shuffle, seed=seed)
    dataloader = DataLoader(dataset,
                            batch_size=batch_size,
                            sampler=sampler,
                            num_workers=num_workers,
                            pin_memory=pin_memory,
                            persistent_workers=num_workers > 0,
                            **kwargs)
    if dist_train:
        return dataloader, sampler
    return dataloader


def download_mnist(data_root=DATA_ROOT, work_dir='work_dirs'):
    mnist = torchvision.datasets.MNIST(root=os.path.join(data_root, MNIST_DIR),
                                       download=True)
    print('length of MNIST', len(mnist))
    img, label = mnist[4]
    print('label of image 4:', label)
    img.save(os.path.join(work_dir, 'tmp_mnist.jpg'))
    tensor = transforms.ToTensor()(img)
    print(tensor.shape, tensor.max().item(), tensor.min().item())


def preview_celebahq(data_root=DATA_ROOT, work_dir='work_dirs'):
    dataloader = get_dataloader('CelebAHQ', 16, data_root=data_root,
                                split='all', num_workers=0)
    img = next(iter(dataloader))  # [16, 3, 64, 64]
    N = img.shape[0]
    n1 = int(N**0.5)
    img = einops.rearrange(img[:n1 * n1], '(n1 n2) c h w -> c (n1 h) (n2 w)',
                           n1=n1)
    transforms.ToPILImage()(img).save(os.path.join(work_dir,
                                                   'tmp_celebahq.jpg'))
    print('CelebAHQ preview', tuple(img.shape), img.min().item(),
          img.max().item())


def to_lmdb(data_root=DATA_ROOT, lmdb_root=None):
    """Convert the CelebA / CelebAHQ folders found in data_root into
    <lmdb_root>/celebA/<folder>.lmdb, where use_lmdb=True looks for them."""
    from dldemos.lmdb_loader import folder_to_lmdb
    lmdb_root = data_root if lmdb_root is None else lmdb_root
    found = [d for d in (CELEBA_DIR, CELEBA_HQ_DIR)
             if os.path.isdir(os.path.join(data_root, d))]
    if not found:  # bad input: exit 2 in one line, as README promises
        raise DataError(f'no {CELEBA_DIR} or {CELEBA_HQ_DIR} folder in '
                        f'{data_root}: point --data-root at the folder that '
                        'holds celebA/')
    for d in found:
        out = os.path.join(lmdb_root, d + '.lmdb')
        if os.path.exists(out):
            print(f'{printable(out)} exists, skipped (delete it to rebuild)')
            continue
        n = folder_to_lmdb(os.path.join(data_root, d), out,
                           'CelebA' if d == CELEBA_DIR else 'CelebAHQ')
        # printable: a --lmdb-root that is not UTF-8 would not print
        print(f'wrote {n} images to {printable(out)}')


def build_parser():
    parser = argparse.ArgumentParser(
        description='Download MNIST and write preview images (of CelebAHQ '
        'too when its folder is there), or convert the CelebA(HQ) folders '
        'to LMDB.')
    parser.add_argument('--data-root', default=DATA_ROOT, metavar='DIR',
                        help='folder holding mnist/ and celebA/ '
                        '(default: %(default)s)')
    parser.add_argument('--work-dir', default='work_dirs', metavar='DIR',
                        help='where the preview images go '
                        '(default: %(default)s)')
    parser.add_argument('--to-lmdb', action='store_true',
                        help='convert the CelebA(HQ) folders to LMDB '
                        '(use_lmdb=True reads them) and exit')
    parser.add_argument('--lmdb-root', default=None, metavar='DIR',
                        help='where --to-lmdb writes celebA/*.lmdb '
                        '(default: --data-root); train with this as '
                        '--data-root')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.to_lmdb:
        to_lmdb(args.data_root, args.lmdb_root)
        return
    os.makedirs(args.work_dir, exist_ok=True)
    download_mnist(args.data_root, args.work_dir)
    if os.path.isdir(os.path.join(args.data_root, CELEBA_HQ_DIR)):
        preview_celebahq(args.data_root, args.work_dir)


if __name__ == '__main__':
    sys.exit(report_errors(main))
