"""Your own images (dataset_type 'ImageFolder', config 9): any folder of any
image format and mode, classes from first-level subfolders, a per-class
held-out split the same for the folder and its LMDB, the tutorial's LMDB
files read and written both ways, and bad input in one line."""
import io
import json
import os
import pickle

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

from dldemos import lmdb_loader
from dldemos.lmdb_loader import (ImageFolderLMDB, LMDBImageDataset,
                                 folder2lmdb, folder_to_lmdb)
from dldemos.utils import image_folder
from dldemos.utils.errors import DataError, UsageError
from dldemos.utils.image_folder import decode_image, scan_folder
from dldemos.VQVAE import main as vq_main
from dldemos.VQVAE.configs import cfgs, get_cfg
from dldemos.VQVAE.dataset import (CropFit, ImageFolderDataset,
                                   files_fingerprint, get_dataset)
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.runtime.config_check import load_cfg
from test_lmdb import fail_third_open

RNG = np.random.default_rng(0)


def rgb(h=20, w=24, seed=0):
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)
    return Image.fromarray(arr)


def labelled_folder(root, counts=None, nested=True):
    """root/<class>/... PNGs (every third one a level deeper), a non-image
    file and a hidden folder to ignore: {class: number of images}."""
    counts = counts or {'cats': 10, 'dogs': 11, 'owls': 12}
    for c, n in counts.items():
        for i in range(n):
            sub = 'deeper/' if nested and i % 3 == 0 else ''
            path = root / c / sub / f'{i:03d}.png'
            path.parent.mkdir(parents=True, exist_ok=True)
            rgb(16 + i, 20, seed=hash((c, i)) % 1000).save(path)
    (root / next(iter(counts)) / 'notes.txt').write_text('not an image')
    (root / '.ipynb_checkpoints').mkdir(exist_ok=True)
    rgb().save(root / '.ipynb_checkpoints' / 'x.png')
    return root


def flat_folder(root, n=12):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb(18, 22, seed=i).save(root / f'{i:03d}.jpg')
    return root


# ------------------------------------------------------------ modes
def gradient(dtype, top):
    """A 32x32 ramp from 0 to `top` (its mean is top / 2)."""
    return (np.linspace(0, top, 32 * 32).reshape(32, 32)).astype(dtype)


def odd_mode_images(folder):
    """{file name: expected mean grey level in [0, 255]} of one image in
    each awkward mode."""
    folder.mkdir(parents=True, exist_ok=True)
    want = {}
    Image.fromarray(gradient(np.uint16, 65535)).save(folder / 'g16.png')
    want['g16.png'] = 127.5  # 16-bit grey PNG (mode I;16)
    Image.fromarray(gradient(np.uint16, 65535)).save(folder / 'i16.tif')
    want['i16.tif'] = 127.5
    Image.fromarray(gradient(np.int32, 65535)).save(folder / 'i32.tif')
    want['i32.tif'] = 127.5  # 32-bit integer TIFF holding 16-bit values
    Image.fromarray(gradient(np.int32, 10**8)).save(folder / 'i32big.tif')
    want['i32big.tif'] = 127.5  # stretched over its own range
    Image.fromarray(gradient(np.float32, 1.0)).save(folder / 'f32.tif')
    want['f32.tif'] = 127.5  # float TIFF in [0, 1]
    Image.fromarray(gradient(np.float32, 1000.0)).save(folder / 'f32big.tif')
    want['f32big.tif'] = 127.5
    grey = Image.fromarray(gradient(np.uint8, 255))
    grey.save(folder / 'l.png')
    want['l.png'] = 127.5
    rgba = Image.merge('RGBA', [grey] * 3 + [Image.new('L', (32, 32), 128)])
    rgba.save(folder / 'rgba.png')
    want['rgba.png'] = 127.5
    grey.convert('P').save(folder / 'p.png')
    want['p.png'] = 127.5
    grey.convert('RGB').convert('CMYK').save(folder / 'cmyk.jpg')
    want['cmyk.jpg'] = 127.5
    return want


def test_every_mode_decodes_to_8_bits_without_clipping(tmp_path):
    """PIL's convert('RGB') clips 16-bit, 32-bit and float pixels at 255:
    a 16-bit ramp came out white. Each mode now keeps its mid grey."""
    want = odd_mode_images(tmp_path / 'modes')
    for name, mean in want.items():
        for mode in ('RGB', 'L'):
            img = decode_image(str(tmp_path / 'modes' / name), mode)
            assert img.mode == mode
            arr = np.asarray(img, dtype=np.float64)
            assert abs(arr.mean() - mean) < 4, (name, mode, arr.mean())
            assert arr.min() < 10 and arr.max() > 245, name  # full range


def test_odd_modes_train_as_one_folder(tmp_path):
    odd_mode_images(tmp_path / 'modes')
    ds = ImageFolderDataset(str(tmp_path / 'modes'), (16, 16), 'all')
    x = torch.stack([ds[i] for i in range(len(ds))])
    assert x.shape == (10, 3, 16, 16)
    assert 0.3 < float(x.mean()) < 0.7  # none white, none black


# ------------------------------------------------------------ listing
def test_labelled_folder_has_a_class_per_first_level_subfolder(tmp_path):
    root = labelled_folder(tmp_path / 'lab')
    f = scan_folder(str(root))
    assert f.classes == ['cats', 'dogs', 'owls']
    assert len(f.names) == 33  # the .txt and the hidden folder left out
    assert f.names == sorted(f.names)
    for name, y in zip(f.names, f.labels):
        assert name.split('/')[0] == f.classes[y]  # deeper ones included
    assert any(n.startswith('cats/deeper/') for n in f.names)


@pytest.mark.parametrize('layout', ['flat', 'one_subfolder', 'mixed'])
def test_folders_without_a_choice_of_class_are_flat(tmp_path, layout,
                                                    capsys):
    root = tmp_path / 'f'
    if layout == 'flat':
        flat_folder(root)
    elif layout == 'one_subfolder':
        flat_folder(root / 'all' / 'deep')
    else:
        labelled_folder(root, {'a': 3, 'b': 3})
        rgb().save(root / 'top.png')
    f = scan_folder(str(root))
    assert f.classes is None and f.labels is None and len(f.names) >= 6
    if layout == 'mixed':
        assert 'top level' in capsys.readouterr().err


def test_listing_opens_at_most_one_file(tmp_path, monkeypatch):
    """A folder of 100,000 images must list in seconds: files are found by
    extension, never opened (decoding waits for training)."""
    root = tmp_path / 'many'
    for c in range(4):
        (root / f'c{c}').mkdir(parents=True)
        for i in range(500):
            (root / f'c{c}' / f'{i:05d}.jpg').write_bytes(b'')
    rgb().save(root / 'c0' / '00000.jpg')  # the one header read
    opened = []
    real = Image.open
    monkeypatch.setattr(Image, 'open',
                        lambda *a, **k: opened.append(a) or real(*a, **k))
    f = scan_folder(str(root))
    assert len(f.names) == 2000 and len(opened) <= 1


# ------------------------------------------------------------ split
@pytest.mark.parametrize('counts', [{'a': 10, 'b': 11, 'c': 25},
                                    {'a': 2, 'b': 3}, {'a': 1, 'b': 40}])
def test_held_out_is_the_last_tenth_of_each_class(tmp_path, counts):
    root = labelled_folder(tmp_path / 'lab', counts, nested=False)
    parts = {s: ImageFolderDataset(str(root), (8, 8), s, with_labels=True)
             for s in ('train', 'test', 'all')}
    train, test = set(parts['train'].filenames), set(parts['test'].filenames)
    assert train.isdisjoint(test)
    assert train | test == set(parts['all'].filenames)
    for c, n in counts.items():
        names = sorted(x for x in parts['all'].filenames
                       if x.startswith(c + '/'))
        n_test = 0 if n == 1 else max(1, round(n * 0.1))
        assert [x for x in names if x in test] == names[n - n_test:]


def test_a_class_of_one_image_is_said_and_trained_on(tmp_path, capsys):
    root = labelled_folder(tmp_path / 'lab', {'a': 1, 'b': 5}, nested=False)
    ds = ImageFolderDataset(str(root), (8, 8), 'train')
    assert 'a/000.png' in ds.filenames
    err = capsys.readouterr().err
    assert 'cannot be held out' in err and ' a' in err


def test_folder_and_lmdb_hold_out_the_same_images(tmp_path):
    root = labelled_folder(tmp_path / 'lab')
    (root / 'dogs' / '999.png').write_bytes(b'junk')  # unreadable, listed
    db_path = tmp_path / 'lab.lmdb'
    assert folder_to_lmdb(str(root), str(db_path), progress=False) == 34
    for split in ('train', 'test', 'all'):
        folder = get_dataset('ImageFolder', (16, 16), str(root), split,
                             with_labels=True)
        db = get_dataset('ImageFolder', (16, 16), str(root), split,
                         use_lmdb=True, with_labels=True)  # root + .lmdb
        assert db.names == folder.filenames and db.labels == folder.labels
        assert db.classes == folder.classes
        for i in range(len(folder)):
            (a, ya), (b, yb) = folder[i], db[i]
            assert torch.equal(a, b) and ya == yb


def test_a_skipped_file_brings_its_own_label(tmp_path, capsys):
    root = labelled_folder(tmp_path / 'lab', {'a': 4, 'b': 4}, nested=False)
    (root / 'a' / '003.png').write_bytes(b'junk')  # last of class a
    ds = ImageFolderDataset(str(root), (8, 8), 'all', with_labels=True)
    i = ds.filenames.index('a/003.png')
    x, y = ds[i]
    assert y == 1 and torch.equal(x, ds[i + 1][0])  # b/000.png, class b
    assert 'a/003.png' in capsys.readouterr().err


def test_fingerprint_follows_the_files(tmp_path):
    root = labelled_folder(tmp_path / 'lab', {'a': 5, 'b': 5}, nested=False)

    def fp():
        return files_fingerprint(ImageFolderDataset(str(root), (8, 8)))
    before = fp()
    assert fp() == before
    (root / 'b' / '001.png').unlink()
    assert fp() != before


def test_crop_fit_keeps_the_aspect_and_cuts_the_centre():
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 20:60] = 255  # the centre square is white
    out = np.asarray(CropFit((16, 16))(Image.fromarray(arr)))
    assert out.shape == (16, 16, 3) and out.min() > 200


# ------------------------------------------------------------ LMDB formats
def tutorial_folder2lmdb(img_dir, output_path):
    """The tutorial's converter as its description defines it: every file of
    the folder in sorted order under keys '0', '1', ..., each value the
    file's bytes pickled, then `__keys__` (the pickled list of keys) and
    `__len__` (their pickled count); a single-file LMDB when output_path
    does not exist, data.mdb inside it when it is a folder."""
    names = sorted(os.listdir(img_dir))
    db = lmdb.open(output_path, subdir=os.path.isdir(output_path),
                   map_size=1 << 28)
    keys = []
    with db.begin(write=True) as txn:
        for i, name in enumerate(names):
            with open(os.path.join(img_dir, name), 'rb') as f:
                txn.put(str(i).encode('ascii'), pickle.dumps(f.read()))
            keys.append(str(i).encode('ascii'))
        txn.put(b'__keys__', pickle.dumps(keys))
        txn.put(b'__len__', pickle.dumps(len(keys)))
    db.sync()
    db.close()
    return names


def tutorial_read_all(db_path):
    """The tutorial's ImageFolderLMDB as described: `__len__` and
    `__keys__` unpickled, each value unpickled to the file bytes and opened
    as an RGB image."""
    env = lmdb.open(db_path, subdir=os.path.isdir(db_path), readonly=True,
                    lock=False, readahead=False, meminit=False)
    with env.begin() as txn:
        n = pickle.loads(txn.get(b'__len__'))
        keys = pickle.loads(txn.get(b'__keys__'))
        imgs = [Image.open(io.BytesIO(pickle.loads(txn.get(k))))
                .convert('RGB') for k in keys[:n]]
    env.close()
    return imgs


@pytest.mark.parametrize('form', ['file', 'folder'])
def test_an_lmdb_of_the_tutorials_converter_is_read(tmp_path, form):
    folder = flat_folder(tmp_path / 'faces', 12)
    out = tmp_path / 'faces.lmdb'
    if form == 'folder':
        out.mkdir()
    names = tutorial_folder2lmdb(str(folder), str(out))
    assert out.is_file() == (form == 'file')
    db = ImageFolderLMDB(str(out))
    assert len(db) == 12
    for i, name in enumerate(names):
        want = Image.open(folder / name).convert('RGB')
        assert np.array_equal(np.asarray(db[i]), np.asarray(want))
    # and by a config-9 run's dataset: the last 10% by key order held out
    test = get_dataset('ImageFolder', (16, 16), str(out), 'test',
                       use_lmdb=True)
    assert test.names == ['11']


@pytest.mark.parametrize('form', ['file', 'folder'])
def test_an_lmdb_of_ours_is_read_by_the_tutorials_reader(tmp_path, form):
    root = labelled_folder(tmp_path / 'lab', {'a': 3, 'b': 4})
    out = tmp_path / 'lab.lmdb'
    if form == 'folder':
        out.mkdir()
    assert folder2lmdb(str(root), str(out)) == 7
    assert out.is_file() == (form == 'file')
    names = scan_folder(str(root)).names
    got = tutorial_read_all(str(out))
    assert len(got) == len(names)
    for img, name in zip(got, names):
        want = Image.open(root / name).convert('RGB')
        assert np.array_equal(np.asarray(img), np.asarray(want))
    with pytest.raises(FileExistsError):
        folder2lmdb(str(root), str(out))


def test_an_old_project_lmdb_is_still_read(tmp_path):
    """This project's first format: file names as keys, raw bytes, a JSON
    key list and a version-1 meta record."""
    folder = flat_folder(tmp_path / 'f', 5)
    names = sorted(os.listdir(folder))
    path = tmp_path / 'old.lmdb'
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for n in names:
            txn.put(n.encode(), (folder / n).read_bytes())
        txn.put(b'__keys__', json.dumps(names).encode())
        txn.put(b'__meta__', json.dumps({
            'format_version': 1, 'dataset_type': None, 'count': 5,
            'names_sha256': image_folder.names_checksum(names)}).encode())
    env.close()
    db = LMDBImageDataset(str(path), 'all')
    assert db.names == names
    assert np.array_equal(np.asarray(db[2]),
                          np.asarray(Image.open(folder / names[2])))


class Payload:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('where', ['__keys__', '__len__', 'image'])
def test_a_hostile_pickle_is_refused_and_never_runs(tmp_path, where, capsys):
    folder = flat_folder(tmp_path / 'f', 4)
    path = tmp_path / 'x.lmdb'
    tutorial_folder2lmdb(str(folder), str(path))
    marker = tmp_path / 'RAN'
    key = b'2' if where == 'image' else where.encode()
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(key, pickle.dumps(Payload(marker)))
    env.close()
    with pytest.raises(DataError) as e:
        db = LMDBImageDataset(str(path), 'all')
        [db[i] for i in range(len(db))]
    msg = str(e.value)
    assert '\n' not in msg and repr(key.decode()) in msg
    assert 'run code' in msg
    assert not marker.exists()
    # and through main.py: one line, exit 2
    with pytest.raises(SystemExit) as e:
        run_main(path, tmp_path / 'w', ['use_lmdb=True', *TINY], '1')
    assert e.value.code == 2 and not marker.exists()


def test_bytes_altered_after_conversion_are_skipped(tmp_path, capsys):
    folder = flat_folder(tmp_path / 'f', 5)
    path = tmp_path / 'x.lmdb'
    folder2lmdb(str(folder), str(path))
    db = ImageFolderLMDB(str(path))
    clean = [np.asarray(db[i]) for i in range(5)]
    other = (folder / '004.jpg').read_bytes()  # decodes, but is not 001
    lmdb_loader.drop(str(path))
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b'1', pickle.dumps(other))
    env.close()
    db = ImageFolderLMDB(str(path))
    assert np.array_equal(np.asarray(db[1]), clean[2])  # the next one
    err = capsys.readouterr().err
    assert '001.jpg' in err and 'checksum' in err


# ------------------------------------------------------------ config 9
TINY = ['img_shape=(3,16,16)', 'n_epochs=1', 'n_epochs_2=1', 'dim=8',
        'n_embedding=8', 'pixelcnn_n_blocks=1', 'pixelcnn_dim=8',
        'pixelcnn_linear_dim=8', 'num_workers=0', 'n_sample=6',
        'batch_size=8', 'batch_size_2=8', 'eval_subset=8', 'n_preview=2',
        'kmeans_init=False']


def run_main(data_root, work_dir, options=(), stages='1,2,3,4'):
    argv = ['-c', '9', '--device', 'cpu', '--threads', '1', '--data-root',
            str(data_root), '--work-dir', str(work_dir), '--stages', stages]
    vq_main.main(argv + ['--cfg-options', *options] if options else argv)


def test_config_9_is_your_images_at_64():
    cfg = get_cfg(9)
    assert cfg['dataset_type'] == 'ImageFolder'
    assert tuple(cfg['img_shape']) == (3, 64, 64)
    assert cfg['n_classes'] == 'auto' and cfg['img_fit'] == 'crop'
    for k in ('codebook_ema', 'kmeans_init', 'dead_code_restart',
              'restart_threshold', 'dim', 'n_embedding'):
        assert cfg[k] == get_cfg(8)[k], k
    for i in range(len(cfgs)):  # no other config gets 'auto'
        assert i == 9 or get_cfg(i)['n_classes'] != 'auto'


def test_classes_resolve_from_the_folder(tmp_path):
    root = labelled_folder(tmp_path / 'lab')
    cfg = load_cfg(9, [], 0, data_root=str(root))
    assert cfg['n_classes'] == 3
    assert cfg['class_names'] == ['cats', 'dogs', 'owls']
    for option, n in (('n_classes=None', None), ('n_classes=3', 3)):
        assert load_cfg(9, [option], 0,
                        data_root=str(root))['n_classes'] == n
    flat = flat_folder(tmp_path / 'flat')
    assert load_cfg(9, [], 0, data_root=str(flat))['n_classes'] is None
    for bad, where in (('n_classes=5', root), ('n_classes=3', flat),
                       ('n_classes=1', root)):
        with pytest.raises(UsageError) as e:
            load_cfg(9, [bad], 0, data_root=str(where))
        assert '\n' not in str(e.value)


@pytest.mark.slow
def test_labelled_folder_trains_all_four_stages(tmp_path):
    root = labelled_folder(tmp_path / 'lab')
    rgb().save(root / 'owls' / 'x.gif')  # any format PIL reads
    (root / 'dogs' / 'broken.jpg').write_bytes(b'\xff\xd8junk')
    work = tmp_path / 'w'
    run_main(root, work, TINY)
    cfg = json.loads((work / 'config.json').read_text())
    assert cfg['n_classes'] == 3
    assert cfg['class_names'] == ['cats', 'dogs', 'owls']
    state = torch.load(resume_path(str(work / 'gen_model_images.pth')),
                       weights_only=True)
    assert state['config']['class_names'] == cfg['class_names']
    assert 'class_bias' in ''.join(state['model'])  # conditional prior
    grid = Image.open(work / 'vqvae_sample_ImageFolder.jpg')
    assert grid.size[1] == 3 * 16  # a row per class
    assert (work / 'vqvae_reconstruct_ImageFolder.jpg').is_file()


def test_flat_folder_trains_an_unconditional_prior(tmp_path):
    root = flat_folder(tmp_path / 'flat', 12)
    work = tmp_path / 'w'
    run_main(root, work, TINY)
    cfg = json.loads((work / 'config.json').read_text())
    assert cfg['n_classes'] is None and cfg['class_names'] is None
    assert (work / 'vqvae_sample_ImageFolder.jpg').is_file()


def test_grey_images_train_with_one_channel(tmp_path):
    root = flat_folder(tmp_path / 'flat', 6)
    run_main(root, tmp_path / 'w', [*TINY, 'img_shape=(1,12,8)'], '1,2')
    img = Image.open(tmp_path / 'w' / 'vqvae_reconstruct_ImageFolder.jpg')
    assert img.mode == 'L'


def make_bad(tmp_path, case):
    if case == 'no_readable_image':
        (tmp_path / 'd').mkdir()
        for i in range(3):
            (tmp_path / 'd' / f'{i}.jpg').write_bytes(b'junk')
        return tmp_path / 'd', [], 'can be read'
    if case == 'no_image_at_all':
        (tmp_path / 'd' / 'sub').mkdir(parents=True)
        (tmp_path / 'd' / 'sub' / 'a.txt').write_text('x')
        return tmp_path / 'd', [], 'holds no image'
    if case == 'data_root_is_a_file':
        rgb().save(tmp_path / 'one.png')
        return tmp_path / 'one.png', [], 'is a file'
    if case == 'one_image':
        flat_folder(tmp_path / 'd', 1)
        return tmp_path / 'd', [], 'too few'
    if case == 'shape':
        flat_folder(tmp_path / 'd', 4)
        return tmp_path / 'd', ['img_shape=(3,30,30)'], 'multiples of 4'
    if case == 'channels':
        flat_folder(tmp_path / 'd', 4)
        return tmp_path / 'd', ['img_shape=(2,32,32)'], '(1, H, W) or'
    if case == 'missing':
        return tmp_path / 'nowhere', [], 'does not exist'
    if case == 'no_lmdb':
        flat_folder(tmp_path / 'd', 4)
        return tmp_path / 'd', ['use_lmdb=True'], 'lmdb_loader.py'
    raise ValueError(case)


@pytest.mark.parametrize('case', ['no_readable_image', 'no_image_at_all',
                                  'data_root_is_a_file', 'one_image',
                                  'shape', 'channels', 'missing', 'no_lmdb'])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    root, options, words = make_bad(tmp_path, case)
    work = tmp_path / 'w'
    with pytest.raises(SystemExit) as e:
        run_main(root, work, options, '1')
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err, err
    assert words in err, err
    assert not work.exists()


# ------------------------------------------------------------ classifier
def test_the_folder_classifier_is_trained_once_and_cached(tmp_path):
    from dldemos.VQVAE.scoring import mnist_classifier as clf
    root = labelled_folder(tmp_path / 'lab')
    cfg = load_cfg(9, ['img_shape=(3,16,16)'], 0, data_root=str(root))
    logs = []
    model, info = clf.load_or_train(tmp_path, str(root), 'cpu', 1, None,
                                    logs.append, cfg)
    assert (tmp_path / clf.FOLDER_CKPT_NAME).is_file() and len(logs) == 2
    assert 0 <= info['test_accuracy'] <= 1
    assert info['settings']['classes'] == ['cats', 'dogs', 'owls']
    feats, probs = clf.predict(model, torch.rand(4, 3, 16, 16), 'cpu')
    assert feats.shape == (4, 128) and probs.shape == (4, 3)
    clf.load_or_train(tmp_path, str(root), 'cpu', 1, None, logs.append, cfg)
    assert len(logs) == 2  # cached
    (root / 'dogs' / '001.png').unlink()  # other files: trained again
    clf.load_or_train(tmp_path, str(root), 'cpu', 1, None, logs.append, cfg)
    assert len(logs) == 4


@pytest.mark.parametrize('shape', [(1, 28, 28), (3, 64, 64), (3, 256, 128)])
def test_the_classifier_takes_any_image_shape(shape):
    from dldemos.VQVAE.scoring.mnist_classifier import Classifier
    model = Classifier(n_classes=5, in_channels=shape[0], img_hw=shape[1:])
    assert model(torch.rand(2, *shape)).shape == (2, 5)
    # the feature layer stays small for large images
    assert model.fc.in_features <= 64 * 8 * 8


def test_config_9_trains_from_a_tutorial_lmdb(tmp_path):
    root = labelled_folder(tmp_path / 'lab', {'a': 5, 'b': 5})
    out = tmp_path / 'lab.lmdb'
    folder2lmdb(str(root), str(out))  # single file, labels in the names
    run_main(out, tmp_path / 'w', [*TINY, 'use_lmdb=True'])
    cfg = json.loads((tmp_path / 'w' / 'config.json').read_text())
    assert cfg['class_names'] == ['a', 'b']
    flat = flat_folder(tmp_path / 'flat', 8)
    tutorial_folder2lmdb(str(flat), str(tmp_path / 'flat.lmdb'))
    # --data-root the folder: its LMDB beside it, <folder>.lmdb
    run_main(flat, tmp_path / 'w2', [*TINY, 'use_lmdb=True'], '1')
    assert (tmp_path / 'w2' / 'model_images.pth').is_file()


@pytest.mark.slow
def test_evaluate_scores_a_labelled_folder_with_its_own_classifier(tmp_path):
    from dldemos.VQVAE import evaluate
    root = labelled_folder(tmp_path / 'lab')
    work = tmp_path / 'w'
    run_main(root, work, TINY)
    evaluate.main(['-c', '9', '--device', 'cpu', '--threads', '1',
                   '--data-root', str(root), '--work-dir', str(work),
                   '--n-samples', '6', '--classifier-epochs', '1',
                   '--cfg-options', *TINY])
    m = json.loads((work / 'metrics.json').read_text())
    assert m['config']['class_names'] == ['cats', 'dogs', 'owls']
    assert 'each class' in m['held_out']
    assert m['vqvae']['n_images'] == 3  # one held out of each class
    s = m['samples']
    assert s['fid_feature'] == 'folder-classifier' and s['fid'] >= 0
    assert 0 <= s['conditional_accuracy'] <= 1
    assert len(s['class_histogram']) == 3
    assert (work / 'folder_classifier.pth').is_file()
    assert m['prior']['nll_nats_per_latent'] > 0
    # without -c: the config and values the run trained with
    (work / 'metrics.json').unlink()
    evaluate.main(['--device', 'cpu', '--threads', '1', '--data-root',
                   str(root), '--work-dir', str(work), '--n-samples', '0'])
    again = json.loads((work / 'metrics.json').read_text())
    assert again['config']['class_names'] == m['config']['class_names']
    assert again['prior'] == m['prior']


def test_a_failed_single_file_conversion_leaves_nothing(tmp_path,
                                                       monkeypatch):
    folder = flat_folder(tmp_path / 'f', 6)
    fail_third_open(monkeypatch)
    out = tmp_path / 'f.lmdb'
    with pytest.raises(DataError) as e:
        folder2lmdb(str(folder), str(out))
    assert '\n' not in str(e.value) and '002.jpg' in str(e.value)
    assert not out.exists() and not (tmp_path / 'f.lmdb.tmp').exists()
