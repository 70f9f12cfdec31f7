"""A small MNIST classifier whose features score generated digits.

FID's Inception-v3 was trained on photos and knows nothing of digits; a
classifier trained on MNIST gives a feature space where a distance between
sets of images means something. It is trained once on MNIST train, scored on
MNIST test, and cached in the work dir:
    mnist_classifier.pth   plain state dict
    mnist_classifier.json  test accuracy and the training settings
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from dldemos.VQVAE.runtime.files import load_model, save_atomic
from dldemos.VQVAE.dataset import get_dataset

CKPT_NAME = 'mnist_classifier.pth'
INFO_NAME = 'mnist_classifier.json'


class MNISTClassifier(nn.Module):
    """Two conv blocks and a 128-d feature layer (the Frechet features)."""

    def __init__(self, n_features=128, n_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 7 * 7, n_features)
        self.head = nn.Linear(n_features, n_classes)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # [N, 32, 14, 14]
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # [N, 64, 7, 7]
        return F.relu(self.fc(x.flatten(1)))  # [N, n_features]

    def forward(self, x):
        return self.head(self.features(x))  # [N, n_classes]


def mnist_tensors(data_root, split):
    """All images [N, 1, 28, 28] in [0, 1] and labels [N] of a split."""
    ds = get_dataset('MNIST', (28, 28), data_root, split)
    return ds.images, ds.mnist.targets.long()


@torch.no_grad()
def predict(model, images, device, batch_size=1000):
    """(features [N, D], class probabilities [N, 10]) of images in [0, 1]."""
    model.eval()
    feats, probs = [], []
    for i in range(0, images.shape[0], batch_size):
        f = model.features(images[i:i + batch_size].to(device).float())
        feats.append(f.cpu())
        probs.append(F.softmax(model.head(f), -1).cpu())
    return torch.cat(feats), torch.cat(probs)


def train_classifier(data_root, device, epochs=2, train_subset=None,
                     batch_size=128, lr=1e-3, seed=0):
    """Train on MNIST train (first train_subset images); return the model
    and its accuracy on the whole MNIST test split."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_train, y_train = mnist_tensors(data_root, 'train')
    if train_subset is not None:
        x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    model = MNISTClassifier().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    n = x_train.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    # one-cycle schedule: reaches >= 99% in two epochs where a fixed lr
    # needs more
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr * 3, steps)
    for e in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x = x_train[idx].to(device)  # [B, 1, 28, 28]
            y = y_train[idx].to(device)  # [B]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    x_test, y_test = mnist_tensors(data_root, 'test')
    _, probs = predict(model, x_test, device)
    accuracy = float((probs.argmax(-1) == y_test).float().mean())
    return model, accuracy


def load_or_train(work_dir, data_root, device, epochs=2, train_subset=None,
                  log=print):
    """The cached classifier of work_dir, trained first when missing or when
    it was trained with other settings. Returns (model, info dict)."""
    ckpt = os.path.join(work_dir, CKPT_NAME)
    info_path = os.path.join(work_dir, INFO_NAME)
    settings = {'epochs': epochs, 'train_subset': train_subset,
                'data_root': os.path.abspath(data_root)}
    model = MNISTClassifier()
    if os.path.isfile(ckpt) and os.path.isfile(info_path):
        with open(info_path) as f:
            info = json.load(f)
        if info.get('settings') == settings:
            load_model(model, ckpt, 'MNIST classifier')
            return model.to(device).eval(), dict(info, path=ckpt)
    log(f'training the MNIST classifier ({epochs} epochs) ...')
    model, accuracy = train_classifier(data_root, device, epochs,
                                       train_subset)
    save_atomic(model.state_dict(), ckpt)
    info = {'test_accuracy': accuracy, 'settings': settings}
    with open(info_path, 'w') as f:
        json.dump(info, f, indent=1)
    log(f'MNIST classifier test accuracy {accuracy:.4f}')
    return model.eval(), dict(info, path=ckpt)
