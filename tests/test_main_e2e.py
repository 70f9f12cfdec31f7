"""main.py end to end on tiny generated data: every stage, every output file,
checkpoints that reload, stage selection, usage errors and repeatability."""
import json
import math
import shutil

import pytest
import torch
from PIL import Image

from dldemos.VQVAE import main as vq_main
from dldemos.VQVAE.training import epoch_runner
from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.runtime.resume_point import resume_path
from dldemos.VQVAE.runtime.config_check import apply_overrides
from dldemos.VQVAE.configs import get_cfg

# config 5 shrunk so that all four stages take about a second
MNIST_TINY = ['train_subset=64', 'eval_subset=32', 'n_sample=4',
              'n_epochs=2', 'n_epochs_2=1', 'batch_size=32',
              'batch_size_2=32', 'dim=16', 'pixelcnn_n_blocks=1',
              'pixelcnn_dim=8', 'pixelcnn_linear_dim=8', 'num_workers=0']
# config 4 (CelebAHQ 64x64, 32 codes) with a tiny VQ-VAE and prior
CELEBAHQ_TINY = ['n_epochs=1', 'n_epochs_2=1', 'batch_size=6',
                 'batch_size_2=6', 'dim=8', 'pixelcnn_n_blocks=1',
                 'pixelcnn_dim=8', 'pixelcnn_linear_dim=8', 'n_sample=4',
                 'eval_subset=2', 'num_workers=0']




def run_main(data_root, work_dir, cfg_id, options, stages='1,2,3,4',
             seed=0, extra=()):
    argv = ['-c', str(cfg_id), '--device', 'cpu', '--data-root',
            str(data_root), '--work-dir', str(work_dir), '--seed', str(seed),
            '--stages', stages, *extra]
    if options:
        argv += ['--cfg-options', *options]
    vq_main.main(argv)


def resolved_cfg(cfg_id, options, seed=0):
    """The config a run resolves: overrides applied, its --seed and config
    id recorded."""
    return dict(apply_overrides(get_cfg(cfg_id), options), seed=seed,
                config_id=cfg_id)


def load_state(path):
    state = torch.load(path, weights_only=True)
    assert isinstance(state, dict)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    return state


def expected_files(cfg):
    t = cfg['dataset_type']
    files = [cfg['vqvae_path'], cfg['gen_model_path'],
             resume_path(cfg['vqvae_path']),
             resume_path(cfg['gen_model_path']),
             f'vqvae_reconstruct_{t}.jpg', f'vqvae_sample_{t}.jpg',
             'config.json', 'command.txt', 'log_vqvae.jsonl',
             'log_pixelcnn.jsonl']
    return files


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def check_full_run(work_dir, cfg):
    for name in expected_files(cfg):
        assert (work_dir / name).is_file(), name
    # checkpoints reload strictly into the models the config builds
    vqvae, gen_model = build_models(cfg)
    vqvae.load_state_dict(load_state(work_dir / cfg['vqvae_path']))
    gen_model.load_state_dict(load_state(work_dir / cfg['gen_model_path']))
    for key, n in (('vqvae_path', cfg['n_epochs']),
                   ('gen_model_path', cfg['n_epochs_2'])):
        resume = torch.load(work_dir / resume_path(cfg[key]),
                            weights_only=True)
        assert resume['epoch'] == n and resume['step'] == 0
    # logs: one record per epoch, finite losses
    log_v = read_jsonl(work_dir / 'log_vqvae.jsonl')
    log_p = read_jsonl(work_dir / 'log_pixelcnn.jsonl')
    assert [r['epoch'] for r in log_v] == list(range(cfg['n_epochs']))
    assert [r['epoch'] for r in log_p] == list(range(cfg['n_epochs_2']))
    assert all(math.isfinite(r['loss']) for r in log_v + log_p)
    # the recorded config is the resolved one (overrides applied)
    with open(work_dir / 'config.json') as f:
        recorded = json.load(f)
    assert recorded == json.loads(json.dumps(cfg))
    # the sample grid: n_sample images of img_shape in a square grid
    C, H, W = cfg['img_shape']
    n1 = int(cfg['n_sample']**0.5)
    with Image.open(work_dir / f'vqvae_sample_{cfg["dataset_type"]}.jpg') \
            as img:
        assert img.size == (n1 * W, n1 * H)
        assert img.mode == ('L' if C == 1 else 'RGB')
    return vqvae, gen_model


@pytest.fixture(scope='module')
def mnist_run(tiny_data_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('mnist_run')
    run_main(tiny_data_root, work_dir, 5, MNIST_TINY)
    return work_dir


def test_mnist_all_stages(mnist_run):
    cfg = resolved_cfg(5, MNIST_TINY)
    check_full_run(mnist_run, cfg)
    with Image.open(mnist_run / 'vqvae_reconstruct_MNIST.jpg') as img:
        # 16 held-out images, originals and reconstructions side by side
        assert img.size == (4 * 2 * 28, 4 * 28)
    log_v = read_jsonl(mnist_run / 'log_vqvae.jsonl')
    assert all(math.isfinite(r['test_psnr']) for r in log_v)
    assert (mnist_run / 'model_mnist_quick.codes_train64.pt').is_file()


def test_celebahq_all_stages(tiny_data_root, tmp_path):
    cfg = resolved_cfg(4, CELEBAHQ_TINY)
    assert cfg['img_shape'] == (3, 64, 64)
    run_main(tiny_data_root, tmp_path, 4, CELEBAHQ_TINY)
    check_full_run(tmp_path, cfg)
    with Image.open(tmp_path / 'vqvae_reconstruct_CelebAHQ.jpg') as img:
        # the 2 held-out images of the 20-image folder, side by side
        assert img.size == (2 * 2 * 64, 64)
        assert img.mode == 'RGB'


def test_stages_3_4_from_existing_vqvae(mnist_run, tiny_data_root,
                                        tmp_path):
    cfg = resolved_cfg(5, MNIST_TINY)
    shutil.copy(mnist_run / cfg['vqvae_path'], tmp_path / cfg['vqvae_path'])
    before = load_state(tmp_path / cfg['vqvae_path'])
    run_main(tiny_data_root, tmp_path, 5, MNIST_TINY, stages='3,4')
    assert (tmp_path / cfg['gen_model_path']).is_file()
    assert (tmp_path / 'vqvae_sample_MNIST.jpg').is_file()
    assert not (tmp_path / 'vqvae_reconstruct_MNIST.jpg').exists()
    assert not (tmp_path / 'log_vqvae.jsonl').exists()
    after = load_state(tmp_path / cfg['vqvae_path'])
    for k in before:  # the VQ-VAE is frozen during prior training
        assert torch.equal(before[k], after[k]), k
    # same VQ-VAE, same seed: the same prior as the all-stages run
    ref = load_state(mnist_run / cfg['gen_model_path'])
    got = load_state(tmp_path / cfg['gen_model_path'])
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_prior_without_code_cache_matches_cached(mnist_run, tiny_data_root,
                                                 tmp_path):
    # The tutorial's path (encode each batch) and the code cache see the
    # same codes in the same order: the trained prior must be the same.
    cfg = resolved_cfg(5, MNIST_TINY)
    shutil.copy(mnist_run / cfg['vqvae_path'], tmp_path / cfg['vqvae_path'])
    run_main(tiny_data_root, tmp_path, 5, MNIST_TINY + ['use_code_cache=0'],
             stages='3')
    assert not (tmp_path / 'model_mnist_quick.codes_train64.pt').exists()
    ref = load_state(mnist_run / cfg['gen_model_path'])
    got = load_state(tmp_path / cfg['gen_model_path'])
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5,
                                   msg=k)


def usage_error(capsys, *args, **kwargs):
    with pytest.raises(SystemExit) as e:
        run_main(*args, **kwargs)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


def test_stage_2_without_vqvae_checkpoint(tiny_data_root, tmp_path, capsys):
    code, err = usage_error(capsys, tiny_data_root, tmp_path, 5, MNIST_TINY,
                            stages='2')
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith('error:')
    assert 'stage 1' in err and 'model_mnist_quick.pth' in err


def test_stage_4_without_prior_checkpoint(mnist_run, tiny_data_root,
                                          tmp_path, capsys):
    cfg = resolved_cfg(5, MNIST_TINY)
    shutil.copy(mnist_run / cfg['vqvae_path'], tmp_path / cfg['vqvae_path'])
    code, err = usage_error(capsys, tiny_data_root, tmp_path, 5, MNIST_TINY,
                            stages='4')
    assert code == 2 and len(err.splitlines()) == 1
    assert 'stage 3' in err


@pytest.mark.parametrize('stages,options', [
    ('5', MNIST_TINY), ('1,x', MNIST_TINY), ('', MNIST_TINY),
    ('1', ['n_epochz=1']), ('1', ['n_epochs=one']),
])
def test_usage_errors_exit_2_with_one_line(tiny_data_root, tmp_path, capsys,
                                           stages, options):
    code, err = usage_error(capsys, tiny_data_root, tmp_path, 5, options,
                            stages=stages)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith('error:')
    assert not (tmp_path / 'model_mnist_quick.pth').exists()


@pytest.mark.parametrize('options', [
    ['img_shape=(1,30,30)'],    # not a multiple of 4: decoder gives 28x28
    ['img_shape=(3,28,28)'],    # MNIST has one channel
    ['img_shape=(28,28)'],      # not (C, H, W)
])
def test_bad_img_shape_exits_2(tiny_data_root, tmp_path, capsys, options):
    code, err = usage_error(capsys, tiny_data_root, tmp_path, 5,
                            MNIST_TINY + options, stages='1')
    assert code == 2 and len(err.splitlines()) == 1
    assert 'img_shape' in err


def test_bad_celebahq_channels_exit_2(tiny_data_root, tmp_path, capsys):
    code, err = usage_error(capsys, tiny_data_root, tmp_path, 4,
                            CELEBAHQ_TINY + ['img_shape=(1,64,64)'],
                            stages='1')
    assert code == 2 and 'img_shape' in err


@pytest.mark.parametrize('make', ['missing', 'empty'])
def test_missing_image_folder_exits_2(tmp_path, capsys, make):
    data_root = tmp_path / 'data'
    folder = data_root / 'celebA' / 'celeba_hq_256'
    if make == 'empty':
        folder.mkdir(parents=True)
        (folder / 'README.txt').write_text('no images here')
    code, err = usage_error(capsys, data_root, tmp_path / 'work', 4,
                            CELEBAHQ_TINY, stages='1')
    assert code == 2 and len(err.splitlines()) == 1
    assert 'celeba_hq_256' in err and '--data-root' in err


@pytest.mark.parametrize('option', [
    'save_every=0', 'n_sample=0', 'top_k=0', 'batch_size=0',
    'batch_size_2=-1', 'dim=None', 'lr=None', 'lr=0', 'temperature=-1',
    'n_epochs=-1', 'train_subset=0', 'eval_subset=-5', 'n_embedding=0',
    'sampler=cachd', 'dataset_type=Foo',
])
def test_out_of_range_values_exit_2(tiny_data_root, tmp_path, capsys,
                                    option):
    code, err = usage_error(capsys, tiny_data_root, tmp_path, 5,
                            MNIST_TINY + [option], stages='1')
    assert code == 2 and len(err.splitlines()) == 1
    assert option.split('=')[0] in err
    assert not (tmp_path / 'model_mnist_quick.pth').exists()


def test_unknown_config_id_exits_2(tiny_data_root, tmp_path, capsys):
    from dldemos.VQVAE.configs import cfgs
    with pytest.raises(SystemExit) as e:
        vq_main.main(['-c', str(len(cfgs)), '--work-dir', str(tmp_path)])
    assert e.value.code == 2
    # the valid ids are named
    assert f'0-{len(cfgs) - 1}' in capsys.readouterr().err


def test_same_seed_gives_identical_checkpoints(mnist_run, tiny_data_root,
                                               tmp_path):
    cfg = resolved_cfg(5, MNIST_TINY)
    run_main(tiny_data_root, tmp_path, 5, MNIST_TINY)
    for key in ('vqvae_path', 'gen_model_path'):
        a = load_state(mnist_run / cfg[key])
        b = load_state(tmp_path / cfg[key])
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (key, k)
    sample = 'vqvae_sample_MNIST.jpg'
    assert (mnist_run / sample).read_bytes() == \
        (tmp_path / sample).read_bytes()


def test_other_seed_gives_other_checkpoint(mnist_run, tiny_data_root,
                                           tmp_path):
    # guards the test above: the seed does reach the training
    cfg = resolved_cfg(5, MNIST_TINY)
    run_main(tiny_data_root, tmp_path, 5, MNIST_TINY, stages='1', seed=1)
    a = load_state(mnist_run / cfg['vqvae_path'])
    b = load_state(tmp_path / cfg['vqvae_path'])
    assert any(not torch.equal(a[k], b[k]) for k in a)


# 4 batches per epoch, 2 epochs per stage: stops land mid-epoch
RESUME_OPTS = MNIST_TINY + ['batch_size=16', 'batch_size_2=16',
                            'n_epochs_2=2']


@pytest.fixture(scope='module')
def uninterrupted_run(tiny_data_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    run_main(tiny_data_root, work_dir, 5, RESUME_OPTS)
    return work_dir


@pytest.mark.parametrize('stop_at', [2, 5, 11])  # 1-8: stage 1, 9-16: 3
def test_stop_and_resume_equals_uninterrupted(uninterrupted_run,
                                              tiny_data_root, tmp_path,
                                              monkeypatch, stop_at):
    calls = []

    def stop_once(stop, device):  # as if SIGINT arrived during batch stop_at
        calls.append(1)
        return len(calls) == stop_at
    monkeypatch.setattr(epoch_runner, 'stop_requested', stop_once)
    with pytest.raises(SystemExit) as e:
        run_main(tiny_data_root, tmp_path, 5, RESUME_OPTS)
    assert e.value.code == 130
    # the message says to rerun with --resume: that finishes every stage
    monkeypatch.undo()
    run_main(tiny_data_root, tmp_path, 5, RESUME_OPTS, extra=['--resume'])
    cfg = resolved_cfg(5, RESUME_OPTS)
    for key in ('vqvae_path', 'gen_model_path'):
        a = load_state(uninterrupted_run / cfg[key])
        b = load_state(tmp_path / cfg[key])
        for k in a:
            assert torch.equal(a[k], b[k]), (key, k)
    for log in ('log_vqvae.jsonl', 'log_pixelcnn.jsonl'):
        ref = read_jsonl(uninterrupted_run / log)
        got = read_jsonl(tmp_path / log)
        assert [r['epoch'] for r in got] == [r['epoch'] for r in ref]
        for r, g in zip(ref, got):
            assert g['loss'] == pytest.approx(r['loss'], rel=1e-6)


def test_resume_without_resume_point_exits_2(tiny_data_root, tmp_path,
                                             capsys):
    code, err = usage_error(capsys, tiny_data_root, tmp_path, 5,
                            MNIST_TINY, stages='3', extra=['--resume'])
    assert code == 2 and 'stage 1' in err  # no VQ-VAE checkpoint


@pytest.mark.slow
def test_real_mnist_subset(shared_data, tmp_path):
    options = ['train_subset=512', 'eval_subset=128', 'n_sample=4',
               'n_epochs=2', 'n_epochs_2=1', 'batch_size=64',
               'batch_size_2=64', 'pixelcnn_n_blocks=2',
               'pixelcnn_dim=16', 'pixelcnn_linear_dim=16', 'num_workers=0']
    cfg = resolved_cfg(5, options)
    run_main(shared_data, tmp_path, 5, options)
    check_full_run(tmp_path, cfg)
    log_v = read_jsonl(tmp_path / 'log_vqvae.jsonl')
    # learning happens: reconstruction improves from epoch to epoch (the
    # total loss need not: the codebook terms grow while ze spreads out)
    assert log_v[1]['reconstruct'] < log_v[0]['reconstruct']
    assert log_v[1]['test_mse'] < log_v[0]['test_mse']
