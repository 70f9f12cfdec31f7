"""CPU thread settings under load: the quick config's (-c 5) training steps.

    python benchmarks/speed/bench_threads.py          # about 3 minutes, 2 cores
    python benchmarks/speed/bench_threads.py --quick  # 1-2 minutes
    python benchmarks/speed/bench_threads.py --spin 1000,30000  # + libgomp spins

(Slower when other processes load the machine: the default wait policy's
steps take seconds then.)

Times one prior step (Gated PixelCNN, batch_size_2 random codes, Adam,
cross-entropy) and one VQ-VAE step (batch_size random 1x28x28 images, Adam,
the three MSE terms) for each thread setting, with 0, 1 and 2 busy-loop
processes (`while True: pass`, started and killed here) holding the cores.
Each setting runs in its own Python process: the OpenMP runtime reads its
wait policy once, when `import torch` loads it, so it must be in the
environment before.

Reported: the median step time over the timed steps of all --rounds (each
round runs every load and setting once; after one warmup step;
a setting stops once warmup and steps have used --budget seconds, with at
least --min-steps steps: the slow settings get one; the progress lines give
the counts), and the ratio to 1 thread under the same load (>1 =
slower). `other load` is the CPU time (in cores) that processes other than
the benchmark and its busy loops used while that load level was measured:
other people's jobs on a shared machine.
"""
import json
import os
import statistics
import subprocess
import sys
import time

if __name__ == '__main__':  # run as a script: the repo root importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

from benchmarks.lib.common import REPO, command_line  # noqa: E402

# (label, torch threads, environment). The environment of every setting
# starts without these variables, whatever the caller's shell has.
OMP_VARS = ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY', 'GOMP_SPINCOUNT',
            'KMP_BLOCKTIME', 'MKL_NUM_THREADS', 'OMP_PROC_BIND')
SETTINGS = [
    ('1 thread', 1, {}),
    ('2 threads (default wait policy)', 2, {}),
    ('2 threads, OMP_WAIT_POLICY=PASSIVE', 2, {'OMP_WAIT_POLICY': 'PASSIVE'}),
]
# --spin adds a row per libgomp spin count (iterations an idle thread spins
# before it sleeps; libgomp's default is 300000, PASSIVE means 0)

BUSY = ('import time\nend = time.monotonic() + {limit}\n'
        'while time.monotonic() < end: pass\n')


# ------------------------------------------------------------------ child
def child(spec):
    """Run in a fresh process: time the two steps, print one JSON line."""
    import torch
    import torch.nn as nn
    from dldemos.VQVAE.runtime.build import build_models
    from dldemos.VQVAE.configs import get_cfg

    torch.set_num_threads(spec['threads'])
    torch.manual_seed(0)
    cfg = get_cfg(5)
    vqvae, prior = build_models(cfg)
    h, w = cfg['img_shape'][1] // 4, cfg['img_shape'][2] // 4
    codes = torch.randint(0, cfg['n_embedding'], (cfg['batch_size_2'], h, w))
    images = torch.rand((cfg['batch_size'], *cfg['img_shape']))
    ce, mse = nn.CrossEntropyLoss(), nn.MSELoss()
    opt_p = torch.optim.Adam(prior.parameters(), cfg['lr_2'])
    opt_v = torch.optim.Adam(vqvae.parameters(), cfg['lr'])
    prior.train(), vqvae.train()

    def prior_step():
        loss = ce(prior(codes), codes)
        opt_p.zero_grad(set_to_none=True)
        loss.backward()
        opt_p.step()

    def vqvae_step():
        x_hat, ze, zq = vqvae(images)
        loss = mse(images, x_hat) + cfg['l_w_embedding'] * \
            mse(ze.detach(), zq) + cfg['l_w_commitment'] * mse(ze, zq.detach())
        opt_v.zero_grad(set_to_none=True)
        loss.backward()
        opt_v.step()

    def timed(step):
        start = time.perf_counter()  # the budget counts the warmup
        step()  # warmup
        times = []
        while len(times) < spec['steps']:
            tic = time.perf_counter()
            step()
            times.append(time.perf_counter() - tic)
            if (len(times) >= spec['min_steps']
                    and time.perf_counter() - start > spec['budget']):
                break
        return times

    with open('/proc/self/maps') as f:
        maps = f.read()
    runtime = next((name for name in ('libgomp', 'libiomp', 'libomp')
                    if name in maps), 'unknown')
    out = {'prior': timed(prior_step), 'vqvae': timed(vqvae_step),
           'threads': torch.get_num_threads(), 'openmp': runtime,
           'torch': torch.__version__}
    print(json.dumps(out), flush=True)


# ----------------------------------------------------------------- parent
def cpu_busy_jiffies():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    total = sum(v[:8])  # without guest time (already in user)
    return total - idle, total


def proc_jiffies(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError):
        return 0


def children_jiffies():
    r = os.times()
    return (r.children_user + r.children_system) * os.sysconf('SC_CLK_TCK')


def run_setting(setting, args):
    label, threads, extra = setting
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    env.update(extra)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    spec = dict(threads=threads, steps=args.steps, min_steps=args.min_steps,
                budget=args.budget)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), '--child',
         json.dumps(spec)], env=env, capture_output=True, text=True,
        timeout=args.child_timeout)
    if proc.returncode:
        raise SystemExit(f'{label}: child failed\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_load(n_busy, settings, args):
    """Run every setting with n_busy busy loops; returns (results, other
    load in cores)."""
    busy = [subprocess.Popen([sys.executable, '-c',
                              BUSY.format(limit=args.busy_limit)])
            for _ in range(n_busy)]
    try:
        time.sleep(0.5 if busy else 0)
        b0, t0 = cpu_busy_jiffies()
        c0 = children_jiffies()
        l0 = sum(proc_jiffies(p.pid) for p in busy)
        results = []
        for setting in settings:
            r = run_setting(setting, args)
            results.append(r)
            print(f'  {n_busy} busy | {setting[0]}: prior '
                  f'{statistics.median(r["prior"]) * 1e3:.0f} ms '
                  f'({len(r["prior"])} steps), VQ-VAE '
                  f'{statistics.median(r["vqvae"]) * 1e3:.0f} ms '
                  f'({len(r["vqvae"])} steps)', flush=True)
        b1, t1 = cpu_busy_jiffies()
        loops = sum(proc_jiffies(p.pid) for p in busy) - l0
        ours = children_jiffies() - c0
    finally:
        for p in busy:
            p.kill()
        for p in busy:
            p.wait()
    ncpu = os.cpu_count()
    elapsed = (t1 - t0) / ncpu  # wall jiffies
    other = max(0.0, (b1 - b0 - loops - ours) / elapsed) if elapsed else 0.0
    return results, other


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='loads 0 and 2, one round, fewer steps: 1-2 '
                        'minutes')
    parser.add_argument('--loads', default=None,
                        help='comma-separated busy-process counts (default '
                        '0,1,2; --quick 0,2)')
    parser.add_argument('--steps', type=int, default=None,
                        help='most timed steps per model (default 6; '
                        '--quick 3)')
    parser.add_argument('--min-steps', type=int, default=None,
                        help='fewest timed steps per model (default 1)')
    parser.add_argument('--budget', type=float, default=None,
                        help='seconds per model (warmup included) after '
                        'which a setting stops timing (default 2; --quick '
                        '1.5)')
    parser.add_argument('--spin', default=None,
                        help='comma-separated GOMP_SPINCOUNT values (libgomp), '
                        'a row each with 2 threads, e.g. 1000,30000')
    parser.add_argument('--rounds', type=int, default=None,
                        help='passes over every load and setting, pooled '
                        '(default 2; --quick 1)')
    parser.add_argument('--child-timeout', type=float, default=120)
    parser.add_argument('--busy-limit', type=float, default=600,
                        help='busy loops end on their own after this many '
                        'seconds, should this script die without killing '
                        'them')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    loads = [int(x) for x in (args.loads or ('0,2' if args.quick
                                             else '0,1,2')).split(',')]
    args.steps = args.steps or (3 if args.quick else 6)
    args.min_steps = args.min_steps or 1
    args.budget = args.budget or (1.5 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    spin = args.spin if args.spin is not None else \
        ''
    settings = SETTINGS + [(f'2 threads, GOMP_SPINCOUNT={n}', 2,
                            {'GOMP_SPINCOUNT': n})
                           for n in spin.split(',') if n.strip()]
    from dldemos.VQVAE.runtime.hardware import cpu_name
    start = time.perf_counter()
    table = {(label, n): {'prior': [], 'vqvae': []}
             for label, _, _ in settings for n in loads}
    others = {n: [] for n in loads}
    meta = None
    for r in range(args.rounds):
        order = settings if r % 2 == 0 else settings[::-1]  # spread drift
        for n in loads:
            results, other = measure_load(n, order, args)
            others[n].append(other)
            for setting, res in zip(order, results):
                meta = res
                for model in ('prior', 'vqvae'):
                    table[setting[0], n][model] += res[model]
    print()
    print('## CPU thread settings under load: config 5 training steps')
    print(f'device: CPU {cpu_name()}, {os.cpu_count()} cores (torch '
          f'{meta["torch"]}, OpenMP runtime {meta["openmp"]})')
    print(f'command: {command_line()}')
    print(f'load: N busy-loop processes; other load = CPU used by other '
          f'processes meanwhile: ' + ', '.join(
              f'{n} busy: {statistics.mean(others[n]):.2f} cores'
              for n in loads))
    print(f'{args.rounds} round(s), settings in reverse order every second '
          'round; ' f'steps per setting and model: warmup + up to '
          f'{args.steps}, {args.budget:g} s budget')
    print('cells: median ms per step over all rounds (ratio to 1 thread under the same '
          'load, >1 = slower); config 5 prior batch 256 of 7x7 codes, '
          'VQ-VAE batch 256 of 1x28x28')
    print(f'total time: {time.perf_counter() - start:.0f} s')
    for model in ('prior', 'vqvae'):
        print()
        name = 'prior step' if model == 'prior' else 'VQ-VAE step'
        print(f'| {name} | ' + ' | '.join(
            f'{n} busy' for n in loads) + ' |')
        print('| --- ' * (len(loads) + 1) + '|')
        for label, _, _ in settings:
            cells = []
            for n in loads:
                t = statistics.median(table[label, n][model])
                t1 = statistics.median(table[settings[0][0], n][model])
                cells.append(f'{t * 1e3:.0f} ms ({t / t1:.2f})')
            print(f'| {label} | ' + ' | '.join(cells) + ' |')
    print(flush=True)


if __name__ == '__main__':
    main()
