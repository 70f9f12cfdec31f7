"""Reliability, round 3 (issue 22): the model file always ends equal to its
resume point's weights, non-finite weights are never saved, forged code
caches are rebuilt, absurd sizes and signals end in one line, and what a
first run prints."""
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from dldemos.utils.errors import Interrupted, report_errors
from dldemos.VQVAE.runtime.files import file_sha256, load_file, save_atomic
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.runtime.config_check import MAX_SIZES
from dldemos.VQVAE.training import epoch_runner
from test_reliability import (GEN, REPO, VQ, copy_of, epoch_setup, fails,
                              run_main, spawn_in_epoch_2)
from test_reliability import trained  # noqa: F401 (a fixture)


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------ 1. a kill in the last save
@pytest.mark.parametrize('stage, ckpt', [('1', VQ), ('3', GEN)])
def test_resume_rewrites_a_stale_model_file(trained, tiny_data_root,
                                            tmp_path, capsys, stage, ckpt):
    wd = copy_of(trained, tmp_path)
    final = load_file(wd / resume_path(ckpt))['model']
    # a SIGKILL after the resume point's replace, before the model file's:
    # the model file still holds the previous weights
    stale = {k: v + 1 if v.is_floating_point() else v
             for k, v in final.items()}
    save_atomic(stale, wd / ckpt)
    capsys.readouterr()
    run_main(tiny_data_root, wd, stages=stage, extra=['--resume'])
    assert 'rewriting it' in capsys.readouterr().out
    assert same_weights(load_file(wd / ckpt), final)


# ------------------------------------ 2. non-finite weights
@pytest.mark.parametrize('key', ['lr', 'lr_2'])
@pytest.mark.parametrize('value', ['1e999', '1e400'])
def test_non_finite_lr_is_refused(tiny_data_root, tmp_path, capsys, key,
                                  value):
    msg = fails(capsys, tiny_data_root, tmp_path, f'{key}={value}')
    assert f'{key}=' in msg and 'finite' in msg
    assert not os.listdir(tmp_path)


def test_lr_beyond_the_cap_is_refused(tiny_data_root, tmp_path, capsys):
    msg = fails(capsys, tiny_data_root, tmp_path, 'lr=1e300')
    assert 'lr=1e+300' in msg and 'learning rate <=' in msg


@pytest.mark.parametrize('stage, ckpt, key', [('1', VQ, 'n_epochs'),
                                              ('3', GEN, 'n_epochs_2')])
def test_non_finite_weights_never_replace_the_last_good_files(
        trained, tiny_data_root, tmp_path, capsys, monkeypatch, stage, ckpt,
        key):
    wd = copy_of(trained, tmp_path)
    before = {p: file_sha256(wd / p) for p in (ckpt, resume_path(ckpt))}
    step = torch.optim.Adam.step

    def blow_up(self, *a, **k):  # as a huge lr does, after the loss
        out = step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]['params'][0].fill_(float('nan'))
        return out
    monkeypatch.setattr(torch.optim.Adam, 'step', blow_up)
    # one batch an epoch: the logged loss, computed before the step that
    # blows the weights up, is finite
    msg = fails(capsys, tiny_data_root, wd, f'{key}=2', 'train_subset=16',
                stages=stage, extra=['--resume'])
    assert 'NaN or inf' in msg and 'Lower the learning rate' in msg
    assert ('lr_2' in msg) == (stage == '3')
    assert 'last good checkpoint' in msg
    assert {p: file_sha256(wd / p) for p in before} == before


# ------------------------------------ absurd sizes, threads


@pytest.mark.parametrize('key', sorted(MAX_SIZES))
def test_absurd_sizes_are_refused_up_front(tiny_data_root, tmp_path, capsys,
                                           key):
    msg = fails(capsys, tiny_data_root, tmp_path,
                f'{key}={MAX_SIZES[key] + 1}')
    assert f'{key}=' in msg and f'at most {MAX_SIZES[key]}' in msg
    assert not os.listdir(tmp_path)


def test_all_configs_fit_the_size_caps():
    from dldemos.VQVAE.configs import CONFIG_NAMES, get_cfg
    for i in range(len(CONFIG_NAMES)):
        cfg = get_cfg(i)
        assert all(cfg[k] * 8 <= high for k, high in MAX_SIZES.items()), i


@pytest.mark.parametrize('threads', ['0', '100000'])
def test_absurd_thread_counts_are_refused(tiny_data_root, tmp_path, capsys,
                                          threads):
    msg = fails(capsys, tiny_data_root, tmp_path,
                extra=['--threads', threads])
    assert f'--threads {threads}' in msg and '1 to 1024' in msg


def test_codes_beyond_int16_survive_the_cache():
    from dldemos.VQVAE.loading.code_cache import encode_all
    from dldemos.VQVAE.model import VQVAE
    vqvae = VQVAE(1, 8, 40000)
    with torch.no_grad():  # every position picks the last code
        vqvae.vq_embedding.weight.fill_(100.0)
        vqvae.vq_embedding.weight[-1] = 0.0
    images = torch.rand(4, 1, 28, 28)
    codes = encode_all(vqvae, torch.utils.data.DataLoader(images, 2), 'cpu')
    assert codes.shape == (4, 7, 7) and bool((codes.long() == 39999).all())


# ------------------------------------ plots.py on a garbage log
GARBAGE = {
    'string_epoch': '{"epoch": "a", "loss": 1}',
    'list_epoch': '{"epoch": [1], "loss": 1}',
    'bool_epoch': '{"epoch": true, "loss": 1}',
    'string_loss': '{"epoch": 1, "loss": "x"}',
    'dict_loss': '{"epoch": 1, "loss": {"a": 1}}',
    'infinite_loss': '{"epoch": 1, "loss": 1e999}',
    'not_an_object': '[1, 2, 3]',
    'cut_short': '{"epoch": 1, "lo',
}


@pytest.mark.parametrize('garbage', sorted(GARBAGE))
def test_plots_skip_garbage_log_lines(tmp_path, capsys, garbage):
    from dldemos.VQVAE import plots
    (tmp_path / 'log_vqvae.jsonl').write_text(
        '{"epoch": 0, "loss": 0.5}\n' + GARBAGE[garbage] + '\n'
        '{"epoch": 2, "loss": 0.25}\n')
    plots.main([str(tmp_path)])
    assert 'wrote' in capsys.readouterr().out
    assert (tmp_path / plots.LOSS_PLOT).stat().st_size > 0
    curve = plots.loss_panels(tmp_path)[0][1][0]  # (label, epochs, values)
    assert list(curve[1]) == [0, 2] and list(curve[2]) == [0.5, 0.25]


def test_plots_unwritable_output_is_one_line(tmp_path):
    (tmp_path / 'log_vqvae.jsonl').write_text('{"epoch": 0, "loss": 0.5}\n')
    (tmp_path / 'loss_curves.png').mkdir()  # in the way of the plot
    r = subprocess.run([sys.executable, str(REPO / 'dldemos' / 'VQVAE' /
                                            'plots.py'), str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith('error: could not '
                                                     'write'), r.stderr
    assert len(r.stderr.splitlines()) == 1


# ------------------------------------ signals


@pytest.fixture
def own_handlers():
    """Put back this process's signal handlers after the test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize('script', ['main.py', 'evaluate.py',
                                    'dist_train_vqvae.py'])
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_during_the_imports_is_one_line(tmp_path, script, sig):
    proc = subprocess.Popen(
        [sys.executable, str(REPO / 'dldemos' / 'VQVAE' / script), '-c', '5',
         '--work-dir', str(tmp_path)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)  # the interpreter is up; torch is still loading
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.splitlines() == [f'stopped by {sig.name}'], err
    assert not os.listdir(tmp_path)


def toy_stage(tmp_path):
    model = torch.nn.Linear(1, 1)
    return epoch_runner.Stage('toy', model,
                              torch.optim.SGD(model.parameters(), 0.1),
                              str(tmp_path / 'toy.pth'), 'n_epochs',
                              'toy.jsonl', ('loss',))


def test_signals_after_the_resume_point_is_saved_are_ignored(
        tmp_path, capsys, own_handlers):
    ctx = SimpleNamespace(cfg={'n_epochs': 1}, device=torch.device('cpu'))
    stage = toy_stage(tmp_path)

    def stopped_run():
        try:
            with epoch_runner.StopFlag():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                try:
                    epoch_runner.save_resume_point_and_stop(ctx, stage, 1)
                finally:  # the third, once the resume point is saved
                    os.kill(os.getpid(), signal.SIGINT)
        finally:  # more, while the stop unwinds to its message
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
    capsys.readouterr()
    assert report_errors(stopped_run) == 130
    err = capsys.readouterr().err
    # the stop's own message, naming the file really written
    assert 'resume point saved in' in err and 'toy.resume.pth' in err
    assert 'nothing was saved' not in err
    assert os.path.isfile(tmp_path / 'toy.resume.pth')


def test_stop_message_names_the_resume_point(tmp_path):
    ctx = SimpleNamespace(cfg={'n_epochs': 1}, device=torch.device('cpu'))
    with pytest.raises(Interrupted) as e:
        epoch_runner.save_resume_point_and_stop(ctx, toy_stage(tmp_path), 0)
    assert str(tmp_path / 'toy.resume.pth') in str(e.value)


# ------------------------------------ clean message, wrong behaviour
def test_checkpoint_path_without_an_extension(tiny_data_root, tmp_path):
    run_main(tiny_data_root, tmp_path, 'vqvae_path=mymodel',
             'gen_model_path=myprior', stages='1,3')
    assert os.path.isfile(tmp_path / 'mymodel')
    assert os.path.isfile(tmp_path / 'mymodel.resume.pth')
    assert os.path.isfile(tmp_path / 'myprior')


@pytest.mark.parametrize('option, value', [('l_w_embedding=0.5', 0.5),
                                           ('l_w_embedding=2', 2),
                                           ('l_w_commitment=1', 1.0)])
def test_loss_weights_take_any_number(option, value):
    from dldemos.VQVAE.runtime.config_check import load_cfg
    key = option.split('=')[0]
    assert load_cfg(5, [option])[key] == value


@pytest.mark.parametrize('option', ['l_w_embedding=-1', 'l_w_embedding=1e999',
                                    'n_epochs=1.5', 'batch_size=16.0'])
def test_bad_numbers_are_refused(option):
    from dldemos.utils.errors import UsageError
    from dldemos.VQVAE.runtime.config_check import load_cfg
    with pytest.raises(UsageError, match=option.split('=')[0]):
        load_cfg(5, [option])


def test_half_embedding_weight_trains(tiny_data_root, tmp_path):
    run_main(tiny_data_root, tmp_path, 'l_w_embedding=0.5', stages='1')
    assert os.path.isfile(tmp_path / VQ)


@pytest.mark.parametrize('first, then', [(False, True), (True, False)])
def test_codebook_ema_switched_at_resume(tiny_data_root, tmp_path, first,
                                         then):
    run_main(tiny_data_root, tmp_path, f'codebook_ema={first}', stages='1')
    before = load_file(tmp_path / resume_path(VQ))
    run_main(tiny_data_root, tmp_path, f'codebook_ema={then}', 'n_epochs=2',
             stages='1', extra=['--resume'])
    after = load_file(tmp_path / resume_path(VQ))
    assert after['epoch'] == 2
    trained = after['param_names'][0]
    assert ('vq_embedding.weight' in trained) == (not then)
    # every trained parameter has its optimizer state, no other one
    assert len(after['optimizer']['state']) == len(trained)
    assert len(trained) == len(before['model']) - then  # no buffers
    # EMA statistics started (from the codebook) once EMA was on
    assert bool((after['extra']['ema_count'] >= 0).all())


def test_optimizer_state_follows_parameters_by_name():
    from dldemos.VQVAE.runtime.resume_point import (param_names,
                                                    remap_optimizer_state)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    everything = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 2)).sum().backward()
    everything.step()
    saved, names = everything.state_dict(), param_names(model, everything)
    # the first layer's weight no longer trained (as the codebook under EMA)
    fewer = torch.optim.Adam(list(model.parameters())[1:])
    fewer.load_state_dict(remap_optimizer_state(
        saved, names, fewer, param_names(model, fewer)))
    for p in list(model.parameters())[1:]:
        assert torch.equal(fewer.state[p]['exp_avg'],
                           everything.state[p]['exp_avg'])
    # and back: the weight starts afresh, the others keep their state
    again = torch.optim.Adam(model.parameters())
    again.load_state_dict(remap_optimizer_state(
        fewer.state_dict(), param_names(model, fewer), again,
        param_names(model, again)))
    first = list(model.parameters())[0]
    assert first not in again.state or not again.state[first]
    assert torch.equal(again.state[list(model.parameters())[1]]['exp_avg'],
                       everything.state[list(model.parameters())[1]]
                       ['exp_avg'])


@pytest.mark.parametrize('key, stages', [('vqvae_path', '1'),
                                         ('gen_model_path', '1,3')])
def test_unwritable_checkpoint_folder_is_found_before_training(
        tiny_data_root, tmp_path, capsys, key, stages):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    wd = tmp_path / 'wd'
    msg = fails(capsys, tiny_data_root, wd, f'{key}={blocker}/m.pth',
                stages=stages)
    assert 'not writable' in msg and 'a_file' in msg
    # the stage whose checkpoint cannot be written trained no epoch
    log = 'log_vqvae.jsonl' if key == 'vqvae_path' else 'log_pixelcnn.jsonl'
    assert not (wd / log).exists()
    assert not list(tmp_path.glob('**/.*probe*'))


# ------------------------------------ what a first run shows
class CountingBar:
    """tqdm stand-in that counts postfix updates."""
    updates = 0

    def __init__(self, iterable, **kw):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, info):
        CountingBar.updates += 1


def test_bar_updates_when_batches_are_slow(monkeypatch):
    monkeypatch.setattr(epoch_runner, 'tqdm', CountingBar)
    monkeypatch.setattr(epoch_runner, 'BAR_SECONDS', 0.0, raising=False)
    CountingBar.updates = 0
    ctx, stage, loader, sampler, step = epoch_setup(5)
    epoch_runner.run_epoch(ctx, stage, loader, sampler, step, 0, 0, [],
                           None)
    # 5 batches, each slower than BAR_SECONDS: every one shows its loss
    assert CountingBar.updates == 5


def test_epoch_line_is_rounded_and_the_log_exact(tiny_data_root, tmp_path,
                                                 capsys):
    import re
    from dldemos.VQVAE.runtime.logs import read_jsonl
    run_main(tiny_data_root, tmp_path, stages='1')
    out = capsys.readouterr().out
    printed = re.search(r'^epoch 0 loss: (\S+) ', out, re.M).group(1)
    logged = read_jsonl(tmp_path / 'log_vqvae.jsonl')[0]['loss']
    assert printed == f'{logged:.4g}' and len(printed) <= 10
    assert f'{logged:.4g}' != repr(logged)  # the log keeps every digit
    assert re.search(r'^batch size: 16$', out, re.M), out


@pytest.mark.slow
@pytest.mark.parametrize('late', [signal.SIGINT, signal.SIGTERM])
def test_a_storm_of_signals_ends_in_130_without_a_traceback(
        tiny_data_root, tmp_path, late):
    proc = spawn_in_epoch_2(tiny_data_root, tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        # more signals while it saves, prints its message and exits
        for _ in range(200):
            if proc.poll() is not None:
                break
            proc.send_signal(late)
            time.sleep(0.005)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    assert 'Traceback' not in err, err
    load_file(tmp_path / resume_path(VQ))  # whole and readable
