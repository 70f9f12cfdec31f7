"""The benchmarks' copy of the tutorial's algorithms computes what the
original implementation computed (the compatibility fixture), and what our
models compute: a benchmark ratio then compares like with like."""
from pathlib import Path

import pytest
import torch

from benchmarks.lib import tutorial_reference as ref
from dldemos.VQVAE.model import VQVAE, nearest_neighbor
from dldemos.VQVAE.pixelcnn_model import PixelCNNWithEmbedding

FIXTURE = Path(__file__).parent / 'fixtures' / 'original_reference.pt'


@pytest.fixture(scope='module')
def cases():
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize('name', ['pixelcnn_small', 'pixelcnn_wide'])
def test_reference_pixelcnn_reproduces_the_original(cases, name):
    case = cases[name]
    model = ref.TutorialPixelCNNWithEmbedding(**case['args'])
    model.load_state_dict(case['state_dict'])
    ours = PixelCNNWithEmbedding(**case['args'])
    ours.load_state_dict(case['state_dict'])
    with torch.no_grad():
        for mode, key in ((False, 'logits_eval'), (True, 'logits_train')):
            model.train(mode), ours.train(mode)
            expected = case[key]
            assert torch.allclose(model(case['codes']), expected, atol=1e-5)
            assert torch.allclose(ours(case['codes']), expected, atol=1e-5)


@pytest.mark.parametrize('name', ['vqvae_gray', 'vqvae_rgb'])
def test_reference_vqvae_reproduces_the_original(cases, name):
    case = cases[name]
    model = ref.TutorialVQVAE(**case['args']).eval()
    model.load_state_dict(case['state_dict'])
    with torch.no_grad():
        x_hat, ze, zq = model(case['x'])
        assert torch.equal(model.encode(case['x']), case['codes'])
    for got, key in ((x_hat, 'x_hat'), (ze, 'ze'), (zq, 'zq')):
        assert torch.allclose(got, case[key], atol=1e-5), key


@pytest.mark.parametrize('N,C,K,H', [(2, 8, 5, 3), (3, 16, 64, 4)])
def test_broadcast_and_our_nearest_neighbor_agree(N, C, K, H):
    g = torch.Generator().manual_seed(N * K)
    ze = torch.randn(N, C, H, H, generator=g)
    embedding = torch.randn(K, C, generator=g)
    z = ze.permute(0, 2, 3, 1).reshape(-1, C)
    ours = nearest_neighbor(z, embedding, chunk_rows=5).reshape(N, H, H)
    assert torch.equal(ours, ref.broadcast_nearest_neighbor(ze, embedding))


def test_reference_training_steps_match_ours_in_fp32():
    torch.manual_seed(0)
    vqvae = VQVAE(1, 8, 8)
    tut = ref.TutorialVQVAE(1, 8, 8)
    tut.load_state_dict(vqvae.state_dict())
    x = torch.rand(4, 1, 28, 28)
    loss = ref.train_vqvae_steps(tut, [x], torch.optim.SGD(
        tut.parameters(), 0.1), 'cpu')[0]
    x_hat, ze, zq = vqvae(x)
    mse = torch.nn.functional.mse_loss
    ours = mse(x, x_hat) + mse(ze.detach(), zq) + 0.25 * mse(ze, zq.detach())
    assert torch.allclose(loss, ours.detach(), atol=1e-6)
    prior = ref.TutorialPixelCNNWithEmbedding(1, 8, 8, True, 8)
    losses = ref.train_prior_steps(tut, prior, [x, x], torch.optim.SGD(
        prior.parameters(), 0.1), 'cpu')
    assert len(losses) == 2 and losses[1] < losses[0]  # it trains
