"""Gated PixelCNN (van den Oord et al., 2016) as used by the tutorial.

Masked convolutions keep the tutorial's parameter names and 3x3 shapes, but
compute only the taps their mask keeps: the vertical 3x3 keeps its top two
rows (6 of 9 taps), the horizontal one keeps 1 (type 'A') or 2 (type 'B') taps
of its middle row. Slicing those taps out of the weight in `forward` applies
the mask functionally: the stored weights are never modified in place (the
tutorial's `weight.data *= mask` did), so masked-out entries stay whatever
they were and get no gradient.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_same_padding(conv):
    kh, kw = conv.kernel_size
    ok = (kh % 2 == 1 and kw % 2 == 1 and conv.stride == (1, 1)
          and conv.dilation == (1, 1) and conv.groups == 1
          and conv.padding == (kh // 2, kw // 2))
    if not ok:
        raise ValueError('masked convolutions need an odd kernel, stride 1 '
                         'and padding kernel_size // 2')


class VerticalMaskConv2d(nn.Module):
    """Sees the rows above and the current row (all columns)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(*args, **kwargs)
        _check_same_padding(self.conv)
        H, W = self.conv.weight.shape[-2:]
        mask = torch.zeros((H, W), dtype=torch.float32)
        mask[0:H // 2 + 1] = 1
        # documents the receptive field (tests compare against it); not saved
        self.register_buffer('mask', mask.reshape(1, 1, H, W), False)

    def forward(self, x):
        kh, kw = self.conv.kernel_size
        w = self.conv.weight[:, :, :kh // 2 + 1]  # kept rows only
        x = F.pad(x, (kw // 2, kw // 2, kh // 2, 0))  # pad above, none below
        return F.conv2d(x, w, self.conv.bias)


class HorizontalMaskConv2d(nn.Module):
    """Sees pixels to the left in the current row (and itself for 'B')."""

    def __init__(self, conv_type, *args, **kwargs):
        super().__init__()
        assert conv_type in ('A', 'B')
        self.conv_type = conv_type
        self.conv = nn.Conv2d(*args, **kwargs)
        _check_same_padding(self.conv)
        H, W = self.conv.weight.shape[-2:]
        mask = torch.zeros((H, W), dtype=torch.float32)
        mask[H // 2, 0:W // 2] = 1
        if conv_type == 'B':
            mask[H // 2, W // 2] = 1
        self.register_buffer('mask', mask.reshape(1, 1, H, W), False)

    def forward(self, x):
        kh, kw = self.conv.kernel_size
        n_left = kw // 2
        if self.conv_type == 'B':
            w = self.conv.weight[:, :, kh // 2:kh // 2 + 1, :n_left + 1]
            x = F.pad(x, (n_left, 0))  # [N, C, H, W + n_left]
        else:
            w = self.conv.weight[:, :, kh // 2:kh // 2 + 1, :n_left]
            # shift right by one as well: column j sees j - n_left .. j - 1
            x = F.pad(x, (n_left, -1))  # [N, C, H, W + n_left - 1]
        return F.conv2d(x, w, self.conv.bias)


class GatedBlock(nn.Module):
    """One gated layer: a vertical and a horizontal stack. With `n_classes`,
    a class-conditional one (van den Oord et al. 2016, section 2.3): a learned
    per-class vector is added to the pre-gate activations of both stacks."""

    def __init__(self, conv_type, in_channels, p, bn=True, n_classes=None):
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
        # registered last and only when conditional: an unconditional
        # block's state dict stays the tutorial's
        if n_classes is not None:
            self.class_bias = nn.Embedding(n_classes, 2 * p)

    def forward(self, v_input, h_input, y=None):
        v = self.v_conv(v_input)  # [N, 2p, H, W]
        v = self.bn1(v)
        # v at row i has seen row i itself; the horizontal stack may only use
        # rows above, so shift v down by one row before feeding it across.
        v_to_h = F.pad(v[:, :, 0:-1], (0, 0, 1, 0))  # [N, 2p, H, W]
        v_to_h = self.v_to_h_conv(v_to_h)
        v_to_h = self.bn2(v_to_h)

        # the class bias is a constant over positions, so it cannot break
        # causality; v_to_h takes v without it, as in the paper's figure 2
        cond = None
        if y is not None:
            cond = self.class_bias(y).to(v.dtype)  # [N, 2p]
            cond = cond[:, :, None, None]  # [N, 2p, 1, 1]
            v = v + cond

        v1, v2 = v[:, :self.p], v[:, self.p:]
        v = torch.tanh(v1) * torch.sigmoid(v2)  # [N, p, H, W]

        h = self.h_conv(h_input)  # [N, 2p, H, W]
        h = self.bn3(h)
        h = h + v_to_h
        if cond is not None:
            h = h + cond
        h1, h2 = h[:, :self.p], h[:, self.p:]
        h = torch.tanh(h1) * torch.sigmoid(h2)  # [N, p, H, W]
        h = self.h_output_conv(h)
        h = self.bn4(h)
        if self.conv_type == 'B':
            h = h + h_input
        return v, h


class GatedPixelCNN(nn.Module):
    """`n_classes` None: the tutorial's unconditional model; else forward
    takes a class per image, y [N] in 0 .. n_classes - 1."""

    def __init__(self, n_blocks, p, linear_dim, bn=True, color_level=256,
                 n_classes=None):
        super().__init__()
        self.n_classes = n_classes
        self.block1 = GatedBlock('A', 1, p, bn, n_classes)
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            self.blocks.append(GatedBlock('B', p, p, bn, n_classes))
        self.relu = nn.ReLU()
        self.linear1 = nn.Conv2d(p, linear_dim, 1)
        self.linear2 = nn.Conv2d(linear_dim, linear_dim, 1)
        self.out = nn.Conv2d(linear_dim, color_level, 1)

    def check_labels(self, y, n=None, *, values=True):
        """A conditional model needs one class per image, an unconditional
        one takes none: said here rather than as an index error deep in.
        `values`: also check the range (a host sync: not per training
        step on a GPU)."""
        if self.n_classes is None:
            if y is not None:
                raise ValueError('this PixelCNN is unconditional '
                                 '(n_classes=None): it takes no labels')
            return
        if y is None:
            raise ValueError(f'this PixelCNN is class-conditional '
                             f'(n_classes={self.n_classes}): give a class '
                             'per image')
        if y.dim() != 1 or (n is not None and y.shape[0] != n):
            raise ValueError(f'labels of shape {tuple(y.shape)}: give one '
                             'class per image')
        if values and y.numel() and not \
                0 <= int(y.min()) <= int(y.max()) < self.n_classes:
            raise ValueError(f'labels must lie in 0 .. {self.n_classes - 1}')

    def forward(self, x, y=None):
        self.check_labels(y, x.shape[0], values=False)
        v, h = self.block1(x, x, y)
        for block in self.blocks:
            v, h = block(v, h, y)
        x = self.relu(h)
        x = self.linear1(x)
        x = self.relu(x)
        x = self.linear2(x)
        # the prior's cross-entropy needs fp32 logits: under bf16 autocast
        # the output layer still runs in its weights' dtype (fp32), on its
        # bf16 input upcast. Without autocast this is the same computation
        # (and a float64 model stays float64).
        with torch.autocast(x.device.type, enabled=False):
            x = self.out(x.to(self.out.weight.dtype))  # [N, color_level, H, W]
        return x
