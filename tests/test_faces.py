"""Config 8 (CelebA faces at 64x64) end to end on a small subset of the real
faces: every stage's files, their shapes, and a held-out split that training
never sees. Skips where ../shared/data is absent (a user's clone)."""
import json
import shutil

import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from dldemos.VQVAE import evaluate, main as vq_main
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.loading.code_cache import cache_path
from dldemos.VQVAE.configs import get_cfg
from dldemos.VQVAE.dataset import CELEBA_DIR, get_dataset

N_FACES = 60  # 54 train, 6 held out
# config 8's models as they are; only the amount of training is cut
SHORT = ['n_epochs=1', 'n_epochs_2=1', 'n_sample=4', 'eval_subset=6',
         'num_workers=0', 'n_preview=4']


@pytest.fixture(scope='module')
def face_root(tmp_path_factory):
    src = SHARED_DATA / CELEBA_DIR
    if not src.is_dir():
        pytest.skip('real CelebA faces (../shared/data) not available')
    root = tmp_path_factory.mktemp('faces')
    dst = root / CELEBA_DIR
    dst.mkdir(parents=True)
    for name in sorted(p.name for p in src.iterdir())[:N_FACES]:
        shutil.copy(src / name, dst / name)
    return root


@pytest.fixture(scope='module')
def face_run(face_root, tmp_path_factory):
    work = tmp_path_factory.mktemp('face_run')
    vq_main.main(['-c', '8', '--device', 'cpu', '--data-root', str(face_root),
                  '--work-dir', str(work), '--cfg-options', *SHORT])
    return work


def test_config_8_is_celeba_at_64():
    cfg = get_cfg(8)
    assert cfg['dataset_type'] == 'CelebA'
    assert tuple(cfg['img_shape']) == (3, 64, 64)


@pytest.mark.slow
def test_held_out_faces_are_disjoint_from_training(face_root):
    train = get_dataset('CelebA', (64, 64), str(face_root), 'train')
    test = get_dataset('CelebA', (64, 64), str(face_root), 'test')
    assert len(train) + len(test) == N_FACES and len(test) == N_FACES // 10
    assert not set(train.filenames) & set(test.filenames)
    # the held-out faces are the last 10% by sorted name
    assert sorted(train.filenames)[-1] < sorted(test.filenames)[0]


@pytest.mark.slow
def test_config_8_all_stages_on_real_faces(face_run):
    cfg = get_cfg(8)
    for name in (cfg['vqvae_path'], cfg['gen_model_path'],
                 resume_path(cfg['vqvae_path']),
                 resume_path(cfg['gen_model_path']),
                 'vqvae_reconstruct_CelebA.jpg', 'vqvae_sample_CelebA.jpg',
                 'log_vqvae.jsonl', 'log_pixelcnn.jsonl', 'loss_curves.png'):
        assert (face_run / name).stat().st_size > 0, name
    # the 6 held-out faces, each pair (original | reconstruction) 128 x 64,
    # in a grid of 2 rows of 3
    with Image.open(face_run / 'vqvae_reconstruct_CelebA.jpg') as img:
        assert img.size == (3 * 128, 2 * 64) and img.mode == 'RGB'
    with Image.open(face_run / 'vqvae_sample_CelebA.jpg') as img:
        assert img.size == (2 * 64, 2 * 64) and img.mode == 'RGB'
    # the prior trained on the codes of the 54 training faces only
    codes = torch.load(cache_path(str(face_run / cfg['vqvae_path']),
                                  'train'), weights_only=True)['codes']
    assert codes.shape == (N_FACES - N_FACES // 10, 16, 16)
    assert int(codes.max()) < cfg['n_embedding']


@pytest.mark.slow
def test_evaluate_scores_the_held_out_faces(face_root, face_run):
    evaluate.main(['-c', '8', '--device', 'cpu', '--data-root',
                   str(face_root), '--work-dir', str(face_run),
                   '--n-samples', '4', '--cfg-options', *SHORT])
    m = json.loads((face_run / 'metrics.json').read_text())
    assert m['vqvae']['n_images'] == N_FACES // 10
    assert 0 < m['vqvae']['mse'] < 1 and -1 <= m['vqvae']['ssim'] <= 1
    assert m['prior']['n_images'] == N_FACES // 10
    # FID needs torchvision's Inception weights, never downloaded here
    s = m['samples']
    assert s['fid_feature'] == 'inception-v3'
    assert s['fid'] is not None or 'not found' in s['skipped']


def test_config_10_is_config_8_with_the_measured_changes():
    """Config 10 changes only what its runs measured (docs/results.md):
    codes, VQ-VAE batch and epochs, mirrored codes for a shorter prior,
    channels_last; everything else, bf16 included, is config 8's."""
    c8, c10 = get_cfg(8), get_cfg(10)
    changed = {k for k in c8 if c8[k] != c10[k]}
    assert changed == {'n_embedding', 'batch_size', 'n_epochs', 'prior_hflip',
                       'n_epochs_2', 'channels_last', 'vqvae_path',
                       'gen_model_path'}
    assert c10['n_embedding'] == 512 and c10['prior_hflip'] and c10['amp']
