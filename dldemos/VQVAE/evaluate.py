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
import time

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))
    from dldemos.utils.threads import passive_wait, stop_quietly
    stop_quietly()  # Ctrl-C / SIGTERM while importing: one line, exit 130
    passive_wait()  # before torch loads OpenMP: idle threads sleep, not spin

import torch
import torch.nn as nn
import torch.nn.functional as F

from dldemos.utils.errors import CheckpointError, UsageError, report_errors
from dldemos.utils.threads import configure_threads
from dldemos.VQVAE.scoring import mnist_classifier
from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.runtime.checkpoint import (file_sha256, load_file, load_model,
                                      plain, resume_path)
from dldemos.VQVAE.runtime.cli import add_common_args, check_seed, pick_device
from dldemos.VQVAE.runtime.config_check import load_cfg
from dldemos.VQVAE.runtime.context import (RunContext, prior_is_stale,
                                   seed_everything)
from dldemos.VQVAE.runtime.hardware import describe as hardware
from dldemos.VQVAE.loading.loaders import code_loader, image_loader
from dldemos.VQVAE.runtime.logs import log
from dldemos.VQVAE.scoring.metrics import (bits_per_dim, feature_stats,
                                   frechet_distance, prior_nll, vqvae_heldout)
from dldemos.VQVAE.plots import save_grid
from dldemos.VQVAE.sampling import sample_with_cfg


PSNR_CONVENTION = ('set-level: 10 log10(1 / MSE) of the mean squared error '
                   'over every pixel of every held-out image (clipped to '
                   '[0, 1]), not the mean of per-image PSNRs')
BITS_PER_DIM_NOTE = ('the bits of the discrete codes only (prior NLL of the '
                     'latents spread over C*H*W): not comparable with the '
                     "VQ-VAE paper's bits/dim, which also counts the "
                     'decoder\'s likelihood of the pixels')


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


def spread_labels(cfg, n):
    """Classes spread evenly over n samples (arange(n) % n_classes) for a
    class-conditional prior, so the samples' class mix is the data's
    (MNIST's is near uniform); None for an unconditional one."""
    n_classes = cfg['n_classes']
    return None if n_classes is None else torch.arange(n) % n_classes


@torch.no_grad()
def generate(vqvae, gen_model, cfg, n, device, seed, batch_size,
             labels=None):
    """n images [n, C, H, W] in [0, 1] sampled with cfg's sampler (labels
    [n]: their classes, for a class-conditional prior)."""
    imgs = sample_with_cfg(vqvae, gen_model, cfg, n, device, seed,
                           batch_size, labels)
    return imgs.clip(0, 1).cpu()


def class_grid(imgs, n_classes, max_columns=9):
    """The samples of spread_labels rearranged one class a row (row c:
    class c), at most max_columns a row: (images, rows)."""
    columns = min(max_columns, imgs.shape[0] // n_classes)
    if columns == 0:  # fewer samples than classes: as drawn
        return imgs, None
    # sample k has class k % n_classes: column j of row c is j * C + c
    order = torch.arange(columns * n_classes).view(columns, n_classes)
    return imgs[order.t().reshape(-1)], n_classes  # [C * columns, ...]


def feature_extractor(ctx, n_samples, classifier_epochs, classifier_subset):
    """(extract(x) -> features, classifier or None, samples-entry fields):
    an MNIST classifier the project trains itself, or Inception-v3 for
    faces when its weights are already cached (extract None: skipped)."""
    device = ctx.device
    if ctx.cfg['dataset_type'] == 'MNIST':
        clf, info = mnist_classifier.load_or_train(
            ctx.work_dir, ctx.data_root, device, classifier_epochs,
            classifier_subset, log)
        if info['test_accuracy'] < 0.99:
            log(f'warning: the MNIST classifier reaches only '
                f'{info["test_accuracy"]:.4f} test accuracy (< 0.99)')
        fields = {'fid_feature': 'mnist-classifier', 'classifier': {
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


def score_vqvae(ctx, vqvae, eval_images, batch_size, recon_feats):
    """Reconstructions and code usage on the held-out images."""
    dataset = ctx.cfg['dataset_type']
    test_loader, _ = image_loader(ctx, batch_size, 'test',
                                  subset=eval_images, shuffle=False)
    m = vqvae_heldout(vqvae, test_loader, ctx.device, with_ssim=True,
                      on_batch=None if recon_feats is None else
                      (lambda x, x_hat: recon_feats.add(x_hat)))
    counts = m.pop('code_counts')
    png = ctx.out(f'code_usage_{dataset}.png')
    code_usage_png(counts, png, f'code usage on {m["n_images"]} held-out '
                   f'{dataset} images ({m["codes_used"]}/{len(counts)} used)')
    return dict(m, n_embedding=len(counts), code_counts=counts.tolist(),
                code_usage_png=png,
                psnr_convention=PSNR_CONVENTION)


def score_prior(ctx, vqvae, gen_model, eval_images, batch_size):
    """Likelihood of the held-out codes under the prior."""
    img_shape = tuple(ctx.cfg['img_shape'])
    codes, _ = code_loader(ctx, vqvae, 'test', subset=eval_images,
                           shuffle=False, batch_size=batch_size)
    # a class-conditional prior: the NLL given each image's true class
    with_labels = ctx.cfg['n_classes'] is not None
    p = prior_nll(gen_model, (b if with_labels else b[0] for b in codes),
                  ctx.device, with_labels=with_labels)
    latent_hw = vqvae.get_latent_HW(img_shape)
    K = ctx.cfg['n_embedding']
    return dict(
        p, bits_per_dim=bits_per_dim(p['nll_nats_per_latent'], latent_hw,
                                     img_shape),
        bits_per_dim_counts=BITS_PER_DIM_NOTE,
        uniform_nats_per_latent=math.log(K),
        uniform_bits_per_dim=bits_per_dim(math.log(K), latent_hw, img_shape),
        latent_shape=list(latent_hw))


def score_samples(ctx, vqvae, gen_model, n_samples, sample_batch,
                  eval_images, batch_size, extract, clf, recon_feats):
    """Frechet distance of n_samples samples to the held-out images, with
    two references: reconstructions (what the decoder allows) and real
    train images (the floor)."""
    cfg, device, seed = ctx.cfg, ctx.device, ctx.seed
    labels = spread_labels(cfg, n_samples)  # [n] or None
    imgs = generate(vqvae, gen_model, cfg, n_samples, device, seed,
                    sample_batch, labels)  # [n, C, H, W]
    grid = ctx.out(f'eval_samples_{cfg["dataset_type"]}.jpg')
    if labels is None:
        save_grid(imgs[:81], grid, cfg['dataset_type'])
    else:
        grid_imgs, rows = class_grid(imgs, cfg['n_classes'])
        save_grid(grid_imgs, grid, cfg['dataset_type'], n_rows=rows)
    out = dict(sampler=cfg['sampler'], temperature=cfg['temperature'],
               top_k=cfg['top_k'], seed=seed, grid=grid)
    if extract is None:
        return out
    test_loader, _ = image_loader(ctx, batch_size, 'test',
                                  subset=eval_images, shuffle=False)
    test_feats = features_of_loader(extract, test_loader)
    ref_stats = feature_stats(test_feats)
    # train images drawn at random, as many as samples, so that all three
    # distances carry the same small-sample bias
    train_loader, _ = image_loader(ctx, batch_size, 'train')
    train_feats = features_of_loader(extract, train_loader, n_samples)
    sample_feats = FeatureSet(extract, n_samples)
    for i in range(0, n_samples, batch_size):
        sample_feats.add(imgs[i:i + batch_size])
    out.update(fid=fid_entry(sample_feats.array(), ref_stats)['fid'],
               reference={
                   'against': f'held-out images ({test_feats.shape[0]})',
                   'reconstructions_vs_test': fid_entry(recon_feats.array(),
                                                        ref_stats),
                   'train_vs_test': fid_entry(train_feats, ref_stats)})
    if clf is not None:  # MNIST: which digits the samples look like
        with torch.no_grad():
            probs = F.softmax(clf.head(torch.from_numpy(
                sample_feats.array()).float().to(device)), -1).cpu()
        out.update(class_histogram=torch.bincount(
            probs.argmax(-1), minlength=10).tolist(),
            mean_confidence=float(probs.max(-1).values.mean()))
        if labels is not None:  # did the prior draw the class asked for?
            out['conditional_accuracy'] = float(
                (probs.argmax(-1) == labels[:probs.shape[0]]).float().mean())
    return out


def load_checkpoints(ctx, vqvae, gen_model):
    """Load what exists; (paths of the loaded ones, why the prior is not
    scored or None). A VQ-VAE alone is scored; no VQ-VAE is an error."""
    paths = {'vqvae': ctx.ckpt('vqvae_path'),
             'gen_model': ctx.ckpt('gen_model_path')}
    if not os.path.isfile(paths['vqvae']):
        raise UsageError(f'VQ-VAE checkpoint {paths["vqvae"]} does not '
                         'exist: train first (main.py with the same -c, '
                         '--work-dir and --cfg-options)')
    load_model(vqvae, paths['vqvae'], 'VQ-VAE checkpoint')
    vqvae.to(ctx.device).eval()
    why = None
    if not os.path.isfile(paths['gen_model']):
        why = (f'no PixelCNN checkpoint {paths["gen_model"]}: train it with '
               'main.py --stages 3')
    elif prior_is_stale(ctx):
        why = (f'the PixelCNN {paths["gen_model"]} was trained on the codes '
               'of another VQ-VAE: train it again with main.py --stages 3')
    if why:
        del paths['gen_model']
        return paths, why
    load_model(gen_model, paths['gen_model'], 'PixelCNN checkpoint')
    gen_model.to(ctx.device).eval()
    return paths, None


def evaluate(ctx, n_samples=1000, eval_images=None, batch_size=None,
             sample_batch=500, classifier_epochs=2, classifier_subset=None):
    """Every held-out metric of the config's checkpoints in the work dir:
    the metrics.json dict. Without a (matching) prior, only the VQ-VAE."""
    tic = time.perf_counter()
    cfg, dataset = ctx.cfg, ctx.cfg['dataset_type']
    batch_size = batch_size or cfg['batch_size']
    vqvae, gen_model = build_models(cfg)
    paths, no_prior = load_checkpoints(ctx, vqvae, gen_model)
    if no_prior:
        log(f'prior and samples skipped: {no_prior}')
        n_samples = 0
    result = {'config': plain(cfg),
              'checkpoints': {k: {'path': p, 'sha256': file_sha256(p),
                                  'epochs_trained': epochs_trained(p)}
                              for k, p in paths.items()},
              'held_out': ('MNIST test split' if dataset == 'MNIST' else
                           f'{dataset}: last 10% of files by sorted name'),
              'device': str(ctx.device), 'hardware': hardware(ctx.device)}
    extract, clf, fields = (None, None, {})
    if n_samples:
        extract, clf, fields = feature_extractor(
            ctx, n_samples, classifier_epochs, classifier_subset)
    recon_feats = None if extract is None else FeatureSet(extract, n_samples)
    result['vqvae'] = score_vqvae(ctx, vqvae, eval_images, batch_size,
                                  recon_feats)
    log(f'VQ-VAE scored ({time.perf_counter() - tic:.1f}s)')
    if no_prior:
        result['prior'] = result['samples'] = {'skipped': no_prior}
    else:
        result['prior'] = score_prior(ctx, vqvae, gen_model, eval_images,
                                      batch_size)
        log(f'prior scored ({time.perf_counter() - tic:.1f}s)')
        result['samples'] = dict(fields, n_samples=n_samples)
        if n_samples:
            result['samples'].update(score_samples(
                ctx, vqvae, gen_model, n_samples, sample_batch, eval_images,
                batch_size, extract, clf, recon_feats))
            log(f'{n_samples} samples scored '
                f'({time.perf_counter() - tic:.1f}s)')
    result['elapsed_s'] = time.perf_counter() - tic
    return result


# ----------------------------------------------------------------- report
def format_table(r):
    v, p, s = r['vqvae'], r['prior'], r['samples']
    ep = {k: c['epochs_trained'] for k, c in r['checkpoints'].items()}
    rows = [
        ('VQ-VAE', 'epochs trained', f'{ep["vqvae"]}'),
        ('', 'held-out images', f'{v["n_images"]}'),
        ('', 'MSE', f'{v["mse"]:.5f}'),
        ('', 'PSNR (dB)', f'{v["psnr"]:.2f} (of the mean MSE)'),
        ('', 'SSIM', f'{v["ssim"]:.4f}'),
        ('', 'codes used', f'{v["codes_used"]}/{v["n_embedding"]}'),
        ('', 'perplexity', f'{v["perplexity"]:.2f}'),
    ]
    if 'skipped' in p:
        return align(rows + [('prior', 'skipped', p['skipped'])])
    rows += [
        ('prior', 'epochs trained', f'{ep["gen_model"]}'),
        ('', 'NLL (nats/latent)', f'{p["nll_nats_per_latent"]:.4f}'),
        ('', 'uniform prior (log K)', f'{p["uniform_nats_per_latent"]:.4f}'),
        ('', 'bits/dim (code bits only)', f'{p["bits_per_dim"]:.4f}'),
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
        if 'conditional_accuracy' in s:
            rows.append(('', 'conditional accuracy',
                         f'{s["conditional_accuracy"]:.4f} (classifier '
                         'agrees with the class asked for)'))
    return align(rows)


def align(rows):
    w = [max(len(row[i]) for row in rows) for i in range(2)]
    return '\n'.join(f'{a:<{w[0]}}  {b:<{w[1]}}  {c}' for a, b, c in rows)


def build_parser():
    parser = argparse.ArgumentParser(
        description='Score the saved checkpoints of a run (same -c, '
        '--work-dir and --cfg-options as its main.py) on held-out data: '
        'writes metrics.json into the work dir.')
    add_common_args(parser, resume=False)
    int_flags = [
        ('--n-samples', 1000, 'images to generate and score, 0 for none '
         '(default: %(default)s)'),
        ('--sample-batch', 500, 'images sampled at once '
         '(default: %(default)s)'),
        ('--eval-images', None, 'cap on held-out images (default: all)'),
        ('--batch-size', None, "scoring batch size (default: the config's)"),
        ('--classifier-epochs', 2, 'epochs of the MNIST feature classifier '
         '(default: %(default)s)'),
        ('--classifier-subset', None, 'train the classifier on this many '
         'images (default: all)'),
    ]
    for flag, default, text in int_flags:
        parser.add_argument(flag, type=int, default=default, metavar='N',
                            help=text)
    return parser


def check_args(args):
    """Values that would fail deep inside scoring, said up front."""
    lows = {'n_samples': 0, 'sample_batch': 1, 'eval_images': 1,
            'batch_size': 1, 'classifier_epochs': 1, 'classifier_subset': 1}
    for name, low in lows.items():
        value = getattr(args, name)
        if value is not None and value < low:
            flag = '--' + name.replace('_', '-')
            raise UsageError(f'{flag} {value}: use an integer >= {low}')


def run(args):
    configure_threads(args.threads)
    check_args(args)
    cfg = load_cfg(args.c, args.cfg_options, check_seed(args.seed))
    ctx = RunContext(cfg, pick_device(args.device, args.d), args.work_dir,
                     args.data_root, args.seed)
    log(f'device: {ctx.device}')
    if os.path.exists(ctx.work_dir) and not os.path.isdir(ctx.work_dir):
        raise UsageError(f'--work-dir {ctx.work_dir} is a file: pick the '
                         'folder the run trained in')
    os.makedirs(ctx.work_dir, exist_ok=True)
    seed_everything(ctx.seed)
    result = evaluate(ctx, args.n_samples, args.eval_images, args.batch_size,
                      args.sample_batch, args.classifier_epochs,
                      args.classifier_subset)
    out = ctx.out('metrics.json')
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
