"""Image features for the Frechet distance of samples: a classifier the
project trains itself on labelled data (MNIST, your images in class
subfolders), or torchvision's Inception-v3 when its weights are already on
disk (never downloaded here)."""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from dldemos.VQVAE.runtime.logs import log
from dldemos.VQVAE.scoring import mnist_classifier
from dldemos.VQVAE.scoring.metrics import feature_stats, frechet_distance


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 pool features (2048-d) of images in [0, 1].

    These are torchvision's ImageNet weights, not the TF-FID network, so the
    numbers compare runs of this project, not published FIDs."""

    def __init__(self, state_dict):
        super().__init__()
        import torchvision
        # the settings torchvision uses for these weights
        self.net = torchvision.models.inception_v3(
            weights=None, aux_logits=True, init_weights=False,
            transform_input=True)
        self.net.load_state_dict(state_dict)
        self.net.fc = nn.Identity()  # pool features, not ImageNet classes
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406])
                             .view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225])
                             .view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, x):
        x = F.interpolate(x.float(), size=(299, 299), mode='bilinear',
                          align_corners=False)  # [N, 3, 299, 299]
        return self.net((x - self.mean) / self.std)  # [N, 2048]


def inception_weights_path():
    """Where torchvision keeps its Inception-v3 weights."""
    from torchvision.models import Inception_V3_Weights
    url = Inception_V3_Weights.IMAGENET1K_V1.url
    return os.path.join(torch.hub.get_dir(), 'checkpoints',
                        os.path.basename(url))


def load_inception(device):
    """(InceptionFeatures, None), or (None, why it is unavailable)."""
    path = inception_weights_path()
    if not os.path.isfile(path):
        return None, (f'Inception-v3 weights not found at {path} (torchvision'
                      "'s cache; they are never downloaded here)")
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
        return InceptionFeatures(state).to(device).eval(), None
    except Exception as e:  # corrupt file or other weights under that name
        return None, (f'Inception-v3 weights at {path} could not be loaded '
                      f'({type(e).__name__})')


class FeatureSet:
    """Features of up to `limit` images, collected batch by batch, so that
    reconstructions can be featurised while the VQ-VAE is scored; with
    keep_images, also the first keep_images images themselves (the patch
    score of samples, swd.py, compares pixels, not features). extract None:
    images only."""

    def __init__(self, extract, limit=None, keep_images=0):
        self.extract, self.limit, self.parts, self.n = extract, limit, [], 0
        self.keep, self.kept, self.n_kept = keep_images, [], 0

    def full(self):
        return self.limit is not None and self.n >= self.limit and \
            self.n_kept >= self.keep

    def add(self, x):
        if self.n_kept < self.keep:
            self.kept.append(x[:self.keep - self.n_kept].float().cpu())
            self.n_kept += self.kept[-1].shape[0]
        if self.extract is None or (self.limit is not None and
                                    self.n >= self.limit):
            return
        if self.limit is not None:
            x = x[:self.limit - self.n]
        self.parts.append(self.extract(x).double().cpu())  # [b, D]
        self.n += x.shape[0]

    def array(self):
        return torch.cat(self.parts).numpy()  # [n, D]

    def images(self):
        return torch.cat(self.kept)  # [n_kept, C, H, W]


def features_of_loader(extract, loader, limit=None):
    feats = FeatureSet(extract, limit)
    for x in loader:
        feats.add(x)
        if feats.full():
            break
    return feats.array()


def fid_entry(features, ref_stats):
    return {'fid': frechet_distance(*feature_stats(features), *ref_stats),
            'n_images': int(features.shape[0])}


def feature_extractor(ctx, opts):
    """(extract(x) -> features, classifier or None, fields for the samples
    entry): the classifier of a labelled dataset (MNIST, your images in
    class subfolders), or Inception-v3 for faces when its weights are
    cached (extract None: FID skipped, and the fields say why)."""
    device, cfg = ctx.device, ctx.cfg
    mnist = cfg['dataset_type'] == 'MNIST'
    if mnist or cfg.get('class_names'):
        clf, info = mnist_classifier.load_or_train(
            ctx.work_dir, ctx.data_root, device, opts.classifier_epochs,
            opts.classifier_subset, log, None if mnist else cfg)
        if mnist and info['test_accuracy'] < 0.99:
            log(f'warning: the MNIST classifier reaches only '
                f'{info["test_accuracy"]:.4f} test accuracy (< 0.99)')
        feature = 'mnist-classifier' if mnist else 'folder-classifier'
        fields = {'fid_feature': feature, 'classifier': {
            'test_accuracy': info['test_accuracy'], 'path': info['path'],
            **info['settings']}}
        return (lambda x: mnist_classifier.predict(clf, x, device)[0]), \
            clf, fields
    inception, why = load_inception(device)
    if inception is None:
        log(f'FID skipped: {why}')
        return None, None, {'fid_feature': 'inception-v3', 'fid': None,
                            'skipped': why}
    return (lambda x: inception(x.to(device))), None, \
        {'fid_feature': 'inception-v3'}
