"""The patch distance of samples (scoring/swd.py) where no classifier
exists: in evaluate.py's metrics.json and printout, and per prior epoch."""
import json

import pytest

from dldemos.VQVAE import evaluate
from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.runtime.files import file_sha256

TINY_FACES = ['img_shape=(3,32,32)', 'dim=8', 'n_embedding=8',
              'batch_size=8', 'batch_size_2=8', 'n_epochs=1', 'n_epochs_2=1',
              'num_workers=0', 'n_preview=0', 'pixelcnn_n_blocks=1',
              'pixelcnn_dim=8', 'pixelcnn_linear_dim=8', 'n_sample=4',
              'eval_subset=2', 'kmeans_init=False']


def face_run(root, work, *options):
    main_mod.main(['-c', '8', '--device', 'cpu', '--data-root', str(root),
                   '--work-dir', str(work), '--cfg-options', *TINY_FACES,
                   *options])
    return work


@pytest.fixture(scope='module')
def tiny_face_run(tiny_data_root, tmp_path_factory):
    return face_run(tiny_data_root, tmp_path_factory.mktemp('faces'))


def test_evaluate_reports_the_patch_distance_beside_its_references(
        tiny_data_root, tiny_face_run, capsys):
    evaluate.main(['-c', '8', '--device', 'cpu', '--data-root',
                   str(tiny_data_root), '--work-dir', str(tiny_face_run),
                   '--n-samples', '4', '--cfg-options', *TINY_FACES])
    s = json.loads((tiny_face_run / 'metrics.json').read_text())['samples']
    for key in ('swd', 'swd_ref_reconstructions', 'swd_ref_train'):
        assert s[key] >= 0 and s[key] == s[key]  # a number, not NaN
        assert set(s['swd_levels'][key]) == {'32x32', '16x16'}
    out = capsys.readouterr().out
    assert all(k in out for k in ('swd ', 'swd_ref_reconstructions',
                                  'swd_ref_train'))


def test_the_prior_logs_a_sample_distance_each_epoch_without_changing_it(
        tiny_data_root, tiny_face_run, tmp_path):
    work = face_run(tiny_data_root, tmp_path, 'epoch_swd_samples=4',
                    'n_epochs_2=2')
    plain = face_run(tiny_data_root, tmp_path / 'plain', 'n_epochs_2=2')
    records = [json.loads(line) for line in
               (work / 'log_pixelcnn.jsonl').read_text().splitlines()]
    assert len(records) == 2
    assert all(r['sample_swd'] >= 0 for r in records)
    assert all('sample_swd' not in json.loads(line) for line in
               (plain / 'log_pixelcnn.jsonl').read_text().splitlines())
    # a private generator draws the samples: training is the same
    name = 'gen_model_celeba.pth'
    assert file_sha256(work / name) == file_sha256(plain / name)


def test_a_changed_face_folder_is_said_by_evaluate_and_resume(
        tiny_data_root, tmp_path, capsys):
    """Delete the faces that sort last after training: the last 10% moves
    onto training images. Held-out scores would then flatter the model."""
    import shutil

    root = tmp_path / 'data'
    shutil.copytree(tiny_data_root / 'celebA', root / 'celebA')
    work = face_run(root, tmp_path / 'run', 'n_epochs_2=1')
    folder = root / 'celebA' / 'img_align_celeba'
    evaluate.main(['-c', '8', '--device', 'cpu', '--data-root', str(root),
                   '--work-dir', str(work), '--n-samples', '0',
                   '--cfg-options', *TINY_FACES])
    m = json.loads((work / 'metrics.json').read_text())
    assert m['split_changed'] is None  # untouched: nothing to say
    for face in sorted(folder.glob('*.jpg'))[-2:]:
        face.unlink()
    capsys.readouterr()
    evaluate.main(['-c', '8', '--device', 'cpu', '--data-root', str(root),
                   '--work-dir', str(work), '--n-samples', '0',
                   '--cfg-options', *TINY_FACES])
    assert 'split changed' in capsys.readouterr().out
    m = json.loads((work / 'metrics.json').read_text())
    assert 'train afresh' in m['split_changed']
    main_mod.main(['-c', '8', '--device', 'cpu', '--data-root', str(root),
                   '--work-dir', str(work), '--stages', '1', '--resume',
                   '--cfg-options', *TINY_FACES, 'n_epochs=2'])
    assert 'split changed' in capsys.readouterr().out


def test_evaluate_grids_are_upscaled_to_be_judged(tiny_data_root,
                                                  tiny_face_run):
    """32x32 faces: cells upscaled 4x (nearest) to 128 pixels; the
    reconstruction grid pairs originals with reconstructions."""
    from PIL import Image
    evaluate.main(['-c', '8', '--device', 'cpu', '--data-root',
                   str(tiny_data_root), '--work-dir', str(tiny_face_run),
                   '--n-samples', '4', '--cfg-options', *TINY_FACES])
    with Image.open(tiny_face_run / 'eval_samples_CelebA.jpg') as img:
        assert img.size == (2 * 128, 2 * 128)  # 4 samples, 2x2
    with Image.open(tiny_face_run / 'eval_reconstruct_CelebA.jpg') as img:
        assert img.size == (2 * 2 * 128, 128)  # 2 held-out: 1 row of pairs
