"""Rerun README's results table: every number in it comes from this script,
rerun whenever the code that produces them changes.

    python benchmarks/experiments/readme_results.py --data-root path/to/data
    python benchmarks/experiments/readme_results.py --runs quick --data-root DIR
    python benchmarks/experiments/readme_results.py --from-work-dirs \
        W/quick W/c0short

Each run trains with main.py, then scores with evaluate.py, both as
subprocesses (exactly what a user runs), in a fresh work dir
<work-root>/<run>. Beside their outputs it writes readme_run.json: the
commands, the wall time of each, the machine and the load average before and
after (a busy machine shows there). Then it prints the machine and timings,
the README table's rows in its column layout (from metrics.json and the
training logs) and the commands. --from-work-dirs re-prints the rows of
finished runs without training.

Train time is the two training stages' time as their logs record it
(elapsed_s of the last epoch of log_vqvae.jsonl + log_pixelcnn.jsonl);
main.py's and evaluate.py's whole wall times, and main.py's wall time per
stage (its `stage k (...) took x s` lines, kept in readme_run.json as
stage_s), are printed beside the table.
"""
import argparse
import datetime
import json
import os
import shlex
import sys
from dataclasses import dataclass, field

if __name__ == '__main__':  # run as a script: the repo root importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

from benchmarks.lib.common import REPO, dig, duration, sig  # noqa: E402
from benchmarks.lib.runs import (EVALUATE, MAIN, default_device,  # noqa: E402
                                 machine, timed)
from dldemos.utils.errors import UsageError  # noqa: E402
from dldemos.VQVAE.runtime.cli import pick_device  # noqa: E402
from dldemos.VQVAE.runtime.logs import read_jsonl  # noqa: E402

RECORD = 'readme_run.json'


@dataclass
class Run:
    label: str          # the table's first column
    config: int
    cfg_options: list = field(default_factory=list)


RUNS = {
    'quick': Run('config 5 (quick)', 5),
    'c0short': Run('config 0, prior cut to 3 of its 50 epochs', 0,
                   ['n_epochs_2=3']),
    'c0': Run('config 0', 0),  # the tutorial's full run: a GPU's
    'plus_quick': Run('config 7 (conditional prior, CPU)', 7),
    'plus': Run('config 6 (conditional prior)', 6),  # a GPU's
    'faces': Run('config 8 (CelebA faces 64x64)', 8),
    'faces_plus': Run('config 10 (faces: 512 codes, bf16)', 10),
}

COLUMNS = ['run', 'epochs (VQ-VAE / prior)', 'train time', 'test MSE',
           'PSNR (dB)', 'SSIM', 'codes used (perplexity)',
           'prior NLL nats/latent (uniform {uniform})', 'bits/dim',
           'fid', 'fid ref: reconstructions', 'fid ref: train vs test',
           'mean_confidence', 'conditional_accuracy', 'swd',
           'swd_ref_reconstructions', 'swd_ref_train']


# ------------------------------------------------------------ formatting
def cell(value, fmt):
    return '-' if value is None else fmt(value)


def train_seconds(work_dir):
    """Training time of both stages as logged (elapsed_s of each log's
    last epoch), or None when a log is missing."""
    total = 0.0
    for name in ('log_vqvae.jsonl', 'log_pixelcnn.jsonl'):
        records = read_jsonl(os.path.join(work_dir, name))
        if not records:
            return None
        total += records[-1]['elapsed_s']
    return total


def header(metrics_list):
    """The table's header: the uniform prior's NLL in it when every run
    has the same number of codes."""
    uniform = {f'{u:.3f}' for u in (dig(m, 'prior', 'uniform_nats_per_latent')
                                    for m in metrics_list) if u is not None}
    text = uniform.pop() if len(uniform) == 1 else 'log K'
    cols = [c.format(uniform=text) for c in COLUMNS]
    return '| ' + ' | '.join(cols) + ' |\n|' + '---|' * len(cols)


def row(label, m, train_s):
    """One README row from a metrics.json dict and the training time."""
    v, p, s = m['vqvae'], m['prior'], m['samples']
    ep = [dig(m, 'checkpoints', k, 'epochs_trained')
          for k in ('vqvae', 'gen_model')]
    cells = [
        label,
        ' / '.join('-' if e is None else str(e) for e in ep),
        cell(train_s, duration),
        cell(v['mse'], sig),
        cell(v['psnr'], lambda x: f'{x:.2f}'),
        cell(v['ssim'], lambda x: f'{x:.3f}'),
        f'{v["codes_used"]}/{v["n_embedding"]} ({v["perplexity"]:.1f})',
        cell(dig(p, 'nll_nats_per_latent'), lambda x: f'{x:.3f}'),
        cell(dig(p, 'bits_per_dim'), sig),
        cell(dig(s, 'fid'), lambda x: f'{x:.1f}'),
        cell(dig(s, 'reference', 'reconstructions_vs_test', 'fid'),
             lambda x: f'{x:.1f}'),
        cell(dig(s, 'reference', 'train_vs_test', 'fid'),
             lambda x: f'{x:.1f}'),
        cell(dig(s, 'mean_confidence'), lambda x: f'{x:.3f}'),
        cell(dig(s, 'conditional_accuracy'), lambda x: f'{x:.3f}'),
        *(cell(dig(s, k), lambda x: f'{x:.2f}')  # images without a classifier
          for k in ('swd', 'swd_ref_reconstructions', 'swd_ref_train')),
    ]
    return '| ' + ' | '.join(cells) + ' |'


# ------------------------------------------------------------ running
def commands(run, work_dir, args):
    """The main.py and evaluate.py command lines of a run (argv lists),
    run from the current folder (the repository root gives README's)."""
    main, evaluate = (os.path.relpath(os.path.join(REPO, p))
                      for p in (MAIN, EVALUATE))
    common = ['-c', str(run.config), '--data-root', args.data_root,
              '--work-dir', work_dir, '--seed', str(args.seed)]
    if args.device:
        common += ['--device', args.device]
    opts = run.cfg_options + args.cfg_options
    if opts:
        common += ['--cfg-options', *opts]
    return [['python', main, *common],
            ['python', evaluate, *common, *shlex.split(args.eval_args)]]


def run_one(name, run, args):
    """Train and score one run in a fresh work dir; its record."""
    work_dir = os.path.join(args.work_root, name)
    if os.path.exists(work_dir):
        sys.exit(f'error: {work_dir} exists: the runs go into fresh work '
                 'dirs; pick another --work-root')
    os.makedirs(work_dir)
    argvs = commands(run, work_dir, args)
    record = dict(run=name, label=run.label, commands=argvs,
                  date=datetime.datetime.now().isoformat(timespec='seconds'),
                  machine=machine(args.device or default_device()),
                  loadavg_before=os.getloadavg())
    record['stage_s'] = {}
    record['main_s'] = timed(argvs[0], record['stage_s'])
    record['evaluate_s'] = timed(argvs[1])
    record['loadavg_after'] = os.getloadavg()
    with open(os.path.join(work_dir, RECORD), 'w') as f:
        json.dump(record, f, indent=1)
    return work_dir


# ------------------------------------------------------------ report
def load_run(work_dir):
    """(label, metrics, record or {}) of a finished run's work dir."""
    path = os.path.join(work_dir, 'metrics.json')
    if not os.path.isfile(path):
        sys.exit(f'error: {path} does not exist: score the run with '
                 'evaluate.py first')
    with open(path) as f:
        metrics = json.load(f)
    record = {}
    if os.path.isfile(os.path.join(work_dir, RECORD)):
        with open(os.path.join(work_dir, RECORD)) as f:
            record = json.load(f)
    name = os.path.basename(os.path.normpath(work_dir))
    label = record.get('label') or (RUNS[name].label if name in RUNS
                                    else name)
    return label, metrics, record


def timings(label, work_dir, metrics, record):
    """One line: stage training times, script wall times, the device that
    scored, the load average (said busy beyond the usable cores)."""
    times = []
    for key, title in (('log_vqvae.jsonl', 'VQ-VAE training'),
                       ('log_pixelcnn.jsonl', 'prior training')):
        records = read_jsonl(os.path.join(work_dir, key))
        if records:
            times.append(f'{title} {duration(records[-1]["elapsed_s"])}')
    for stage, seconds in record.get('stage_s', {}).items():
        times.append(f'stage {stage} {duration(seconds)}')
    for key, script in (('main_s', 'main.py'), ('evaluate_s', 'evaluate.py')):
        if key in record:
            times.append(f'{script} {duration(record[key])}')
    line = f'{label}: {", ".join(times)}; scored on {metrics.get("hardware")}'
    if 'loadavg_before' in record:
        before, after = (' '.join(f'{x:.2f}' for x in record[k])
                         for k in ('loadavg_before', 'loadavg_after'))
        line += f'; load average (1/5/15 min) before {before}, after {after}'
        cores = record['machine']['usable_cores']
        if max(record['loadavg_before'][0], record['loadavg_after'][0]) \
                > cores:
            line += f' (busy: {cores} usable cores; timings not comparable)'
    return line


def report(work_dirs):
    """Print the machine, timings, the table rows and the commands."""
    runs = [(d, *load_run(d)) for d in work_dirs]
    machines = {json.dumps(r.get('machine'), sort_keys=True)
                for _, _, _, r in runs if r.get('machine')}
    for m in sorted(machines):
        m = json.loads(m)
        print(f'machine: {m["hardware"]} (torch {m["torch"]}, '
              f'{m["usable_cores"]} usable cores)')
    for d, label, metrics, record in runs:
        print(timings(label, d, metrics, record))
    print()
    print(header([m for _, _, m, _ in runs]))
    for d, label, metrics, _ in runs:
        print(row(label, metrics, train_seconds(d)))
    print('\n```bash')
    for _, _, _, record in runs:
        for argv in record.get('commands', []):
            print(shlex.join(argv))
    print('```')


def build_parser():
    parser = argparse.ArgumentParser(
        description="Rerun README's results table (main.py, then "
        'evaluate.py, per run) and print its rows.')
    parser.add_argument('--data-root', default='data', metavar='DIR',
                        help='passed to both scripts (default: %(default)s)')
    parser.add_argument('--work-root', default=None, metavar='DIR',
                        help='each run goes into a fresh DIR/<run> (default: '
                        'work_dirs/readme_results_<date>_<time>)')
    parser.add_argument('--runs', default='quick,c0short', metavar='LIST',
                        help='comma-separated, of: ' + '; '.join(
                            f'{k} = {r.label}' + (
                                f' (--cfg-options {" ".join(r.cfg_options)})'
                                if r.cfg_options else '')
                            for k, r in RUNS.items())
                        + ' (default: %(default)s)')
    parser.add_argument('--device', default=None,
                        help="passed to both scripts (default: theirs)")
    parser.add_argument('--seed', type=int, default=0, metavar='N',
                        help='random seed of both scripts (default: '
                        '%(default)s)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='added to every run, for smoke runs of this '
                        'script (default: none)')
    parser.add_argument('--eval-args', default='', metavar='FLAGS',
                        help="extra evaluate.py flags in one string, e.g. "
                        "'--n-samples 100' (default: none)")
    parser.add_argument('--from-work-dirs', nargs='+', default=None,
                        metavar='DIR',
                        help='only re-print the rows of these finished runs '
                        '(default: train and score the --runs)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.from_work_dirs:
        report(args.from_work_dirs)
        return
    names = [n for n in args.runs.split(',') if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        sys.exit(f'error: unknown run {", ".join(unknown)}: use '
                 f'{", ".join(RUNS)}')
    try:  # before any work dir is made: say it in one line, as main.py does
        pick_device(args.device)
    except UsageError as e:
        sys.exit(f'error: {e}')
    args.work_root = args.work_root or os.path.join(
        'work_dirs', 'readme_results_'
        + datetime.datetime.now().strftime('%Y%m%d_%H%M%S'))
    work_dirs = [run_one(n, RUNS[n], args) for n in names]
    report(work_dirs)


if __name__ == '__main__':
    main()
