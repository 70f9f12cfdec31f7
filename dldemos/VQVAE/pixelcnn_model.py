"""Gated PixelCNN over the VQ-VAE's discrete codes."""
import torch.nn as nn

from dldemos.pixelcnn.model import GatedBlock, GatedPixelCNN


class PixelCNNWithEmbedding(GatedPixelCNN):
    """Codes are categories, not intensities: an embedding (not x / 255) turns
    them into p-dim vectors, so the first block takes p channels."""

    def __init__(self, n_blocks, p, linear_dim, bn=True, color_level=256):
        super().__init__(n_blocks, p, linear_dim, bn, color_level)
        self.embedding = nn.Embedding(color_level, p)
        self.block1 = GatedBlock('A', p, p, bn)

    def forward(self, x):
        x = self.embedding(x)  # [N, H, W] -> [N, H, W, p]
        x = x.permute(0, 3, 1, 2).contiguous()  # [N, p, H, W]
        return super().forward(x)
