"""VQ-VAE of the tutorial: encoder, codebook (`vq_embedding`) and decoder.

Module names and shapes are the tutorial's, so its checkpoints load unchanged.
"""
import torch
import torch.nn as nn

from dldemos.utils.precision import full_fp32


class ResidualBlock(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        tmp = self.relu(x)
        tmp = self.conv1(tmp)
        tmp = self.relu(tmp)
        tmp = self.conv2(tmp)
        return x + tmp


# Eager even under torch.compile: full_fp32 flips global settings, which
# must happen when the matmul runs, not while dynamo traces
@torch.compiler.disable
def nearest_neighbor(z, embedding, chunk_rows=65536):
    """Index of the nearest codebook row for each row of z.

    z: [M, C], embedding: [K, C] -> [M] (long).
    Uses |z|^2 - 2 z.e + |e|^2 instead of the tutorial's [N, K, C, H, W]
    broadcast, which at the paper's scale (K=512, C=256, 32x32, batch 32)
    needs ~17 GB. |z|^2 is constant per row, so it does not change the argmin
    and is left out. Rows are processed in chunks so the [M, K] distance
    matrix stays bounded. Computed in full fp32 even under autocast or a
    float32 matmul precision of 'high' / 'medium': TF32 / bf16 distances flip
    near-ties and change which code is chosen.
    """
    with torch.autocast(z.device.type, enabled=False), full_fp32():
        z = z.float()
        e = embedding.float()
        e_sq = (e * e).sum(1)  # [K]
        out = []
        for zc in z.split(chunk_rows):
            distance = e_sq - 2 * zc @ e.t()  # [m, K]
            out.append(distance.argmin(1))
    return torch.cat(out) if out else z.new_zeros(0, dtype=torch.long)


class VQVAE(nn.Module):

    def __init__(self, input_dim, dim, n_embedding):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(input_dim, dim, 4, 2, 1),
                                     nn.ReLU(), nn.Conv2d(dim, dim, 4, 2, 1),
                                     nn.ReLU(), nn.Conv2d(dim, dim, 3, 1, 1),
                                     ResidualBlock(dim), ResidualBlock(dim))
        self.vq_embedding = nn.Embedding(n_embedding, dim)
        self.vq_embedding.weight.data.uniform_(-1.0 / n_embedding,
                                               1.0 / n_embedding)
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1),
            ResidualBlock(dim), ResidualBlock(dim),
            nn.ConvTranspose2d(dim, dim, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(dim, input_dim, 4, 2, 1))
        self.n_downsample = 2

    def quantize(self, ze):
        """ze: [N, C, H, W] -> codes [N, H, W]."""
        N, C, H, W = ze.shape
        z = ze.permute(0, 2, 3, 1).reshape(-1, C)  # [N*H*W, C]
        # argmin has no gradient: reading the weights detached is fine here
        codes = nearest_neighbor(z, self.vq_embedding.weight.detach())
        return codes.reshape(N, H, W)

    def forward(self, x):
        ze = self.encoder(x)  # [N, C, H, W]
        nearest = self.quantize(ze)  # [N, H, W]
        # Through vq_embedding(...) (not weight.data[...]) so the embedding
        # loss reaches the codebook: the tutorial's hard-won lesson.
        zq = self.vq_embedding(nearest).permute(0, 3, 1, 2)  # [N, C, H, W]
        zq = zq.to(ze.dtype)
        # straight-through: the decoder sees zq, the encoder gets its gradient
        decoder_input = ze + (zq - ze).detach()
        x_hat = self.decoder(decoder_input)  # [N, input_dim, 4H, 4W]
        return x_hat, ze, zq

    # encode / decode are the tutorial's inference helpers (code cache,
    # sampling, evaluation): no autograd graph. Training goes through forward.
    @torch.no_grad()
    def encode(self, x):
        ze = self.encoder(x)
        return self.quantize(ze)  # [N, H, W]

    @torch.no_grad()
    def decode(self, discrete_latent):
        zq = self.vq_embedding(discrete_latent).permute(0, 3, 1, 2)  # [N, C, H, W]
        return self.decoder(zq)

    def get_latent_HW(self, input_shape):
        C, H, W = input_shape
        return (H // 2**self.n_downsample, W // 2**self.n_downsample)
