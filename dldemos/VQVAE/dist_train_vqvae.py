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
    from dldemos.utils.threads import passive_wait, stop_quietly
    stop_quietly()  # Ctrl-C / SIGTERM while importing: one line, exit 130
    passive_wait()  # before torch loads OpenMP: idle threads sleep, not spin

from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.training.dist_launch import launch
from dldemos.VQVAE.main import train_vqvae


def train(ctx):
    vqvae, _ = build_models(ctx.cfg)
    train_vqvae(vqvae, ctx)


def main(argv=None):
    launch(train, 1, __doc__, argv)


if __name__ == '__main__':
    main()
