"""Train the VQ-VAE (stage 1) on several processes with torchrun.

    torchrun --nproc_per_node=4 dldemos/VQVAE/dist_train_vqvae.py -c 4
    torchrun --nproc_per_node=2 dldemos/VQVAE/dist_train_vqvae.py -c 5 \\
        --device cpu                          # 2 CPU processes, gloo

Same flags as main.py. batch_size is per process: the effective batch is
batch_size x processes. Then train the prior with dist_train_pixelcnn.py, and
reconstruct / sample with `main.py --stages 2,4` (one process is enough).
"""
import os
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

from dldemos.VQVAE.dist_launch import fetch_data_once, launch
from dldemos.VQVAE.main import build_models, train_vqvae


def train(cfg, device, args):
    fetch_data_once(cfg, args.data_root,
                    ['train', 'test'] if cfg['eval_subset'] else ['train'])
    vqvae, _ = build_models(cfg)
    train_vqvae(vqvae, cfg, device, work_dir=args.work_dir,
                data_root=args.data_root, seed=args.seed, resume=args.resume)


def main(argv=None):
    launch(train, __doc__.splitlines()[0], argv)


if __name__ == '__main__':
    main()
