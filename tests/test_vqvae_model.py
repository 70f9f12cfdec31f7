"""VQ-VAE: shapes, where the gradients go, the quantizer, encode / decode."""
import pytest
import torch
import torch.nn.functional as F

from dldemos.VQVAE.model import VQVAE, nearest_neighbor



def small_vqvae(input_dim=1, dim=8, n_embedding=16, seed=0):
    torch.manual_seed(seed)
    return VQVAE(input_dim, dim, n_embedding)


@pytest.mark.parametrize('input_dim', [1, 3])
@pytest.mark.parametrize('size', [28, 32, 64])
def test_output_shapes(input_dim, size):
    dim, n_embedding = 8, 16
    model = small_vqvae(input_dim, dim, n_embedding)
    x = torch.rand(2, input_dim, size, size)
    x_hat, ze, zq = model(x)
    h, w = model.get_latent_HW((input_dim, size, size))
    assert (h, w) == (size // 4, size // 4)
    assert x_hat.shape == x.shape
    assert ze.shape == (2, dim, h, w)
    assert zq.shape == ze.shape
    codes = model.encode(x)
    assert codes.shape == (2, h, w)
    assert codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < n_embedding
    assert model.decode(codes).shape == x.shape


@pytest.mark.parametrize('shape', [(1, 28, 28), (3, 64, 32), (3, 128, 128)])
def test_get_latent_hw_matches_encoder(shape):
    model = small_vqvae(shape[0])
    ze = model.encoder(torch.zeros(1, *shape))
    assert model.get_latent_HW(shape) == tuple(ze.shape[-2:])


def test_zq_rows_are_codebook_rows_of_the_codes():
    model = small_vqvae(3)
    x = torch.rand(2, 3, 32, 32)
    _, ze, zq = model(x)
    codes = model.encode(x)
    expected = model.vq_embedding.weight[codes].permute(0, 3, 1, 2)
    assert torch.equal(zq, expected)


def test_embedding_loss_reaches_codebook():
    # The tutorial's lesson: weight.data[x] leaves the codebook untrained.
    model = small_vqvae()
    x = torch.rand(4, 1, 28, 28)
    _, ze, zq = model(x)
    F.mse_loss(ze.detach(), zq).backward()
    grad = model.vq_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # only the rows of codes that were chosen get a gradient
    used = torch.zeros(grad.shape[0], dtype=torch.bool)
    used[model.encode(x).unique()] = True
    assert (grad[used].abs().sum(1) > 0).all()
    assert (grad[~used] == 0).all()
    # and nothing flows back into the encoder through the detached ze
    assert all(p.grad is None for p in model.encoder.parameters())


def test_reconstruction_loss_alone_does_not_train_codebook():
    model = small_vqvae()
    x = torch.rand(4, 1, 28, 28)
    x_hat, _, _ = model(x)
    F.mse_loss(x, x_hat).backward()
    grad = model.vq_embedding.weight.grad
    assert grad is None or (grad == 0).all()


def test_straight_through_gradient_reaches_encoder():
    model = small_vqvae()
    x = torch.rand(4, 1, 28, 28)
    x_hat, _, _ = model(x)
    F.mse_loss(x, x_hat).backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in model.decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_commitment_loss_trains_encoder_not_codebook():
    model = small_vqvae()
    x = torch.rand(4, 1, 28, 28)
    _, ze, zq = model(x)
    F.mse_loss(ze, zq.detach()).backward()
    assert model.vq_embedding.weight.grad is None
    assert model.encoder[0].weight.grad.abs().sum() > 0


def brute_force_nearest(ze, embedding):
    """The tutorial's broadcast form: [N, K, C, H, W] differences."""
    N, C, H, W = ze.shape
    K, _ = embedding.shape
    embedding_broadcast = embedding.reshape(1, K, C, 1, 1)
    ze_broadcast = ze.reshape(N, 1, C, H, W)
    distance = torch.sum((embedding_broadcast - ze_broadcast)**2, 2)
    return torch.argmin(distance, 1)  # [N, H, W]


@pytest.mark.parametrize('chunk_rows', [65536, 7, 1])
@pytest.mark.parametrize('K,C', [(32, 8), (5, 3), (64, 16)])
def test_nearest_neighbor_equals_brute_force(K, C, chunk_rows):
    g = torch.Generator().manual_seed(K * 100 + C)
    ze = torch.randn(3, C, 5, 4, generator=g)
    embedding = torch.randn(K, C, generator=g)
    expected = brute_force_nearest(ze, embedding)  # [N, H, W]
    z = ze.permute(0, 2, 3, 1).reshape(-1, C)
    got = nearest_neighbor(z, embedding, chunk_rows=chunk_rows)
    assert got.dtype == torch.long
    assert torch.equal(got.reshape(3, 5, 4), expected)


def test_nearest_neighbor_exact_codebook_rows_map_to_themselves():
    g = torch.Generator().manual_seed(1)
    embedding = torch.randn(10, 6, generator=g)
    perm = torch.randperm(10, generator=g)
    assert torch.equal(nearest_neighbor(embedding[perm], embedding), perm)


def near_tie_points(M=512, K=32, C=64, seed=0):
    """Rows of z a hair (relative gap ~1e-5) off the bisector of two codes:
    fp32 distances still order them, bf16 ones (~4e-3) do not."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(K, C, generator=g)
    i = torch.randint(0, K // 2, (M,), generator=g)
    a, b = e[2 * i], e[2 * i + 1]  # [M, C]
    n = (a - b) / (a - b).norm(dim=1, keepdim=True)  # bisector normal
    r = torch.randn(M, C, generator=g) * 3
    r = r - (r * n).sum(1, keepdim=True) * n  # within the bisector
    sign = torch.randint(0, 2, (M, 1), generator=g) * 2 - 1
    delta = sign * (0.5e-3 + 0.5e-3 * torch.rand(M, 1, generator=g))
    return (a + b) / 2 + r + delta * n, e


def test_nearest_neighbor_ignores_matmul_precision_setting():
    # 'medium' lets fp32 matmuls run in bf16 (oneDNN on CPU, cuBLAS on CUDA)
    z, e = near_tie_points()
    d = ((z.double()[:, None] - e.double()[None])**2).sum(-1)  # [M, K]
    expected = d.argmin(1)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision('medium')
        got = nearest_neighbor(z, e, chunk_rows=100)
        assert torch.get_float32_matmul_precision() == 'medium'
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(got, expected)


def test_nearest_neighbor_empty_input():
    out = nearest_neighbor(torch.zeros(0, 4), torch.randn(3, 4))
    assert out.shape == (0,) and out.dtype == torch.long


def test_quantize_matches_tutorial_broadcast():
    model = small_vqvae(3, 8, 16)
    with torch.no_grad():
        model.vq_embedding.weight.normal_()  # spread codes: no near-ties
        ze = model.encoder(torch.rand(2, 3, 32, 32))
    expected = brute_force_nearest(ze, model.vq_embedding.weight)
    assert torch.equal(model.quantize(ze), expected)


@pytest.mark.parametrize('input_dim,size', [(1, 28), (3, 32)])
def test_encode_decode_consistent_with_forward(input_dim, size):
    model = small_vqvae(input_dim).eval()
    with torch.no_grad():
        model.vq_embedding.weight.normal_()
        x = torch.rand(3, input_dim, size, size)
        x_hat, ze, zq = model(x)
        codes = model.encode(x)
        decoded = model.decode(codes)
        # decode(encode(x)) is exactly the decoder applied to forward's zq
        assert torch.equal(decoded, model.decoder(zq))
        # forward feeds ze + (zq - ze): equal to zq up to rounding
        torch.testing.assert_close(x_hat, decoded, atol=1e-5, rtol=1e-5)
        assert torch.equal(codes, model.quantize(ze))


def test_encode_decode_build_no_graph_even_with_grad_enabled():
    # the tutorial's encode / decode are inference helpers: callers outside
    # training must not pay for (or hold on to) an autograd graph
    model = small_vqvae()
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    with torch.enable_grad():
        codes = model.encode(x)
        decoded = model.decode(codes)
    assert not codes.requires_grad and codes.grad_fn is None
    assert not decoded.requires_grad and decoded.grad_fn is None
