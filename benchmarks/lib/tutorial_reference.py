"""The tutorial's algorithms, kept only as the baseline for benchmarks/
(benchmarks.lib.tutorial_reference).

Written from the tutorial's text and code, same math:
- nearest neighbour by broadcasting ze [N, 1, C, H, W] against the codebook
  [1, K, C, 1, 1]: an [N, K, C, H, W] temporary;
- masked convolutions as full 3x3 convolutions whose weights are multiplied
  by the mask in every forward (`weight.data *= mask`);
- sampling by running the whole PixelCNN once per latent position;
- prior training that encodes every image batch through the VQ-VAE, fp32.
State-dict keys and shapes are those of dldemos' models, so both load the
same weights. Do not import this from dldemos: it is the slow reference.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dldemos.VQVAE.model import VQVAE


# ------------------------------------------------------------ VQ-VAE
def broadcast_nearest_neighbor(ze, embedding):
    """ze [N, C, H, W], embedding [K, C] -> codes [N, H, W] (tutorial)."""
    N, C, H, W = ze.shape
    K, _ = embedding.shape
    embedding_broadcast = embedding.reshape(1, K, C, 1, 1)
    ze_broadcast = ze.reshape(N, 1, C, H, W)
    distance = torch.sum((embedding_broadcast - ze_broadcast)**2, 2)
    return torch.argmin(distance, 1)  # [N, H, W]


class TutorialVQVAE(VQVAE):
    """The tutorial's forward / encode: same layers, broadcast quantizer."""

    def forward(self, x):
        ze = self.encoder(x)
        embedding = self.vq_embedding.weight.data
        nearest_neighbor = broadcast_nearest_neighbor(ze, embedding)
        zq = self.vq_embedding(nearest_neighbor).permute(0, 3, 1, 2)
        decoder_input = ze + (zq - ze).detach()
        x_hat = self.decoder(decoder_input)
        return x_hat, ze, zq

    def encode(self, x):
        ze = self.encoder(x)
        embedding = self.vq_embedding.weight.data
        return broadcast_nearest_neighbor(ze, embedding)


# ------------------------------------------------------------ PixelCNN
class VerticalMaskConv2d(nn.Module):

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(*args, **kwargs)
        H, W = self.conv.weight.shape[-2:]
        mask = torch.zeros((H, W), dtype=torch.float32)
        mask[0:H // 2 + 1] = 1
        self.register_buffer('mask', mask.reshape(1, 1, H, W), False)

    def forward(self, x):
        self.conv.weight.data *= self.mask
        return self.conv(x)


class HorizontalMaskConv2d(nn.Module):

    def __init__(self, conv_type, *args, **kwargs):
        super().__init__()
        assert conv_type in ('A', 'B')
        self.conv = nn.Conv2d(*args, **kwargs)
        H, W = self.conv.weight.shape[-2:]
        mask = torch.zeros((H, W), dtype=torch.float32)
        mask[H // 2, 0:W // 2] = 1
        if conv_type == 'B':
            mask[H // 2, W // 2] = 1
        self.register_buffer('mask', mask.reshape(1, 1, H, W), False)

    def forward(self, x):
        self.conv.weight.data *= self.mask
        return self.conv(x)


class GatedBlock(nn.Module):

    def __init__(self, conv_type, in_channels, p, bn=True):
        super().__init__()
        self.conv_type = conv_type
        self.p = p
        self.v_conv = VerticalMaskConv2d(in_channels, 2 * p, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(2 * p) if bn else nn.Identity()
        self.v_to_h_conv = nn.Conv2d(2 * p, 2 * p, 1)
        self.bn2 = nn.BatchNorm2d(2 * p) if bn else nn.Identity()
        self.h_conv = HorizontalMaskConv2d(conv_type, in_channels, 2 * p, 3, 1,
                                           1)
        self.bn3 = nn.BatchNorm2d(2 * p) if bn else nn.Identity()
        self.h_output_conv = nn.Conv2d(p, p, 1)
        self.bn4 = nn.BatchNorm2d(p) if bn else nn.Identity()

    def forward(self, v_input, h_input):
        v = self.v_conv(v_input)
        v = self.bn1(v)
        v_to_h = v[:, :, 0:-1]
        v_to_h = F.pad(v_to_h, (0, 0, 1, 0))
        v_to_h = self.v_to_h_conv(v_to_h)
        v_to_h = self.bn2(v_to_h)

        v1, v2 = v[:, :self.p], v[:, self.p:]
        v1 = torch.tanh(v1)
        v2 = torch.sigmoid(v2)
        v = v1 * v2

        h = self.h_conv(h_input)
        h = self.bn3(h)
        h = h + v_to_h
        h1, h2 = h[:, :self.p], h[:, self.p:]
        h1 = torch.tanh(h1)
        h2 = torch.sigmoid(h2)
        h = h1 * h2
        h = self.h_output_conv(h)
        h = self.bn4(h)
        if self.conv_type == 'B':
            h = h + h_input
        return v, h


class TutorialPixelCNNWithEmbedding(nn.Module):

    def __init__(self, n_blocks, p, linear_dim, bn=True, color_level=256):
        super().__init__()
        self.block1 = GatedBlock('A', p, p, bn)
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            self.blocks.append(GatedBlock('B', p, p, bn))
        self.relu = nn.ReLU()
        self.linear1 = nn.Conv2d(p, linear_dim, 1)
        self.linear2 = nn.Conv2d(linear_dim, linear_dim, 1)
        self.out = nn.Conv2d(linear_dim, color_level, 1)
        self.embedding = nn.Embedding(color_level, p)

    def forward(self, x):
        x = self.embedding(x)
        x = x.permute(0, 3, 1, 2).contiguous()
        v, h = self.block1(x, x)
        for block in self.blocks:
            v, h = block(v, h)
        x = self.relu(h)
        x = self.linear1(x)
        x = self.relu(x)
        x = self.linear2(x)
        x = self.out(x)
        return x


# ------------------------------------------------------------ algorithms
@torch.no_grad()
def sample_naive(gen_model, n, H, W, device, generator=None, max_steps=None):
    """The tutorial's sampling loop (generator added so draws can be
    compared); max_steps stops after that many positions (timing only)."""
    gen_model.eval()
    x = torch.zeros((n, H, W), dtype=torch.long, device=device)
    step = 0
    for i in range(H):
        for j in range(W):
            if max_steps is not None and step >= max_steps:
                return x
            output = gen_model(x)
            prob_dist = F.softmax(output[:, :, i, j], -1)
            pixel = torch.multinomial(prob_dist, 1, generator=generator)
            x[:, i, j] = pixel[:, 0]
            step += 1
    return x


def train_prior_steps(vqvae, model, batches, optimizer, device):
    """The tutorial's prior training loop over image batches: encode every
    batch through the VQ-VAE, then one fp32 step. Returns the losses."""
    loss_fn = nn.CrossEntropyLoss()
    vqvae.eval()
    model.train()
    losses = []
    for x in batches:
        with torch.no_grad():
            x = x.to(device)
            x = vqvae.encode(x)
        predict_x = model(x)
        loss = loss_fn(predict_x, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def train_vqvae_steps(model, batches, optimizer, device, l_w_embedding=1,
                      l_w_commitment=0.25):
    """The tutorial's VQ-VAE training loop body, fp32."""
    mse_loss = nn.MSELoss()
    model.train()
    losses = []
    for x in batches:
        x = x.to(device)
        x_hat, ze, zq = model(x)
        l_reconstruct = mse_loss(x, x_hat)
        l_embedding = mse_loss(ze.detach(), zq)
        l_commitment = mse_loss(ze, zq.detach())
        loss = l_reconstruct + \
            l_w_embedding * l_embedding + l_w_commitment * l_commitment
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses
