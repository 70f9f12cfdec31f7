"""Train the Gated PixelCNN prior (stage 3) on several processes with
torchrun, over the codes of a trained VQ-VAE.

    torchrun --nproc_per_node=4 dldemos/VQVAE/dist_train_pixelcnn.py -c 4
    torchrun --nproc_per_node=2 dldemos/VQVAE/dist_train_pixelcnn.py -c 5 \\
        --device cpu                          # 2 CPU processes, gloo

Same flags as main.py; needs the config's VQ-VAE checkpoint (train it with
dist_train_vqvae.py or main.py --stages 1). batch_size_2 is per process.
With the code cache (use_code_cache=True) rank 0 encodes the data once and the
other ranks read the cache: on several nodes the work dir must be shared.
"""
import os
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

from dldemos.VQVAE.checkpoint import load_model
from dldemos.VQVAE.dist_launch import fetch_data_once, launch
from dldemos.VQVAE.main import build_models, train_generative_model
from dldemos.VQVAE.runtime import UsageError, ckpt_path


def train(cfg, device, args):
    vqvae_path = ckpt_path(cfg, 'vqvae_path', args.work_dir)
    if not os.path.isfile(vqvae_path):
        raise UsageError(f'the prior needs the VQ-VAE checkpoint {vqvae_path}'
                         ', which does not exist: train it first with '
                         'dist_train_vqvae.py (or main.py --stages 1) and the '
                         'same -c, --work-dir and --cfg-options')
    fetch_data_once(cfg, args.data_root,
                    ['train', 'test'] if cfg['eval_subset'] else ['train'])
    vqvae, gen_model = build_models(cfg)
    load_model(vqvae, vqvae_path, 'VQ-VAE checkpoint')
    train_generative_model(vqvae, gen_model, cfg, device,
                           work_dir=args.work_dir, data_root=args.data_root,
                           seed=args.seed, resume=args.resume)


def main(argv=None):
    launch(train, __doc__.splitlines()[0], argv)


if __name__ == '__main__':
    main()
