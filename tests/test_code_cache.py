"""Code cache for prior training, and the speed switches on the CPU."""
import json
import os

import pytest
import torch

from conftest import make_face_folder
from dldemos.VQVAE.loading import code_cache
from dldemos.VQVAE.configs import get_cfg
from dldemos.VQVAE.runtime import build
from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.runtime.context import RunContext
from dldemos.VQVAE.loading.loaders import code_loader
from dldemos.VQVAE.main import train_generative_model, train_vqvae
from dldemos.VQVAE.model import VQVAE


def tiny_cfg(tmp_path, **kw):
    cfg = get_cfg(5)
    cfg.update(dim=8, n_embedding=16, batch_size=16, batch_size_2=16,
               n_epochs=1, n_epochs_2=2, pixelcnn_n_blocks=1, pixelcnn_dim=8,
               pixelcnn_linear_dim=8, eval_subset=None, num_workers=0,
               vqvae_path=str(tmp_path / 'vqvae.pth'),
               gen_model_path=str(tmp_path / 'prior.pth'))
    cfg.update(kw)
    return cfg


def save_vqvae(cfg, seed):
    torch.manual_seed(seed)
    vqvae, _ = build_models(cfg)
    torch.save(vqvae.state_dict(), cfg['vqvae_path'])
    return vqvae


def cached_codes(vqvae, cfg, root, tmp_path):
    ctx = RunContext(cfg, torch.device('cpu'), str(tmp_path),
                     str(root))
    loader, _ = code_loader(ctx, vqvae, 'train', shuffle=False,
                            batch_size=16)
    return torch.cat([b[0] for b in loader])


def test_cache_holds_the_codes_and_is_rebuilt_when_the_vqvae_changes(
        tiny_data_root, tmp_path):
    cfg = tiny_cfg(tmp_path)
    vqvae = save_vqvae(cfg, 0)
    codes = cached_codes(vqvae, cfg, tiny_data_root, tmp_path)
    path = code_cache.cache_path(cfg['vqvae_path'], 'train')
    assert os.path.exists(path)
    assert codes.dtype == torch.uint8 and codes.shape == (64, 7, 7)
    # what encoding the images now gives
    from dldemos.VQVAE.dataset import get_dataset
    imgs = torch.stack(list(get_dataset('MNIST', data_root=tiny_data_root)))
    with torch.no_grad():
        assert torch.equal(codes.long(), vqvae.encode(imgs))
    # reused while the checkpoint is unchanged
    mtime = os.path.getmtime(path)
    cached_codes(vqvae, cfg, tiny_data_root, tmp_path)
    assert os.path.getmtime(path) == mtime
    # a different VQ-VAE checkpoint at the same path: rebuilt, new codes
    vqvae2 = save_vqvae(cfg, 1)
    codes2 = cached_codes(vqvae2, cfg, tiny_data_root, tmp_path)
    with torch.no_grad():
        expected = vqvae2.encode(imgs)
    assert torch.equal(codes2.long(), expected)
    assert not torch.equal(codes2, codes)


def test_cache_is_rebuilt_when_images_are_removed(tmp_path):
    root = tmp_path / 'data'
    folder = make_face_folder(root / 'celebA' / 'img_align_celeba', 30,
                              (32, 32))
    cfg = tiny_cfg(tmp_path, dataset_type='CelebA', img_shape=(3, 32, 32))
    vqvae = save_vqvae(cfg, 0)
    codes = cached_codes(vqvae, cfg, root, tmp_path)
    assert codes.shape[0] == 27  # 30 faces, 3 held out
    path = code_cache.cache_path(cfg['vqvae_path'], 'train')
    mtime = os.stat(path).st_mtime_ns
    # the same files: reused, not rewritten
    assert torch.equal(cached_codes(vqvae, cfg, root, tmp_path), codes)
    assert os.stat(path).st_mtime_ns == mtime
    for i in range(3):
        (folder / f'{i:06d}.jpg').unlink()
    codes = cached_codes(vqvae, cfg, root, tmp_path)
    assert codes.shape[0] == 24  # 27 faces, 3 held out: rebuilt
    assert os.stat(path).st_mtime_ns != mtime
    from dldemos.VQVAE.dataset import get_dataset
    imgs = torch.stack(list(get_dataset('CelebA', (32, 32), str(root))))
    with torch.no_grad():
        assert torch.equal(codes.long(), vqvae.encode(imgs))


def test_code_dtype_fits_the_codebook():
    assert code_cache.code_dtype(256) == torch.uint8
    assert torch.iinfo(code_cache.code_dtype(512)).max >= 511


def losses(work_dir):
    with open(os.path.join(work_dir, 'log_pixelcnn.jsonl')) as f:
        return [json.loads(line)['loss'] for line in f]


def test_prior_from_cache_matches_encoding_every_batch(tiny_data_root,
                                                       tmp_path):
    out = {}
    for use_cache in (True, False):
        work = tmp_path / str(use_cache)
        work.mkdir()
        cfg = tiny_cfg(work, use_code_cache=use_cache)
        vqvae = save_vqvae(cfg, 0)
        torch.manual_seed(1)
        _, prior = build_models(cfg)
        train_generative_model(vqvae, prior, RunContext(
            dict(cfg, seed=3), torch.device('cpu'), str(work),
            str(tiny_data_root)))
        out[use_cache] = (losses(work), prior.state_dict())
        assert os.path.exists(code_cache.cache_path(
            cfg['vqvae_path'], 'train')) == use_cache
    assert len(out[True][0]) == 2
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    for k, v in out[True][1].items():
        assert torch.allclose(v.float(), out[False][1][k].float(),
                              atol=1e-5), k


def test_amp_without_native_bf16_changes_nothing(tiny_data_root, tmp_path,
                                                  monkeypatch):
    """amp on a CPU without native bf16 is ignored: there it changes nothing
    (tests/test_cpu_amp.py: amp where the CPU has bf16)."""
    monkeypatch.setattr(build, 'cpu_has_native_bf16', lambda: False)
    results = [_train_tiny(tiny_data_root, tmp_path / str(amp), amp=amp)
               for amp in (False, True)]
    assert results[0][0] == results[1][0]
    for k, v in results[0][1].items():
        assert torch.equal(v, results[1][1][k]), k


def test_channels_last_on_cpu_trains_the_same_vqvae(tiny_data_root,
                                                     tmp_path):
    """channels_last on a CPU changes the VQ-VAE's memory layout, not its
    maths: the same loss and weights up to float summation order."""
    results = [_train_tiny(tiny_data_root, tmp_path / str(cl),
                           channels_last=cl) for cl in (False, True)]
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    for k, v in results[0][1].items():
        assert torch.allclose(v, results[1][1][k], atol=1e-4), k


def _train_tiny(data_root, work, **flags):
    """(first logged loss, state dict) of one tiny VQ-VAE epoch."""
    work.mkdir()
    cfg = tiny_cfg(work, **flags)
    torch.manual_seed(0)
    vqvae = VQVAE(1, cfg['dim'], cfg['n_embedding'])
    train_vqvae(vqvae, RunContext(cfg, torch.device('cpu'), str(work),
                                  str(data_root)))
    with open(work / 'log_vqvae.jsonl') as f:
        return json.loads(f.readline())['loss'], vqvae.state_dict()


@pytest.mark.parametrize('junk', [[1, 2, 3], {'key': None}, b'not torch'])
def test_a_cache_file_of_another_kind_is_rebuilt(tiny_data_root, tmp_path,
                                                  junk):
    cfg = tiny_cfg(tmp_path)
    vqvae = save_vqvae(cfg, 0)
    path = code_cache.cache_path(cfg['vqvae_path'], 'train')
    if isinstance(junk, bytes):
        with open(path, 'wb') as f:
            f.write(junk)
    else:
        torch.save(junk, path)
    codes = cached_codes(vqvae, cfg, tiny_data_root, tmp_path)
    assert codes.shape == (64, 7, 7)
    assert isinstance(torch.load(path, weights_only=True)['codes'],
                      torch.Tensor)


FORGERIES = {  # a cache with a valid key but contents that do not fit
    'code_too_large': lambda c: c.index_fill(0, torch.tensor([0]), 16),
    'negative_code': lambda c: c.to(torch.int16).index_fill(
        0, torch.tensor([1]), -1),
    'fewer_rows': lambda c: c[:-1],
    'other_latent_size': lambda c: c[:, :-1],
    'float_codes': lambda c: c.float(),
    'flat_codes': lambda c: c.flatten(),
}


@pytest.mark.parametrize('forgery', sorted(FORGERIES))
def test_forged_cache_contents_are_rebuilt_with_a_warning(
        tiny_data_root, tmp_path, capsys, forgery):
    cfg = tiny_cfg(tmp_path)
    vqvae = save_vqvae(cfg, 0)
    codes = cached_codes(vqvae, cfg, tiny_data_root, tmp_path)
    path = code_cache.cache_path(cfg['vqvae_path'], 'train')
    entry = torch.load(path)
    entry['codes'] = FORGERIES[forgery](entry['codes'])
    torch.save(entry, path)
    capsys.readouterr()
    assert torch.equal(cached_codes(vqvae, cfg, tiny_data_root, tmp_path),
                       codes)
    err = capsys.readouterr().err
    assert 'warning: code cache' in err and 'rebuilding it' in err


def test_forged_labels_are_rebuilt(tiny_data_root, tmp_path, capsys):
    cfg = tiny_cfg(tmp_path, n_classes=10)
    vqvae = save_vqvae(cfg, 0)
    ctx = RunContext(cfg, torch.device('cpu'), str(tmp_path),
                     str(tiny_data_root), 0)

    def labels():
        loader, _ = code_loader(ctx, vqvae, 'train', shuffle=False,
                                batch_size=16)
        return torch.cat([b[1] for b in loader])
    good = labels()
    path = code_cache.cache_path(cfg['vqvae_path'], 'train')
    entry = torch.load(path)
    entry['labels'] = entry['labels'][:-3]
    torch.save(entry, path)
    capsys.readouterr()
    assert torch.equal(labels(), good)
    assert 'labels do not match' in capsys.readouterr().err


def test_code_dtype_holds_large_codebooks():
    for k in (256, 257, 2**15, 2**15 + 1, 100_000):
        assert torch.iinfo(code_cache.code_dtype(k)).max >= k - 1


@pytest.mark.parametrize('n_classes', [None, 10])
def test_prior_hflip_adds_the_codes_of_the_mirrored_images(
        tiny_data_root, tmp_path, n_classes):
    """prior_hflip: the training codes are followed by those of the same
    images mirrored left-right, as the VQ-VAE encodes them (labels
    repeated); held-out codes stay unmirrored."""
    cfg = tiny_cfg(tmp_path, prior_hflip=True, n_classes=n_classes)
    vqvae = save_vqvae(cfg, 0)
    ctx = RunContext(cfg, torch.device('cpu'), str(tmp_path),
                     str(tiny_data_root))

    def batches(split):
        loader, _ = code_loader(ctx, vqvae, split, shuffle=False,
                                batch_size=16)
        return [torch.cat(parts) for parts in zip(*loader)]
    from dldemos.VQVAE.dataset import get_dataset
    data = get_dataset('MNIST', (28, 28), str(tiny_data_root),
                       with_labels=True)
    imgs = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.stack([data[i][1] for i in range(len(data))])
    with torch.no_grad():
        plain, mirrored = vqvae.encode(imgs), vqvae.encode(imgs.flip(-1))
    train = batches('train')
    assert torch.equal(train[0].long(), torch.cat([plain, mirrored]))
    assert not torch.equal(plain, mirrored)  # a real second half
    if n_classes:
        assert torch.equal(train[1], torch.cat([labels, labels]))
    test = batches('test')
    assert len(test[0]) == len(get_dataset('MNIST', (28, 28),
                                           str(tiny_data_root), 'test'))
    # the mirrored codes have a cache of their own, reused the second time
    path = code_cache.cache_path(cfg['vqvae_path'], 'train_mirrored')
    mtime = os.stat(path).st_mtime_ns
    assert torch.equal(batches('train')[0], train[0])
    assert os.stat(path).st_mtime_ns == mtime
