"""Cached, incremental sampling from a Gated PixelCNN (eval mode).

The tutorial's sampler runs the whole network once per latent position:
H * W full passes, each over all H * W positions. But the two stacks of a
Gated PixelCNN only look up and left:

- the vertical stack at row i depends on rows <= i (all columns), and reaches
  the horizontal stack shifted down one row (v_to_h at row i is v of row
  i - 1). So it is computed once per completed row, for that row only, from
  the last kernel_size // 2 + 1 rows of each layer's vertical input.
- the horizontal stack at (i, j) depends on its input at (i, j - n) ..
  (i, j) ('B') or (i, j - n) .. (i, j - 1) ('A'), n = kernel_size // 2, plus
  v_to_h at (i, j). Each layer keeps the current row of its horizontal input,
  so a position costs a few [N, p] x [p, 2p] products per layer.

Batch norm in eval mode is a per-channel affine map; it is folded into the
convolution before it, so a position needs no extra ops for it. Every layer
of the model is computed the same way as in `forward`, only for fewer
positions: the logits agree with the full pass to float rounding.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _fold_bn(weight, bias, bn):
    """(weight, bias) of conv followed by `bn` in eval mode, as one conv."""
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    if isinstance(bn, nn.Identity):
        return weight, bias
    if bn.running_mean is None:
        raise ValueError('the cached sampler needs batch norm with running '
                         'statistics (track_running_stats=True)')
    scale = torch.rsqrt(bn.running_var + bn.eps)  # [C]
    shift = -bn.running_mean * scale
    if bn.weight is not None:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return weight, bias * scale + shift


class _Layer:
    """One GatedBlock's weights, arranged for row / position updates."""

    def __init__(self, block):
        kh, kw = block.v_conv.conv.kernel_size
        self.p = block.p
        self.pad_w = kw // 2
        self.in_channels = block.v_conv.conv.in_channels
        self.n_rows = kh // 2 + 1  # vertical input rows one output row needs
        # vertical stack: kept rows of the 3x3, then bn1
        w = block.v_conv.conv.weight[:, :, :self.n_rows]  # [2p, C, rows, kw]
        self.v_w, self.v_b = _fold_bn(w, block.v_conv.conv.bias, block.bn1)
        # v_to_h: 1x1 conv then bn2, as a matrix
        w, b = _fold_bn(block.v_to_h_conv.weight, block.v_to_h_conv.bias,
                        block.bn2)
        self.vh_w, self.vh_b = w[:, :, 0, 0], b  # [2p, 2p], [2p]
        # horizontal stack: kept taps of the middle row, then bn3
        hk = block.h_conv.conv.weight.shape[-2] // 2
        n_left = block.h_conv.conv.kernel_size[1] // 2
        self.n_taps = n_left + 1 if block.conv_type == 'B' else n_left
        self.n_left = n_left
        w = block.h_conv.conv.weight[:, :, hk, :self.n_taps]  # [2p, C, taps]
        w, b = _fold_bn(w, block.h_conv.conv.bias, block.bn3)
        # rows of the input buffer are [taps, C] (contiguous), so one matmul
        self.h_w = w.permute(0, 2, 1).reshape(w.shape[0], -1).t().contiguous()
        self.h_b = b  # h_w: [taps * C, 2p]
        w, b = _fold_bn(block.h_output_conv.weight, block.h_output_conv.bias,
                        block.bn4)
        self.o_w, self.o_b = w[:, :, 0, 0].t().contiguous(), b  # [p, p]
        self.residual = block.conv_type == 'B'


def _gate(x, p):
    return torch.tanh(x[:, :p]) * torch.sigmoid(x[:, p:])


@torch.no_grad()
def sample_cached(gen_model, n, H, W, device, sample_fn, temperature=1.0,
                  top_k=None, generator=None, on_step=None):
    """Codes [n, H, W] drawn from a PixelCNNWithEmbedding in eval mode.

    sample_fn(logits [n, K], temperature, top_k, generator) -> codes [n]
    draws one position, as in the naive sampler, so both make the same random
    draws; on_step(i, j, logits) sees the logits of each position first.
    """
    if gen_model.training:
        raise ValueError('the cached sampler needs the model in eval mode '
                         '(batch norm with running statistics)')
    if not hasattr(gen_model, 'embedding'):
        raise TypeError('the cached sampler needs a PixelCNNWithEmbedding '
                        '(a model that embeds integer codes)')
    blocks = [gen_model.block1, *gen_model.blocks]
    layers = [_Layer(b) for b in blocks]
    p = blocks[0].p
    dtype = gen_model.embedding.weight.dtype
    emb = gen_model.embedding.weight  # [K, p]
    head = [gen_model.linear1, gen_model.linear2, gen_model.out]
    head = [(m.weight[:, :, 0, 0].t().contiguous(), m.bias) for m in head]

    x = torch.zeros((n, H, W), dtype=torch.long, device=device)
    # per layer: vertical input rows (zero rows above the image = padding)
    v_in = [torch.zeros((n, layer.in_channels, layer.n_rows, W),
                        device=device, dtype=dtype)
            for layer in layers]
    # per layer: the current row of the horizontal input, left-padded with
    # zeros, laid out [n, W + n_left, C] so a window is one contiguous view
    h_in = [torch.zeros((n, W + layer.n_left, p), device=device, dtype=dtype)
            for layer in layers]
    # v_to_h of row 0 sees only padding: the 1x1 conv (and bn2) of zeros
    v_to_h = [layer.vh_b.reshape(1, 1, -1).expand(n, W, -1)
              for layer in layers]  # [n, W, 2p] per layer
    for i in range(H):
        for j in range(W):
            # layer 0's horizontal input is the embedding of the codes
            h = emb[x[:, i, j - 1]] if j > 0 else None  # [n, p]
            for l, layer in enumerate(layers):
                buf = h_in[l]
                if l == 0:  # type 'A': sees (i, j - n_left .. j - 1)
                    if h is not None:
                        buf[:, j - 1 + layer.n_left] = h
                else:  # type 'B': the previous layer's h at (i, j) too
                    buf[:, j + layer.n_left] = h
                window = buf[:, j:j + layer.n_taps].reshape(n, -1)
                hc = torch.addmm(layer.h_b, window, layer.h_w)  # [n, 2p]
                hc = _gate(hc + v_to_h[l][:, j], p)  # [n, p]
                out = torch.addmm(layer.o_b, hc, layer.o_w)  # [n, p]
                h = out + h if layer.residual else out
            y = torch.relu(h)
            y = torch.relu(torch.addmm(head[0][1], y, head[0][0]))
            y = torch.addmm(head[1][1], y, head[1][0])
            logits = torch.addmm(head[2][1], y, head[2][0])  # [n, K]
            if on_step is not None:
                on_step(i, j, logits)
            x[:, i, j] = sample_fn(logits, temperature, top_k, generator)
        if i + 1 == H:
            break
        # row i is complete: run every layer's vertical stack on it once
        v = emb[x[:, i]].permute(0, 2, 1)  # [n, p, W]
        for l, layer in enumerate(layers):
            rows = torch.cat([v_in[l][:, :, 1:], v.unsqueeze(2)], 2)
            v_in[l] = rows  # [n, C, n_rows, W]: rows i - n_rows + 1 .. i
            vpre = F.conv2d(F.pad(rows, (layer.pad_w, layer.pad_w)),
                            layer.v_w, layer.v_b)[:, :, 0]  # [n, 2p, W]
            # row i + 1 of the horizontal stack sees this row through v_to_h
            v_to_h[l] = torch.addmm(layer.vh_b, vpre.transpose(1, 2).reshape(
                -1, 2 * p), layer.vh_w.t()).reshape(n, W, 2 * p)
            v = _gate(vpre, p)  # [n, p, W]: the next layer's vertical input
        for buf in h_in:  # a new row: nothing on the left yet
            buf.zero_()
    return x
