"""Codebook training options of the VQ-VAE (all off by default, which is the
tutorial's training: the embedding loss moves the codes).

- Dead-code restarts (`dead_code_restart`): an EMA (decay `ema_decay`) of how
  many encoder outputs each code got per batch; a code whose EMA falls below
  `restart_threshold` is moved onto a random encoder output of the batch.
- EMA codebook updates (`codebook_ema`, the VQ-VAE paper's appendix A.1):
  N_i <- g N_i + (1-g) n_i, m_i <- g m_i + (1-g) (sum of the z assigned to
  code i), e_i = m_i / N_i with Laplace-smoothed N_i. The codebook then gets
  no gradient: main.py zeroes the embedding loss's weight
  (`l_w_embedding` here) and leaves it out of the optimizer (`optimized`).
- k-means initialisation (`kmeans_init`): before the first step, Lloyd's
  iterations on the first batch's encoder outputs, from random ones.

Their state (usage EMA, N, m, steps taken) lives in `CodebookTrainer`'s
buffers, which the epoch runner keeps in the resume point: the model file
stays the tutorial's plain VQVAE state dict. Under DDP every rank ends each
step with the same codebook: counts and sums are all-reduced before they are
used, and random choices are rank 0's, broadcast.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dldemos.utils.dist_utils import all_reduce_sum, broadcast, is_main
from dldemos.utils.precision import full_fp32
from dldemos.VQVAE.model import nearest_neighbor

KMEANS_ITERS = 10       # Lloyd iterations: a first batch settles in fewer
EMA_EPS = 1e-5          # Laplace smoothing of the EMA counts
KMEANS, RESTART = 0, 1  # salts: each kind of random choice has its stream
UNSEEN = -1.0           # statistics not started yet (see CodebookTrainer)


def flat(ze):
    """[N, C, H, W] -> [N*H*W, C] fp32 rows, one per latent position."""
    return ze.permute(0, 2, 3, 1).reshape(-1, ze.shape[1]).float()


def pick_rows(z, n, generator):
    """n random rows of z [M, C] -> [n, C]: distinct rows while M allows,
    so that codes started from them differ."""
    M = z.shape[0]
    idx = torch.randperm(M, generator=generator)[:n] if M >= n else \
        torch.randint(M, (n,), generator=generator)
    return z[idx.to(z.device)]


def assigned_stats(z, codes, k):
    """[k, C+1]: per code, the sum of the rows of z [M, C] assigned to it
    (codes [M]) and, last, their count. A one-hot matmul, not index_add_:
    deterministic on GPUs too (resumes must be exact), in full fp32."""
    ones = z.new_ones(z.shape[0], 1)
    with torch.autocast(z.device.type, enabled=False), full_fp32():
        onehot = F.one_hot(codes, k).float()  # [M, k]
        return onehot.t() @ torch.cat([z, ones], 1)  # [k, C+1]


def kmeans(z, k, generator, iters=KMEANS_ITERS):
    """k centres [k, C] of the rows of z [M, C]: Lloyd's iterations from k
    random rows. A centre that loses all its rows stays where it is."""
    centres = pick_rows(z, k, generator)  # [k, C]
    for _ in range(iters):
        stats = assigned_stats(z, nearest_neighbor(z, centres), k)
        count = stats[:, -1:]  # [k, 1]
        centres = torch.where(count > 0, stats[:, :-1] / count.clamp(min=1),
                              centres)
    return centres


def from_rank0(make, shape, like):
    """make() as rank 0 computes it, on every rank (others only receive)."""
    out = make() if is_main() else like.new_empty(shape)
    return broadcast(out.contiguous())


class CodebookTrainer(nn.Module):
    """The codebook options of one VQ-VAE training run, and their state.

    main.py's step calls before_step(vqvae, x) before the forward pass and
    after_step(vqvae, ze) after the optimizer step; both do nothing with the
    options off. Statistics start (from UNSEEN) the first time an option
    uses them, so a run resumed with an option newly on starts it afresh.
    """

    def __init__(self, cfg):
        super().__init__()
        k, c = cfg['n_embedding'], cfg['dim']
        self.restart, self.ema = cfg['dead_code_restart'], cfg['codebook_ema']
        self.kmeans, self.decay = cfg['kmeans_init'], cfg['ema_decay']
        self.threshold = cfg['restart_threshold']
        self.seed = cfg.get('seed', 0)
        # EMA updates replace the embedding loss; 'embedding' is still shown
        self.l_w_embedding = 0.0 if self.ema else cfg['l_w_embedding']
        # encoder outputs per batch (all ranks) each code got, decayed
        self.register_buffer('usage', torch.full((k,), UNSEEN))
        self.register_buffer('ema_count', torch.full((k,), UNSEEN))  # N_i
        self.register_buffer('ema_sum', torch.zeros(k, c))  # m_i
        self.steps = 0     # steps trained: picks the random streams
        self.restarts = 0  # codes restarted so far

    # steps and restarts are Python ints (no GPU sync to read them), saved
    # as one tensor so the resume point stays a tensors-only state dict
    def get_extra_state(self):
        return torch.tensor([self.steps, self.restarts])

    def set_extra_state(self, state):
        self.steps, self.restarts = (int(v) for v in state.tolist())

    def optimized(self, vqvae):
        """The VQ-VAE parameters the optimizer trains: under EMA updates all
        but the codebook, which they set themselves."""
        skip = vqvae.vq_embedding.weight if self.ema else None
        return [p for p in vqvae.parameters() if p is not skip]

    def generator(self, salt):
        """Rank 0's random stream for this step: a function of (seed, step),
        so a resumed run draws what an uninterrupted one drew, and the
        global RNG (saved at epoch starts) is left alone."""
        return torch.Generator().manual_seed(
            hash((self.seed, self.steps, salt)) % 2**63)

    @torch.no_grad()
    def before_step(self, vqvae, x):
        """k-means initialisation, at the first step of a run: rank 0
        clusters its batch's encoder outputs, every rank takes the result."""
        if not (self.kmeans and self.steps == 0):
            return
        weight = vqvae.vq_embedding.weight  # [K, C]
        weight.copy_(from_rank0(
            lambda: kmeans(flat(vqvae.encoder(x)), len(weight),
                           self.generator(KMEANS)), weight.shape, weight))

    @torch.no_grad()
    def after_step(self, vqvae, ze):
        """What each code got in this batch (all ranks), then the EMA update
        and dead-code restarts. ze: [N, C, H, W], this step's encoder
        outputs. Under EMA the optimizer left the codebook alone, so these
        are the forward pass's assignments; restarts alone count against
        the codebook the optimizer just moved (close enough for usage)."""
        if self.ema or self.restart:
            weight = vqvae.vq_embedding.weight  # [K, C]
            z = flat(ze)  # [M, C]
            stats = all_reduce_sum(assigned_stats(
                z, nearest_neighbor(z, weight), len(weight)))  # [K, C+1]
            if self.ema:
                self.ema_update(weight, stats[:, :-1], stats[:, -1])
            if self.restart:
                self.restart_dead(weight, z, stats[:, -1])
        self.steps += 1

    def ema_update(self, weight, sums, counts):
        """sums [K, C], counts [K]: this batch's, over all ranks."""
        # statistics start where the codebook stands: N_i = 1, m_i = e_i
        start = self.ema_count == UNSEEN  # [K]
        self.ema_sum.copy_(torch.where(start[:, None], weight, self.ema_sum))
        self.ema_count.masked_fill_(start, 1.0)
        g = self.decay
        self.ema_count.mul_(g).add_(counts, alpha=1 - g)  # [K]
        self.ema_sum.mul_(g).add_(sums, alpha=1 - g)  # [K, C]
        # Laplace smoothing: a code nobody chose divides by eps, not by 0
        n = self.ema_count.sum()
        smoothed = (self.ema_count + EMA_EPS) / \
            (n + len(weight) * EMA_EPS) * n  # [K]
        weight.copy_(self.ema_sum / smoothed[:, None])

    def restart_dead(self, weight, z, counts):
        """Codes unused for a while move onto random rows of rank 0's z
        [M, C]; counts [K]: this batch's, over all ranks."""
        # a code starting now is credited an even share of the batch: it
        # takes a while of disuse to fall below the threshold
        share = counts.sum() / len(weight)
        self.usage.copy_(torch.where(self.usage == UNSEEN, share,
                                     self.usage))
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        dead = self.usage < self.threshold  # [K], the same on every rank
        n_dead = int(dead.sum())
        if not n_dead:
            return
        rows = from_rank0(lambda: pick_rows(z, n_dead,
                                            self.generator(RESTART)),
                          (n_dead, z.shape[1]), weight)  # [n_dead, C]
        weight[dead] = rows
        self.usage[dead] = share
        if self.ema:  # so that e_i = m_i / N_i starts at the new place
            self.ema_sum[dead] = rows
            self.ema_count[dead] = 1.0
        self.restarts += n_dead
