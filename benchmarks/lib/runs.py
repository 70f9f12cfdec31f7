"""Run the project's entry scripts (main.py, evaluate.py) as subprocesses,
exactly as a user runs them: their paths, their wall time, the machine."""
import os
import re
import shlex
import subprocess
import sys
import time

import torch

from dldemos.VQVAE.loading.loaders import usable_workers
from dldemos.VQVAE.runtime.hardware import describe

MAIN = 'dldemos/VQVAE/main.py'  # relative to the repository root
EVALUATE = 'dldemos/VQVAE/evaluate.py'


STAGE_RE = re.compile(r'^stage (\d) \((.+)\) took ([\d.]+) s$')


def timed(argv, stages=None):
    """Run argv (its 'python' is this interpreter), passing its output
    through; its wall time in seconds. main.py's `stage k (name) took x s`
    lines go into the dict `stages` ({'1 train VQ-VAE': x, ...}). A failure
    stops everything."""
    tic = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv[1:]],
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        m = STAGE_RE.match(line.strip())
        if m and stages is not None:
            stages[f'{m[1]} {m[2]}'] = float(m[3])
    code = proc.wait()
    if code:
        sys.exit(f'error: `{shlex.join(argv)}` failed with exit code '
                 f'{code}')
    return time.perf_counter() - tic


def machine(device):
    return {'hardware': describe(device), 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads(),
            'usable_cores': usable_workers(os.cpu_count() or 1)}


def default_device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'

