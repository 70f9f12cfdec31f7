"""runtime/setup.py, the one way main.py, evaluate.py and the launchers
start: every check before anything is written, one validator per thing."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dldemos.VQVAE import evaluate
from dldemos.VQVAE import main as main_mod
from dldemos.VQVAE.runtime.work_lock import LOCK_FILE

REPO = Path(__file__).resolve().parents[1]
TINY = ['dim=8', 'n_embedding=8', 'batch_size=16', 'batch_size_2=16',
        'train_subset=16', 'eval_subset=None', 'n_epochs=1', 'n_epochs_2=1',
        'num_workers=0', 'n_preview=0', 'pixelcnn_n_blocks=1',
        'pixelcnn_dim=8', 'pixelcnn_linear_dim=8', 'n_sample=4']


def error_of(capsys, entry, *argv):
    """Run an entry's main(argv): exit 2 and one stderr line, returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        entry.main([str(a) for a in argv])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


def train(root, work, *options, stages='1'):
    main_mod.main(['-c', '5', '--device', 'cpu', '--data-root', str(root),
                   '--work-dir', str(work), '--stages', stages,
                   '--cfg-options', *TINY, *options])


def test_a_checkpoint_named_like_a_code_cache_is_refused(capsys, tmp_path,
                                                         tiny_data_root):
    work = tmp_path / 'wd'
    msg = error_of(capsys, main_mod, '-c', 5, '--data-root', tiny_data_root,
                   '--work-dir', work, '--cfg-options', *TINY,
                   'gen_model_path=model_mnist_quick.codes_train16.pt')
    assert 'code cache of vqvae_path' in msg
    assert not work.exists()  # refused before anything was written


@pytest.mark.parametrize('name', ['config.json', 'log_vqvae.jsonl',
                                  'vqvae_sample_MNIST.jpg'])
def test_a_checkpoint_named_like_a_run_file_is_refused(capsys, tmp_path,
                                                       tiny_data_root, name):
    msg = error_of(capsys, main_mod, '-c', 5, '--data-root', tiny_data_root,
                   '--work-dir', tmp_path / 'wd', '--cfg-options', *TINY,
                   f'gen_model_path={name}')
    assert name in msg


def test_a_checkpoint_without_extension_is_fine(tmp_path, tiny_data_root):
    train(tiny_data_root, tmp_path, 'vqvae_path=mymodel')
    assert (tmp_path / 'mymodel').is_file()
    assert (tmp_path / 'mymodel.resume.pth').is_file()


@pytest.mark.parametrize('stages, missing', [('3', 'VQ-VAE'),
                                             ('2,3', 'VQ-VAE'),
                                             ('4', 'VQ-VAE')])
def test_a_missing_stage_input_is_said_before_the_work_dir_is_made(
        capsys, tmp_path, tiny_data_root, stages, missing):
    work = tmp_path / 'wd'
    msg = error_of(capsys, main_mod, '-c', 5, '--data-root', tiny_data_root,
                   '--work-dir', work, '--stages', stages,
                   '--cfg-options', *TINY)
    assert f'needs the {missing} checkpoint' in msg and '--stages 1' in msg
    assert not work.exists()


def test_a_stage_4_without_prior_names_stage_3(capsys, tmp_path,
                                               tiny_data_root):
    train(tiny_data_root, tmp_path)
    msg = error_of(capsys, main_mod, '-c', 5, '--data-root', tiny_data_root,
                   '--work-dir', tmp_path, '--stages', '4',
                   '--cfg-options', *TINY)
    assert 'PixelCNN checkpoint' in msg and '--stages 3' in msg


def test_evaluate_refuses_a_missing_work_dir_and_makes_none(capsys, tmp_path,
                                                            tiny_data_root):
    work = tmp_path / 'never_trained'
    msg = error_of(capsys, evaluate, '-c', 5, '--data-root', tiny_data_root,
                   '--work-dir', work)
    assert 'does not exist' in msg
    assert not work.exists()


@pytest.mark.parametrize('flag, value', [('--n-samples', 1),
                                         ('--eval-images', 1)])
def test_evaluate_refuses_one_image_up_front(capsys, tmp_path,
                                             tiny_data_root, flag, value):
    msg = error_of(capsys, evaluate, '-c', 5, '--data-root', tiny_data_root,
                   '--work-dir', tmp_path, flag, value)
    assert flag in msg


def test_a_checkpoint_folder_outside_the_work_dir_is_locked(
        capsys, tmp_path, tiny_data_root):
    """Two runs with different work dirs saving to one checkpoint folder
    would overwrite each other's weights: the second is refused."""
    shared = tmp_path / 'models'
    shared.mkdir()
    holder = subprocess.Popen(
        [sys.executable, '-c',
         'import sys, time; sys.path.insert(0, sys.argv[1]);'
         'from dldemos.VQVAE.runtime.work_lock import lock_work_dir;'
         'lock_work_dir(sys.argv[2]); print("locked", flush=True);'
         'time.sleep(60)', str(REPO), str(shared)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        msg = error_of(capsys, main_mod, '-c', 5, '--device', 'cpu',
                       '--data-root', tiny_data_root, '--work-dir',
                       tmp_path / 'wd', '--stages', '1', '--cfg-options',
                       *TINY, f'vqvae_path={shared / "m.pth"}')
        assert 'in use by another run' in msg and str(shared) in msg
        assert not (shared / 'm.pth').exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder gone, the same run goes through and leaves no lock held
    train(tiny_data_root, tmp_path / 'wd', f'vqvae_path={shared / "m.pth"}')
    assert (shared / 'm.pth').is_file() and (shared / LOCK_FILE).exists()


def test_a_work_dir_that_is_not_utf8_is_recorded(tmp_path, tiny_data_root):
    """Paths are bytes on Linux: command.txt keeps them as given."""
    work = bytes(tmp_path) + b'/run\xff'
    t = time.time()
    proc = subprocess.run(
        [sys.executable, str(REPO / 'dldemos/VQVAE/main.py'), '-c', '5',
         '--device', 'cpu', '--data-root', str(tiny_data_root),
         '--work-dir', work, '--stages', '1', '--cfg-options', *TINY],
        capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode(errors='replace')
    assert b'Traceback' not in proc.stderr
    command = (Path(work.decode(errors='surrogateescape')) /
               'command.txt').read_bytes()
    assert b'/run\xff' in command and time.time() - t < 600


def test_evaluate_without_c_uses_the_runs_config(capsys, tmp_path,
                                                 tiny_data_root):
    """A run trained with -c 5 and tiny --cfg-options is scored with them:
    with config 0's values its checkpoint would not even load."""
    train(tiny_data_root, tmp_path)
    capsys.readouterr()
    evaluate.main(['--device', 'cpu', '--data-root', str(tiny_data_root),
                   '--work-dir', str(tmp_path), '--n-samples', '0'])
    out = capsys.readouterr().out
    assert 'config 5' in out and 'config.json' in out
    assert 'psnr' in out


def test_a_data_error_in_a_dataloader_worker_is_one_line(capsys, tmp_path):
    """Workers re-raise with the worker's traceback as the message."""
    from torch.utils.data import DataLoader, Dataset

    from dldemos.utils.errors import DataError, report_errors

    class Broken(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            raise DataError('image 3 is unreadable: delete it')

    def read_all():
        for _ in DataLoader(Broken(), num_workers=1):
            pass

    assert report_errors(read_all) == 2
    assert capsys.readouterr().err.strip() == \
        'error: image 3 is unreadable: delete it'


def test_a_resume_point_of_the_previous_version_resumes(tmp_path,
                                                        tiny_data_root):
    """Resume points written before this layout had no config_id,
    param_names or data_split: they still resume."""
    import torch

    from dldemos.VQVAE.runtime.files import load_file, save_atomic
    train(tiny_data_root, tmp_path, 'lr_schedule=constant')
    path = tmp_path / 'model_mnist_quick.resume.pth'
    state = load_file(path)
    for key in ('param_names', 'data_split'):
        state.pop(key, None)
    state['config'].pop('config_id')
    save_atomic(state, path)
    main_mod.main(['-c', '5', '--device', 'cpu', '--data-root',
                   str(tiny_data_root), '--work-dir', str(tmp_path),
                   '--stages', '1', '--resume', '--cfg-options', *TINY,
                   'lr_schedule=constant', 'n_epochs=2'])
    assert load_file(path)['epoch'] == 2
    assert torch.equal(load_file(path)['model']['vq_embedding.weight'],
                       load_file(tmp_path / 'model_mnist_quick.pth')
                       ['vq_embedding.weight'])


@pytest.mark.parametrize('name', ['metrics.json', 'code_usage_MNIST.png',
                                  'eval_samples_MNIST.jpg'])
def test_evaluate_says_an_output_it_cannot_write_before_scoring(
        capsys, tmp_path, tiny_data_root, name):
    train(tiny_data_root, tmp_path)
    (tmp_path / name).mkdir()
    msg = error_of(capsys, evaluate, '--device', 'cpu', '--data-root',
                   tiny_data_root, '--work-dir', tmp_path)
    assert name in msg and 'is a folder' in msg
    assert not (tmp_path / 'mnist_classifier.pth').exists()  # no scoring
