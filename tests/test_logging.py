"""What a run leaves to watch it by: config.json, command.txt, JSONL logs,
the loss-curve PNG and preview grids."""
import json
import re
import shutil

import pytest
from PIL import Image

from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.plots import (by_epoch, draw_losses, loss_panels,
                                 plot_losses)
from dldemos.VQVAE.runtime.logs import append_jsonl, read_jsonl, start_jsonl

TINY = ['dim=8', 'n_embedding=8', 'batch_size=16', 'batch_size_2=16',
        'train_subset=32', 'eval_subset=16', 'pixelcnn_n_blocks=2',
        'pixelcnn_dim=8', 'pixelcnn_linear_dim=8', 'n_sample=4',
        'n_preview=4', 'num_workers=0']


@pytest.fixture(scope='module')
def tiny_run(tiny_data_root, tmp_path_factory):
    """Stages 1 and 3 for 2 epochs each; previews every second epoch."""
    work_dir = tmp_path_factory.mktemp('run')
    main_mod.main(['-c', '5', '--data-root', str(tiny_data_root),
                   '--work-dir', str(work_dir), '--stages', '1,3',
                   '--cfg-options', *TINY, 'n_epochs=2', 'n_epochs_2=2',
                   'preview_every=2'])
    return work_dir


def test_config_and_command_line_are_recorded(tiny_run):
    cfg = json.loads((tiny_run / 'config.json').read_text())
    assert cfg['n_embedding'] == 8 and cfg['img_shape'] == [1, 28, 28]
    assert 'preview_every=2' in (tiny_run / 'command.txt').read_text()


@pytest.mark.parametrize('log, keys', [
    ('log_vqvae.jsonl', ['loss', 'reconstruct', 'embedding', 'commitment',
                         'images_per_s', 'test_mse', 'test_codes_used']),
    ('log_pixelcnn.jsonl', ['loss', 'images_per_s', 'test_nll']),
])
def test_one_jsonl_record_per_epoch(tiny_run, log, keys):
    records = read_jsonl(tiny_run / log)
    assert [r['epoch'] for r in records] == [0, 1]
    for r in records:
        assert all(isinstance(r[k], (int, float)) for k in keys), r
        assert r['images_per_s'] > 0


def test_loss_plot_and_previews_exist(tiny_run):
    with Image.open(tiny_run / 'loss_curves.png') as img:
        assert img.format == 'PNG' and img.width > 500
    previews = sorted(p.name for p in (tiny_run / 'previews').iterdir())
    # preview_every=2 over 2 epochs: one grid of each kind, after the
    # second epoch (epoch 1: epochs count from 0, as in the epoch line)
    assert previews == ['pixelcnn_sample_after_epoch001.jpg',
                        'vqvae_reconstruct_after_epoch001.jpg']
    with Image.open(tiny_run / 'previews' / previews[1]) as img:
        assert img.width == 2 * img.height  # originals | reconstructions


def test_epochs_count_from_0_in_bar_line_previews_and_plot(
        tiny_data_root, tmp_path, capsys):
    main_mod.main(['-c', '5', '--data-root', str(tiny_data_root),
                   '--work-dir', str(tmp_path), '--stages', '1',
                   '--cfg-options', *TINY, 'n_epochs=2', 'preview_every=1'])
    out, err = capsys.readouterr()
    assert 'VQ-VAE epoch 1 of 0-1' in err and 'epoch 2' not in err
    assert re.findall(r'^epoch (\d+) loss: ', out, re.M) == ['0', '1']
    assert sorted(p.name for p in (tmp_path / 'previews').iterdir()) == [
        'vqvae_reconstruct_after_epoch000.jpg',
        'vqvae_reconstruct_after_epoch001.jpg']
    [(_, lines)] = loss_panels(tmp_path)
    assert all(list(epochs) == [0, 1] for _, epochs, _ in lines)


def test_plot_is_redrawn_each_epoch(tiny_run, tmp_path):
    (tmp_path / 'log_vqvae.jsonl').write_text(
        (tiny_run / 'log_vqvae.jsonl').read_text().splitlines()[0] + '\n')
    plot_losses(tmp_path)
    one_epoch = (tmp_path / 'loss_curves.png').read_bytes()
    (tmp_path / 'log_vqvae.jsonl').write_text(
        (tiny_run / 'log_vqvae.jsonl').read_text())
    plot_losses(tmp_path)
    assert (tmp_path / 'loss_curves.png').read_bytes() != one_epoch


def tick_labels(axis):
    return [t.get_text() for t in axis.get_ticklabels(which='both')
            if t.get_text()]


@pytest.mark.parametrize('n_epochs', [1, 5])
def test_loss_plot_labels_are_decimals_and_epochs_integers(tmp_path,
                                                          n_epochs):
    for e in range(n_epochs):  # the prior spans less than a decade
        append_jsonl(tmp_path / 'log_pixelcnn.jsonl',
                     {'epoch': e, 'loss': 1.6 - 0.1 * e})
        append_jsonl(tmp_path / 'log_vqvae.jsonl',
                     {'epoch': e, 'loss': 0.08 / (e + 1)})
    fig = draw_losses(loss_panels(tmp_path))
    fig.canvas.draw()  # tick labels are made at drawing
    for ax in fig.axes:
        labels = tick_labels(ax.yaxis)
        assert labels and all(re.fullmatch(r'\d+(\.\d+)?', t)
                              for t in labels), labels  # no 1.5x10^0
        lo, hi = ax.get_xlim()
        assert [t for t in ax.get_xticks() if lo <= t <= hi] == \
            list(range(n_epochs))
        if n_epochs == 1:  # not 0.945 to 1.05
            assert ax.get_xlim() == (-0.5, 0.5)


def test_no_logs_no_plot(tmp_path):
    assert plot_losses(tmp_path) is None
    assert not (tmp_path / 'loss_curves.png').exists()


def test_logs_survive_a_torn_line_and_repeated_epochs(tmp_path):
    path = tmp_path / 'log_vqvae.jsonl'
    for e, loss in [(0, 3.0), (1, 2.0), (1, 1.5), (2, 1.0)]:
        append_jsonl(path, {'epoch': e, 'loss': loss})
    with open(path, 'a') as f:
        f.write('{"epoch": 3, "lo')  # killed mid-write
    assert [r['loss'] for r in by_epoch(read_jsonl(path))] == [3.0, 1.5, 1.0]
    assert plot_losses(tmp_path) is not None
    start_jsonl(path, 2)  # resuming at epoch 2 drops epochs >= 2
    assert [r['epoch'] for r in read_jsonl(path)] == [0, 1, 1]
    start_jsonl(path, 0)  # a fresh run starts an empty log
    assert read_jsonl(path) == []


def test_a_failing_plot_does_not_stop_training(tmp_path, monkeypatch,
                                               capsys):
    from dldemos.VQVAE import plots
    append_jsonl(tmp_path / 'log_vqvae.jsonl', {'epoch': 0, 'loss': 1.0})

    def broken(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(plots, 'plot_losses', broken)
    assert plots.update_loss_plot(tmp_path) is None
    assert 'could not draw the loss curves (disk full)' in \
        capsys.readouterr().err


JUNK = [b'\xff\xfe\x80 not utf-8 at all\n', b'[1, 2]\n', b'3\n', b'"text"\n',
        b'null\n', b'NaN\n', b'{"epoch": 9, "loss": "\xff"\n']


def test_read_jsonl_skips_bytes_and_lines_that_are_no_records(tmp_path):
    path = tmp_path / 'log_vqvae.jsonl'
    append_jsonl(path, {'epoch': 0, 'loss': 2.0})
    with open(path, 'ab') as f:
        f.writelines(JUNK)
    append_jsonl(path, {'epoch': 1, 'loss': 1.0})
    assert read_jsonl(path) == [{'epoch': 0, 'loss': 2.0},
                                {'epoch': 1, 'loss': 1.0}]
    assert plot_losses(tmp_path) is not None


def test_resume_with_a_damaged_log(tiny_run, tiny_data_root, tmp_path):
    work_dir = tmp_path / 'wd'
    shutil.copytree(tiny_run, work_dir)
    log = work_dir / 'log_vqvae.jsonl'
    with open(log, 'ab') as f:
        f.writelines(JUNK)
    main_mod.main(['-c', '5', '--data-root', str(tiny_data_root),
                   '--work-dir', str(work_dir), '--stages', '1', '--resume',
                   '--cfg-options', *TINY, 'n_epochs=3', 'preview_every=0'])
    records = read_jsonl(log)
    assert [r['epoch'] for r in records] == [0, 1, 2]
    # the resumed run rewrote the log without the junk
    assert all(line.startswith(b'{"epoch": ')
               for line in log.read_bytes().splitlines())


@pytest.mark.parametrize('used, warned_at', [
    ([8, 8, 7, 8], []),          # a healthy codebook: never
    ([3, 5, 8, 4], []),          # half of the most is not a collapse yet
    ([8, 8, 3, 2], [2, 3]),      # fell under half: every epoch it stays
    ([2, 8, 1], [2]),            # counted from the most, not the first
])
def test_collapse_watch_warns_when_codes_used_halve(used, warned_at):
    from dldemos.VQVAE.training.monitor import CollapseWatch
    watch = CollapseWatch(8)
    lines = [watch(n) for n in used]
    assert [i for i, line in enumerate(lines) if line] == warned_at
    for i in warned_at:
        assert lines[i].startswith('warning: held-out codes used fell from')
        assert 'lower lr' in lines[i] and '\n' not in lines[i]


def test_a_collapse_is_reported_after_the_epoch_line(
        tiny_data_root, tmp_path, monkeypatch, capsys):
    """Held-out codes used falling from 8 to 2 prints the warning under that
    epoch's line; training goes on (the user decides)."""
    from dldemos.VQVAE.training import monitor
    used = iter([8, 2])
    monkeypatch.setattr(monitor, 'vqvae_heldout', lambda *a: dict(
        mse=0.1, psnr=10.0, codes_used=next(used)))
    main_mod.main(['-c', '5', '--data-root', str(tiny_data_root),
                   '--work-dir', str(tmp_path), '--stages', '1',
                   '--cfg-options', *TINY, 'n_epochs=2', 'n_preview=0'])
    lines = capsys.readouterr().out.splitlines()
    epoch1 = [i for i, line in enumerate(lines) if line.startswith('epoch 1 ')]
    assert len(epoch1) == 1 and 'codes used 2/8' in lines[epoch1[0]]
    assert lines[epoch1[0] + 1] == (
        'warning: held-out codes used fell from 8 to 2 of 8: the codebook '
        'collapsed; lower lr and train again')
    assert not any(line.startswith('warning') for line in lines[:epoch1[0]])
    assert (tmp_path / 'model_mnist_quick.pth').exists()
