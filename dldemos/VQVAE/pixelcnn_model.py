"""Gated PixelCNN over the VQ-VAE's discrete codes."""
import torch.nn as nn

from dldemos.pixelcnn.model import GatedBlock, GatedPixelCNN


class PixelCNNWithEmbedding(GatedPixelCNN):
    """Codes are categories, not intensities: an embedding (not x / 255) turns
    them into p-dim vectors, so the first block takes p channels.
    `n_classes`: a class-conditional prior, forward(x, y) (see GatedBlock);
    None keeps the tutorial's model and state dict."""

    def __init__(self, n_blocks, p, linear_dim, bn=True, color_level=256,
                 n_classes=None):
        super().__init__(n_blocks, p, linear_dim, bn, color_level, n_classes)
        self.embedding = nn.Embedding(color_level, p)
        self.block1 = GatedBlock('A', p, p, bn, n_classes)

    def forward(self, x, y=None):
        x = self.embedding(x)  # [N, H, W] -> [N, H, W, p]
        x = x.permute(0, 3, 1, 2).contiguous()  # [N, p, H, W]
        return super().forward(x, y)
