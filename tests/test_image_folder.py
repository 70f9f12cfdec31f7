"""dldemos/utils/image_folder.py: the one place that says which files of a folder a
dataset uses; a leaf module that the folder dataset and the LMDB code share."""
import ast
import os
import subprocess
import sys

from conftest import REPO


def imports_of(path):
    """Every module `path` imports, also inside functions."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, 'relative import'
            yield node.module


def test_image_folder_imports_only_stdlib_pil_and_errors():
    mods = list(imports_of(REPO / 'dldemos' / 'utils' / 'image_folder.py'))
    assert mods
    for mod in mods:
        top = mod.split('.')[0]
        assert top in sys.stdlib_module_names or top == 'PIL' \
            or mod == 'dldemos.utils.errors', mod


def test_lmdb_loader_does_not_import_the_app_dataset_module():
    mods = set(imports_of(REPO / 'dldemos' / 'lmdb_loader.py'))
    assert 'dldemos.utils.image_folder' in mods
    assert not any(m.startswith('dldemos.VQVAE') for m in mods), mods


def test_converting_and_reading_an_lmdb_loads_no_app_module(tmp_path):
    code = f'''
import sys
sys.path.insert(0, {str(REPO)!r})
sys.path.insert(0, {str(REPO / 'tests')!r})
from conftest import make_face_folder
from dldemos.lmdb_loader import LMDBImageDataset, folder_to_lmdb
folder = make_face_folder({str(tmp_path / 'f')!r}, 4, (32, 32))
folder_to_lmdb(str(folder), {str(tmp_path / 'f.lmdb')!r}, progress=False)
db = LMDBImageDataset({str(tmp_path / 'f.lmdb')!r}, 'train')
assert db[0].size == (32, 32)
loaded = [m for m in sys.modules
          if m.startswith('dldemos.VQVAE') or m == 'torchvision']
assert not loaded, loaded
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr


def test_dataset_module_still_exports_the_folder_helpers():
    from dldemos.utils import image_folder
    from dldemos.VQVAE import dataset
    for name in ('list_images', 'split_files', 'IMG_EXTENSIONS',
                 'HELD_OUT_FRACTION'):
        assert getattr(dataset, name) is getattr(image_folder, name), name
    assert callable(dataset.readable_images)
