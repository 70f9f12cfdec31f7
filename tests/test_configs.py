"""Configs: the tutorial's values, fresh copies, and --cfg-options parsing."""
import pytest

from dldemos.VQVAE.configs import DEFAULTS, cfgs, get_cfg
from dldemos.utils.errors import UsageError
from dldemos.VQVAE.runtime.config_check import (apply_overrides, check_ranges,
                                        load_cfg, parse_value)

# The tutorial's configs (its configs.py; the text states dim, n_embedding,
# the CelebAHQ shapes and the PixelCNN sizes 15/128/32 and 15/384/256).
TUTORIAL = {
    0: dict(dataset_type='MNIST', img_shape=(1, 28, 28), dim=32,
            n_embedding=32, batch_size=256, n_epochs=20, lr=2e-4,
            n_epochs_2=50, batch_size_2=256, pixelcnn_n_blocks=15,
            pixelcnn_dim=128, pixelcnn_linear_dim=32),
    1: dict(dataset_type='CelebAHQ', img_shape=(3, 128, 128), dim=128,
            n_embedding=64, batch_size=64, n_epochs=30, lr=2e-4,
            n_epochs_2=200, batch_size_2=32),
    2: dict(dataset_type='CelebAHQ', img_shape=(3, 128, 128), dim=128,
            n_embedding=128, batch_size=64, n_epochs=30, lr=2e-4,
            n_epochs_2=200, batch_size_2=32),
    3: dict(dataset_type='CelebAHQ', img_shape=(3, 64, 64), dim=128,
            n_embedding=64, batch_size=64, n_epochs=20, lr=2e-4,
            n_epochs_2=200, batch_size_2=32),
    4: dict(dataset_type='CelebAHQ', img_shape=(3, 64, 64), dim=128,
            n_embedding=32, batch_size=64, n_epochs=20, lr=2e-4,
            n_epochs_2=100, batch_size_2=32),
}
CELEBAHQ_PIXELCNN = dict(pixelcnn_n_blocks=15, pixelcnn_dim=384,
                         pixelcnn_linear_dim=256)


@pytest.mark.parametrize('cfg_id', range(5))
def test_tutorial_values(cfg_id):
    cfg = get_cfg(cfg_id)
    expected = dict(TUTORIAL[cfg_id], l_w_embedding=1, l_w_commitment=0.25)
    if cfg_id > 0:
        expected.update(CELEBAHQ_PIXELCNN)
    for k, v in expected.items():
        assert cfg[k] == v, k
        assert type(cfg[k]) is type(v), k


@pytest.mark.parametrize('cfg_id', range(len(cfgs)))
def test_every_config_has_every_key(cfg_id):
    cfg = get_cfg(cfg_id)
    for k, v in DEFAULTS.items():
        assert k in cfg
    # the model and training keys main.py reads
    for k in TUTORIAL[0]:
        assert k in cfg
    assert cfg['vqvae_path'] != cfg['gen_model_path']


def test_checkpoint_names_are_distinct_across_configs():
    names = [get_cfg(i)[k] for i in range(len(cfgs))
             for k in ('vqvae_path', 'gen_model_path')]
    assert len(set(names)) == len(names)


def test_get_cfg_returns_a_fresh_copy():
    cfg = get_cfg(0)
    cfg['dim'] = 999
    cfg['img_shape'] = (5, 5, 5)
    cfg['num_workers'] = -1
    again = get_cfg(0)
    assert again['dim'] == 32
    assert again['img_shape'] == (1, 28, 28)
    assert again['num_workers'] == DEFAULTS['num_workers']
    assert get_cfg(0) is not get_cfg(0)


@pytest.mark.parametrize('bad', [-1, len(cfgs), 100, '0', None, 1.0])
def test_unknown_id_lists_valid_ids(bad):
    with pytest.raises(ValueError) as e:
        get_cfg(bad)
    assert f'0-{len(cfgs) - 1}' in str(e.value)


@pytest.mark.parametrize('key,text,expected', [
    ('n_epochs', '5', 5),
    ('lr', '1e-3', 1e-3),
    ('lr', '1', 1.0),
    ('amp', 'false', False),
    ('amp', 'True', True),
    ('amp', '0', False),
    ('img_shape', '(3,32,32)', (3, 32, 32)),
    ('img_shape', '[1, 28, 28]', (1, 28, 28)),
    ('train_subset', '100', 100),
    ('train_subset', 'None', None),
    ('top_k', '5', 5),
    ('sampler', 'naive', 'naive'),
    ('vqvae_path', 'runs/a.pth', 'runs/a.pth'),
    ('eval_subset', 'None', None),
    ('n_classes', '10', 10),
])
def test_apply_overrides_parses_to_the_keys_type(key, text, expected):
    cfg = apply_overrides(get_cfg(0), [f'{key}={text}'])
    assert cfg[key] == expected
    assert type(cfg[key]) is type(expected)


def test_apply_overrides_several_keys_and_value_with_equals():
    cfg = apply_overrides(get_cfg(5), ['n_epochs=1', 'lr=0.5',
                                       'vqvae_path=a=b.pth'])
    assert (cfg['n_epochs'], cfg['lr'], cfg['vqvae_path']) == \
        (1, 0.5, 'a=b.pth')


def test_apply_overrides_rejects_unknown_key_listing_valid_keys():
    with pytest.raises(UsageError) as e:
        apply_overrides(get_cfg(0), ['n_epoch=5'])
    msg = str(e.value)
    assert "'n_epoch'" in msg
    for k in ('n_epochs', 'lr', 'dim', 'train_subset'):
        assert k in msg


@pytest.mark.parametrize('option', [
    'n_epochs=five', 'n_epochs=2.5', 'lr=fast', 'amp=maybe',
    'img_shape=3', 'dim=(1,2)', 'batch_size=True', 'n_epochs',
    'lr=True', 'l_w_commitment=False', 'img_shape=(3,True,32)',
])
def test_apply_overrides_rejects_bad_values(option):
    # load_cfg: a float for a whole-number key (n_epochs=2.5) is parsed as
    # a number and refused by the range check
    with pytest.raises(UsageError) as e:
        load_cfg(0, [option])
    assert option.split('=')[0] in str(e.value)
    assert '\n' not in str(e.value)


def test_parse_value_none_default_accepts_text():
    assert parse_value('abc', None) == 'abc'
    assert parse_value('12', None) == 12


@pytest.mark.parametrize('cfg_id', range(len(cfgs)))
def test_shipped_configs_pass_the_range_checks(cfg_id):
    check_ranges(get_cfg(cfg_id))


@pytest.mark.parametrize('option', ['eval_subset=None', 'eval_subset=0',
                                    'top_k=1', 'n_epochs_2=0', 'lr=1',
                                    'pixelcnn_n_blocks=0'])
def test_range_checks_accept_edge_values(option):
    check_ranges(apply_overrides(get_cfg(0), [option]))


def test_n_classes_defaults_to_the_unconditional_prior():
    # the tutorial's configs, the quick one and the faces are unconditional;
    # 6 and 7 (MNIST beyond the tutorial) condition the prior on the digit
    assert all(get_cfg(i)['n_classes'] is None for i in (0, 1, 2, 3, 4, 5, 8))
    assert get_cfg(6)['n_classes'] == get_cfg(7)['n_classes'] == 10
    assert load_cfg(5, ['n_classes=10'])['n_classes'] == 10
    assert load_cfg(0, ['n_classes=None'])['n_classes'] is None


@pytest.mark.parametrize('cfg_id,option,expected', [
    (1, 'n_classes=10', 'CelebAHQ images have no labels'),
    (4, 'n_classes=2', 'CelebAHQ images have no labels'),
    (5, 'dataset_type=CelebA', 'CelebA images have no labels'),
    (5, 'n_classes=5', 'MNIST has 10 classes'),
    (0, 'n_classes=0', 'n_classes=0'),
    (0, 'n_classes=2.0', 'n_classes=2.0'),
])
def test_n_classes_needs_labels_that_fit(cfg_id, option, expected):
    options = [option] + (['n_classes=10', 'img_shape=(3,64,64)']
                          if option.startswith('dataset_type') else [])
    with pytest.raises(UsageError) as e:
        load_cfg(cfg_id, options)
    assert expected in str(e.value) and '\n' not in str(e.value)


def test_prior_hflip_needs_the_code_cache():
    from dldemos.VQVAE.runtime.config_check import load_cfg
    with pytest.raises(UsageError, match='use_code_cache=True') as e:
        load_cfg(8, ['prior_hflip=True', 'use_code_cache=False'])
    assert '\n' not in str(e.value)
