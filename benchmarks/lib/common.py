"""Shared by the benchmark scripts: device, timing, memory, the table,
number formatting."""
import argparse
import os
import shlex
import statistics
import sys
import time

import numpy as np
import torch

from dldemos.VQVAE.runtime.hardware import cpu_name

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))


def base_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--device', default=None,
                        help="'cpu' or 'cuda' (default: cuda if available)")
    parser.add_argument('--quick', action='store_true',
                        help='small sizes: about a minute on 2 CPU cores')
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed repeats (median is reported)')
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads (default 1: on a shared or busy '
                        'machine, OpenMP threads that spin-wait for each '
                        'other make small ops 10-100x slower and noisy)')
    parser.add_argument('--seed', type=int, default=0)
    return parser


def setup(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available()
                                          else 'cpu'))
    torch.manual_seed(args.seed)
    return device


def describe(device):
    if device.type == 'cuda':
        return (f'{torch.cuda.get_device_name(device)} (torch '
                f'{torch.__version__}, CUDA {torch.version.cuda})')
    return (f'CPU {cpu_name()}, '
            f'{torch.get_num_threads()} threads (torch {torch.__version__})')


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_pair(ours, ref, device, repeats, warmup=1):
    """Median seconds of ours() and ref(), alternating them so that load
    from other processes hits both alike. Returns (t_ours, t_ref)."""
    for _ in range(warmup):
        ours()
        ref()
    sync(device)
    t_ours, t_ref = [], []
    for r in range(repeats):
        for fn, out in ((ours, t_ours), (ref, t_ref))[::1 if r % 2 == 0
                                                      else -1]:
            sync(device)
            tic = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - tic)
    return statistics.median(t_ours), statistics.median(t_ref)


def rss_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


_malloc_set = False


def _malloc_returns_memory():
    """Make glibc serve every allocation over 64 KiB by mmap and give it back
    on free (no dynamic threshold), so RSS follows live tensors and a later
    measurement cannot reuse what an earlier one freed."""
    global _malloc_set
    if not _malloc_set:
        import ctypes
        try:
            ctypes.CDLL('libc.so.6').mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        except OSError:
            pass
        _malloc_set = True


def peak_memory(fn, device):
    """(result, bytes) of fn(): peak memory above what was in use before.
    CUDA: max_memory_allocated; CPU: the process's peak RSS (VmHWM), reset
    through /proc/self/clear_refs (Linux) so earlier peaks do not count."""
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        sync(device)
        return out, torch.cuda.max_memory_allocated(device) - before
    _malloc_returns_memory()
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current RSS
    before = rss_kib('VmRSS')
    out = fn()
    return out, (rss_kib('VmHWM') - before) * 1024


def command_line():
    return ' '.join(shlex.quote(a) for a in [
        'python', os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


class Table:
    """Rows of: what, ours, tutorial, ratio (tutorial / ours, >1 = faster),
    printed with the device and the command to repeat the run."""

    def __init__(self, title, device, unit_note=''):
        self.title, self.device, self.unit_note = title, device, unit_note
        self.rows = []

    def add(self, what, ours, ref, ratio, note=''):
        self.rows.append((what, ours, ref, ratio, note))
        print(f'  {what}: ours {ours} | tutorial {ref} | ratio {ratio}'
              + (f' ({note})' if note else ''), flush=True)

    def print(self):
        print()
        print(f'## {self.title}')
        print(f'device: {describe(self.device)}')
        print(f'command: {command_line()}')
        if self.unit_note:
            print(self.unit_note)
        print()
        print('| measurement | ours | tutorial | ratio | note |')
        print('| --- | --- | --- | --- | --- |')
        for what, ours, ref, ratio, note in self.rows:
            print(f'| {what} | {ours} | {ref} | {ratio} | {note} |')
        print(flush=True)


def randomize_batch_norm(model, generator=None):
    """Running stats and affine parameters away from the identity, so a
    check that ignores batch norm would fail."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5, generator=generator)
                m.running_var.uniform_(0.5, 2, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.2, 0.2, generator=generator)


def fmt_s(t):
    return f'{t * 1e3:.1f} ms' if t < 1 else f'{t:.2f} s'


def fmt_ratio(ref, ours):
    return f'{ref / ours:.1f}x' if ours > 0 else 'n/a'


def sig(x, digits=3):
    """x with `digits` significant digits, as a plain decimal: 0.00601."""
    return np.format_float_positional(x, precision=digits, unique=False,
                                      fractional=False, trim='k').rstrip('.')


def duration(seconds):
    """'42 s', '5 min 50 s', '1 h 3 min'; under 10 s one decimal."""
    if seconds < 10:
        return f'{seconds:.1f} s'
    s = round(seconds)
    if s < 3600:
        return f'{s // 60} min {s % 60} s' if s >= 60 else f'{s} s'
    return f'{s // 3600} h {s % 3600 // 60} min'


def dig(d, *keys):
    """d[k1][k2]...; None where a part is missing (a skipped prior)."""
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d
