"""benchmarks/tools/run_gpu.sh --dry-run: the GPU script's steps on the CPU,
on tiny generated data, so the one command a GPU machine gets is known to
run.

One of each kind of step runs for real (the torchrun launchers, the amp
comparison, a benchmark table, a README row through readme_results.py; LMDB
in the second test); the other benchmark steps differ from bench_sampling
only in script and flags (`bash benchmarks/tools/run_gpu.sh --dry-run` runs
them all, about 5 minutes on 2 busy cores). Then: a failing step does not stop
the next ones, and every default step exists (a budget of 0 s skips them
all)."""
import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dldemos.utils.precision import cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'benchmarks' / 'tools' / 'run_gpu.sh'
DEFAULT_STEPS = ['env', 'torchrun', 'amp', 'bench_sampling',
                 'bench_prior_c0', 'bench_prior_c0_fp32', 'bench_vqvae_c0',
                 'bench_vqvae_c0_fp32', 'bench_prior_c4', 'bench_vqvae_c4',
                 'bench_nn', 'c0', 'c6', 'bench_prior_c4_cl',
                 'bench_vqvae_c4_cl', 'lmdb']  # compile: not in a dry run

pytestmark = pytest.mark.skipif(shutil.which('bash') is None or
                                shutil.which('timeout') is None,
                                reason='needs bash and coreutils timeout')


def dry_run(tmp_path, data_root, steps=None, **env_vars):
    """(exit code, all.md text, {step: status}, printed output)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('STEPS', 'BUDGET_S', 'DEVICE', 'WORK', 'DATA_ROOT')}
    env.update(DATA_ROOT=str(data_root), WORK=str(tmp_path / 'work'),
               OMP_NUM_THREADS='1', **env_vars)
    if steps is not None:
        env['STEPS'] = steps
    out = tmp_path / 'out'
    r = subprocess.run(['bash', str(SCRIPT), '--dry-run', str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    text = (out / 'all.md').read_text()
    head = '| step | what | status | wall time |\n|---|---|---|---|\n'
    table = text.split(head, 1)[1].split('\n\n', 1)[0]
    status = {}
    for line in table.splitlines():  # | step | what | status | wall time |
        cells = [c.strip() for c in line.strip('|').split('|')]
        status[cells[0]] = cells[2]
    return r.returncode, text, status, r.stdout + r.stderr


def section(text, step):
    """The all.md section of one step."""
    m = re.search(rf'^## {step}: .*?(?=^## |\Z)', text, re.M | re.S)
    assert m, f'no section for {step}'
    return m.group(0)


def gz_only_copy(data_root, dest):
    """A data root as .devdata is carried: MNIST's raw files gzipped only."""
    raw = dest / 'mnist' / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    for f in (data_root / 'mnist' / 'MNIST' / 'raw').iterdir():
        with open(f, 'rb') as src, gzip.open(raw / (f.name + '.gz'),
                                             'wb') as out:
            shutil.copyfileobj(src, out)
    return dest


@pytest.mark.slow
def test_dry_run_of_each_kind_of_step(tiny_data_root, tmp_path):
    devdata = gz_only_copy(tiny_data_root, tmp_path / 'devdata')
    steps = 'torchrun amp bench_sampling c0'
    code, text, status, printed = dry_run(tmp_path, devdata, steps)
    assert code == 0, printed[-3000:]
    assert status == {s: 'ok' for s in ['env'] + steps.split()}, printed
    assert 'Dry run on the CPU' in text
    # the carried .gz files were unpacked into the work dir, not beside them
    assert 'unpacked into' in section(text, 'env')
    assert all(p.suffix == '.gz'
               for p in (devdata / 'mnist' / 'MNIST' / 'raw').iterdir())
    # torchrun: both launchers, one process each, gloo on the CPU
    assert section(text, 'torchrun').count(
        'device: cpu x 1 processes (gloo)') == 2
    # amp: three rows; on a CPU without native bf16 amp is ignored, so
    # they agree
    amp = section(text, 'amp')
    rows = [line for line in amp.splitlines() if line.startswith('| amp ')]
    assert len(rows) == 3
    psnr = {line.split('|')[4].strip() for line in rows}
    nll = {line.split('|')[7].strip() for line in rows}
    assert '-' not in nll
    if not cpu_has_native_bf16():
        assert 'amp is ignored' in amp
        assert len(psnr) == len(nll) == 1
    # a benchmark table: ours vs the tutorial, with the command to repeat it
    sec = section(text, 'bench_sampling')
    assert '| measurement | ours | tutorial | ratio | note |' in sec
    assert re.search(r'^command: python benchmarks/speed/bench_sampling\.py ',
                     sec, re.M)
    # the README row of config 0, with main.py's wall time per stage
    c0 = section(text, 'c0')
    assert re.search(r'^\| config 0 \| 1 / 1 \|', c0, re.M)
    for k in range(1, 5):
        assert re.search(rf'stage {k} \([^)]+\) took [\d.]+ s', c0)
    # the three files a device run returns
    out = tmp_path / 'out'
    assert sorted(p.name for p in out.iterdir()) == [
        'all.md', 'gpu.txt', 'logs.tar.gz']
    listing = subprocess.run(['tar', 'tzf', str(out / 'logs.tar.gz')],
                             capture_output=True, text=True).stdout
    assert './readme/c0/metrics.json' in listing.split()
    assert not re.search(r'\.(pth|pt)$', listing, re.M)  # no checkpoints


@pytest.mark.slow
def test_a_failing_step_does_not_stop_the_others(tiny_data_root, tmp_path):
    # conftest hides any GPU: main.py refuses --device cuda at once
    code, text, status, printed = dry_run(tmp_path, tiny_data_root,
                                          'amp no_such_step lmdb',
                                          DEVICE='cuda')
    assert code == 1, printed[-3000:]
    assert status == {'env': 'ok', 'amp': 'failed (exit 1)',
                      'no_such_step': 'failed: no such step', 'lmdb': 'ok'}
    assert 'LMDB/folder' in section(text, 'lmdb')  # bench_lmdb.py's table
    # the failed step's section ends with its log's last lines
    assert 'no CUDA GPU is available here' in section(text, 'amp')


def test_every_default_step_exists(tiny_data_root, tmp_path):
    code, text, status, printed = dry_run(tmp_path, tiny_data_root,
                                          BUDGET_S='0')
    assert code == 0, printed[-3000:]
    assert list(status) == DEFAULT_STEPS
    assert status['env'] == 'ok'
    assert all(s.startswith('skipped: ') for n, s in status.items()
               if n != 'env'), status
