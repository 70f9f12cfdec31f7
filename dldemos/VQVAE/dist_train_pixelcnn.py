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
    from dldemos.utils.threads import passive_wait, stop_quietly
    stop_quietly()  # Ctrl-C / SIGTERM while importing: one line, exit 130
    passive_wait()  # before torch loads OpenMP: idle threads sleep, not spin

from dldemos.VQVAE.runtime.build import build_models
from dldemos.VQVAE.training.dist_launch import launch
from dldemos.VQVAE.runtime.context import load_stage_input
from dldemos.VQVAE.main import train_generative_model


def train(ctx):
    vqvae, gen_model = build_models(ctx.cfg)
    load_stage_input(vqvae, ctx, 'vqvae_path', 3)
    train_generative_model(vqvae, gen_model, ctx)


def main(argv=None):
    launch(train, 3, __doc__, argv)


if __name__ == '__main__':
    main()
