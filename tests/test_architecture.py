"""The package's shape: modules form a DAG in layers, dldemos/VQVAE shows
the tutorial's files with the machinery in subpackages, main.py is a script
that only the torchrun launchers import (for its two training functions), and
main.py and evaluate.py stay short enough to read in one sitting."""
import pytest
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
    files = list(known.values()) + list((REPO / 'benchmarks').rglob('*.py'))
    importers = {}
    for path in files:
        for mod, names in imported(path, known):
            if mod == 'dldemos.VQVAE.main':
                importers[path.name] = names
    assert set(importers) == {'dist_train_vqvae.py', 'dist_train_pixelcnn.py'}
    for names in importers.values():
        assert set(names) <= {'train_vqvae', 'train_generative_model'}


@pytest.mark.parametrize('name, max_lines', [('main.py', 230),
                                             ('evaluate.py', 220)])
def test_entry_scripts_read_in_one_sitting(name, max_lines):
    path = PACKAGE / 'VQVAE' / name
    assert len(path.read_text().splitlines()) <= max_lines
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno < 60, node.name


def test_main_imports_at_most_12_project_modules():
    """Counted at module level: the `if __name__ == '__main__'` preamble
    that makes dldemos importable and sets the thread policy before torch
    loads runs only for the script, not for an importer."""
    tree = ast.parse((PACKAGE / 'VQVAE' / 'main.py').read_text())
    mods = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)
            and n.module.startswith('dldemos')}
    assert 0 < len(mods) <= 12, sorted(mods)


# what a reader of the tutorial looks for at the top of dldemos/VQVAE
TUTORIAL_FILES = {'configs', 'dataset', 'model', 'pixelcnn_model', 'main',
                  'dist_train_pixelcnn', 'dist_train_vqvae', 'evaluate',
                  'sampling', 'plots'}


def test_vqvae_top_level_holds_the_tutorials_files():
    top = {p.stem for p in (PACKAGE / 'VQVAE').glob('*.py')} - {'__init__'}
    assert TUTORIAL_FILES <= top and len(top) <= 12, sorted(top)


# layer of each part of the package: a module may import its own layer
# (within one package) or lower ones, never a higher one
LAYERS = [
    ('dldemos.utils', 'dldemos.pixelcnn'),
    ('dldemos.lmdb_loader', 'dldemos.VQVAE.configs', 'dldemos.VQVAE.dataset',
     'dldemos.VQVAE.model', 'dldemos.VQVAE.pixelcnn_model'),
    ('dldemos.VQVAE.runtime',),
    ('dldemos.VQVAE.loading', 'dldemos.VQVAE.sampling'),
    ('dldemos.VQVAE.plots',),
    ('dldemos.VQVAE.scoring',),
    ('dldemos.VQVAE.training',),
    ('dldemos.VQVAE.main', 'dldemos.VQVAE.evaluate',
     'dldemos.VQVAE.dist_train_vqvae', 'dldemos.VQVAE.dist_train_pixelcnn'),
]


def layer_of(module):
    for i, parts in enumerate(LAYERS):
        for part in parts:
            if module == part or module.startswith(part + '.'):
                return i, part
    return None, None


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer_of(m)[0] is None
               and m not in ('dldemos', 'dldemos.VQVAE')]
    assert not missing


def test_imports_go_down_the_layers():
    """runtime imports nothing from loading, training or scoring; scoring
    nothing from training; nothing imports an entry script but the
    launchers (checked above)."""
    bad = []
    for module, deps in import_graph().items():
        (mine, part) = layer_of(module)
        for dep in deps:
            theirs, dep_part = layer_of(dep)
            if mine is None or theirs is None or dep.startswith(
                    'dldemos.VQVAE.main'):
                continue
            if theirs > mine or (theirs == mine and part != dep_part and
                                 mine > 1):
                bad.append(f'{module} -> {dep}')
    assert not bad, bad


def test_layer_check_sees_a_violation():
    assert layer_of('dldemos.VQVAE.runtime.setup')[0] < \
        layer_of('dldemos.VQVAE.training.codebook')[0]
