"""Score saved checkpoints on held-out data (the tutorial's closing lesson: a
falling training loss is not a better model; test metrics decide).

    python dldemos/VQVAE/evaluate.py -c 0              # same flags as main.py
    python dldemos/VQVAE/evaluate.py -c 5 --data-root /work/shared/data \\
        --work-dir work_dirs/quick --n-samples 1000

Held-out data: the MNIST test split; for CelebA(HQ) folders the last 10% of
files by sorted name (dataset.py), which training never sees.
Writes into --work-dir: metrics.json, code_usage_{dataset}.png (how often
each code is used on held-out images), eval_samples_{dataset}.jpg (the first
generated images) and, for MNIST, the cached feature classifier.
"""
import argparse
import json
import math
import os
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

import torch
import torch.nn as nn
import torch.nn.functional as F

from dldemos.VQVAE import mnist_classifier
from dldemos.VQVAE.checkpoint import (CheckpointError, load_file, load_model,
                                      plain, resume_path)
from dldemos.VQVAE.code_cache import file_sha256
from dldemos.VQVAE.main import build_models, code_loader, image_loader
from dldemos.VQVAE.plots import save_grid
from dldemos.VQVAE.metrics import (bits_per_dim, feature_stats,
                                   frechet_distance, prior_nll, vqvae_heldout)
from dldemos.VQVAE.runtime import (UsageError, add_common_args, ckpt_path,
                                   cpu_name, load_cfg, log, pick_device,
                                   report_errors, seed_everything, timer)
from dldemos.VQVAE.sampling import sample_images


# ----------------------------------------------------------------- features
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
        self.net.fc = nn.Identity()
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
    """Where torchvision keeps its Inception-v3 weights (never downloaded
    here: FID is skipped when the file is not already there)."""
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
    """Features of up to `limit` images, collected batch by batch."""

    def __init__(self, extract, limit=None):
        self.extract, self.limit, self.parts, self.n = extract, limit, [], 0

    def full(self):
        return self.limit is not None and self.n >= self.limit

    def add(self, x):
        if self.full():
            return
        if self.limit is not None:
            x = x[:self.limit - self.n]
        self.parts.append(self.extract(x).double().cpu())
        self.n += x.shape[0]

    def array(self):
        return torch.cat(self.parts).numpy()  # [n, D]


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


# ----------------------------------------------------------------- stages
def epochs_trained(path):
    """Completed epochs recorded in the checkpoint's resume point (a run
    stopped mid-epoch counts only whole epochs), or None without one."""
    try:
        return int(load_file(resume_path(path), 'resume point')['epoch'])
    except (CheckpointError, KeyError, TypeError):
        return None


def hardware(device):
    """The device in words, for the README's results table."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{cpu_name()}, {torch.get_num_threads()} threads'



def code_usage_png(counts, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, len(counts) / 8), 3))
    ax.bar(range(len(counts)), counts.tolist(), width=0.9)
    ax.set_xlabel('code')
    ax.set_ylabel('latent positions')
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def generate(vqvae, gen_model, cfg, n, device, seed, batch_size):
    """n images [n, C, H, W] in [0, 1] sampled with cfg's sampler."""
    imgs = sample_images(vqvae, gen_model, cfg['img_shape'], n, device,
                         cfg['sampler'], cfg['temperature'], cfg['top_k'],
                         seed, batch_size)
    return imgs.clip(0, 1).cpu()


def evaluate(cfg, device, work_dir, data_root, seed=0, n_samples=None,
             eval_images=None, batch_size=None, sample_batch=500,
             classifier_epochs=2, classifier_subset=None):
    """Every held-out metric of the config's checkpoints in work_dir: the
    metrics.json dict."""
    tic = timer()
    dataset = cfg['dataset_type']
    img_shape = tuple(cfg['img_shape'])
    batch_size = batch_size or cfg['batch_size']
    n_samples = 1000 if n_samples is None else n_samples
    vqvae, gen_model = build_models(cfg)
    paths = {'vqvae': ckpt_path(cfg, 'vqvae_path', work_dir),
             'gen_model': ckpt_path(cfg, 'gen_model_path', work_dir)}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise UsageError(f'{name} checkpoint {path} does not exist: train '
                             'first (main.py with the same -c, --work-dir '
                             'and --cfg-options)')
    load_model(vqvae, paths['vqvae'], 'VQ-VAE checkpoint').to(device).eval()
    load_model(gen_model, paths['gen_model'],
               'PixelCNN checkpoint').to(device).eval()
    result = {'config': plain(cfg),
              'checkpoints': {k: {'path': p, 'sha256': file_sha256(p),
                                  'epochs_trained': epochs_trained(p)}
                              for k, p in paths.items()},
              'held_out': ('MNIST test split' if dataset == 'MNIST' else
                           f'{dataset}: last 10% of files by sorted name'),
              'device': str(device),
              'hardware': hardware(device)}

    # Feature extractor for the Frechet distances
    extract, samples = None, {'n_samples': n_samples}
    if n_samples:
        if dataset == 'MNIST':
            clf, info = mnist_classifier.load_or_train(
                work_dir, data_root, device, classifier_epochs,
                classifier_subset, log)
            samples.update(fid_feature='mnist-classifier', classifier={
                'test_accuracy': info['test_accuracy'], 'path': info['path'],
                **info['settings']})
            if info['test_accuracy'] < 0.99:
                log(f'warning: the MNIST classifier reaches only '
                    f'{info["test_accuracy"]:.4f} test accuracy (< 0.99)')

            def extract(x):
                return mnist_classifier.predict(clf, x, device)[0]
        else:
            inception, why = load_inception(device)
            samples['fid_feature'] = 'inception-v3'
            if inception is None:
                samples.update(fid=None, skipped=why)
                log(f'FID skipped: {why}')
            else:
                def extract(x):
                    return inception(x.to(device))

    # 1. VQ-VAE: reconstructions and code usage on the held-out images
    test_loader, _ = image_loader(cfg, data_root, batch_size, 'test',
                                  subset=eval_images, shuffle=False)
    recon_feats = None
    if extract is not None:
        recon_feats = FeatureSet(extract, n_samples)
    m = vqvae_heldout(vqvae, test_loader, device, with_ssim=True,
                      on_batch=None if recon_feats is None else
                      (lambda x, x_hat: recon_feats.add(x_hat)))
    counts = m.pop('code_counts')
    png = os.path.join(work_dir, f'code_usage_{dataset}.png')
    code_usage_png(counts, png, f'code usage on {m["n_images"]} held-out '
                   f'{dataset} images ({m["codes_used"]}/{len(counts)} used)')
    result['vqvae'] = dict(m, n_embedding=len(counts),
                           code_counts=counts.tolist(), code_usage_png=png)
    log(f'VQ-VAE scored ({timer() - tic:.1f}s)')

    # 2. Prior: likelihood of the held-out codes
    codes, _ = code_loader(vqvae, cfg, device, work_dir, data_root, seed,
                           'test', eval_images, False, batch_size)
    p = prior_nll(gen_model, (b[0] for b in codes), device)
    latent_hw = vqvae.get_latent_HW(img_shape)
    K = cfg['n_embedding']
    result['prior'] = dict(
        p, bits_per_dim=bits_per_dim(p['nll_nats_per_latent'], latent_hw,
                                     img_shape),
        uniform_nats_per_latent=math.log(K),
        uniform_bits_per_dim=bits_per_dim(math.log(K), latent_hw, img_shape),
        latent_shape=list(latent_hw))
    log(f'prior scored ({timer() - tic:.1f}s)')

    # 3. Samples: Frechet distance to the held-out images, with references
    if n_samples:
        imgs = generate(vqvae, gen_model, cfg, n_samples, device, seed,
                        sample_batch)  # [n, C, H, W]
        grid = os.path.join(work_dir, f'eval_samples_{dataset}.jpg')
        save_grid(imgs[:81], grid, dataset)
        samples.update(sampler=cfg['sampler'], temperature=cfg['temperature'],
                       top_k=cfg['top_k'], seed=seed, grid=grid)
        log(f'{n_samples} samples drawn ({timer() - tic:.1f}s)')
    if extract is not None:
        test_loader, _ = image_loader(cfg, data_root, batch_size, 'test',
                                      subset=eval_images, shuffle=False)
        test_feats = features_of_loader(extract, test_loader)
        ref_stats = feature_stats(test_feats)
        # train images drawn at random, as many as samples, so that all three
        # distances carry the same small-sample bias
        train_loader, _ = image_loader(cfg, data_root, batch_size, 'train',
                                       shuffle=True, seed=seed)
        train_feats = features_of_loader(extract, train_loader, n_samples)
        sample_feats = FeatureSet(extract, n_samples)
        for i in range(0, n_samples, batch_size):
            sample_feats.add(imgs[i:i + batch_size])
        entry = fid_entry(sample_feats.array(), ref_stats)
        samples.update(fid=entry['fid'], reference={
            'against': f'held-out images ({test_feats.shape[0]})',
            'reconstructions_vs_test': fid_entry(recon_feats.array(),
                                                 ref_stats),
            'train_vs_test': fid_entry(train_feats, ref_stats)})
        if dataset == 'MNIST':
            with torch.no_grad():
                probs = F.softmax(clf.head(torch.from_numpy(
                    sample_feats.array()).float().to(device)), -1).cpu()
            samples.update(
                class_histogram=torch.bincount(
                    probs.argmax(-1), minlength=10).tolist(),
                mean_confidence=float(probs.max(-1).values.mean()))
    result['samples'] = samples
    result['elapsed_s'] = timer() - tic
    return result


# ----------------------------------------------------------------- report
def format_table(r):
    v, p, s = r['vqvae'], r['prior'], r['samples']
    ep = {k: c['epochs_trained'] for k, c in r['checkpoints'].items()}
    rows = [
        ('VQ-VAE', 'epochs trained', f'{ep["vqvae"]}'),
        ('', 'held-out images', f'{v["n_images"]}'),
        ('', 'MSE', f'{v["mse"]:.5f}'),
        ('', 'PSNR (dB)', f'{v["psnr"]:.2f}'),
        ('', 'SSIM', f'{v["ssim"]:.4f}'),
        ('', 'codes used', f'{v["codes_used"]}/{v["n_embedding"]}'),
        ('', 'perplexity', f'{v["perplexity"]:.2f}'),
        ('prior', 'epochs trained', f'{ep["gen_model"]}'),
        ('', 'NLL (nats/latent)', f'{p["nll_nats_per_latent"]:.4f}'),
        ('', 'uniform prior (log K)', f'{p["uniform_nats_per_latent"]:.4f}'),
        ('', 'bits/dim', f'{p["bits_per_dim"]:.4f}'),
        ('samples', 'n', f'{s["n_samples"]}'),
    ]
    if s['n_samples']:
        fid = 'skipped' if s.get('fid') is None else f'{s["fid"]:.3f}'
        rows.append(('', f'FID ({s["fid_feature"]})', fid))
        if 'reference' in s:
            ref = s['reference']
            rows += [('', 'ref: reconstructions vs test',
                      f'{ref["reconstructions_vs_test"]["fid"]:.3f}'),
                     ('', 'ref: train vs test',
                      f'{ref["train_vs_test"]["fid"]:.3f}')]
        if 'classifier' in s:
            rows += [('', 'classifier test accuracy',
                      f'{s["classifier"]["test_accuracy"]:.4f}'),
                     ('', 'mean confidence', f'{s["mean_confidence"]:.4f}'),
                     ('', 'class histogram',
                      ' '.join(map(str, s['class_histogram'])))]
    w = [max(len(row[i]) for row in rows) for i in range(2)]
    return '\n'.join(f'{a:<{w[0]}}  {b:<{w[1]}}  {c}' for a, b, c in rows)


def build_parser():
    parser = argparse.ArgumentParser(
        description='Evaluate saved checkpoints on held-out data.')
    add_common_args(parser)
    parser.add_argument('--n-samples', type=int, default=1000,
                        help='images to generate and score (0: none)')
    parser.add_argument('--sample-batch', type=int, default=500,
                        help='images sampled at once')
    parser.add_argument('--eval-images', type=int, default=None,
                        help='cap on held-out images (default: all)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help="scoring batch size (default: the config's)")
    parser.add_argument('--classifier-epochs', type=int, default=2,
                        help='epochs of the MNIST feature classifier')
    parser.add_argument('--classifier-subset', type=int, default=None,
                        help='train the classifier on this many images')
    return parser


def run(args):
    cfg = load_cfg(args)
    if args.n_samples < 0 or args.sample_batch < 1:
        raise UsageError('--n-samples must be >= 0 and --sample-batch >= 1')
    device = pick_device(args)
    log(f'device: {device}')
    os.makedirs(args.work_dir, exist_ok=True)
    seed_everything(args.seed)
    result = evaluate(cfg, device, args.work_dir, args.data_root, args.seed,
                      args.n_samples, args.eval_images, args.batch_size,
                      args.sample_batch, args.classifier_epochs,
                      args.classifier_subset)
    out = os.path.join(args.work_dir, 'metrics.json')
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
    print(format_table(result))
    log('wrote', out)
    return result


def main(argv=None):
    args = build_parser().parse_args(argv)
    code = report_errors(lambda: run(args), args.debug)
    if code:
        sys.exit(code)


if __name__ == '__main__':
    main()
