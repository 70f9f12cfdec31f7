"""Samplers: the cached one computes what the tutorial's loop computes."""
import pytest
import torch

from dldemos.VQVAE.pixelcnn_model import PixelCNNWithEmbedding
from dldemos.VQVAE.sampling import (SAMPLERS, grid_labels, sample_codes,
                                    sample_from_logits)


def random_prior(n_blocks=2, p=8, linear_dim=12, K=10, bn=True, seed=0,
                 n_classes=None):
    """A random prior in eval mode whose batch norms are not the identity."""
    torch.manual_seed(seed)
    model = PixelCNNWithEmbedding(n_blocks, p, linear_dim, bn, K, n_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.3, 3)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def run_sampler(model, name, n, H, W, seed=1, **kwargs):
    steps = []
    generator = torch.Generator().manual_seed(seed)
    codes = sample_codes(model, n, H, W, 'cpu', name, generator=generator,
                         on_step=lambda i, j, z: steps.append((i, j,
                                                               z.clone())),
                         **kwargs)
    return codes, steps


@pytest.mark.parametrize('H,W', [(1, 1), (3, 5), (7, 7), (6, 4)])
@pytest.mark.parametrize('n', [1, 3])
@pytest.mark.parametrize('bn', [True, False])
def test_cached_matches_naive(H, W, n, bn):
    model = random_prior(bn=bn, seed=H * 10 + W)
    naive, naive_steps = run_sampler(model, 'naive', n, H, W)
    cached, cached_steps = run_sampler(model, 'cached', n, H, W)
    assert [s[:2] for s in cached_steps] == [s[:2] for s in naive_steps]
    assert len(cached_steps) == H * W
    for (i, j, a), (_, _, b) in zip(naive_steps, cached_steps):
        assert torch.allclose(a, b, atol=1e-4, rtol=0), (i, j)
    assert torch.equal(naive, cached)
    assert cached.shape == (n, H, W) and cached.dtype == torch.long


def test_cached_logits_are_the_models_logits_at_tutorial_width():
    # one full pass over the final codes gives every position's logits (the
    # model is causal), so a larger model is checked without the slow loop
    model = random_prior(n_blocks=4, p=32, linear_dim=16, K=32, seed=3)
    codes, steps = run_sampler(model, 'cached', 2, 5, 6, temperature=1.5)
    with torch.no_grad():
        full = model(codes)  # [2, K, 5, 6]
    for i, j, logits in steps:
        assert torch.allclose(logits, full[:, :, i, j], atol=1e-4, rtol=0)


def test_cached_restores_training_mode_and_rejects_train_mode():
    model = random_prior()
    model.train()
    sample_codes(model, 2, 3, 3, 'cpu', 'cached')
    assert model.training  # sample_codes switched to eval and back
    with pytest.raises(ValueError, match='eval mode'):
        SAMPLERS['cached'](model, 2, 3, 3, 'cpu')


@pytest.mark.parametrize('name', ['cached', 'naive'])
def test_a_bar_counts_the_positions_on_rank_0_only(capsys, monkeypatch,
                                                   name):
    sample_codes(random_prior(), 2, 3, 4, 'cpu', name)
    err = capsys.readouterr().err
    assert 'sampling 2 images, 3x4 codes' in err and '/12 [' in err
    sample_codes(random_prior(), 2, 3, 4, 'cpu', name, progress=False)
    from dldemos.VQVAE import sampling
    monkeypatch.setattr(sampling, 'is_main', lambda: False)
    sample_codes(random_prior(), 2, 3, 4, 'cpu', name)
    assert capsys.readouterr().err == ''


def test_unknown_sampler():
    with pytest.raises(ValueError, match='cached'):
        sample_codes(random_prior(), 1, 2, 2, 'cpu', 'fast')


def test_low_temperature_and_top1_give_argmax():
    torch.manual_seed(0)
    logits = torch.randn(64, 20)
    best = logits.argmax(-1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_from_logits(logits, 1e-4, generator=g), best)
    assert torch.equal(sample_from_logits(logits, 1.0, 1, generator=g), best)
    assert torch.equal(sample_from_logits(logits, 5.0, 1, generator=g), best)


def test_top_k_restricts_support():
    torch.manual_seed(0)
    logits = torch.randn(4, 12).repeat(500, 1)  # [2000, 12]
    top3 = logits.topk(3, -1).indices  # [2000, 3]
    g = torch.Generator().manual_seed(0)
    draws = sample_from_logits(logits, 2.0, 3, generator=g)
    assert (draws[:, None] == top3).any(-1).all()
    # and the three are all reachable (not just the argmax)
    assert len(set(draws[0::4].tolist())) == 3
    # without top_k, a high temperature reaches outside the top 3
    draws = sample_from_logits(logits, 5.0, None, generator=g)
    assert not (draws[:, None] == top3).any(-1).all()


def test_top_k_and_temperature_reach_the_cached_sampler():
    model = random_prior(K=10, seed=5)
    codes, steps = run_sampler(model, 'cached', 3, 4, 4, top_k=1)
    for i, j, logits in steps:
        assert torch.equal(codes[:, i, j], logits.argmax(-1))
    naive, _ = run_sampler(model, 'naive', 3, 4, 4, temperature=0.7, top_k=4)
    cached, _ = run_sampler(model, 'cached', 3, 4, 4, temperature=0.7,
                            top_k=4)
    assert torch.equal(naive, cached)


def test_cached_sampler_runs_in_full_fp32_and_restores_settings():
    # on CUDA, TF32 cuDNN convs (vertical stack) against fp32 addmm
    # (horizontal stack) would make its logits differ from the naive loop's
    def fp32_flags():
        return (torch.get_float32_matmul_precision(),
                torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32)

    before = fp32_flags()
    seen = []
    try:
        torch.set_float32_matmul_precision('medium')
        torch.backends.cudnn.allow_tf32 = True
        sample_codes(random_prior(), 2, 3, 3, 'cpu', 'cached',
                     on_step=lambda i, j, z: seen.append(fp32_flags()))
        after = fp32_flags()
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[2]
    assert seen == [('highest', False, False)] * 9
    assert after == ('medium', True, True)


# ------------------------------------------------------- class-conditional
@pytest.mark.parametrize('H,W', [(1, 1), (3, 5), (7, 7)])
@pytest.mark.parametrize('y', [[0], [2, 0, 1], [1, 1]])
@pytest.mark.parametrize('bn', [True, False])
def test_cached_matches_naive_under_a_condition(H, W, y, bn):
    model = random_prior(bn=bn, seed=H * 10 + W, n_classes=3)
    n = len(y)
    naive, naive_steps = run_sampler(model, 'naive', n, H, W, y=y)
    cached, cached_steps = run_sampler(model, 'cached', n, H, W, y=y)
    assert [s[:2] for s in cached_steps] == [s[:2] for s in naive_steps]
    for (i, j, a), (_, _, b) in zip(naive_steps, cached_steps):
        assert torch.allclose(a, b, atol=1e-4, rtol=0), (i, j)
    assert torch.equal(naive, cached)


@pytest.mark.parametrize('c', [0, 4])
def test_conditional_cached_logits_are_the_models_logits(c):
    model = random_prior(n_blocks=3, p=16, linear_dim=16, K=12, seed=c,
                         n_classes=5)
    y = torch.full((2,), c)
    codes, steps = run_sampler(model, 'cached', 2, 5, 6, y=y)
    with torch.no_grad():
        full = model(codes, y)  # [2, K, 5, 6]
    for i, j, logits in steps:
        assert torch.allclose(logits, full[:, :, i, j], atol=1e-4, rtol=0)


def test_the_class_changes_the_first_logits_of_the_cached_sampler():
    model = random_prior(n_classes=4, seed=2)
    firsts = []
    for c in range(4):
        _, steps = run_sampler(model, 'cached', 1, 2, 2, y=[c])
        firsts.append(steps[0][2])  # [1, K] at (0, 0): sees only the class
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(firsts[a], firsts[b], atol=1e-4)


@pytest.mark.parametrize('sampler', ['cached', 'naive'])
def test_samplers_refuse_labels_that_do_not_fit(sampler):
    cond, plain = random_prior(n_classes=3), random_prior()
    with pytest.raises(ValueError, match='class-conditional'):
        sample_codes(cond, 2, 2, 2, 'cpu', sampler)
    with pytest.raises(ValueError, match='0 .. 2'):
        sample_codes(cond, 2, 2, 2, 'cpu', sampler, y=[0, 3])
    with pytest.raises(ValueError, match='unconditional'):
        sample_codes(plain, 2, 2, 2, 'cpu', sampler, y=[0, 1])


@pytest.mark.parametrize('n_classes,n,expected', [
    (10, 81, [c for c in range(10) for _ in range(8)]),
    (10, 5, list(range(10))),
    (3, 7, [0, 0, 1, 1, 2, 2]),
])
def test_grid_labels_give_one_row_per_class(n_classes, n, expected):
    assert grid_labels(n_classes, n).tolist() == expected
