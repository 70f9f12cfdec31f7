"""benchmarks/speed/bench_cpu.py: a quick run prints what it compared, on
what CPU, the table and the command; every variant starts from the same
weights."""
import importlib.util
from pathlib import Path

import pytest
import torch

from dldemos.VQVAE.configs import get_cfg
from dldemos.VQVAE.runtime.build import build_models

SCRIPT = Path(__file__).resolve().parents[1] / 'benchmarks' / 'speed' / \
    'bench_cpu.py'


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('bench_cpu', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_the_cpu_the_table_and_the_command(bench, capsys):
    bench.main(['--quick', '--configs', '7', '--repeats', '1',
                '--channels-last'])
    out = capsys.readouterr().out
    assert 'native bf16 (oneDNN): ' in out
    assert 'command: python benchmarks/speed/bench_cpu.py --quick' in out
    rows = [line for line in out.splitlines() if line.startswith('| 1 |')]
    # config 7: its VQ-VAE (shared with 0 and 5) and its prior
    assert [r.split('|')[2].strip() for r in rows] == ['VQ-VAE (0, 5, 7)',
                                                       'prior (7)']
    assert all(r.count('x |') == 3 for r in rows)  # three ratios to fp32


@pytest.mark.parametrize('kind', ['VQ-VAE', 'prior'])
def test_variants_start_from_the_same_weights(bench, kind):
    cfg = get_cfg(7)
    torch.manual_seed(0)
    vqvae, prior = build_models(cfg)
    base = vqvae if kind == 'VQ-VAE' else prior
    data = bench.inputs(kind, cfg, 2, torch.Generator().manual_seed(0))
    steps = [bench.make_step(kind, cfg, base, data, v)
             for v in bench.variants(type('A', (), dict(
                 channels_last=True, compile=False))())]
    states = [s.model.state_dict() for s in steps]
    for state in states[1:]:
        for k, v in states[0].items():
            assert torch.equal(v, state[k]), k
    steps[0]()  # a step moves its own copy only
    moved = steps[0].model.state_dict()
    assert any(not torch.equal(v, base.state_dict()[k])
               for k, v in moved.items())
    for k, v in base.state_dict().items():
        assert torch.equal(v, steps[1].model.state_dict()[k]), k
