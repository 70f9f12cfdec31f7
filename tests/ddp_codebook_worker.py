"""Run by tests/test_codebook.py under torchrun (2 gloo processes): each rank
trains the codebook options (k-means init, EMA updates, restarts of every
code at every step) on its own random batches, then saves its codebook,
trainer state and last encoder outputs to <out_dir>/rank<r>.pt."""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../..')))

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from dldemos.utils.dist_utils import (cleanup_distributed, get_rank,  # noqa: E402
                                setup_distributed)
from dldemos.VQVAE.training.codebook import CodebookTrainer  # noqa: E402
from dldemos.VQVAE.configs import get_cfg  # noqa: E402
from dldemos.VQVAE.model import VQVAE  # noqa: E402

OPTIONS = dict(n_embedding=8, dim=8, kmeans_init=True, codebook_ema=True,
               dead_code_restart=True, ema_decay=0.5,
               restart_threshold=1e9)  # every code dead at every step


def main(out_dir):
    setup_distributed('cpu')
    rank = get_rank()
    torch.manual_seed(rank)  # ranks build different models and batches
    vqvae = VQVAE(1, 8, 8)
    model = DistributedDataParallel(vqvae)  # rank 0's weights everywhere
    codebook = CodebookTrainer(dict(get_cfg(5), **OPTIONS))
    for _ in range(3):
        x = torch.rand(4, 1, 28, 28)  # [4, 1, 28, 28], this rank's own
        codebook.before_step(vqvae, x)
        with torch.no_grad():
            _, ze, _ = model(x)
        codebook.after_step(vqvae, ze)
    torch.save({'codebook': vqvae.vq_embedding.weight.detach(),
                'trainer': codebook.state_dict(), 'ze': ze},
               os.path.join(out_dir, f'rank{rank}.pt'))
    cleanup_distributed()


if __name__ == '__main__':
    main(sys.argv[1])
