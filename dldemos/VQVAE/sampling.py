"""Drawing new images: codes from the PixelCNN prior, decoded by the VQ-VAE.

One name per idea:
- `sample(...)`: images, the entry point of stage 4, previews and evaluate.py;
- `sample_codes(...)`: codes, with the sampler the config names:
  `sample_incremental` ('cached', the default: O(H*W) work) or
  `sample_naive` ('naive', the tutorial's loop: a full pass per position).
"""
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dldemos.utils.dist_utils import is_main
from dldemos.pixelcnn import cached_sampler


def sample_from_logits(logits, temperature=1.0, top_k=None, generator=None):
    """logits: [N, K] -> codes [N] drawn from softmax(logits / temperature),
    restricted to the top_k most likely codes when top_k is set."""
    logits = logits.float() / max(temperature, 1e-8)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [N, 1]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    prob_dist = F.softmax(logits, -1)
    return torch.multinomial(prob_dist, 1, generator=generator)[:, 0]


@torch.no_grad()
def sample_naive(gen_model, n, H, W, device, temperature=1.0, top_k=None,
                 generator=None, on_step=None, y=None):
    """The tutorial's sampler: the whole PixelCNN runs once per position
    (H * W full passes). Kept as the reference for the incremental one.
    y [n]: the class of each image, for a class-conditional prior."""
    x = torch.zeros((n, H, W), dtype=torch.long, device=device)
    for i in range(H):
        for j in range(W):
            output = gen_model(x, y)  # [n, K, H, W]
            if on_step is not None:
                on_step(i, j, output[:, :, i, j])
            x[:, i, j] = sample_from_logits(output[:, :, i, j], temperature,
                                            top_k, generator)
    return x


def sample_incremental(gen_model, n, H, W, device, temperature=1.0,
                       top_k=None, generator=None, on_step=None, y=None):
    """Each layer's vertical stack once per completed row, its horizontal
    stack once per position from cached left neighbours: O(H * W) work
    instead of the naive O((H * W)^2), same logits and draws as the naive
    loop run in full fp32 (it always runs in full fp32: see cached_sampler)."""
    return cached_sampler.sample_incremental(
        gen_model, n, H, W, device, sample_from_logits, temperature, top_k,
        generator, on_step, y)


# config value -> sampler ('cached' names the incremental one, as before)
SAMPLERS = {'cached': sample_incremental, 'naive': sample_naive}


def sample_codes(gen_model, n, H, W, device, sampler='cached', y=None,
                 on_step=None, progress=True, **kwargs):
    """Codes [n, H, W] from gen_model (in eval mode) with the named sampler;
    y [n]: the class of each image, for a class-conditional prior.
    `progress`: a bar over the latent positions (rank 0 only): a large
    prior takes minutes per grid, which must not look like a hang."""
    if sampler not in SAMPLERS:
        raise ValueError(f'unknown sampler {sampler!r}: use one of '
                         f'{", ".join(SAMPLERS)}')
    if y is not None:
        y = torch.as_tensor(y, dtype=torch.long, device=device)  # [n]
    gen_model.check_labels(y, n)
    bar = tqdm(total=H * W, desc=f'sampling {n} images, {H}x{W} codes',
               unit='pos', leave=False, dynamic_ncols=True,
               disable=not (progress and is_main()))

    def step(i, j, logits):
        bar.update()
        if on_step is not None:
            on_step(i, j, logits)

    was_training = gen_model.training
    gen_model.eval()
    try:
        return SAMPLERS[sampler](gen_model, n, H, W, device, y=y,
                                 on_step=step, **kwargs)
    finally:
        bar.close()
        gen_model.train(was_training)


def grid_labels(n_classes, n):
    """Labels of a class grid: max(1, n // n_classes) images of each class,
    class by class ([0, 0, .., 1, 1, ..]): one row per class."""
    per_class = max(1, n // n_classes)
    return torch.arange(n_classes).repeat_interleave(per_class)  # [C * cols]


@torch.no_grad()
def sample(vqvae, gen_model, img_shape, n, device, *, sampler='cached',
           temperature=1.0, top_k=None, seed=None, batch_size=None,
           labels=None):
    """n new images [n, C, H, W] (float, on device): codes drawn from the
    prior, decoded by the VQ-VAE. With `seed`, a private generator draws them,
    so the global RNG (and a training run using it) is left untouched.
    labels [n]: the class of each image, for a class-conditional prior."""
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)  # [n]
    H, W = vqvae.get_latent_HW(tuple(img_shape))
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    batch_size = batch_size or n
    imgs = []
    for i in range(0, n, batch_size):
        y = None if labels is None else labels[i:i + batch_size]
        codes = sample_codes(gen_model, min(batch_size, n - i), H, W, device,
                             sampler, y, temperature=temperature,
                             top_k=top_k, generator=generator)  # [b, H, W]
        imgs.append(vqvae.decode(codes).float())  # [b, C, 4H, 4W]
    return torch.cat(imgs)


def sample_with_cfg(vqvae, gen_model, cfg, n, device, seed=None,
                    batch_size=None, labels=None):
    """`sample` with the config's image shape, sampler, temperature, top_k."""
    return sample(vqvae, gen_model, cfg['img_shape'], n, device,
                  sampler=cfg['sampler'], temperature=cfg['temperature'],
                  top_k=cfg['top_k'], seed=seed, batch_size=batch_size,
                  labels=labels)
