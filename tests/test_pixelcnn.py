"""Gated PixelCNN: masked convolutions and autoregressive causality."""
import pytest
import torch
import torch.nn.functional as F

from dldemos.pixelcnn.model import (GatedPixelCNN, HorizontalMaskConv2d,
                                    VerticalMaskConv2d)
from dldemos.VQVAE.pixelcnn_model import PixelCNNWithEmbedding



def make_conv(kind, c_in, c_out, k):
    if kind == 'vertical':
        return VerticalMaskConv2d(c_in, c_out, k, 1, k // 2)
    return HorizontalMaskConv2d(kind, c_in, c_out, k, 1, k // 2)


KINDS = ['A', 'B', 'vertical']


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('c_in,c_out', [(1, 2), (3, 8), (16, 5)])
@pytest.mark.parametrize('k', [3, 5])
def test_sliced_taps_equal_masked_conv(kind, c_in, c_out, k):
    torch.manual_seed(c_in * 10 + c_out)
    conv = make_conv(kind, c_in, c_out, k)
    x = torch.randn(2, c_in, 7, 6)
    masked = conv.conv.weight * conv.mask
    expected = F.conv2d(x, masked, conv.conv.bias, padding=k // 2)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kind', KINDS)
def test_mask_is_the_tutorials(kind):
    conv = make_conv(kind, 2, 2, 3)
    expected = {
        'vertical': [[1, 1, 1], [1, 1, 1], [0, 0, 0]],
        'A': [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
        'B': [[0, 0, 0], [1, 1, 0], [0, 0, 0]],
    }[kind]
    assert conv.mask.shape == (1, 1, 3, 3)
    assert conv.mask[0, 0].tolist() == expected


@pytest.mark.parametrize('kind', KINDS)
def test_masked_taps_get_no_gradient(kind):
    torch.manual_seed(0)
    conv = make_conv(kind, 3, 4, 3)
    conv(torch.randn(2, 3, 5, 5)).square().sum().backward()
    grad = conv.conv.weight.grad
    assert (grad * (1 - conv.mask) == 0).all()
    assert (grad * conv.mask).abs().sum() > 0


@pytest.mark.parametrize('bad', [dict(stride=2, padding=1),
                                 dict(padding=0),
                                 dict(kernel_size=4, padding=2),
                                 dict(dilation=2, padding=1)])
def test_masked_conv_rejects_non_same_geometry(bad):
    kwargs = dict(kernel_size=3, stride=1, padding=1)
    kwargs.update(bad)
    with pytest.raises(ValueError):
        VerticalMaskConv2d(2, 2, **kwargs)
    with pytest.raises(ValueError):
        HorizontalMaskConv2d('B', 2, 2, **kwargs)


def small_prior(n_blocks=2, p=8, linear_dim=8, K=6, seed=0, embed=True,
                n_classes=None):
    torch.manual_seed(seed)
    if embed:
        model = PixelCNNWithEmbedding(n_blocks, p, linear_dim, True, K,
                                      n_classes)
    else:
        model = GatedPixelCNN(n_blocks, p, linear_dim, True, K, n_classes)
    # non-trivial batch-norm statistics and affine parameters
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def test_state_dict_keeps_3x3_weights_and_no_masks():
    model = small_prior(n_blocks=2, p=8)
    state = model.state_dict()
    assert not any('mask' in k for k in state)
    conv_keys = [k for k in state if k.endswith(('v_conv.conv.weight',
                                                 'h_conv.conv.weight'))]
    assert len(conv_keys) == 2 * 3  # block1 + 2 blocks, v and h each
    for k in conv_keys:
        assert state[k].shape[-2:] == (3, 3), k
    # masks are buffers (they follow .to()) but not persistent
    assert any(name.endswith('mask') for name, _ in model.named_buffers())


@pytest.mark.parametrize('embed', [True, False])
def test_forward_and_training_step_never_edit_weights_in_place(embed):
    model = small_prior(embed=embed).train()
    before = {k: v.clone() for k, v in model.state_dict().items()
              if 'running' not in k and 'num_batches' not in k}
    if embed:
        x = torch.randint(0, 6, (3, 5, 6))
    else:
        x = torch.rand(3, 1, 5, 6)
    out = model(x)
    model.eval()(x)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    # masked-out taps: no gradient, so an optimizer step leaves them alone
    out.square().mean().backward()
    for m in model.modules():
        if isinstance(m, (VerticalMaskConv2d, HorizontalMaskConv2d)):
            assert (m.conv.weight.grad * (1 - m.mask) == 0).all()


def raster_dependencies(model, x_base, perturb):
    """changed[p, q]: do the logits at position q change when the input at
    position p changes?  All H * W perturbations run as one batch."""
    H, W = x_base.shape[-2:]
    n = H * W
    xs = x_base.unsqueeze(0).repeat(n + 1, *[1] * x_base.dim())
    for pos in range(n):
        i, j = divmod(pos, W)
        perturb(xs[pos + 1], i, j)
    with torch.no_grad():
        logits = model(xs)  # [n + 1, K, H, W]
    diff = (logits[1:] - logits[:1]).abs().amax(1)  # [n, H, W]
    return diff.reshape(n, n)


def with_class(model, c):
    """model(x) of a class-conditional model, every image of class c."""
    return lambda x: model(x, torch.full((x.shape[0],), c))


@pytest.mark.parametrize('embed', [True, False])
@pytest.mark.parametrize('H,W', [(5, 6), (4, 3)])
@pytest.mark.parametrize('n_classes,c', [(None, None), (3, 0), (3, 2)])
def test_pixelcnn_is_causal_in_raster_order(embed, H, W, n_classes, c):
    K = 6
    model = small_prior(n_blocks=2, p=8, linear_dim=8, K=K, embed=embed,
                        n_classes=n_classes)
    model = model.double().eval()
    if n_classes is not None:  # the class bias must not leak positions
        model = with_class(model, c)
    g = torch.Generator().manual_seed(H * W)
    if embed:
        x = torch.randint(0, K, (H, W), generator=g)

        def perturb(x, i, j):
            x[i, j] = (x[i, j] + 1) % K
    else:
        x = torch.rand(1, H, W, generator=g, dtype=torch.float64)

        def perturb(x, i, j):
            x[0, i, j] = x[0, i, j] + 1.0
    diff = raster_dependencies(model, x, perturb)  # [p, q]
    n = H * W
    p_idx = torch.arange(n).unsqueeze(1)
    q_idx = torch.arange(n).unsqueeze(0)
    # p at q or after it: no influence at all (float64, exact zeros)
    assert diff[p_idx >= q_idx].max() == 0
    # some earlier position always matters, and the nearest neighbours do
    for q in range(1, n):
        assert diff[:q, q].max() > 1e-8, f'position {q} sees nothing'
    for i in range(H):
        for j in range(W):
            q = i * W + j
            neighbours = [(i, j - 1), (i - 1, j - 1), (i - 1, j),
                          (i - 1, j + 1)]  # left, and the three above
            for a, b in neighbours:
                if 0 <= a < H and 0 <= b < W:
                    assert diff[a * W + b, q] > 1e-8, ((a, b), (i, j))


def test_output_shape_and_classes():
    model = small_prior(n_blocks=1, p=4, linear_dim=4, K=7).eval()
    x = torch.randint(0, 7, (2, 3, 5))
    assert model(x).shape == (2, 7, 3, 5)


def test_output_layer_runs_in_fp32_under_bf16_autocast():
    # the prior's cross-entropy must see fp32 logits from an fp32 layer
    model = small_prior(n_blocks=1, p=8, linear_dim=16, K=32).eval()
    seen = {}
    model.linear2.register_forward_hook(
        lambda m, i, o: seen.update(linear2=o.dtype))
    model.out.register_forward_hook(
        lambda m, i, o: seen.update(inp=i[0], out=o))
    x = torch.randint(0, 32, (2, 5, 6))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        logits = model(x)  # [2, K, 5, 6]
    assert seen['linear2'] == torch.bfloat16  # autocast is on before it
    assert logits.dtype == torch.float32
    inp = seen['inp']  # linear2's bf16 output, upcast
    assert inp.dtype == torch.float32 and torch.equal(inp.bfloat16().float(),
                                                      inp)
    with torch.no_grad():
        expected = F.conv2d(inp, model.out.weight, model.out.bias)
    assert expected.dtype == torch.float32
    torch.testing.assert_close(seen['out'], expected, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------- class-conditional
@pytest.mark.parametrize('embed', [True, False])
def test_unconditional_state_dict_is_unchanged(embed):
    # n_classes=None must keep the tutorial's keys (and order) exactly
    plain = small_prior(embed=embed)
    none = small_prior(embed=embed, n_classes=None)
    assert list(plain.state_dict()) == list(none.state_dict())
    assert not any('class_bias' in k for k in plain.state_dict())
    cond = small_prior(embed=embed, n_classes=4)
    extra = [k for k in cond.state_dict() if k not in plain.state_dict()]
    # one class bias per block (block1 + 2 blocks), nothing else
    assert extra == ['block1.class_bias.weight',
                     'blocks.0.class_bias.weight',
                     'blocks.1.class_bias.weight']
    assert cond.state_dict()[extra[0]].shape == (4, 2 * 8)


@pytest.mark.parametrize('n_classes', [2, 10])
@pytest.mark.parametrize('train', [True, False])
def test_classes_change_the_logits(n_classes, train):
    model = small_prior(K=6, n_classes=n_classes).train(train)
    seen = {}
    model.blocks[-1].register_forward_hook(
        lambda m, i, o: seen.update(h=o[1]))  # [N, p, H, W], before the head
    x = torch.randint(0, 6, (1, 4, 5)).repeat(n_classes, 1, 1)
    with torch.no_grad():
        logits = model(x, torch.arange(n_classes))  # [n_classes, K, 4, 5]
    for a in range(n_classes):
        for b in range(a + 1, n_classes):
            assert (logits[a] - logits[b]).abs().max() > 1e-4, (a, b)
            # the class reaches every position, even (0, 0), which sees no
            # codes (the head's ReLUs may still map two states to one)
            diff = (seen['h'][a] - seen['h'][b]).abs().amax(0)  # [4, 5]
            assert (diff > 1e-6).all(), (a, b)


def test_class_bias_gets_gradient_only_for_the_classes_seen():
    model = small_prior(K=6, n_classes=5).train()
    x = torch.randint(0, 6, (4, 3, 3))
    model(x, torch.tensor([1, 3, 3, 1])).square().mean().backward()
    for block in [model.block1, *model.blocks]:
        seen = block.class_bias.weight.grad.abs().sum(1) > 0  # [5]
        assert seen.tolist() == [False, True, False, True, False]


@pytest.mark.parametrize('n_classes,y,match', [
    (None, [0, 1], 'unconditional'),
    (3, None, 'class-conditional'),
    (3, [0], 'one class per image'),
])
def test_labels_must_fit_the_model(n_classes, y, match):
    model = small_prior(n_classes=n_classes).eval()
    x = torch.randint(0, 6, (2, 3, 3))
    with pytest.raises(ValueError, match=match):
        model(x, None if y is None else torch.tensor(y))


def test_label_range_is_checked_on_request():
    model = small_prior(n_classes=3)
    with pytest.raises(ValueError, match='0 .. 2'):
        model.check_labels(torch.tensor([0, 3]), 2)
    model.check_labels(torch.tensor([0, 2]), 2)
