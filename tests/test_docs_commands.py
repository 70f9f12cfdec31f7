"""The documentation stays runnable: every command that README.md and
docs/*.md show for a script of this repository (python X.py, python -m M,
torchrun ... X.py, bash X.sh) names a file that exists, and a Python script's
--help exits 0; README stays a short front door whose links resolve;
docs/configs.md names every config key."""
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dldemos.VQVAE.configs import DEFAULTS, cfgs

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
DOCS = sorted((REPO / 'docs').glob('*.md'))
README_MAX_LINES = 250

COMMAND_START = re.compile(
    r'^\s*(?:[A-Za-z_]\w*=\S*\s+)*(python3?|torchrun|bash)\s')
INLINE_CODE = re.compile(r'`([^`\n]+)`')
LONG_FLAG = re.compile(r'^(--[A-Za-z][\w-]*)(=.*)?$')
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


# ------------------------------------------------------------ parsing

def fenced_lines(text):
    """The lines inside ``` fences, with backslash continuations joined."""
    out, inside, pending = [], False, ''
    for line in text.splitlines():
        if line.lstrip().startswith('```'):
            inside, pending = not inside, ''
            continue
        if not inside:
            continue
        if line.rstrip().endswith('\\'):
            pending += line.rstrip()[:-1] + ' '
            continue
        out.append(pending + line)
        pending = ''
    return out


def inline_commands(text):
    """Inline code spans outside fences that start with python, torchrun
    or bash."""
    outside, inside = [], False
    for line in text.splitlines():
        if line.lstrip().startswith('```'):
            inside = not inside
        elif not inside:
            outside.append(line)
    return [m for m in INLINE_CODE.findall('\n'.join(outside))
            if COMMAND_START.match(m + ' ')]


def targets(line):
    """('script', path) / ('module', name) / ('shell', path) run by one
    shell line: each `python X.py`, `python -m M`, `torchrun ... X.py` and
    `bash X.sh` in it (split on && ; |), after any VAR=value prefix. Raises
    ValueError on a line the shell could not parse (unbalanced quotes)."""
    return [target for target, _ in parse(line)]


def parse(line):
    """[(target, long flags given to it)] of one shell line (see targets)."""
    tokens = shlex.split(line, comments=True)
    commands, current = [], []
    for tok in tokens:
        if tok in ('&&', '||', ';', '|'):
            commands.append(current)
            current = []
        elif tok.endswith(';'):
            current.append(tok[:-1])
            commands.append(current)
            current = []
        else:
            current.append(tok)
    commands.append(current)
    found = []
    for cmd in commands:
        while cmd and re.match(r'^[A-Za-z_]\w*=', cmd[0]):
            cmd = cmd[1:]  # VAR=value prefix
        if cmd[:1] == ['bash'] and len(cmd) > 1 and cmd[1].endswith('.sh'):
            found.append((('shell', cmd[1]), ()))
            continue
        if not cmd or cmd[0] not in ('python', 'python3', 'torchrun'):
            continue
        args = cmd[1:]
        if cmd[0] != 'torchrun' and args[:1] == ['-m'] and len(args) > 1:
            found.append((('module', args[1]), ()))
            continue
        scripts = [i for i, a in enumerate(args) if a.endswith('.py')
                   and not a.startswith('-')]
        if scripts:  # the script's own flags follow it (torchrun's precede)
            flags = tuple(m.group(1) for a in args[scripts[0] + 1:]
                          for m in [LONG_FLAG.match(a)] if m)
            found.append((('script', args[scripts[0]]), flags))
    return found


def doc_files():
    return [README] + DOCS


def collect():
    """{target: [where it is shown]} and {target: {long flag: where}}
    over README.md and docs/*.md, and the lines that could not be parsed."""
    shown, flags, unparsable = {}, {}, []
    for path in doc_files():
        text = path.read_text()
        lines = [ln for ln in fenced_lines(text) if COMMAND_START.match(ln)]
        for line in lines + inline_commands(text):
            where = f'{path.relative_to(REPO)}: {line.strip()}'
            try:
                found = parse(line)
            except ValueError as e:
                unparsable.append(f'{where} ({e})')
                continue
            for target, given in found:
                shown.setdefault(target, []).append(where)
                for flag in given:
                    flags.setdefault(target, {}).setdefault(flag, where)
    return shown, flags, unparsable


SHOWN, FLAGS, UNPARSABLE = collect()
TARGETS = sorted(SHOWN)


# ------------------------------------------------------------ running

RUNNER = REPO / 'tests' / 'docs_help_runner.py'
HELP_TIMEOUT_S = 300


def clean_env():
    """The environment of a user's shell: no torchrun variables (the
    launchers run as a user types them), one thread per process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR',
                        'MASTER_PORT')}
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


def run_helps(scripts):
    """{script: (exit code, output tail)} of `python SCRIPT --help` for
    every script: in children of docs_help_runner.py, which imports torch
    once for all of them (a fresh interpreter per script costs seconds)."""
    if not scripts:
        return {}
    jobs = str(min(4, os.cpu_count() or 1))
    try:
        r = subprocess.run([sys.executable, str(RUNNER), jobs, *scripts],
                           cwd=REPO, env=clean_env(), capture_output=True,
                           text=True, timeout=HELP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {s: (-1, f'the --help runs took over {HELP_TIMEOUT_S} s')
                for s in scripts}
    try:
        return {s: tuple(v) for s, v in json.loads(r.stdout).items()}
    except ValueError:
        why = f'docs_help_runner.py exited {r.returncode}:\n{r.stderr[-2000:]}'
        return {s: (-1, why) for s in scripts}


@pytest.fixture(scope='module')
def help_results():
    """None for a file that does not exist, else (code, output): a
    script's --help; a module (`python -m M`) counts when it is installed,
    a shell script (`bash X.sh`) when it exists."""
    out, scripts = {}, []
    for kind, name in TARGETS:
        if kind == 'module':
            found = importlib.util.find_spec(name) is not None
            out[kind, name] = (0, '') if found else (1, f'no module {name}')
        elif not (REPO / name).is_file():
            out[kind, name] = None
        elif kind == 'shell':  # exists; its steps have their own tests
            out[kind, name] = (0, '')
        else:
            scripts.append(name)
    for name, result in run_helps(scripts).items():
        out['script', name] = result
    return out


@pytest.mark.parametrize('target', TARGETS, ids=[n for _, n in TARGETS])
def test_every_shown_command_finds_its_script(target, help_results):
    kind, name = target
    where = '\n  '.join(SHOWN[target])
    result = help_results[target]
    assert result is not None, f'{name} does not exist; shown in:\n  {where}'
    code, output = result
    assert code == 0, (f'`python {name} --help` exited {code}; shown '
                       f'in:\n  {where}\n{output[-2000:]}')


@pytest.mark.parametrize('target', sorted(FLAGS),
                         ids=[n for _, n in sorted(FLAGS)])
def test_every_shown_flag_is_in_the_scripts_help(target, help_results):
    result = help_results[target]
    if not result or result[0] != 0:
        pytest.skip('the script itself fails (the test above says why)')
    unknown = [f'{flag} (in {where})' for flag, where in FLAGS[target].items()
               if not re.search(re.escape(flag) + r'(?![\w-])', result[1])]
    assert not unknown, f'{target[1]} --help lists none of: ' + \
        '; '.join(unknown)


def test_the_docs_show_the_main_commands():
    """The collector finds what it must (a parser that finds nothing would
    pass every test above)."""
    names = {name for _, name in TARGETS}
    for script in ('dldemos/VQVAE/main.py', 'dldemos/VQVAE/evaluate.py',
                   'dldemos/VQVAE/dist_train_vqvae.py',
                   'dldemos/VQVAE/dist_train_pixelcnn.py', 'pytest'):
        assert script in names, script


def test_every_command_line_parses():
    assert not UNPARSABLE, '\n'.join(UNPARSABLE)


@pytest.mark.parametrize('line,expected', [
    ('python dldemos/VQVAE/main.py -c 5   # a comment',
     [('script', 'dldemos/VQVAE/main.py')]),
    ('OMP_NUM_THREADS=1 python3 a/b.py --x 1',
     [('script', 'a/b.py')]),
    ('python -m pytest -q', [('module', 'pytest')]),
    ('torchrun --nproc_per_node=2 --rdzv-id=x d/t.py -c 5 --device cpu',
     [('script', 'd/t.py')]),
    ('python a.py -c 5 && python b.py -c 5',
     [('script', 'a.py'), ('script', 'b.py')]),
    ("cp -r A B; python c.py --cfg-options 'x=1'", [('script', 'c.py')]),
    ('BUDGET_S=60 bash benchmarks/tools/run_gpu.sh OUT',
     [('shell', 'benchmarks/tools/run_gpu.sh')]),
    ('bash -c true', []),
    ("# python commented.py: it's a comment", []),
])
def test_targets(line, expected):
    assert targets(line) == expected


def test_flags_are_the_scripts_own():
    line = ("torchrun --nproc_per_node=2 t.py -c 5 --device cpu "
            "--cfg-options n_epochs=1 --eval-args '--n-samples 9' --x=1")
    assert parse(line) == [(('script', 't.py'), ('--device', '--cfg-options',
                                                 '--eval-args', '--x'))]


def test_continued_lines_are_joined():
    text = ('```bash\ntorchrun --nnodes=2 \\\n    --rdzv-id=a \\\n'
            '    x/y.py -c 4\n```\n')
    [line] = fenced_lines(text)
    assert targets(line) == [('script', 'x/y.py')]


def test_inline_commands_outside_fences_only():
    text = ('Run `python a.py -c 5` or `main.py`.\n```\n`python b.py`\n```\n'
            '| `torchrun --nproc_per_node=2 c.py` |\n')
    assert inline_commands(text) == ['python a.py -c 5',
                                     'torchrun --nproc_per_node=2 c.py']


# ------------------------------------------------------------ README, links

def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, \
        f'README.md has {n} lines: move detail into docs/ (at most ' \
        f'{README_MAX_LINES})'


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def anchors(path):
    out = set()
    inside = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith('```'):
            inside = not inside
        elif not inside and line.startswith('#'):
            out.add(slug(line.lstrip('#')))
    return out


def links(path):
    """Relative link targets of a Markdown file, outside code."""
    text, inside, keep = path.read_text(), False, []
    for line in text.splitlines():
        if line.lstrip().startswith('```'):
            inside = not inside
        elif not inside:
            keep.append(re.sub(r'`[^`]*`', '', line))
    return [t for t in LINK.findall('\n'.join(keep))
            if not re.match(r'^[a-z][a-z0-9+.-]*:', t)]  # http:, mailto:


@pytest.mark.parametrize('path', doc_files(),
                         ids=[p.name for p in doc_files()])
def test_every_relative_link_resolves(path):
    broken = []
    for target in links(path):
        file, _, anchor = target.partition('#')
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f'{target}: no {dest}')
        elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
            broken.append(f'{target}: no heading #{anchor} in {dest.name}')
    assert not broken, f'{path.name}: ' + '; '.join(broken)


def test_readme_links_every_doc():
    linked = {(README.parent / t.partition('#')[0]).resolve()
              for t in links(README)}
    assert DOCS, 'docs/*.md missing'
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f'README.md does not link {missing}'


@pytest.mark.parametrize('key', sorted(set(DEFAULTS).union(*cfgs)))
def test_configs_doc_names_every_key(key):
    assert f'`{key}`' in (REPO / 'docs' / 'configs.md').read_text(), \
        f'docs/configs.md does not describe config key {key}'


def values_table():
    """docs/configs.md's 'Values per config' table: {key: [cell per id]}."""
    text = (REPO / 'docs' / 'configs.md').read_text()
    section = text.split('## Values per config', 1)[1].split('\n## ', 1)[0]
    rows = [cells_of(line) for line in section.splitlines()
            if line.startswith('| `')]
    return {r[0].strip('`'): r[1:] for r in rows}


def cells_of(line):
    return [c.strip() for c in line.strip().strip('|').split('|')]


def cell_matches(cell, value):
    if isinstance(value, (tuple, list)):
        return cell == 'x'.join(map(str, value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(cell) == value
    return cell == str(value)


def test_configs_doc_values_are_the_configs():
    """The per-config table shows every key that differs between configs
    (checkpoint names aside), each cell the config's value, so the doc
    cannot drift from configs.py."""
    from dldemos.VQVAE.configs import get_cfg
    full = [get_cfg(i) for i in range(len(cfgs))]
    table = values_table()
    differing = {k for k in full[0] if k not in ('vqvae_path',
                                                 'gen_model_path')
                 and any(c[k] != full[0][k] for c in full)}
    assert differing <= set(table), \
        f'docs/configs.md lacks rows for {sorted(differing - set(table))}'
    for key, row in table.items():
        assert len(row) == len(full), f'{key}: {len(row)} columns'
        wrong = [i for i, c in enumerate(full)
                 if not cell_matches(row[i], c[key])]
        assert not wrong, f'docs/configs.md: {key} wrong for configs {wrong}'
