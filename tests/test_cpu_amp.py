"""amp (bf16 autocast) on a CPU: on where oneDNN computes bf16 natively, with
the same fp32 islands as on CUDA; ignored with one line where it does not."""
import json

import pytest
import torch
import torch.nn.functional as F

from dldemos.utils import precision
from dldemos.VQVAE import model as vqvae_model
from dldemos.VQVAE.main import train_generative_model, train_vqvae
from dldemos.VQVAE.model import VQVAE
from dldemos.VQVAE.runtime import build
from dldemos.VQVAE.runtime.build import amp_enabled, autocast, build_models
from dldemos.VQVAE.runtime.context import RunContext
from dldemos.VQVAE.sampling import sample_codes
from test_code_cache import tiny_cfg
from test_sampling import random_prior

CPU = torch.device('cpu')
needs_bf16 = pytest.mark.skipif(not precision.cpu_has_native_bf16(),
                                reason='this CPU has no native bf16')


@pytest.fixture
def no_native_bf16(monkeypatch):
    """A CPU without bf16 units, as far as the run can tell."""
    monkeypatch.setattr(build, 'cpu_has_native_bf16', lambda: False)
    build._say_amp_ignored.cache_clear()
    yield
    build._say_amp_ignored.cache_clear()


def record_dtypes(monkeypatch, vqvae):
    """dtypes seen by the VQ-VAE's convolutions, its quantizer's inputs and
    the MSE losses during training."""
    seen = {'conv': set(), 'quantizer': set(), 'loss': set()}
    for m in vqvae.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(
                lambda m, i, o: seen['conv'].add(o.dtype))
    nearest = vqvae_model.nearest_neighbor

    def spy_nearest(z, embedding, *args):
        # what the distances are computed from, inside its fp32 island
        with torch.autocast('cpu', enabled=False):
            seen['quantizer'].add((z.float() @ embedding.float().t()).dtype)
        return nearest(z, embedding, *args)

    mse = F.mse_loss

    def spy_mse(a, b, *args, **kwargs):
        seen['loss'].update({a.dtype, b.dtype})
        return mse(a, b, *args, **kwargs)

    monkeypatch.setattr(vqvae_model, 'nearest_neighbor', spy_nearest)
    monkeypatch.setattr(F, 'mse_loss', spy_mse)
    return seen


def train_tiny_vqvae(root, tmp_path, **kw):
    cfg = tiny_cfg(tmp_path, **kw)
    torch.manual_seed(0)
    vqvae = VQVAE(1, cfg['dim'], cfg['n_embedding'])
    return cfg, vqvae


@needs_bf16
def test_amp_on_a_bf16_cpu_runs_the_convs_in_bf16_and_the_losses_in_fp32(
        tiny_data_root, tmp_path, monkeypatch):
    cfg, vqvae = train_tiny_vqvae(tiny_data_root, tmp_path, amp=True)
    assert amp_enabled(cfg, CPU)
    seen = record_dtypes(monkeypatch, vqvae)
    train_vqvae(vqvae, RunContext(cfg, CPU, str(tmp_path),
                                  str(tiny_data_root), 0))
    assert torch.bfloat16 in seen['conv']
    assert seen['quantizer'] == {torch.float32}
    assert seen['loss'] == {torch.float32}
    # the weights the optimizer keeps stay fp32
    assert {p.dtype for p in vqvae.parameters()} == {torch.float32}
    with open(tmp_path / 'log_vqvae.jsonl') as f:
        assert json.loads(f.readline())['loss'] > 0


@needs_bf16
def test_quantizer_distances_are_fp32_under_cpu_autocast():
    # codes 1 and 2 lie closer together than bf16 can tell apart: in bf16
    # the distances tie and the argmin falls on the first
    e = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0 + 2 ** -10, 0.0]])
    z = torch.tensor([[1.0 + 2 ** -10, 0.0]])  # exactly code 2
    with autocast({'amp': True}, CPU):
        assert torch.is_autocast_enabled('cpu')
        assert vqvae_model.nearest_neighbor(z, e).tolist() == [2]
        assert (z.bfloat16() @ e.bfloat16().t()).dtype == torch.bfloat16


@needs_bf16
def test_prior_under_cpu_amp_gives_fp32_logits_to_the_cross_entropy(
        tiny_data_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, amp=True, n_epochs_2=1)
    torch.manual_seed(0)
    vqvae, prior = build_models(cfg)
    torch.save(vqvae.state_dict(), cfg['vqvae_path'])
    seen = {'gate': set(), 'logits': set()}
    prior.block1.register_forward_hook(  # its horizontal-stack output
        lambda m, i, o: seen['gate'].add(o[1].dtype))
    ce = F.cross_entropy

    def spy_ce(logits, *args, **kwargs):
        seen['logits'].add(logits.dtype)
        return ce(logits, *args, **kwargs)

    monkeypatch.setattr(F, 'cross_entropy', spy_ce)
    train_generative_model(vqvae, prior, RunContext(
        cfg, CPU, str(tmp_path), str(tiny_data_root), 0))
    assert seen['gate'] == {torch.bfloat16}
    assert seen['logits'] == {torch.float32}


def test_amp_without_native_bf16_says_one_line_and_trains_fp32(
        tiny_data_root, tmp_path, monkeypatch, capsys, no_native_bf16):
    results = []
    for amp in (False, True):
        work = tmp_path / str(amp)
        work.mkdir()
        cfg, vqvae = train_tiny_vqvae(tiny_data_root, work, amp=amp)
        capsys.readouterr()
        seen = record_dtypes(monkeypatch, vqvae)
        train_vqvae(vqvae, RunContext(cfg, CPU, str(work),
                                      str(tiny_data_root), 0))
        # a second stage (or call) in the same process says nothing more
        assert not amp_enabled(cfg, CPU)
        out = capsys.readouterr().out
        notes = [line for line in out.splitlines() if 'amp' in line]
        assert notes == (['note: amp=True is ignored on this cpu (no native '
                          'bf16 support): training in fp32'] if amp else [])
        assert seen['conv'] == {torch.float32}
        results.append(vqvae.state_dict())
        monkeypatch.undo()  # drop the spies (and the fixture's patch) ...
        monkeypatch.setattr(build, 'cpu_has_native_bf16', lambda: False)
    # ignored means ignored: the same weights as amp=False, bit for bit
    for k, v in results[0].items():
        assert torch.equal(v, results[1][k]), k


def test_amp_off_never_enables_autocast():
    assert not amp_enabled({'amp': False}, CPU)
    with autocast({'amp': False}, CPU):
        assert not torch.is_autocast_enabled('cpu')


def test_cpu_bf16_check_is_a_bool():
    # whatever this build carries, the check answers and never raises
    assert precision.cpu_has_native_bf16() in (True, False)


@pytest.mark.parametrize('n_classes', [None, 3])
@pytest.mark.parametrize('H,W', [(3, 5), (7, 7)])
def test_cached_sampler_under_amp_draws_what_the_naive_loop_draws(
        n_classes, H, W):
    # stage 4 or a preview called inside a bf16 autocast region: the cached
    # sampler still computes in fp32, so its draws are the fp32 naive loop's
    model = random_prior(K=10, seed=H * W, n_classes=n_classes)
    y = None if n_classes is None else torch.arange(4) % n_classes

    def draw(sampler):
        g = torch.Generator().manual_seed(3)
        steps = []
        codes = sample_codes(model, 4, H, W, 'cpu', sampler, y, generator=g,
                             on_step=lambda i, j, z: steps.append(z.clone()))
        return codes, torch.stack(steps)  # [H * W, 4, K]

    naive, naive_logits = draw('naive')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        cached, cached_logits = draw('cached')
    assert cached_logits.dtype == torch.float32
    # fp32 rounding apart, not bf16's (about 1e-2 on these logits)
    torch.testing.assert_close(cached_logits, naive_logits, atol=1e-5,
                               rtol=1e-5)
    assert torch.equal(cached, naive)


@pytest.mark.parametrize('channels_last', [False, True])
def test_channels_last_on_a_cpu_reaches_the_vqvae_only(channels_last,
                                                       tmp_path):
    """On a CPU the prior's masked convs ran slower in NHWC, so the key
    converts the VQ-VAE's conv weights and leaves the prior's alone."""
    cfg = dict(tiny_cfg(tmp_path), channels_last=channels_last, compile=False)
    vqvae, prior = build_models(cfg)
    cpu = torch.device('cpu')
    build.prepare_for_training(vqvae, cfg, cpu)
    build.prepare_for_training(prior, cfg, cpu)

    def nhwc(model):
        return [p.is_contiguous(memory_format=torch.channels_last)
                and not p.is_contiguous()
                for p in model.parameters() if p.dim() == 4]
    assert any(nhwc(vqvae)) == channels_last
    assert not any(nhwc(prior))
