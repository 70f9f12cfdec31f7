"""Sliced Wasserstein distance over Laplacian-pyramid patches (SWD).

A sample score for images without labels and without downloaded weights,
as described by Karras et al. 2018 ("Progressive Growing of GANs", section 5
and appendix D):
- each image gets a Laplacian pyramid (5-tap [1, 4, 6, 4, 1] / 16 Gaussian,
  factor 2), from full resolution down to the last level of at least 16x16;
  the coarsest level is the low-pass image itself, the others band-pass;
- from every level of every image, n_patches 7x7 neighbourhoods are taken at
  random places (all channels: 49 * C numbers each);
- each patch set is normalised per channel by its own mean and standard
  deviation at that level (normalize='each', the paper's way; 'reference'
  uses the first set's statistics for both, which also sees a global colour
  or contrast shift that 'each' normalises away);
- the distance of two patch sets is the mean over random unit directions
  (paper: 4 repeats of 128 = 512) of the 1-D Wasserstein-1 distance of the
  projected sets: per level, and their mean over levels.

Convention: values are reported x 1e3, as in the paper's tables (SWD_SCALE).
The floor of a finite sample (two sets of the same distribution) is > 0 and
shrinks with more images and patches, so compare values only at equal set
sizes and patch counts. Randomness (patch places and directions) comes from
torch.Generators seeded from `seed`, the level and the set's role, so the same
inputs and seed give the same value, whatever the batch size.
"""
import numpy as np
import torch
import torch.nn.functional as F

from dldemos.utils.errors import UsageError

SWD_SCALE = 1e3
MIN_SIZE = 16        # the paper's coarsest pyramid level
PATCH_SIZE = 7       # 7x7 neighbourhoods
N_PATCHES = 128      # per image per level (paper: 128)
N_DIRECTIONS = 128   # per repeat (paper: 128 x 4 repeats = 512)
REPEATS = 4
MAX_IMAGES = 2048    # cap per set: bounds time and memory
IMAGE_BATCH = 256    # images through the pyramid at a time
DIRECTION_CHUNK = 16  # directions projected and sorted at a time
CONVENTION = ('sliced Wasserstein distance x 1e3 over 7x7 patches of a '
              'Laplacian pyramid down to 16x16 (Karras et al. 2018), '
              'per level and mean of levels')
_ROLE_DIRECTIONS, _ROLE_A, _ROLE_B = 0, 1, 2


def _generator(seed, *keys):
    """A torch.Generator for (seed, keys): independent streams per level and
    role, so one set's draws do not shift another's."""
    state = np.random.SeedSequence([int(seed), *keys]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def _gaussian(channels, dtype):
    k = torch.tensor([1., 4., 6., 4., 1.], dtype=dtype) / 16
    k2 = torch.outer(k, k)  # [5, 5], sums to 1
    return k2.expand(channels, 1, 5, 5).contiguous()  # [C, 1, 5, 5]


def blur(x):
    """5x5 binomial blur per channel, reflected borders: [N, C, H, W]."""
    C = x.shape[1]
    x_pad = F.pad(x, (2, 2, 2, 2), mode='reflect')  # [N, C, H+4, W+4]
    return F.conv2d(x_pad, _gaussian(C, x.dtype), groups=C)  # [N, C, H, W]


def pyr_down(x):
    """Blur and keep every second row and column: [N, C, ceil(H/2), ...].
    A stride-2 convolution: the same values as blur(x)[:, :, ::2, ::2]
    without computing the three quarters that are dropped."""
    C = x.shape[1]
    x_pad = F.pad(x, (2, 2, 2, 2), mode='reflect')  # [N, C, H+4, W+4]
    return F.conv2d(x_pad, _gaussian(C, x.dtype), stride=2, groups=C)


def pyr_up(x, size):
    """Zeros between the samples, then blur x 4 (the inverse of pyr_down's
    subsampling): [N, C, h, w] -> [N, C, *size]."""
    N, C, h, w = x.shape
    up = x.new_zeros(N, C, 2 * h, 2 * w)  # [N, C, 2h, 2w]
    up[:, :, ::2, ::2] = x
    return 4 * blur(up[:, :, :size[0], :size[1]])  # [N, C, H, W]


def n_levels(height, width, min_size=MIN_SIZE):
    """Pyramid levels from full size down to the last one >= min_size."""
    s = min(height, width)
    if s < min_size:
        raise UsageError(f'SWD needs images of at least {min_size}x'
                         f'{min_size} pixels, got {height}x{width}')
    levels = 1
    while (s + 1) // 2 >= min_size:
        s, levels = (s + 1) // 2, levels + 1
    return levels


def laplacian_pyramid(x, levels=None):
    """All levels, finest first: band-pass [N, C, H_l, W_l] each, the last
    the low-pass image. Their collapse (pyr_up and add, coarsest first) gives
    x back."""
    levels = levels or n_levels(*x.shape[-2:])
    out, g = [], x
    for _ in range(levels - 1):
        g_down = pyr_down(g)  # [N, C, ceil(H_l/2), ceil(W_l/2)]
        out.append(g - pyr_up(g_down, g.shape[-2:]))  # [N, C, H_l, W_l]
        g = g_down
    out.append(g)
    return out


def pyramid_level(x, level, levels):
    """Level `level` of laplacian_pyramid(x, levels) alone:
    [N, C, H_l, W_l]."""
    g = x
    for _ in range(level):
        g = pyr_down(g)
    if level == levels - 1:
        return g
    return g - pyr_up(pyr_down(g), g.shape[-2:])


def level_sizes(height, width, levels):
    """(H_l, W_l) of each level, finest first."""
    sizes = [(height, width)]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def extract_patches(level_imgs, ys, xs, size=PATCH_SIZE):
    """Patches at top-left corners (ys, xs) [n, P] of level_imgs
    [n, C, h, w]: [n * P, C, size, size]."""
    n, P = ys.shape
    offs = torch.arange(size)
    rows = (ys[:, :, None] + offs)[:, :, :, None]  # [n, P, size, 1]
    cols = (xs[:, :, None] + offs)[:, :, None, :]  # [n, P, 1, size]
    idx = torch.arange(n)[:, None, None, None]  # [n, 1, 1, 1]
    hwc = level_imgs.permute(0, 2, 3, 1)  # [n, h, w, C]
    patches = hwc[idx, rows, cols]  # [n, P, size, size, C]
    return patches.reshape(n * P, size, size, -1).permute(0, 3, 1, 2)


def level_descriptors(images, level, levels, generator, n_patches=N_PATCHES,
                      batch_size=IMAGE_BATCH):
    """Raw patches of one pyramid level of every image:
    [N * n_patches, C, 7, 7] fp32, in image order."""
    N, _, H, W = images.shape
    h, w = level_sizes(H, W, levels)[level]
    # all places drawn at once: the same values whatever the batch size
    ys = torch.randint(0, h - PATCH_SIZE + 1, (N, n_patches),
                       generator=generator)  # [N, P]
    xs = torch.randint(0, w - PATCH_SIZE + 1, (N, n_patches),
                       generator=generator)  # [N, P]
    out = torch.empty(N * n_patches, images.shape[1], PATCH_SIZE,
                      PATCH_SIZE)  # [N * P, C, 7, 7], filled batch by batch
    for i in range(0, N, batch_size):
        x = images[i:i + batch_size].float()  # [n, C, H, W]
        lvl = pyramid_level(x, level, levels)  # [n, C, h, w]
        out[i * n_patches:(i + x.shape[0]) * n_patches] = extract_patches(
            lvl, ys[i:i + batch_size], xs[i:i + batch_size])
    return out


def channel_stats(desc):
    """Per-channel mean and std of a patch set [M, C, 7, 7]: ([C], [C]),
    accumulated in float64 (a sum of millions of fp32 values drifts), one
    channel at a time (a float64 copy of the whole set would double the
    memory)."""
    stats = [(d.mean(), d.std()) for d in
             (desc[:, c].double() for c in range(desc.shape[1]))]
    mean = torch.stack([m for m, _ in stats])  # [C]
    std = torch.stack([s for _, s in stats]).clamp_min(1e-8)  # [C] no 0/0
    return mean, std


def normalise_(desc, stats):
    """(desc - mean) / std per channel, in place (a second copy of a large
    patch set is what would set the peak memory), flattened:
    [M, C, 7, 7] -> [M, C * 49] fp32."""
    mean, std = (s.float()[None, :, None, None] for s in stats)
    return desc.sub_(mean).div_(std).reshape(desc.shape[0], -1)


def _quantile_pairs(n, m):
    """Index pairs and weights that integrate |Qa(t) - Qb(t)| over t in
    (0, 1] exactly, for sorted sets of sizes n and m (Qa, Qb: quantile
    functions, steps at multiples of 1/n and 1/m). Returns ia [K], ib [K],
    weights [K] float64 summing to 1 (K <= n + m; n == m: ia = ib = arange)."""
    # breakpoints in units of 1 / (n m), exact in int64
    t = torch.unique(torch.cat([torch.arange(1, n + 1) * m,
                                torch.arange(1, m + 1) * n]))  # [K] sorted
    dt = torch.diff(t, prepend=t.new_zeros(1)).double() / (n * m)  # [K]
    ia = (t + m - 1) // m - 1  # [K] ceil(t n / (n m)) - 1
    ib = (t + n - 1) // n - 1  # [K]
    return ia, ib, dt


def random_directions(n, dim, generator):
    """n random unit vectors: [n, dim] fp32."""
    d = torch.randn(n, dim, generator=generator)  # [n, dim]
    return d / d.norm(dim=1, keepdim=True)


def sliced_wasserstein(a, b, directions, chunk=DIRECTION_CHUNK):
    """Mean over directions [D, dim] of the 1-D Wasserstein-1 distance of the
    projections of a [n, dim] and b [m, dim] (sets of any sizes)."""
    ia, ib, dt = (t.numpy() for t in _quantile_pairs(a.shape[0], b.shape[0]))
    # an fp32 dot (BLAS, blocked sums) is exact enough for one direction and
    # much faster than a float64 copy of the gaps; directions add in float64
    dt = dt.astype(np.float32)
    total = 0.0
    for i in range(0, directions.shape[0], chunk):
        d = directions[i:i + chunk]  # [k, dim]
        # numpy's vectorised sort is much faster than torch.sort on a
        # CPU; sorted values do not depend on the algorithm
        pa = np.sort((d @ a.T).numpy(), axis=1)  # [k, n]
        pb = np.sort((d @ b.T).numpy(), axis=1)  # [k, m]
        gap = np.abs(np.take(pa, ia, axis=1) - np.take(pb, ib, axis=1))
        total += float((gap @ dt).astype(np.float64).sum())  # gap: [k, K]
    return total / directions.shape[0]


def as_images(images, max_images=MAX_IMAGES):
    """A tensor [N, C, H, W] (first max_images) from a tensor or a loader of
    image batches (or of (image, label) batches)."""
    if isinstance(images, torch.Tensor):
        out = images[:max_images]
    else:
        batches, n = [], 0
        for batch in images:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            batches.append(x[:max_images - n].cpu())
            n += batches[-1].shape[0]
            if n >= max_images:
                break
        out = torch.cat(batches) if batches else torch.empty(0)
    if out.dim() != 4 or out.shape[0] == 0:
        raise UsageError('SWD needs a non-empty batch of images [N, C, H, W]'
                         f', got shape {tuple(out.shape)}')
    return out.cpu()


def _check_same_kind(a, others):
    for name, b in others.items():
        if b.shape[1:] != a.shape[1:]:
            raise UsageError(f'SWD compares images of one shape: {name} are '
                             f'{tuple(b.shape[1:])}, the reference '
                             f'{tuple(a.shape[1:])}')


def swd_against(reference, others, seed=0, *, n_patches=N_PATCHES,
                n_directions=N_DIRECTIONS, repeats=REPEATS,
                max_images=MAX_IMAGES, normalize='each'):
    """SWD of each set in `others` ({name: images}) to `reference`, x 1e3:
    {name: {'levels': {'HxW': value}, 'mean': value}}.

    Images: tensors [N, C, H, W] (or loaders of them), one shape for all,
    H, W >= 16, values on one scale (e.g. [0, 1]); at most max_images of
    each set are used. The reference's patches and the directions are drawn
    once per level and shared by all comparisons, so each value equals
    swd(reference, that set, seed) alone."""
    if normalize not in ('each', 'reference'):
        raise UsageError("normalize must be 'each' (the paper's) or "
                         f"'reference', got {normalize!r}")
    ref = as_images(reference, max_images)  # [N, C, H, W]
    others = {k: as_images(v, max_images) for k, v in others.items()}
    _check_same_kind(ref, others)
    H, W = ref.shape[-2:]
    levels = n_levels(H, W)
    out = {k: {'levels': {}} for k in others}
    for level, (h, w) in enumerate(level_sizes(H, W, levels)):
        key = f'{h}x{w}'
        a = level_descriptors(ref, level, levels,
                              _generator(seed, level, _ROLE_A),
                              n_patches)  # [Na*P, C, 7, 7]
        a_stats = channel_stats(a)
        a = normalise_(a, a_stats)  # [Na*P, C*49]
        g_dirs = _generator(seed, level, _ROLE_DIRECTIONS)
        dirs = random_directions(n_directions * repeats, a.shape[1],
                                 g_dirs)  # [D, C*49]
        for name, imgs in others.items():
            b = level_descriptors(imgs, level, levels,
                                  _generator(seed, level, _ROLE_B),
                                  n_patches)  # [Nb*P, C, 7, 7]
            b = normalise_(b, a_stats if normalize == 'reference'
                           else channel_stats(b))  # [Nb*P, C*49]
            out[name]['levels'][key] = SWD_SCALE * sliced_wasserstein(
                a, b, dirs)
            del b
    for v in out.values():
        v['mean'] = sum(v['levels'].values()) / len(v['levels'])
    return out


def swd(a, b, seed=0, **kwargs):
    """SWD of image set b to image set a, x 1e3: {'levels': {'HxW': value},
    'mean': value}. kwargs: see swd_against."""
    return swd_against(a, {'b': b}, seed, **kwargs)['b']


def swd_scores(real, fake, recon=None, train=None, seed=0, **kwargs):
    """The sample score for evaluate.py, x 1e3 (means over levels):
    swd: samples `fake` vs the held-out images `real`;
    swd_ref_reconstructions: the VQ-VAE's reconstructions of those held-out
    images vs them (what the decoder allows);
    swd_ref_train: real training images vs the held-out ones (the floor of
    a perfect sampler at this sample size);
    swd_levels: {the three names: {'HxW': value}}; swd_convention: a line.

    real: a tensor [N, C, H, W] or a loader of the held-out images in
    [0, 1]; fake, recon, train: tensors (or loaders) of the same shape
    (recon / train None: that reference is left out). How evaluate.py
    should call it, for an image dataset without a classifier:

        test_imgs = torch.cat(list(test_loader))   # held-out, eval subset
        recon = reconstructions of test_imgs (clipped to [0, 1])
        train = n_samples random training images (as for the FID train ref)
        s = swd_scores(test_imgs, imgs, recon, train, seed=ctx.seed)
        out.update(swd=s['swd'], swd_ref_reconstructions=
                   s['swd_ref_reconstructions'], swd_ref_train=
                   s['swd_ref_train'])   # -> samples.swd etc.

    Pass as many train images as samples: the finite-sample floor depends on
    the set sizes, and the two should be comparable. kwargs: see
    swd_against."""
    sets = {'swd': fake}
    if recon is not None:
        sets['swd_ref_reconstructions'] = recon
    if train is not None:
        sets['swd_ref_train'] = train
    res = swd_against(real, sets, seed, **kwargs)
    out = {k: v['mean'] for k, v in res.items()}
    out['swd_levels'] = {k: v['levels'] for k, v in res.items()}
    out['swd_convention'] = CONVENTION
    return out
