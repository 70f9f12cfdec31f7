"""A small classifier whose features score generated images of a labelled
dataset: MNIST's digits, or your own images in class subfolders.

FID's Inception-v3 was trained on photos and knows nothing of digits (nor,
without a download, of your classes); a classifier trained on the data itself
gives a feature space where a distance between sets of images means
something, and tells which class a sample looks like (conditional accuracy).
It is trained once on the training split, scored on the held-out split, and
cached in the work dir:
    mnist_classifier.pth / .json     MNIST (as before: caches stay valid)
    folder_classifier.pth / .json    your own images (config 9)
The .json holds the held-out accuracy and the training settings; a cache
made with other settings (or other files) is trained again.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from dldemos.utils.errors import CheckpointError
from dldemos.VQVAE.runtime.files import (load_model, save_atomic,
                                         write_text_atomic)
from dldemos.VQVAE.dataset import files_fingerprint, get_dataset

CKPT_NAME = 'mnist_classifier.pth'
INFO_NAME = 'mnist_classifier.json'
FOLDER_CKPT_NAME = 'folder_classifier.pth'
FOLDER_INFO_NAME = 'folder_classifier.json'
MAX_POOL_HW = 8  # feature maps larger than this are averaged down to it


class Classifier(nn.Module):
    """Two conv blocks and a 128-d feature layer (the Frechet features), for
    images [N, in_channels, H, W] with H and W multiples of 4. Feature maps
    wider than 8x8 are averaged to 8x8, so the feature layer stays small for
    large images; MNIST's 7x7 maps pass unchanged (the MNIST classifier of
    before, same weights and state dict)."""

    def __init__(self, n_features=128, n_classes=10, in_channels=1,
                 img_hw=(28, 28)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(64)
        h, w = img_hw[0] // 4, img_hw[1] // 4
        self.pool_hw = (min(h, MAX_POOL_HW), min(w, MAX_POOL_HW))
        self.fc = nn.Linear(64 * self.pool_hw[0] * self.pool_hw[1],
                            n_features)
        self.head = nn.Linear(n_features, n_classes)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # [N,32,H/2,W/2]
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # [N,64,H/4,W/4]
        if tuple(x.shape[2:]) != self.pool_hw:
            x = F.adaptive_avg_pool2d(x, self.pool_hw)  # [N, 64, <=8, <=8]
        return F.relu(self.fc(x.flatten(1)))  # [N, n_features]

    def forward(self, x):
        return self.head(self.features(x))  # [N, n_classes]


MNISTClassifier = Classifier  # its first use; the defaults are MNIST's


def mnist_tensors(data_root, split):
    """All images [N, 1, 28, 28] in [0, 1] and labels [N] of a split."""
    ds = get_dataset('MNIST', (28, 28), data_root, split)
    return ds.images, ds.mnist.targets.long()


def labelled_dataset(cfg, data_root, split):
    """The (image, label) dataset of a config's split (your own images:
    at its img_shape, channels and fit)."""
    return get_dataset(cfg['dataset_type'], tuple(cfg['img_shape'][1:]),
                       data_root, split, cfg['use_lmdb'], with_labels=True,
                       channels=cfg['img_shape'][0], fit=cfg['img_fit'])


def dataset_tensors(dataset, limit=None):
    """(images [N, C, H, W] as uint8, labels [N]) of a labelled dataset,
    decoded once (uint8: a quarter of the memory; ToTensor's k / 255 comes
    back exactly)."""
    imgs, labels = [], []
    n = 0
    for x, y in DataLoader(dataset, batch_size=256):
        imgs.append((x * 255).round().to(torch.uint8))
        labels.append(torch.as_tensor(y).long())
        n += x.shape[0]
        if limit is not None and n >= limit:
            break
    imgs, labels = torch.cat(imgs), torch.cat(labels)
    return (imgs, labels) if limit is None else (imgs[:limit], labels[:limit])


def as_float(x):
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def predict(model, images, device, batch_size=1000):
    """(features [N, D], class probabilities [N, n_classes]) of images in
    [0, 1] (or uint8)."""
    model.eval()
    feats, probs = [], []
    for i in range(0, images.shape[0], batch_size):
        f = model.features(as_float(images[i:i + batch_size].to(device)))
        feats.append(f.cpu())
        probs.append(F.softmax(model.head(f), -1).cpu())
    return torch.cat(feats), torch.cat(probs)


def fit(make_model, x_train, y_train, device, epochs=2, batch_size=128,
        lr=1e-3, seed=0, what='classifier'):
    """A model made by make_model() (after seeding: the same seed, the same
    initial weights) trained on tensors (images in [0, 1] or uint8,
    labels), with a progress bar per epoch (`what` names it)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    n = x_train.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    # one-cycle schedule: reaches >= 99% on MNIST in two epochs where a
    # fixed lr needs more
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr * 3, steps)
    for e in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        # minutes on a CPU for MNIST: a bar shows it is not stuck
        for i in tqdm(range(0, n, batch_size), desc=f'{what} epoch {e} of '
                      f'0-{epochs - 1}', leave=False, dynamic_ncols=True,
                      unit='batch'):
            idx = perm[i:i + batch_size]
            x = as_float(x_train[idx].to(device))  # [B, C, H, W]
            y = y_train[idx].to(device)  # [B]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model


def accuracy(model, x, y, device):
    _, probs = predict(model, x, device)
    return float((probs.argmax(-1) == y).float().mean())


def train_classifier(data_root, device, epochs=2, train_subset=None,
                     batch_size=128, lr=1e-3, seed=0):
    """Train on MNIST train (first train_subset images); return the model
    and its accuracy on the whole MNIST test split."""
    x_train, y_train = mnist_tensors(data_root, 'train')
    if train_subset is not None:
        x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    model = fit(Classifier, x_train, y_train, device, epochs, batch_size,
                lr, seed, 'MNIST classifier')
    x_test, y_test = mnist_tensors(data_root, 'test')
    return model, accuracy(model, x_test, y_test, device)


def train_folder_classifier(cfg, data_root, device, n_classes, epochs=2,
                            train_subset=None, batch_size=128, lr=1e-3,
                            seed=0):
    """The same classifier on a labelled dataset of a config (your own
    images): trained on its training split (first train_subset images),
    scored on its held-out split."""
    x_train, y_train = dataset_tensors(
        labelled_dataset(cfg, data_root, 'train'), train_subset)
    C, H, W = cfg['img_shape']
    model = fit(lambda: Classifier(n_classes=n_classes, in_channels=C,
                                   img_hw=(H, W)),
                x_train, y_train, device, epochs, batch_size, lr, seed)
    x_test, y_test = dataset_tensors(labelled_dataset(cfg, data_root,
                                                      'test'))
    return model, accuracy(model, x_test, y_test, device)


def load_or_train(work_dir, data_root, device, epochs=2, train_subset=None,
                  log=print, cfg=None):
    """The cached classifier of work_dir for the config's labelled data
    (MNIST without a cfg), trained first when missing or when it was
    trained with other settings or files. Returns (model, info dict);
    info['test_accuracy'] is its accuracy on the held-out split."""
    if cfg is None or cfg['dataset_type'] == 'MNIST':
        names, what = (CKPT_NAME, INFO_NAME), 'MNIST classifier'
        settings = {'epochs': epochs, 'train_subset': train_subset,
                    'data_root': os.path.abspath(data_root)}
        model = Classifier()
    else:
        names, what = (FOLDER_CKPT_NAME, FOLDER_INFO_NAME), 'classifier'
        classes = cfg['class_names']
        C, H, W = cfg['img_shape']
        settings = {'epochs': epochs, 'train_subset': train_subset,
                    'data_root': os.path.abspath(data_root),
                    'dataset_type': cfg['dataset_type'],
                    'img_shape': [C, H, W], 'img_fit': cfg['img_fit'],
                    'use_lmdb': cfg['use_lmdb'], 'classes': list(classes),
                    'files': files_fingerprint(
                        labelled_dataset(cfg, data_root, 'train'))}
        model = Classifier(n_classes=len(classes), in_channels=C,
                           img_hw=(H, W))
    ckpt = os.path.join(work_dir, names[0])
    info_path = os.path.join(work_dir, names[1])
    if os.path.isfile(ckpt) and os.path.isfile(info_path):
        info, damage = read_info(info_path)
        if damage is None and info['settings'] == settings:
            try:
                load_model(model, ckpt, what)
                return model.to(device).eval(), dict(info, path=ckpt)
            except CheckpointError:
                damage = f'{ckpt} cannot be loaded'
        if damage is not None:  # a cache: made again, never a dead end
            log(f'warning: the cached {what} is damaged ({damage}): '
                'training it again')
    log(f'training the {what} ({epochs} epochs; once: it is cached in '
        f'{ckpt} for the next evaluations) ...')
    if cfg is None or cfg['dataset_type'] == 'MNIST':
        model, acc = train_classifier(data_root, device, epochs, train_subset)
    else:
        model, acc = train_folder_classifier(cfg, data_root, device,
                                             len(classes), epochs,
                                             train_subset)
    save_atomic(model.state_dict(), ckpt)
    info = {'test_accuracy': acc, 'settings': settings}
    # written after the weights, whole or not at all: the info file is
    # what says the cache is complete
    write_text_atomic(info_path, json.dumps(info, indent=1))
    log(f'{what} test accuracy {acc:.4f} (held-out split)')
    return model.eval(), dict(info, path=ckpt)


def read_info(path):
    """(info dict, None) of a classifier's info file, or (None, why) when it
    is damaged: not JSON, or without settings and a test accuracy in
    [0, 1] (evaluate.py prints and records both)."""
    try:
        with open(path, encoding='utf-8') as f:
            info = json.load(f)
    except (ValueError, RecursionError, OSError) as e:
        # ValueError: not JSON (or not UTF-8); RecursionError: nested
        # too deep to parse
        return None, f'{path} is not readable JSON ({type(e).__name__})'
    acc = info.get('test_accuracy') if isinstance(info, dict) else None
    if not (isinstance(acc, (int, float)) and not isinstance(acc, bool)
            and math.isfinite(acc) and 0 <= acc <= 1
            and isinstance(info.get('settings'), dict)):
        return None, f'{path} lacks its settings or test accuracy'
    return info, None
