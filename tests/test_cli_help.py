"""--help of every entry point: each option says its default, -c lists the
config ids, and a launcher's description is a whole sentence."""
import argparse

import pytest

from dldemos.VQVAE import (dataset, dist_train_pixelcnn, dist_train_vqvae,
                           evaluate, main, plots)
from dldemos.VQVAE.training import dist_launch
from dldemos.VQVAE.configs import CONFIG_NAMES

PARSERS = {
    'main.py': main.build_parser,
    'evaluate.py': evaluate.build_parser,
    'dist_train_vqvae.py': lambda: dist_launch.build_parser(
        dist_train_vqvae.__doc__),
    'dist_train_pixelcnn.py': lambda: dist_launch.build_parser(
        dist_train_pixelcnn.__doc__),
    'plots.py': plots.build_parser,
    'dataset.py': dataset.build_parser,
}


def flat(text):
    return ' '.join(text.split())


@pytest.mark.parametrize('name', PARSERS)
def test_every_option_says_its_default(name):
    parser = PARSERS[name]()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.default is False:
            continue  # --help and on/off switches
        assert action.help and '(default' in action.help, \
            (name, action.option_strings or action.dest)
    assert parser.description.endswith('.'), parser.description


@pytest.mark.parametrize('name', [n for n in PARSERS if '.py' in n
                                  and n not in ('plots.py', 'dataset.py')])
def test_config_flag_lists_every_id(name):
    text = flat(PARSERS[name]().format_help())
    for i, config in enumerate(CONFIG_NAMES):
        assert f'{i} = {flat(config)}' in text


def test_launcher_description_is_not_cut_mid_sentence():
    text = flat(PARSERS['dist_train_pixelcnn.py']().format_help())
    assert 'on several processes with torchrun, over the codes of a ' \
        'trained VQ-VAE.' in text
