"""Learning-rate schedules as pure functions of the global step.

The epoch runner sets `lr_at(step)` on the optimizer before every step, so a
resumed run (also from mid-epoch) gets exactly the lr an uninterrupted one
had, with no scheduler state in the resume point.

- 'constant': the config's lr (the tutorial's).
- 'cosine': linear warmup over the first `warmup` fraction of the steps to
  the lr, then cosine decay towards 0.
- 'onecycle': torch's OneCycleLR (cosine annealing, without its momentum
  cycling): from lr/25 up to lr over the `warmup` fraction, then down to
  lr/25/1e4.
"""
import math

SCHEDULES = ('constant', 'cosine', 'onecycle')
ONECYCLE_DIV = 25.0         # torch's div_factor: start at lr / 25
ONECYCLE_FINAL_DIV = 1e4    # torch's final_div_factor: end at start / 1e4


def cos_anneal(start, end, pct):
    """From start (pct 0) to end (pct 1) along half a cosine, as torch's
    OneCycleLR computes it."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def cosine_lr(step, total, lr, warmup):
    n_warm = int(warmup * total)
    if step < n_warm:  # (step + 1): no step is wasted at lr 0
        return lr * (step + 1) / n_warm
    pct = min(1.0, (step - n_warm) / max(1, total - n_warm))
    return cos_anneal(lr, 0.0, pct)


def onecycle_lr(step, total, lr, warmup):
    start = lr / ONECYCLE_DIV
    up_end = warmup * total - 1  # torch's end of phase 1 (a float)
    if step <= up_end:
        return cos_anneal(start, lr, step / up_end if up_end > 0 else 1.0)
    pct = min(1.0, (step - up_end) / max(1e-12, total - 1 - up_end))
    return cos_anneal(lr, start / ONECYCLE_FINAL_DIV, pct)


def lr_at(step, total, lr, kind='constant', warmup=0.0):
    """The lr of 0-based global step `step` of `total` steps."""
    if kind == 'constant':
        return lr
    if kind == 'cosine':
        return cosine_lr(step, total, lr, warmup)
    if kind == 'onecycle':
        return onecycle_lr(step, total, lr, warmup)
    raise ValueError(f'unknown lr schedule {kind!r}: use one of '
                     f'{", ".join(SCHEDULES)}')


def stage_lr(cfg, suffix, batches_per_epoch):
    """step -> lr of one model: suffix '' (the VQ-VAE: lr, lr_schedule,
    n_epochs) or '_2' (the prior: lr_2, lr_schedule_2, n_epochs_2)."""
    lr, kind = cfg['lr' + suffix], cfg['lr_schedule' + suffix]
    total = cfg['n_epochs' + suffix] * batches_per_epoch
    return lambda step: lr_at(step, total, lr, kind, cfg['warmup'])
