"""Class-conditional prior (n_classes): MNIST labels reach the prior through
both data paths, and its samples, grids, resume and scores use them.
(The model and samplers themselves: test_pixelcnn.py, test_sampling.py.)"""
import json
import os
import shutil

import pytest
import torch
from PIL import Image

from dldemos.utils.errors import UsageError
from dldemos.VQVAE import evaluate
from dldemos.VQVAE.loading import code_cache
from dldemos.VQVAE.training import epoch_runner
from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.runtime.files import load_file, load_model
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.runtime.context import RunContext
from dldemos.VQVAE.dataset import get_dataloader, get_dataset
from dldemos.VQVAE.loading.loaders import code_loader
from dldemos.VQVAE.main import train_generative_model
from dldemos.VQVAE.scoring.metrics import prior_nll
from dldemos.VQVAE.plots import save_grid
from test_code_cache import losses, save_vqvae, tiny_cfg
from test_resume import GEN, VQ, StopAt, assert_same, weights
from test_resume import run_main as run_tiny

COND = ['n_classes=10']


# ------------------------------------------------------- labels from the data
@pytest.mark.parametrize('split', ['train', 'test'])
@pytest.mark.parametrize('img_shape', [(28, 28), (32, 32)])
def test_mnist_gives_labels_beside_the_same_images(tiny_data_root, split,
                                                   img_shape):
    plain = get_dataset('MNIST', img_shape, str(tiny_data_root), split)
    labelled = get_dataset('MNIST', img_shape, str(tiny_data_root), split,
                           with_labels=True)
    for i in (0, 5, len(plain) - 1):
        img, label = labelled[i]
        assert torch.equal(img, plain[i])  # the tutorial's image, unchanged
        assert label.dtype == torch.long
        assert int(label) == int(plain.mnist.targets[i])


def test_labelled_loader_yields_image_label_batches(tiny_data_root):
    loader = get_dataloader('MNIST', 8, data_root=str(tiny_data_root),
                            shuffle=False, num_workers=0, with_labels=True)
    x, y = next(iter(loader))
    assert x.shape == (8, 1, 28, 28) and y.shape == (8,)
    targets = get_dataset('MNIST', data_root=str(tiny_data_root)).mnist.targets
    assert torch.equal(y, targets[:8])


@pytest.mark.parametrize('dataset', ['CelebA', 'CelebAHQ'])
def test_faces_have_no_labels(tiny_data_root, dataset):
    with pytest.raises(UsageError, match='no labels'):
        get_dataset(dataset, (32, 32), str(tiny_data_root), with_labels=True)


# ------------------------------------------------------- the code cache
def cache_batches(vqvae, cfg, root, work, split='train', subset=None):
    ctx = RunContext(cfg, torch.device('cpu'), str(work),
                     str(root))
    loader, _ = code_loader(ctx, vqvae, split, subset=subset, shuffle=False,
                            batch_size=16)
    return [torch.cat(t) for t in zip(*loader)]  # [codes] or [codes, labels]


@pytest.mark.parametrize('split,subset', [('train', None), ('train', 20),
                                          ('test', None)])
def test_code_cache_holds_labels_aligned_with_codes(tiny_data_root, tmp_path,
                                                    split, subset):
    cfg = tiny_cfg(tmp_path, n_classes=10)
    vqvae = save_vqvae(cfg, 0)
    codes, labels = cache_batches(vqvae, cfg, tiny_data_root, tmp_path,
                                  split, subset)
    ds = get_dataset('MNIST', data_root=str(tiny_data_root), split=split)
    n = len(ds) if subset is None else subset
    assert codes.shape == (n, 7, 7) and labels.shape == (n,)
    assert torch.equal(labels, ds.mnist.targets[:n])
    with torch.no_grad():  # each code grid is its labelled image's
        assert torch.equal(codes.long(), vqvae.encode(ds.images[:n]))
    stored = load_file(code_cache.cache_path(cfg['vqvae_path'], split,
                                             subset))
    assert torch.equal(stored['labels'], labels)


def test_cache_without_labels_is_rebuilt_once_then_shared(tiny_data_root,
                                                          tmp_path):
    plain_cfg = tiny_cfg(tmp_path)
    cond_cfg = tiny_cfg(tmp_path, n_classes=10)
    vqvae = save_vqvae(plain_cfg, 0)
    path = code_cache.cache_path(plain_cfg['vqvae_path'], 'train')
    [codes] = cache_batches(vqvae, plain_cfg, tiny_data_root, tmp_path)
    assert 'labels' not in load_file(path)  # the unconditional file as was
    mtime = os.stat(path).st_mtime_ns
    codes2, labels = cache_batches(vqvae, cond_cfg, tiny_data_root, tmp_path)
    assert os.stat(path).st_mtime_ns != mtime  # rebuilt with labels
    assert torch.equal(codes, codes2) and labels.shape == (64,)
    mtime = os.stat(path).st_mtime_ns
    # a file with labels serves both kinds of prior: no rebuild either way
    for cfg in (plain_cfg, cond_cfg):
        out = cache_batches(vqvae, cfg, tiny_data_root, tmp_path)
        assert torch.equal(out[0], codes)
        assert os.stat(path).st_mtime_ns == mtime


def test_conditional_prior_from_cache_matches_encoding_every_batch(
        tiny_data_root, tmp_path):
    out = {}
    for use_cache in (True, False):
        work = tmp_path / str(use_cache)
        work.mkdir()
        cfg = tiny_cfg(work, use_code_cache=use_cache, n_classes=10)
        vqvae = save_vqvae(cfg, 0)
        torch.manual_seed(1)
        _, prior = build_models(cfg)
        train_generative_model(vqvae, prior, RunContext(
            dict(cfg, seed=3), torch.device('cpu'), str(work),
            str(tiny_data_root)))
        out[use_cache] = (losses(work), prior.state_dict())
    assert len(out[True][0]) == 2
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    assert any('class_bias' in k for k in out[True][1])
    for k, v in out[True][1].items():
        assert torch.allclose(v.float(), out[False][1][k].float(),
                              atol=1e-5), k


def test_conditional_resume_from_mid_epoch_equals_straight_run(
        tiny_data_root, tmp_path, monkeypatch):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    run_tiny(tiny_data_root, straight, '1', 'n_epochs=1')
    split.mkdir()
    shutil.copy(straight / VQ, split / VQ)
    run_tiny(tiny_data_root, straight, '3', 'n_epochs_2=2', *COND)
    # 3 batches an epoch: stop after batch 2 of epoch 0
    monkeypatch.setattr(epoch_runner, 'stop_requested', StopAt(2))
    with pytest.raises(SystemExit) as exit_info:
        run_tiny(tiny_data_root, split, '3', 'n_epochs_2=2', *COND)
    assert exit_info.value.code == 130
    state = load_file(split / resume_path(GEN))
    assert (state['epoch'], state['step']) == (0, 2)
    monkeypatch.undo()
    run_tiny(tiny_data_root, split, '3', 'n_epochs_2=2', *COND, resume=True)
    assert_same(weights(straight / GEN), weights(split / GEN))
    assert 'blocks.0.class_bias.weight' in weights(split / GEN)


# ------------------------------------------------------- grids
@pytest.mark.parametrize('n,n_rows,size', [(20, 10, (2, 10)),
                                           (10, 10, (1, 10)),
                                           (7, 3, (2, 3)),
                                           (9, None, (3, 3))])
def test_save_grid_fills_rows_in_order(tmp_path, n, n_rows, size):
    # image k is a flat grey of level 10 * k: readable back from the grid
    imgs = (torch.arange(n).float() * 10 / 255).view(n, 1, 1, 1)
    imgs = imgs.expand(n, 1, 4, 4)  # [n, 1, 4, 4]
    path = str(tmp_path / 'grid.png')
    save_grid(imgs, path, 'MNIST', n_rows=n_rows)
    cols, rows = size
    with Image.open(path) as img:
        assert img.size == (cols * 4, rows * 4)
        for r in range(rows):
            for c in range(cols):
                assert img.getpixel((c * 4 + 1, r * 4 + 1)) == \
                    10 * (r * cols + c)


# ------------------------------------------------------- end to end
TINY_RUN = ['train_subset=64', 'eval_subset=32', 'n_sample=20', 'n_epochs=1',
            'n_epochs_2=1', 'batch_size=32', 'batch_size_2=32', 'dim=16',
            'pixelcnn_n_blocks=1', 'pixelcnn_dim=8', 'pixelcnn_linear_dim=8',
            'num_workers=0', 'n_preview=4', *COND]


@pytest.fixture(scope='module')
def cond_run(tiny_data_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('cond_run')
    main_mod.main(['-c', '5', '--device', 'cpu', '--data-root',
                   str(tiny_data_root), '--work-dir', str(work),
                   '--cfg-options', *TINY_RUN])
    return work


def test_stage_4_grid_has_a_row_per_class(cond_run):
    # n_sample=20, 10 classes: 2 columns, digits 0-9 top to bottom
    with Image.open(cond_run / 'vqvae_sample_MNIST.jpg') as img:
        assert img.size == (2 * 28, 10 * 28)
    # previews alike: n_preview=4 < 10 classes still gives one per class
    with Image.open(cond_run / 'previews' /
                    'pixelcnn_sample_after_epoch000.jpg') as img:
        assert img.size == (28, 10 * 28)
    with open(cond_run / 'config.json') as f:
        assert json.load(f)['n_classes'] == 10


def test_stage_4_draws_each_row_from_its_class(cond_run, tiny_data_root,
                                               monkeypatch):
    seen = []

    def fake_sample(*args, labels, **kwargs):  # records the classes asked
        seen.append(labels)
        return torch.zeros(len(labels), 1, 28, 28)
    monkeypatch.setattr(main_mod, 'sample', fake_sample)
    main_mod.main(['-c', '5', '--device', 'cpu', '--data-root',
                   str(tiny_data_root), '--work-dir', str(cond_run),
                   '--stages', '4', '--cfg-options', *TINY_RUN])
    assert seen[0].tolist() == [c for c in range(10) for _ in range(2)]


def test_evaluate_scores_a_conditional_prior(cond_run, tiny_data_root):
    evaluate.main(['-c', '5', '--device', 'cpu', '--data-root',
                   str(tiny_data_root), '--work-dir', str(cond_run),
                   '--n-samples', '20', '--classifier-epochs', '1',
                   '--classifier-subset', '64', '--cfg-options', *TINY_RUN])
    with open(cond_run / 'metrics.json') as f:
        m = json.load(f)
    s = m['samples']
    assert 0 <= s['conditional_accuracy'] <= 1
    assert sum(s['class_histogram']) == 20
    # the eval grid: one row per class, 20 // 10 columns, each 28x28 cell
    # upscaled 5x (nearest) to be at least 128 pixels high
    with Image.open(cond_run / 'eval_samples_MNIST.jpg') as img:
        assert img.size == (2 * 140, 10 * 140)
    # the held-out NLL is the one given each image's true class
    _, prior = build_models(m['config'])
    load_model(prior, str(cond_run / GEN))
    stored = load_file(code_cache.cache_path(str(cond_run / VQ), 'test'))
    codes, labels = stored['codes'], stored['labels']

    def nll(y):
        return prior_nll(prior, [(codes, y)], 'cpu',
                         with_labels=True)['nll_nats_per_latent']
    assert m['prior']['nll_nats_per_latent'] == pytest.approx(nll(labels),
                                                              rel=1e-6)
    assert nll((labels + 1) % 10) != pytest.approx(nll(labels), rel=1e-6)


def test_a_conditional_prior_without_n_classes_is_one_line(cond_run,
                                                           tiny_data_root,
                                                           capsys):
    plain = [o for o in TINY_RUN if o not in COND]
    with pytest.raises(SystemExit) as exit_info:
        main_mod.main(['-c', '5', '--device', 'cpu', '--data-root',
                       str(tiny_data_root), '--work-dir', str(cond_run),
                       '--stages', '4', '--cfg-options', *plain])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'n_classes' in err[0], err
