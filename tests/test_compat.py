"""Checkpoints of the tutorial's reference implementation load unchanged and
give the same outputs (tests/fixtures/COMPAT_README.md)."""
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from dldemos.VQVAE.runtime.files import load_model

from dldemos.VQVAE.runtime.resume_point import save_training_state
from dldemos.VQVAE.configs import get_cfg
from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.model import VQVAE
from dldemos.VQVAE.pixelcnn_model import PixelCNNWithEmbedding


FIXTURES = Path(__file__).parent / 'fixtures'
ATOL = 1e-5


@pytest.fixture(scope='module')
def reference():
    return torch.load(FIXTURES / 'original_reference.pt', weights_only=True)


@pytest.mark.parametrize('case', ['vqvae_gray', 'vqvae_rgb'])
def test_vqvae_reproduces_reference(reference, case):
    ref = reference[case]
    model = VQVAE(**ref['args'])
    model.load_state_dict(ref['state_dict'], strict=True)
    model.eval()
    x = ref['x']
    with torch.no_grad():
        x_hat, ze, zq = model(x)
        codes = model.encode(x)
        decoded = model.decode(ref['codes'])
    torch.testing.assert_close(ze, ref['ze'], atol=ATOL, rtol=0)
    torch.testing.assert_close(zq, ref['zq'], atol=ATOL, rtol=0)
    torch.testing.assert_close(x_hat, ref['x_hat'], atol=ATOL, rtol=0)
    assert torch.equal(codes, ref['codes'].to(codes.dtype))
    torch.testing.assert_close(decoded, ref['decoded'], atol=ATOL, rtol=0)
    C = x.shape[1]
    H, W = x.shape[2:]
    assert list(model.get_latent_HW((C, H, W))) == \
        [int(v) for v in ref['latent_hw']]


@pytest.mark.parametrize('case', ['pixelcnn_small', 'pixelcnn_wide'])
def test_pixelcnn_reproduces_reference(reference, case):
    ref = reference[case]
    model = PixelCNNWithEmbedding(**ref['args'])
    # the reference weights are unmasked: the model must mask them itself
    model.load_state_dict(ref['state_dict'], strict=True)
    codes = ref['codes']
    with torch.no_grad():
        logits_eval = model.eval()(codes)
        logits_train = model.train()(codes)
    torch.testing.assert_close(logits_eval, ref['logits_eval'], atol=ATOL,
                               rtol=0)
    torch.testing.assert_close(logits_train, ref['logits_train'], atol=ATOL,
                               rtol=0)


def test_reference_pixelcnn_weights_are_unmasked(reference):
    # Guards the point of the fixture: if the stored weights were already
    # masked, the test above could not catch a model that forgot its masks.
    state = reference['pixelcnn_small']['state_dict']
    w = state['block1.v_conv.conv.weight']
    assert w[:, :, 2].abs().sum() > 0


def test_reference_pixelcnn_load_via_checkpoint_loader(reference, tmp_path):
    ref = reference['pixelcnn_wide']
    path = tmp_path / 'gen.pth'
    torch.save(ref['state_dict'], path)
    model = load_model(PixelCNNWithEmbedding(**ref['args']), str(path))
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref['state_dict'][k]), k


@pytest.fixture(scope='module')
def expected_shapes():
    with open(FIXTURES / 'state_dict_shapes.json') as f:
        return json.load(f)


def shapes(model):
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize('cfg_id', range(5))
def test_state_dict_shapes_of_tutorial_configs(expected_shapes, cfg_id):
    with torch.device('meta'):  # shapes only: skip allocating the weights
        vqvae, gen_model = build_models(get_cfg(cfg_id))
    expected = expected_shapes[str(cfg_id)]
    assert shapes(vqvae) == expected['vqvae']
    assert shapes(gen_model) == expected['pixelcnn']


def test_saved_checkpoint_is_a_plain_state_dict(tmp_path):
    cfg = get_cfg(5)
    cfg.update(dim=8, n_embedding=8, pixelcnn_n_blocks=1, pixelcnn_dim=4,
               pixelcnn_linear_dim=4)
    for model in build_models(cfg):
        path = str(tmp_path / 'ckpt.pth')
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        save_training_state(path, model, optimizer, cfg, epoch=1)
        state = torch.load(path, weights_only=True)
        assert type(state) in (dict, OrderedDict)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        assert list(state) == list(model.state_dict())
        fresh = type(model)(*_ctor_args(model, cfg))
        fresh.load_state_dict(state, strict=True)
        for k, v in model.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), k
        # the resume point is also readable without unpickling code
        resume = torch.load(str(tmp_path / 'ckpt.resume.pth'),
                            weights_only=True)
        assert resume['epoch'] == 1 and 'optimizer' in resume


def _ctor_args(model, cfg):
    if isinstance(model, VQVAE):
        return cfg['img_shape'][0], cfg['dim'], cfg['n_embedding']
    return (cfg['pixelcnn_n_blocks'], cfg['pixelcnn_dim'],
            cfg['pixelcnn_linear_dim'], True, cfg['n_embedding'])
