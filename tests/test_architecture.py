"""The package's shape: modules form a DAG, main.py is a script that only the
torchrun launchers import (for its two training functions), and main.py stays
short enough to read beside the tutorial."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'dldemos'


def module_name(path):
    return '.'.join(path.relative_to(REPO).with_suffix('').parts) \
        .removesuffix('.__init__')


def modules():
    return {module_name(p): p for p in PACKAGE.rglob('*.py')}


def imported(path, known):
    """(module, names) of every dldemos import in the file, top level or
    inside functions (a deferred import is still a dependency)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names
                    if a.name.startswith('dldemos')]
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith('dldemos'):
            names = [a.name for a in node.names]
            # `from dldemos.VQVAE import main` imports the module main
            subs = [f'{node.module}.{n}' for n in names
                    if f'{node.module}.{n}' in known]
            out += [(m, []) for m in subs] or [(node.module, names)]
    return out


def import_graph():
    known = modules()
    return {name: {m for m, _ in imported(path, known) if m in known}
            for name, path in known.items()}


def find_cycle(graph):
    """One cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = 'done'
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == \
        ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_package_imports_form_no_cycle():
    graph = import_graph()
    assert 'dldemos.VQVAE.main' in graph  # the walk sees the package
    cycle = find_cycle(graph)
    assert cycle is None, ' -> '.join(cycle)


def test_only_the_launchers_import_main_and_only_its_stages():
    known = modules()
    files = list(known.values()) + list((REPO / 'benchmarks').glob('*.py'))
    importers = {}
    for path in files:
        for mod, names in imported(path, known):
            if mod == 'dldemos.VQVAE.main':
                importers[path.name] = names
    assert set(importers) == {'dist_train_vqvae.py', 'dist_train_pixelcnn.py'}
    for names in importers.values():
        assert set(names) <= {'train_vqvae', 'train_generative_model'}


def test_main_reads_in_one_sitting():
    path = PACKAGE / 'VQVAE' / 'main.py'
    assert len(path.read_text().splitlines()) <= 260
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno < 60, node.name
