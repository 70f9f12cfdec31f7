"""Learning-rate schedules (lr_schedule.py): their values, and the epoch
runner setting the lr of the global step. Resumes with them on:
test_resume.py."""
import pytest
import torch
import torch.nn as nn

from dldemos.VQVAE.training import epoch_runner
from dldemos.VQVAE.configs import get_cfg
from dldemos.utils.lr_schedule import lr_at
from test_resume import run_main


def test_constant_is_the_config_lr():
    assert {lr_at(s, 100, 2e-4) for s in range(120)} == {2e-4}


def test_cosine_warms_up_then_decays():
    lrs = [lr_at(s, 1000, 1e-3, 'cosine', 0.1) for s in range(1000)]
    assert lrs[0] == pytest.approx(1e-3 / 100)  # 100 warmup steps
    assert lrs[99] == lrs[100] == max(lrs) == 1e-3  # the peak
    assert all(a < b for a, b in zip(lrs[:99], lrs[1:100]))
    assert all(a > b for a, b in zip(lrs[100:], lrs[101:]))
    assert 0 < lrs[-1] < 1e-7  # ends near 0, no step wasted at 0
    assert lrs[550] == pytest.approx(5e-4)  # half-way down at half-way


def test_onecycle_is_torchs_onecycle():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1e-3, total_steps=200, pct_start=0.25,
        cycle_momentum=False)
    for s in range(200):
        assert lr_at(s, 200, 1e-3, 'onecycle', 0.25) == \
            pytest.approx(opt.param_groups[0]['lr'], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()
    assert lr_at(0, 200, 1e-3, 'onecycle', 0.25) == pytest.approx(1e-3 / 25)
    assert lr_at(199, 200, 1e-3, 'onecycle', 0.25) == \
        pytest.approx(1e-3 / 25 / 1e4)


def test_runner_sets_the_lr_of_the_global_step(tiny_data_root, tmp_path,
                                               monkeypatch):
    seen, set_lr = [], epoch_runner.set_lr
    monkeypatch.setattr(epoch_runner, 'set_lr', lambda optimizer, lr: (
        seen.append(lr), set_lr(optimizer, lr)))
    # 48 images in batches of 16: 3 steps an epoch, 6 in all
    run_main(tiny_data_root, tmp_path, '1', 'n_epochs=2',
             'lr_schedule=cosine', 'warmup=0.3')
    lr = get_cfg(5)['lr']
    assert seen == [lr_at(s, 6, lr, 'cosine', 0.3) for s in range(6)]
    assert len(set(seen)) == 5  # the peak is held for 2 steps
