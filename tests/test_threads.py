"""Thread settings: the entry scripts ask for a passive OpenMP wait policy
before torch loads OpenMP (unless the user chose one), and --threads N sets
torch's thread count."""
import os
import subprocess
import sys

import pytest

from dldemos.utils.errors import UsageError
from dldemos.utils.threads import configure_threads, passive_wait
from dldemos.VQVAE.main import build_parser

from conftest import REPO

SCRIPTS = ['main.py', 'evaluate.py', 'dist_train_vqvae.py',
           'dist_train_pixelcnn.py']


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS',
                         'GOMP_SPINCOUNT')}
    env.update(extra)
    return env


def test_passive_wait_is_a_default(monkeypatch):
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    passive_wait()
    assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'
    monkeypatch.setenv('OMP_WAIT_POLICY', 'ACTIVE')
    passive_wait()
    assert os.environ['OMP_WAIT_POLICY'] == 'ACTIVE'  # the user's choice


def test_configure_threads_sets_torch_threads():
    # a fresh process: this one has its thread count set by conftest
    code = ('from dldemos.utils.threads import configure_threads; import torch; '
            'd = torch.get_num_threads(); '
            'print(configure_threads(None) == d, configure_threads(3), '
            'torch.get_num_threads())')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                         env=clean_env(), capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ['True', '3', '3']


def test_threads_flag():
    assert build_parser().parse_args([]).threads is None
    assert build_parser().parse_args(['--threads', '1']).threads == 1
    with pytest.raises(UsageError, match='--threads 0'):
        configure_threads(0)


def spin_counts(runs):
    """{(script, wait policy set by the user): the spin count libgomp chose
    when `script --help` imported torch (OMP_DISPLAY_ENV=VERBOSE prints it at
    load: 0 = passive, 300000 = unset, more = active; None if the runtime
    does not say)}. The scripts run side by side."""
    procs = {}
    for script, user in runs:
        extra = {'OMP_WAIT_POLICY': user} if user else {}
        procs[script, user] = subprocess.Popen(
            [sys.executable, os.path.join('dldemos', 'VQVAE', script),
             '--help'], cwd=REPO,
            env=clean_env(OMP_DISPLAY_ENV='VERBOSE', **extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = {}
    for key, proc in procs.items():
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 0, err
        out[key] = next((line.split('=', 1)[1].strip().strip("'")
                         for line in err.splitlines()
                         if line.strip().startswith('GOMP_SPINCOUNT')), None)
    return out


def test_entry_scripts_set_policy_before_torch():
    runs = [(script, None) for script in SCRIPTS] + [('main.py', 'ACTIVE')]
    spins = spin_counts(runs)
    if spins['main.py', None] is None:
        pytest.skip('the OpenMP runtime is not libgomp (no GOMP_SPINCOUNT)')
    assert {key: spins[key] == '0' for key in runs} == \
        {**{(s, None): True for s in SCRIPTS},
         ('main.py', 'ACTIVE'): False}  # the user's choice wins
