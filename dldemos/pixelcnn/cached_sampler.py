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
  so a position costs a few [N, p] x [p, 2p] products per layer. The left
  inputs are kept as references (a short list per layer), not copied.

A class-conditional model's class bias is a constant per block and image:
it is added to each row's vertical pre-activations and folded into the
horizontal stack's per-row bias, so it costs nothing per position.

Batch norm in eval mode is a per-channel affine map; it is folded into the
convolution before it, so a position needs no extra ops for it. Every layer
of the model is computed the same way as in `forward`, only for fewer
positions: the logits agree with the full pass to float rounding.

It computes in full fp32: sample_incremental turns off a caller's bf16
autocast (amp, on CUDA or a CPU), TF32 (cuDNN convolutions, on by default on
CUDA, and cuBLAS matmuls) and a float32 matmul precision of 'high' /
'medium' while it runs, and restores them afterwards. Otherwise on
CUDA the vertical stack (a cuDNN conv) would run in TF32 and the horizontal
one (addmm) in fp32. The naive full-pass loop it is compared against must
also run in full fp32 (e.g. inside `dldemos.utils.precision.full_fp32()`) for
equal logits and draws: with the defaults its convolutions use TF32.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dldemos.utils.precision import full_fp32


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
        # horizontal stack: kept taps of the middle row, then bn3; one
        # [C, 2p] matrix per tap, tap t sees column j - n_left + t
        hk = block.h_conv.conv.weight.shape[-2] // 2
        self.n_left = block.h_conv.conv.kernel_size[1] // 2
        n_taps = self.n_left + 1 if block.conv_type == 'B' else self.n_left
        w = block.h_conv.conv.weight[:, :, hk, :n_taps]  # [2p, C, taps]
        w, self.h_b = _fold_bn(w, block.h_conv.conv.bias, block.bn3)
        self.h_w = [w[:, :, t].t().contiguous() for t in range(n_taps)]
        w, b = _fold_bn(block.h_output_conv.weight, block.h_output_conv.bias,
                        block.bn4)
        self.o_w, self.o_b = w[:, :, 0, 0].t().contiguous(), b  # [p, p]
        self.residual = block.conv_type == 'B'


def _gate(x, p):
    return torch.tanh(x[:, :p]) * torch.sigmoid(x[:, p:])


def _with_class(row_bias, cond):
    """A row's horizontal bias [n, W, 2p] plus the class bias [n, 2p]."""
    return row_bias if cond is None else row_bias + cond[:, None, :]


def _class_bias(block, y):
    """The block's class bias of each image [n, 2p], or None (unconditional
    model): what GatedBlock adds before both gates."""
    return None if y is None else block.class_bias.weight[y]


def sample_incremental(gen_model, n, H, W, device, sample_fn,
                       temperature=1.0, top_k=None, generator=None,
                       on_step=None, y=None):
    """Codes [n, H, W] drawn from a PixelCNNWithEmbedding in eval mode;
    y [n]: the class of each image, for a class-conditional model.

    sample_fn(logits [n, K], temperature, top_k, generator) -> codes [n]
    draws one position, as in the naive sampler, so both make the same random
    draws; on_step(i, j, logits) sees the logits of each position first.
    Also inside a caller's bf16 autocast (amp) it computes in fp32: see the
    module docstring.
    """
    with torch.autocast(torch.device(device).type, enabled=False):
        return _sample_incremental(gen_model, n, H, W, device, sample_fn,
                                   temperature, top_k, generator, on_step, y)


@torch.no_grad()
@full_fp32()  # see the module docstring
def _sample_incremental(gen_model, n, H, W, device, sample_fn, temperature,
                        top_k, generator, on_step, y):
    if gen_model.training:
        raise ValueError('the cached sampler needs the model in eval mode '
                         '(batch norm with running statistics)')
    if not hasattr(gen_model, 'embedding'):
        raise TypeError('the cached sampler needs a PixelCNNWithEmbedding '
                        '(a model that embeds integer codes)')
    gen_model.check_labels(y, n)
    blocks = [gen_model.block1, *gen_model.blocks]
    layers = [_Layer(b) for b in blocks]
    cond = [_class_bias(b, y) for b in blocks]  # [n, 2p] or None per layer
    p = blocks[0].p
    dtype = gen_model.embedding.weight.dtype
    emb = gen_model.embedding.weight  # [K, p]
    head = [gen_model.linear1, gen_model.linear2, gen_model.out]
    head = [(m.weight[:, :, 0, 0].t().contiguous(), m.bias) for m in head]

    x = torch.zeros((n, H, W), dtype=torch.long, device=device)
    # per layer: vertical input rows (zero rows above the image = padding)
    v_in = [torch.zeros((n, layer.in_channels, layer.n_rows, W),
                        device=device, dtype=dtype) for layer in layers]
    # per layer, for the current row: v_to_h plus the h_conv bias, added to
    # the horizontal stack before the gate. Row 0 sees only padding: the
    # 1x1 conv (and bn2) of zeros is its bias.
    row_bias = [_with_class((layer.vh_b + layer.h_b).expand(n, W, -1), c)
                for layer, c in zip(layers, cond)]  # [n, W, 2p] per layer
    for i in range(H):
        # per layer: its horizontal inputs at columns j - n_left .. j - 1
        # of this row (the padding left of column 0 is zeros: skipped)
        left = [[] for _ in layers]
        for j in range(W):
            h = None  # the previous layer's output at (i, j)
            for k, layer in enumerate(layers):
                if k == 0:  # type 'A': sees (i, j - n_left .. j - 1) of
                    if j > 0:  # the embedded codes
                        left[0].append(emb[x[:, i, j - 1]])  # [n, p]
                    n_old = max(0, len(left[0]) - layer.n_left)
                    taps = left[0] = left[0][n_old:]
                else:  # type 'B': (i, j - n_left .. j)
                    taps = left[k] + [h]
                    left[k] = taps[max(0, len(taps) - layer.n_left):]
                hc = row_bias[k][:, j]  # [n, 2p]
                # columns left of 0 are zero padding: their taps add nothing
                for w, inp in zip(layer.h_w[len(layer.h_w) - len(taps):],
                                  taps):
                    hc = torch.addmm(hc, inp, w)
                hc = _gate(hc, p)  # [n, p]
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
        for k, layer in enumerate(layers):
            rows = torch.cat([v_in[k][:, :, 1:], v.unsqueeze(2)], 2)
            v_in[k] = rows  # [n, C, n_rows, W]: rows i - n_rows + 1 .. i
            vpre = F.conv2d(F.pad(rows, (layer.pad_w, layer.pad_w)),
                            layer.v_w, layer.v_b)[:, :, 0]  # [n, 2p, W]
            # row i + 1 of the horizontal stack sees this row through v_to_h
            # (taken before the class bias, as in GatedBlock)
            row_bias[k] = _with_class(torch.addmm(
                layer.vh_b + layer.h_b, vpre.transpose(1, 2).reshape(
                    -1, 2 * p), layer.vh_w.t()).reshape(n, W, 2 * p),
                cond[k])
            if cond[k] is not None:
                vpre = vpre + cond[k][:, :, None]  # [n, 2p, W]
            v = _gate(vpre, p)  # [n, p, W]: the next layer's vertical input
    return x
