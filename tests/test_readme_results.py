"""benchmarks/experiments/readme_results.py: README's results rows come from
a run's metrics.json and training logs, in README's column layout."""
import json
import re
from pathlib import Path

import pytest

from benchmarks.experiments import readme_results
from dldemos.VQVAE.runtime.logs import read_jsonl

REPO = Path(__file__).resolve().parents[1]

TINY = ['dim=8', 'n_embedding=16', 'pixelcnn_n_blocks=2', 'pixelcnn_dim=8',
        'pixelcnn_linear_dim=8', 'n_epochs=2', 'n_epochs_2=1',
        'batch_size=16', 'batch_size_2=16', 'n_sample=4', 'eval_subset=8',
        'n_preview=0']
EVAL = '--n-samples 12 --classifier-epochs 1 --classifier-subset 64'


def table_lines(out, label):
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines)
                if line.startswith('| run |'))
    [row] = [line for line in lines if line.startswith(f'| {label} |')]
    return lines[head], lines[head + 1], row


def cells(line):
    return [c.strip() for c in line.strip().strip('|').split('|')]


def seconds(text):
    """'1 h 2 min', '5 min 50 s', '42 s', '0.4 s' -> seconds."""
    units = {'h': 3600, 'min': 60, 's': 1}
    parts = text.split()
    return sum(float(n) * units[u] for n, u in zip(parts[::2], parts[1::2]))


def check_row(row, metrics, work_dir):
    """Every number in the row is the metrics.json / log value, rounded as
    printed."""
    c = dict(zip(readme_results.COLUMNS, cells(row)))
    v, p, s = metrics['vqvae'], metrics['prior'], metrics['samples']
    ck = metrics['checkpoints']
    assert c['epochs (VQ-VAE / prior)'] == \
        f'{ck["vqvae"]["epochs_trained"]} / ' \
        f'{ck["gen_model"]["epochs_trained"]}' == '2 / 1'
    train = sum(read_jsonl(work_dir / log)[-1]['elapsed_s']
                for log in ('log_vqvae.jsonl', 'log_pixelcnn.jsonl'))
    assert seconds(c['train time']) == pytest.approx(train, abs=0.05)
    assert float(c['test MSE']) == float(f'{v["mse"]:.3g}')
    assert float(c['PSNR (dB)']) == round(v['psnr'], 2)
    assert float(c['SSIM']) == round(v['ssim'], 3)
    assert c['codes used (perplexity)'] == \
        f'{v["codes_used"]}/16 ({round(v["perplexity"], 1)})'
    nll = 'prior NLL nats/latent (uniform {uniform})'
    assert float(c[nll]) == round(p['nll_nats_per_latent'], 3)
    assert float(c['bits/dim']) == float(f'{p["bits_per_dim"]:.3g}')
    assert float(c['fid']) == round(s['fid'], 1)
    ref = s['reference']
    assert float(c['fid ref: reconstructions']) == \
        round(ref['reconstructions_vs_test']['fid'], 1)
    assert float(c['fid ref: train vs test']) == \
        round(ref['train_vs_test']['fid'], 1)
    assert float(c['mean_confidence']) == \
        round(s['mean_confidence'], 3)
    # an unconditional prior has no conditional accuracy, and MNIST (scored
    # by its classifier's features) no patch distance
    assert c['conditional_accuracy'] == '-'
    assert c['swd'] == c['swd_ref_reconstructions'] == c['swd_ref_train'] \
        == '-'


@pytest.mark.slow
def test_a_tiny_run_prints_its_metrics_as_a_readme_row(tiny_data_root,
                                                       tmp_path, capfd):
    root = tmp_path / 'w'
    readme_results.main(['--runs', 'quick', '--data-root',
                         str(tiny_data_root), '--work-root', str(root),
                         '--device', 'cpu', '--eval-args', EVAL,
                         '--cfg-options', *TINY])
    out = capfd.readouterr().out
    work_dir = root / 'quick'
    metrics = json.loads((work_dir / 'metrics.json').read_text())
    head, rule, row = table_lines(out, 'config 5 (quick)')
    check_row(row, metrics, work_dir)
    assert '(uniform 2.773)' in head  # log 16
    assert len(cells(head)) == len(cells(rule)) == len(cells(row)) == \
        len(readme_results.COLUMNS)
    record = json.loads((work_dir / readme_results.RECORD).read_text())
    assert record['main_s'] > 0 and record['evaluate_s'] > 0
    # main.py's wall time per stage, from its `stage k (...) took` lines
    assert list(record['stage_s']) == ['1 train VQ-VAE', '2 reconstruct',
                                       '3 train PixelCNN', '4 sample']
    assert 0 < sum(record['stage_s'].values()) < record['main_s']
    assert re.search(r'stage 3 train PixelCNN [\d.]+ s', out)
    assert len(record['loadavg_before']) == len(record['loadavg_after']) == 3
    assert re.search(r'load average \(1/5/15 min\) before [\d.]+ ', out)
    assert re.search(r'^python \S*main\.py -c 5 .*--cfg-options dim=8',
                     out, re.M)
    assert re.search(r'^python \S*evaluate\.py -c 5 .*--n-samples 12',
                     out, re.M)
    # re-printed from the work dir, without training: the same rows
    readme_results.main(['--from-work-dirs', str(work_dir)])
    again = capfd.readouterr().out
    assert table_lines(again, 'config 5 (quick)') == (head, rule, row)


def test_a_used_work_dir_is_refused(tmp_path):
    (tmp_path / 'quick').mkdir()
    with pytest.raises(SystemExit, match='exists'):
        readme_results.main(['--runs', 'quick', '--work-root',
                             str(tmp_path)])


@pytest.mark.parametrize('device,expected', [
    ('foo', "is not a device"),
    ('cuda:99', 'cuda:99'),  # no CUDA here, or not 100 GPUs
])
def test_a_bad_device_is_one_line_before_any_work_dir(tmp_path, device,
                                                      expected):
    with pytest.raises(SystemExit) as e:
        readme_results.main(['--runs', 'quick', '--device', device,
                             '--work-root', str(tmp_path / 'runs')])
    assert expected in str(e.value) and '\n' not in str(e.value)
    assert not (tmp_path / 'runs').exists()


def test_the_header_is_the_results_docs():
    metrics = {'prior': {'uniform_nats_per_latent': 3.4657359}}  # log 32
    head, rule = readme_results.header([metrics]).splitlines()
    results = (REPO / 'docs' / 'results.md').read_text()
    assert f'{head}\n{rule}\n' in results


def test_a_face_row_shows_the_patch_distances_and_no_fid():
    """Faces have no classifier and (without cached Inception weights) no
    FID: the row says '-' there and prints the three patch distances."""
    samples = {'fid': None, 'swd': 40.4707, 'swd_ref_reconstructions': 31.8895,
               'swd_ref_train': 16.1856}
    metrics = {'vqvae': {'mse': 0.0034, 'psnr': 24.64, 'ssim': 0.784,
                         'codes_used': 64, 'n_embedding': 64,
                         'perplexity': 58.4},
               'prior': {'nll_nats_per_latent': 2.672, 'bits_per_dim': 0.08},
               'samples': samples, 'checkpoints': {}}
    c = dict(zip(readme_results.COLUMNS,
                 cells(readme_results.row('faces', metrics, 60.0))))
    assert c['fid'] == c['conditional_accuracy'] == '-'
    assert (c['swd'], c['swd_ref_reconstructions'], c['swd_ref_train']) == \
        ('40.47', '31.89', '16.19')
