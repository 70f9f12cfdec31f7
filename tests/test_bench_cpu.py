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
                '--channels-last', '--threads', '1', '2'])
    out = capsys.readouterr().out
    assert 'native bf16 (oneDNN): ' in out
    assert 'command: python benchmarks/speed/bench_cpu.py --quick' in out
    rows = [line for line in out.splitlines()
            if line.startswith(('| VQ-VAE', '| prior'))]
    # config 7: its VQ-VAE (shared with 0 and 5) and its prior
    assert [r.split('|')[1].strip() for r in rows] == ['VQ-VAE (0, 5, 7)',
                                                       'prior (7)']
    # 2 precisions x 2 layouts x 2 thread counts: seven ratios to the first
    assert all(r.count('x |') == 7 for r in rows)
    assert '| fp32 1t / bf16 channels_last 2t |' in out


@pytest.mark.parametrize('kind', ['VQ-VAE', 'prior'])
def test_variants_start_from_the_same_weights(bench, kind):
    cfg = get_cfg(7)
    torch.manual_seed(0)
    vqvae, prior = build_models(cfg)
    base = vqvae if kind == 'VQ-VAE' else prior
    data = bench.inputs(kind, cfg, 2, torch.Generator().manual_seed(0))
    steps = [bench.make_step(kind, cfg, base, data, v)
             for v in bench.variants(type('A', (), dict(
                 channels_last=True, compile=False, threads=[1]))())]
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
