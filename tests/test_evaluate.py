"""evaluate.py end to end on tiny trained models, and the MNIST classifier."""
import json
import math

import pytest
import torch

from dldemos.VQVAE import evaluate
from dldemos.VQVAE.scoring import mnist_classifier
from dldemos.VQVAE.main import main as train_main

# tiny models: the point is the pipeline and the schema, not the numbers
TINY = ['dim=8', 'n_embedding=16', 'pixelcnn_n_blocks=2', 'pixelcnn_dim=8',
        'pixelcnn_linear_dim=8', 'n_epochs=1', 'n_epochs_2=1',
        'batch_size=16', 'batch_size_2=16', 'n_sample=4', 'eval_subset=8']


def train_tiny(data_root, work_dir, cfg_id, extra=()):
    opts = TINY + list(extra)
    train_main(['-c', str(cfg_id), '--data-root', str(data_root),
                '--work-dir', str(work_dir), '--device', 'cpu',
                '--cfg-options', *opts])
    return opts


def run_evaluate(data_root, work_dir, cfg_id, opts, *extra):
    evaluate.main(['-c', str(cfg_id), '--data-root', str(data_root),
                   '--work-dir', str(work_dir), '--device', 'cpu',
                   '--cfg-options', *opts, *extra])
    with open(work_dir / 'metrics.json') as f:
        return json.load(f)


@pytest.mark.slow
def test_evaluate_mnist_writes_the_schema(tiny_data_root, tmp_path, capsys):
    opts = train_tiny(tiny_data_root, tmp_path, 5)
    m = run_evaluate(tiny_data_root, tmp_path, 5, opts, '--n-samples', '12',
                     '--classifier-epochs', '1', '--classifier-subset', '64')
    assert m['config']['n_embedding'] == 16
    assert set(m['checkpoints']) == {'vqvae', 'gen_model'}
    assert all(c['epochs_trained'] == 1 for c in m['checkpoints'].values())
    v = m['vqvae']
    assert v['n_images'] == 32  # the whole tiny test split
    assert 0 < v['mse'] < 1 and v['psnr'] == pytest.approx(
        -10 * math.log10(v['mse']))
    assert -1 <= v['ssim'] <= 1
    assert 1 <= v['codes_used'] <= 16
    assert 1 <= v['perplexity'] <= v['codes_used'] + 1e-9
    assert sum(v['code_counts']) == 32 * 7 * 7
    assert (tmp_path / 'code_usage_MNIST.png').stat().st_size > 0
    p = m['prior']
    assert p['n_images'] == 32
    assert p['uniform_nats_per_latent'] == pytest.approx(math.log(16))
    assert p['bits_per_dim'] == pytest.approx(
        p['nll_nats_per_latent'] * 49 / (784 * math.log(2)))
    s = m['samples']
    assert s['n_samples'] == 12 and s['fid_feature'] == 'mnist-classifier'
    assert s['fid'] >= 0
    for ref in ('reconstructions_vs_test', 'train_vs_test'):
        assert s['reference'][ref]['fid'] >= 0
        assert s['reference'][ref]['n_images'] == 12
    assert 0 <= s['classifier']['test_accuracy'] <= 1
    assert sum(s['class_histogram']) == 12 and len(s['class_histogram']) == 10
    assert 0.1 <= s['mean_confidence'] <= 1
    assert (tmp_path / 'eval_samples_MNIST.jpg').stat().st_size > 0
    assert (tmp_path / mnist_classifier.CKPT_NAME).exists()
    assert 'psnr' in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_faces_skips_fid_without_cached_inception(
        tiny_data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    opts = train_tiny(tiny_data_root, tmp_path, 3,
                      ['img_shape=(3,16,16)', 'num_workers=0'])
    m = run_evaluate(tiny_data_root, tmp_path, 3, opts, '--n-samples', '2')
    assert m['vqvae']['n_images'] == 2  # last 10% of 20 files
    assert m['prior']['n_images'] == 2
    s = m['samples']
    assert s['fid'] is None and s['fid_feature'] == 'inception-v3'
    assert 'not found' in s['skipped']


def test_evaluate_without_checkpoints_says_what_to_do(tiny_data_root,
                                                       tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(['-c', '5', '--data-root', str(tiny_data_root),
                       '--work-dir', str(tmp_path), '--device', 'cpu'])
    assert e.value.code == 2
    assert 'train first' in capsys.readouterr().err


def test_classifier_is_cached_and_reloaded(tiny_data_root, tmp_path):
    logs = []
    model, info = mnist_classifier.load_or_train(
        tmp_path, tiny_data_root, 'cpu', epochs=1, train_subset=32,
        log=logs.append)
    assert 0 <= info['test_accuracy'] <= 1 and len(logs) == 2
    again, info2 = mnist_classifier.load_or_train(
        tmp_path, tiny_data_root, 'cpu', epochs=1, train_subset=32,
        log=logs.append)
    assert len(logs) == 2  # not trained again
    assert info2['test_accuracy'] == info['test_accuracy']
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    state = torch.load(info['path'], weights_only=True)  # plain state dict
    assert set(state) == set(model.state_dict())
    # other settings: trained again
    mnist_classifier.load_or_train(tmp_path, tiny_data_root, 'cpu', epochs=1,
                                   train_subset=16, log=logs.append)
    assert len(logs) == 4


def test_classifier_features_and_probabilities():
    model = mnist_classifier.MNISTClassifier()
    feats, probs = mnist_classifier.predict(model, torch.rand(5, 1, 28, 28),
                                            'cpu', batch_size=2)
    assert feats.shape == (5, 128) and probs.shape == (5, 10)
    assert torch.allclose(probs.sum(-1), torch.ones(5))
    assert (feats >= 0).all()  # after ReLU


# ------------------------------------------- what exists is what is scored
QUICK = ['dim=8', 'n_embedding=16', 'pixelcnn_n_blocks=1', 'pixelcnn_dim=8',
         'pixelcnn_linear_dim=8', 'n_epochs=1', 'n_epochs_2=1',
         'batch_size=16', 'batch_size_2=16', 'train_subset=32',
         'n_sample=4', 'eval_subset=8', 'n_preview=2', 'num_workers=0']


def train_quick(data_root, work_dir, stages):
    train_main(['-c', '5', '--data-root', str(data_root), '--work-dir',
                str(work_dir), '--device', 'cpu', '--stages', stages,
                '--cfg-options', *QUICK])


def test_evaluate_a_vqvae_without_prior(tiny_data_root, tmp_path):
    train_quick(tiny_data_root, tmp_path, '1')
    m = run_evaluate(tiny_data_root, tmp_path, 5, QUICK, '--eval-images',
                     '8')  # returns: exit 0
    v = m['vqvae']
    assert v['n_images'] == 8 and 0 < v['mse'] < 1
    assert v['psnr'] == pytest.approx(-10 * math.log10(v['mse']))
    assert 'set-level' in v['psnr_convention']
    for part in ('prior', 'samples'):
        assert set(m[part]) == {'skipped'}
        assert 'no PixelCNN checkpoint' in m[part]['skipped']
    assert set(m['checkpoints']) == {'vqvae'}
    assert not (tmp_path / mnist_classifier.CKPT_NAME).exists()


def test_evaluate_with_prior_says_what_bits_per_dim_counts(tiny_data_root,
                                                          tmp_path):
    train_quick(tiny_data_root, tmp_path, '1,3')
    m = run_evaluate(tiny_data_root, tmp_path, 5, QUICK, '--eval-images',
                     '8', '--n-samples', '0')
    p = m['prior']
    assert 'skipped' not in p and p['n_images'] == 8
    assert 'code' in p['bits_per_dim_counts']
    assert p['bits_per_dim'] > 0
    assert m['samples'] == {'n_samples': 0}


def test_evaluate_has_no_resume_flag(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(['--help'])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert '--work-dir' in help_text and '--resume' not in help_text
    with pytest.raises(SystemExit) as e:
        evaluate.main(['--resume'])
    assert e.value.code == 2
    assert '--resume' in capsys.readouterr().err


@pytest.mark.parametrize('flags', [
    ['--eval-images', '0'], ['--eval-images', '-5'], ['--batch-size', '-1'],
    ['--batch-size', '0'], ['--classifier-subset', '0'],
    ['--classifier-epochs', '0'], ['--sample-batch', '0'],
    ['--n-samples', '-1'], 'work-dir-is-a-file',
])
def test_evaluate_bad_flags_exit_2_with_one_line(tiny_data_root, tmp_path,
                                                 capsys, flags):
    work_dir = tmp_path / 'wd'
    if flags == 'work-dir-is-a-file':
        work_dir.write_text('not a folder')
        flags, expected = [], 'is a file'
    else:
        expected = flags[0]
    with pytest.raises(SystemExit) as e:
        evaluate.main(['-c', '5', '--device', 'cpu', '--data-root',
                       str(tiny_data_root), '--work-dir', str(work_dir),
                       *flags])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert expected in lines[0]
    if flags:  # refused before the work dir is made
        assert not work_dir.exists()
    else:
        assert work_dir.read_text() == 'not a folder'
