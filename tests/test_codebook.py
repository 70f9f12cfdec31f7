"""The codebook options (codebook.py): dead-code restarts, EMA updates,
k-means initialisation; off, training is the tutorial's step; under DDP
every rank keeps one codebook. Resumes with them on: test_resume.py."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from benchmarks.lib import tutorial_reference as ref
from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.runtime.files import load_file, load_model
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.training.codebook import CodebookTrainer, flat, kmeans
from dldemos.VQVAE.runtime.config_check import load_cfg
from dldemos.VQVAE.configs import get_cfg
from dldemos.VQVAE.runtime.context import RunContext
from dldemos.VQVAE.loading.loaders import image_loader
from dldemos.VQVAE.model import VQVAE, nearest_neighbor
from test_distributed import TINY as DDP_TINY
from test_distributed import B, assert_one_step_equal, tiny_cfg, torchrun
from test_resume import CODEBOOK, TINY, VQ, run_main

K, C = 8, 8
# run by test_distributed's torchrun(), which joins a script's name to
# dldemos/VQVAE: an absolute path passes through
WORKER = str(Path(__file__).resolve().parent / 'ddp_codebook_worker.py')


def trainer(**options):
    cfg = dict(get_cfg(5), n_embedding=K, dim=C, **options)
    return CodebookTrainer(cfg)


def vqvae_and_ze(n=4, seed=0):
    """A tiny VQ-VAE and its encoder outputs [n, C, 7, 7] of random images."""
    torch.manual_seed(seed)
    vqvae = VQVAE(1, C, K)
    with torch.no_grad():
        ze = vqvae.encoder(torch.rand(n, 1, 28, 28))
    return vqvae, ze


def codes_near_rows(vqvae, z, far=()):
    """Codes just off distinct rows of z (each gets used), those in `far`
    far away from all of them (never chosen)."""
    with torch.no_grad():
        w = vqvae.vq_embedding.weight
        w.copy_(z[torch.randperm(len(z))[:K]] + 1e-4)
        for i in far:
            w[i] = 1e3
    return vqvae.vq_embedding.weight


def is_row_of(v, z):
    return bool((z == v).all(1).any())


# ------------------------------------------------------ dead-code restarts
def test_dead_code_is_restarted_onto_an_encoder_output_and_used():
    vqvae, ze = vqvae_and_ze()
    z = flat(ze)  # [196, C]
    w = codes_near_rows(vqvae, z, far=[5])
    before = w.detach().clone()
    cb = trainer(dead_code_restart=True, ema_decay=0.5, restart_threshold=1.0)
    # an even share is 196 / 8 = 24.5 a batch; halved every unused step, it
    # falls below 1 after 5 steps: a code is dead only after a while
    for _ in range(4):
        cb.after_step(vqvae, ze)
    assert torch.equal(w, before) and cb.restarts == 0
    cb.after_step(vqvae, ze)
    assert cb.restarts == 1
    assert is_row_of(w[5], z)  # exactly one of the batch's outputs
    others = [i for i in range(K) if i != 5]
    assert torch.equal(w[others], before[others])
    assert (vqvae.quantize(ze) == 5).any()  # and it is used now


def test_restarts_are_a_function_of_seed_and_step():
    vqvae, ze = vqvae_and_ze()
    picks = []
    for global_seed in (1, 2):
        torch.manual_seed(0)
        w = codes_near_rows(vqvae, flat(ze), far=[2, 5])
        torch.manual_seed(global_seed)  # the global RNG must not matter
        cb = trainer(dead_code_restart=True, ema_decay=0.0,
                     restart_threshold=1.0)
        cb.after_step(vqvae, ze)
        picks.append(w.detach().clone())
    assert torch.equal(*picks)
    assert not torch.equal(picks[0][2], picks[0][5])  # distinct rows


# ------------------------------------------------------ EMA updates
def test_ema_with_decay_0_moves_each_code_to_the_mean_of_its_vectors():
    vqvae, ze = vqvae_and_ze()
    z = flat(ze)
    w = codes_near_rows(vqvae, z, far=[3])
    codes = nearest_neighbor(z, w.detach())  # what the forward pass chose
    cb = trainer(codebook_ema=True, ema_decay=0.0)
    cb.after_step(vqvae, ze)
    for i in range(K):
        if i == 3:  # unused: N_3 = 0, so it collapses to 0
            assert torch.equal(w[i], torch.zeros(C))
        else:  # Laplace smoothing changes N_i by about K * 1e-5
            torch.testing.assert_close(w[i], z[codes == i].mean(0),
                                       rtol=1e-4, atol=1e-6)


def test_ema_starts_from_the_codebook_and_follows_the_paper():
    vqvae, ze = vqvae_and_ze()
    z = flat(ze)
    w = codes_near_rows(vqvae, z)
    e0 = w.detach().clone()
    codes = nearest_neighbor(z, e0)
    cb = trainer(codebook_ema=True, ema_decay=0.9)
    cb.after_step(vqvae, ze)
    for i in range(K):  # N_i = 1, m_i = e_i, then one update
        n_i = (codes == i).sum()
        m_i = 0.9 * e0[i] + 0.1 * z[codes == i].sum(0)
        torch.testing.assert_close(w[i], m_i / (0.9 + 0.1 * n_i),
                                   rtol=1e-4, atol=1e-6)


def test_ema_codebook_gets_no_gradient_step():
    vqvae, _ = vqvae_and_ze()
    cb = trainer(codebook_ema=True)
    assert cb.l_w_embedding == 0.0
    params = cb.optimized(vqvae)
    assert not any(p is vqvae.vq_embedding.weight for p in params)
    assert len(params) == len(list(vqvae.parameters())) - 1
    assert trainer().optimized(vqvae) == list(vqvae.parameters())


# ------------------------------------------------------ k-means
def quantization_error(z, codebook):
    return ((z - codebook[nearest_neighbor(z, codebook)])**2).sum(1).mean()


def test_kmeans_starts_from_data_points_and_lowers_the_error():
    vqvae, ze = vqvae_and_ze()
    z = flat(ze)
    start = kmeans(z, K, torch.Generator().manual_seed(0), iters=0)
    assert all(is_row_of(c, z) for c in start)
    assert len(set(map(tuple, start.tolist()))) == K  # distinct points
    done = kmeans(z, K, torch.Generator().manual_seed(0))
    default = vqvae.vq_embedding.weight.detach()  # uniform(-1/K, 1/K)
    assert quantization_error(z, done) < quantization_error(z, start)
    assert quantization_error(z, done) < quantization_error(z, default) / 2


def test_kmeans_init_runs_once_at_the_first_step():
    vqvae, ze = vqvae_and_ze()
    x = torch.rand(4, 1, 28, 28)
    cb = trainer(kmeans_init=True)
    default = vqvae.vq_embedding.weight.detach().clone()
    cb.before_step(vqvae, x)
    first = vqvae.vq_embedding.weight.detach().clone()
    with torch.no_grad():
        z = flat(vqvae.encoder(x))
    assert quantization_error(z, first) < quantization_error(z, default)
    cb.after_step(vqvae, ze)
    cb.before_step(vqvae, x)  # a later step (or a resumed run) keeps it
    assert torch.equal(vqvae.vq_embedding.weight, first)


def test_options_off_do_nothing():
    vqvae, ze = vqvae_and_ze()
    state = {k: v.clone() for k, v in vqvae.state_dict().items()}
    cb = trainer()
    cb.before_step(vqvae, torch.rand(4, 1, 28, 28))
    cb.after_step(vqvae, ze)
    assert all(torch.equal(v, vqvae.state_dict()[k])
               for k, v in state.items())
    assert cb.l_w_embedding == get_cfg(5)['l_w_embedding']


# ------------------------------------------------------ off: the tutorial
def test_options_off_train_exactly_the_tutorial_step(tiny_data_root,
                                                     tmp_path):
    """main.py's stage 1 with every option off (constant lr) gives the
    weights of the tutorial's loop over the same batches, bit for bit."""
    run_main(tiny_data_root, tmp_path, '1', 'n_epochs=2')
    cfg = load_cfg(5, TINY + ['n_epochs=2'])
    ctx = RunContext(cfg, torch.device('cpu'), str(tmp_path),
                     str(tiny_data_root))
    torch.manual_seed(0)  # what main.py's seed_everything(0) did
    vqvae, _ = build_models(cfg)
    loader, sampler = image_loader(ctx, cfg['batch_size'],
                                   subset=cfg['train_subset'])
    optimizer = torch.optim.Adam(vqvae.parameters(), cfg['lr'])
    mse = nn.MSELoss()
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for x in loader:
            x_hat, ze, zq = vqvae(x)
            loss = mse(x, x_hat) + 1 * mse(ze.detach(), zq) + \
                0.25 * mse(ze, zq.detach())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    saved = load_file(tmp_path / VQ)
    assert all(torch.equal(v, saved[k])
               for k, v in vqvae.state_dict().items())


def test_model_file_stays_the_tutorials_state_dict(tiny_data_root,
                                                   tmp_path):
    """With every option on, the model file holds only the VQVAE's keys:
    the tutorial's model loads it strictly and decodes as ours does."""
    run_main(tiny_data_root, tmp_path, '1', 'n_epochs=1', *CODEBOOK)
    state = load_file(tmp_path / VQ)
    tutorial = ref.TutorialVQVAE(1, C, K)
    tutorial.load_state_dict(state, strict=True)
    ours = VQVAE(1, C, K)
    ours.load_state_dict(state, strict=True)
    x = torch.rand(4, 1, 28, 28)
    codes = tutorial.encode(x)
    assert torch.equal(codes, ours.encode(x))
    assert torch.equal(tutorial.decode(codes), ours.decode(codes))
    assert 'extra' in load_file(tmp_path / resume_path(VQ))


# ------------------------------------------------------ DDP (2 x gloo)
@pytest.mark.slow
def test_ddp_ema_step_equals_one_big_batch_step(tiny_data_root, tmp_path):
    """EMA updates all-reduce their counts and sums, and the schedule is
    the same function on every rank: one DDP step on 2 ranks x B images is
    one step on the 2B images."""
    options = ['codebook_ema=True', 'ema_decay=0.5', 'lr_schedule=onecycle']
    cfg = tiny_cfg(*options)
    common = ['-c', '5', '--data-root', str(tiny_data_root), '--seed', '0',
              '--cfg-options'] + DDP_TINY + options
    torchrun('dist_train_vqvae.py', ['--work-dir', str(tmp_path / 'ddp')]
             + common + [f'batch_size={B}'])
    main_mod.main(['--stages', '1', '--work-dir', str(tmp_path / 'single')]
                  + common + [f'batch_size={2 * B}'])
    torch.manual_seed(0)
    init, _ = build_models(cfg)
    init_state = {k: v.clone() for k, v in init.state_dict().items()}
    ddp, _ = build_models(cfg)
    load_model(ddp, str(tmp_path / 'ddp' / cfg['vqvae_path']))
    single = load_file(str(tmp_path / 'single' / cfg['vqvae_path']))
    assert_one_step_equal(ddp.state_dict(), single, init_state)
    # the codebook moved by the EMA update, not by the optimizer
    assert not torch.equal(single['vq_embedding.weight'],
                           init_state['vq_embedding.weight'])


@pytest.mark.slow
def test_ddp_restarts_and_kmeans_leave_one_codebook(tmp_path):
    """Ranks with different batches: k-means, EMA and restarts (every code
    dead each step) leave every rank with rank 0's choices."""
    torchrun(WORKER, [str(tmp_path)])
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1)]
    for k in ranks[0]['trainer']:
        assert torch.equal(ranks[0]['trainer'][k], ranks[1]['trainer'][k]), k
    assert torch.equal(ranks[0]['codebook'], ranks[1]['codebook'])
    assert ranks[0]['trainer']['_extra_state'][1] > 0  # restarts happened
    # restarted codes are rows of rank 0's last batch, not rank 1's
    z0, z1 = (flat(r['ze']) for r in ranks)
    assert all(is_row_of(c, z0) and not is_row_of(c, z1)
               for c in ranks[0]['codebook'])
