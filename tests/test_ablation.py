"""benchmarks/experiments/ablation_codebook.py on tiny data: every
(variant, seed) is trained and scored, and the table holds the mean of its
metrics.json."""
import json

import pytest

from benchmarks.experiments import ablation_codebook

TINY = ['dim=8', 'n_embedding=16', 'n_epochs=1', 'batch_size=16',
        'eval_subset=8', 'n_preview=0', 'train_subset=64', 'num_workers=0']


def test_a_variant_without_options_passes_no_empty_flag():
    class Args:
        data_root, cfg_options = 'data', []
    train, score = ablation_codebook.commands('tutorial', 0, 'w', Args)
    assert '--cfg-options' not in train and '--cfg-options' not in score
    train, _ = ablation_codebook.commands('ema', 0, 'w', Args)
    assert train[train.index('--cfg-options') + 1] == 'codebook_ema=True'


def test_variants_are_valid_options():
    from dldemos.VQVAE.runtime.config_check import load_cfg
    for _, options in ablation_codebook.VARIANTS.values():
        load_cfg(0, options)  # raises on an unknown key or a bad value


@pytest.mark.slow
def test_tiny_ablation_table(tiny_data_root, tmp_path, capsys):
    root = tmp_path / 'ab'
    ablation_codebook.main(['--data-root', str(tiny_data_root),
                            '--work-root', str(root), '--variants',
                            'tutorial,all', '--seeds', '0,1',
                            '--cfg-options', *TINY])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith('|')]
    assert len(rows) == 2 + 2  # header, rule, two variants
    for variant in ('tutorial', 'all'):
        mses = [json.loads((root / f'{variant}_seed{s}' / 'metrics.json')
                           .read_text())['vqvae']['mse'] for s in (0, 1)]
        label = ablation_codebook.VARIANTS[variant][0]
        [row] = [r for r in rows if r.startswith(f'| {label} |')]
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert cells[1] == '2'
        assert cells[2].startswith(f'{sum(mses) / 2:.5f} [')
        assert (root / f'{variant}_seed0' / 'ablation_run.json').exists()
    # re-printing from the work dirs gives the same table
    ablation_codebook.main(['--from-work-root', str(root)])
    again = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith('|')]
    assert again == rows
