"""The sliced Wasserstein distance over Laplacian-pyramid patches: its parts
(pyramid, 1-D distances), determinism, and that it ranks degraded copies of
a set in order of degradation, on generated structured images (and on real
faces when ../shared/data has them)."""
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader

from dldemos.utils.errors import UsageError
from dldemos.VQVAE.scoring import swd as S

from conftest import SHARED_DATA

# smaller than the paper's 128 patches x 512 directions: a test runs in
# about a second, and the orderings below hold with a wide margin
FAST = dict(n_patches=64, n_directions=64, repeats=2)


def shapes(n, size=32, channels=3, seed=0, stripes=False):
    """n images [n, C, size, size] in [0, 1]: a tilted colour gradient with
    three random filled ellipses (stripes: sine stripes instead), so that
    each pyramid level has edges, flat areas and smooth ramps."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size),
                            torch.linspace(-1, 1, size), indexing='ij')

    def r(*shape):
        return torch.rand(*shape, generator=g)

    out = []
    for _ in range(n):
        ang = r(1) * 2 * math.pi
        ramp = xx * ang.cos() + yy * ang.sin()  # [size, size]
        img = (r(channels, 1, 1) * 0.5 + 0.25) * (0.5 + 0.5 * ramp)
        if stripes:
            img = img + 0.3 * torch.sin(ramp * (4 + 8 * r(1)) * math.pi)
        else:
            for _ in range(3):
                cy, cx = r(2) * 1.4 - 0.7
                ry, rx = r(2) * 0.4 + 0.15
                inside = ((yy - cy) / ry)**2 + ((xx - cx) / rx)**2 < 1
                img = torch.where(inside, r(channels, 1, 1), img)
        out.append(img)
    return torch.stack(out).clamp(0, 1)  # [n, C, size, size]


def blurred(x, sigma):
    return TF.gaussian_blur(x, 2 * math.ceil(3 * sigma) + 1, sigma)


def noised(x, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.fixture(scope='module')
def rgb():
    return shapes(128, 32, 3)


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('hw', [(16, 16), (28, 28), (64, 64), (37, 50)])
def test_pyramid_collapses_back_to_the_image(channels, hw):
    x = torch.rand(2, channels, *hw, dtype=torch.float64)
    pyr = S.laplacian_pyramid(x)
    assert len(pyr) == S.n_levels(*hw)
    assert [tuple(p.shape[-2:]) for p in pyr] == \
        S.level_sizes(*hw, len(pyr))
    img = pyr[-1]
    for band in reversed(pyr[:-1]):
        img = S.pyr_up(img, band.shape[-2:]) + band
    torch.testing.assert_close(img, x)
    for level, p in enumerate(pyr):
        torch.testing.assert_close(S.pyramid_level(x, level, len(pyr)), p)


@pytest.mark.parametrize('channels', [1, 3])
def test_a_flat_image_has_no_detail(channels):
    # pyr_up must undo pyr_down's subsampling gain: a constant image has
    # zero band-pass levels and a low-pass level of the same constant
    x = torch.full((2, channels, 64, 48), 0.3, dtype=torch.float64)
    pyr = S.laplacian_pyramid(x)
    for band in pyr[:-1]:
        torch.testing.assert_close(band, torch.zeros_like(band))
    torch.testing.assert_close(pyr[-1], torch.full_like(pyr[-1], 0.3))


@pytest.mark.parametrize('hw, levels', [((16, 16), 1), ((28, 28), 1),
                                        ((32, 32), 2), ((64, 64), 3),
                                        ((128, 96), 3), ((256, 256), 5)])
def test_levels_go_down_to_16(hw, levels):
    assert S.n_levels(*hw) == levels
    assert min(S.level_sizes(*hw, levels)[-1]) >= 16


def test_extract_patches_takes_the_right_pixels():
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(
        2, 3, 10, 12)
    ys = torch.tensor([[0, 3], [2, 1]])
    xs = torch.tensor([[5, 0], [1, 4]])
    p = S.extract_patches(x, ys, xs, size=7)  # [4, 3, 7, 7]
    assert p.shape == (4, 3, 7, 7)
    torch.testing.assert_close(p[1], x[0, :, 3:10, 0:7])
    torch.testing.assert_close(p[2], x[1, :, 2:9, 1:8])


@pytest.mark.parametrize('n, m', [(40, 40), (50, 37), (3, 200), (1, 1)])
def test_one_dimensional_distance_is_exact(n, m):
    g = torch.Generator().manual_seed(n + m)
    a = torch.randn(n, 5, generator=g)
    b = torch.randn(m, 5, generator=g) * 1.5 + 0.3
    dirs = S.random_directions(7, 5, g)
    got = S.sliced_wasserstein(a, b, dirs, chunk=3)
    ref = np.mean([scipy.stats.wasserstein_distance((a @ d).numpy(),
                                                    (b @ d).numpy())
                   for d in dirs])
    assert got == pytest.approx(ref, rel=1e-5)
    if n == m:  # equal sizes: the mean gap of the sorted projections
        sa = torch.sort(a @ dirs.T, dim=0).values
        sb = torch.sort(b @ dirs.T, dim=0).values
        assert got == pytest.approx(float((sa - sb).abs().mean()), rel=1e-5)


def test_same_inputs_and_seed_give_the_same_value(rgb):
    other = shapes(100, 32, 3, seed=1)
    first = S.swd(rgb, other, seed=3, **FAST)
    assert S.swd(rgb, other, seed=3, **FAST) == first
    # batching does not change the draws
    loader = DataLoader(other, batch_size=7)
    assert S.swd(rgb, loader, seed=3, **FAST)['mean'] == \
        pytest.approx(first['mean'], rel=1e-6)
    # another seed: other patches and directions, a close value
    again = S.swd(rgb, other, seed=4, **FAST)['mean']
    assert again != first['mean']
    assert again == pytest.approx(first['mean'], rel=0.3)


@pytest.mark.parametrize('channels, size', [(1, 32), (3, 32), (3, 40)])
def test_ranks_blurred_copies_in_order(channels, size):
    x = shapes(128, size, channels)
    values = [S.swd(x, x if s == 0 else blurred(x, s), **FAST)['mean']
              for s in (0, 0.7, 1.4, 2.8)]
    assert values == sorted(values), values
    assert values[-1] > 3 * values[0], values


@pytest.mark.parametrize('channels, size', [(1, 32), (3, 32), (3, 40)])
def test_ranks_noised_copies_in_order(channels, size):
    x = shapes(128, size, channels)
    values = [S.swd(x, noised(x, s), **FAST)['mean']
              for s in (0, 0.02, 0.05, 0.1)]
    assert values == sorted(values), values
    assert values[-1] > 3 * values[0], values


def test_a_set_against_itself_is_near_zero(rgb):
    same = S.swd(rgb, rgb, **FAST)['mean']
    for other in (shapes(128, 32, 3, seed=1, stripes=True),
                  torch.rand_like(rgb)):
        assert S.swd(rgb, other, **FAST)['mean'] > 5 * same


def test_roughly_symmetric(rgb):
    stripes = shapes(128, 32, 3, seed=1, stripes=True)
    ab = S.swd(rgb, stripes, **FAST)['mean']
    ba = S.swd(stripes, rgb, **FAST)['mean']
    assert ab == pytest.approx(ba, rel=0.15)


def test_normalising_each_set_hides_a_contrast_change(rgb):
    # the paper's per-set normalisation: scaling all values is invisible;
    # normalize='reference' uses the first set's statistics and sees it
    same = S.swd(rgb, rgb, **FAST)['mean']
    dim = rgb * 0.6
    assert S.swd(rgb, dim, **FAST)['mean'] == pytest.approx(same, rel=1e-4)
    assert S.swd(rgb, dim, normalize='reference', **FAST)['mean'] > 5 * same


def test_swd_scores_names_and_values(rgb):
    fake, train = shapes(100, 32, 3, seed=1), shapes(100, 32, 3, seed=2)
    recon = blurred(rgb, 1.0)
    s = S.swd_scores(DataLoader(rgb, batch_size=50), fake, recon, train,
                     seed=5, **FAST)
    assert set(s) == {'swd', 'swd_ref_reconstructions', 'swd_ref_train',
                      'swd_levels', 'swd_convention'}
    assert set(s['swd_levels']['swd']) == {'32x32', '16x16'}
    # each value is what swd() alone gives for that pair
    for key, b in (('swd', fake), ('swd_ref_reconstructions', recon),
                   ('swd_ref_train', train)):
        assert s[key] == pytest.approx(S.swd(rgb, b, seed=5, **FAST)['mean'],
                                       rel=1e-6)
    assert set(S.swd_scores(rgb, fake, **FAST)) == {
        'swd', 'swd_levels', 'swd_convention'}


def test_caps_the_number_of_images(rgb):
    capped = S.swd(rgb, rgb, max_images=20, **FAST)
    assert capped == S.swd(rgb[:20], rgb[:20], **FAST)


@pytest.mark.parametrize('a, b, match', [
    ((4, 3, 32, 32), (4, 1, 32, 32), 'one shape'),
    ((4, 3, 32, 32), (4, 3, 40, 40), 'one shape'),
    ((4, 3, 15, 32), (4, 3, 15, 32), 'at least 16x16'),
    ((0, 3, 32, 32), (4, 3, 32, 32), 'non-empty'),
])
def test_bad_input_says_what_is_wrong(a, b, match):
    with pytest.raises(UsageError, match=match):
        S.swd(torch.rand(a), torch.rand(b), **FAST)


def test_unknown_normalisation_is_refused(rgb):
    with pytest.raises(UsageError, match='normalize'):
        S.swd(rgb, rgb, normalize='global', **FAST)


@pytest.mark.slow
def test_real_faces_rank_blur_and_noise_in_order():
    celeba = SHARED_DATA / 'celebA' / 'img_align_celeba'
    if not celeba.is_dir():
        pytest.skip('real CelebA faces (../shared/data) not available')
    from dldemos.VQVAE.dataset import get_dataset
    faces = get_dataset('CelebA', (64, 64), str(SHARED_DATA), 'test')
    x = torch.stack([faces[i] for i in range(len(faces))])  # last 10%
    sets = {('blur', s): blurred(x, s) for s in (0.5, 1, 2)}
    sets.update({('noise', s): noised(x, s) for s in (0.02, 0.05, 0.1)})
    sets['same'] = x
    # the paper's 128 patches per image, a quarter of its directions
    res = S.swd_against(x, sets, n_directions=128, repeats=1)
    blur = [res[('blur', s)]['mean'] for s in (0.5, 1, 2)]
    noise = [res[('noise', s)]['mean'] for s in (0.02, 0.05, 0.1)]
    same = res['same']['mean']
    assert [same] + blur == sorted([same] + blur), (same, blur)
    assert [same] + noise == sorted([same] + noise), (same, noise)
