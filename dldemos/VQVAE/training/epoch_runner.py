"""The epochs around a training step: what both training loops share.

main.py's `train_vqvae` and `train_generative_model` each write only their
step (forward, loss, backward, optimizer step, as in the tutorial) and hand
it to `run_epochs`, which owns everything else:

- resuming: the epoch and batch to start at, restored weights, optimizer and
  RNG (and the stage's extra training state), the running sums of an epoch
  stopped half-way;
- the learning rate of each step, from the stage's schedule;
- the epoch's loss terms, summed over samples and over the ranks, so the
  printed mean is over every sample once (DistributedSampler's padding
  repeats a few samples on some ranks: trained on, not counted);
- stopping: Ctrl-C / SIGTERM become a flag checked between batches (every
  STOP_CHECK_EVERY batches under DDP, where the check is an all-reduce), then
  a resume point is saved and the run ends with exit code 130;
- the end of an epoch (rank 0): non-finite check, held-out scores,
  checkpoint, JSONL record, the tutorial's epoch line, loss plot, previews.

Under torchrun everything a rank-dependent step needs (all-reduce, barrier,
rank-0-only writes) happens here, through dist_utils, which does nothing in
one process.
"""
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dldemos.utils.dist_utils import (all_reduce_sum, barrier, get_world_size,
                                is_dist, is_main)
from dldemos.utils.errors import (CheckpointError, Interrupted,
                                  NonFiniteLoss, UsageError)
from dldemos.VQVAE.runtime.files import load_file, save_atomic
from dldemos.VQVAE.runtime.context import data_split, split_changed
from dldemos.VQVAE.runtime.resume_point import (StaleResumePoint,
                                                load_training_state,
                                                read_resume_entry,
                                                resume_path, rng_state,
                                                save_training_state)
from dldemos.utils.lr_schedule import stage_lr
from dldemos.VQVAE.runtime.logs import append_jsonl, log, start_jsonl
from dldemos.VQVAE.plots import update_loss_plot

# Under DDP a stop check is an all-reduce plus a host sync; once every 16
# batches keeps the GPUs streaming and still stops within seconds.
STOP_CHECK_EVERY = 16
BAR_EVERY = 20  # batches between progress-bar updates (each syncs the host)
# ... or sooner once this many seconds passed: slow batches (a CPU, a short
# epoch) would otherwise show one batch's loss for minutes, as if stuck,
# and a host sync a second costs a GPU nothing
BAR_SECONDS = 1.0


@dataclass
class Stage:
    """One model's training, as the runner needs it."""
    name: str                 # 'VQ-VAE' / 'PixelCNN', in messages
    model: torch.nn.Module    # the unwrapped model: saved, scored, previewed
    optimizer: torch.optim.Optimizer
    path: str                 # its checkpoint; the resume point sits beside
    epochs_key: str           # 'n_epochs' / 'n_epochs_2'
    log_name: str             # JSONL log in the work dir
    terms: tuple              # names of the loss terms a step returns
    heldout: Optional[Callable[[], dict]] = None  # held-out scores
    describe: Optional[Callable[[dict], str]] = None  # ... for the epoch line
    preview: Optional[Callable[[int], None]] = None  # grid after epoch e
    bar_info: Optional[Callable[[object], dict]] = None  # extra bar fields
    provenance: dict = field(default_factory=dict)  # saved in resume points
    # lr of a global step (epoch * batches per epoch + batch), set before
    # every step: a pure function, so resumed runs get the same lr (None:
    # the config's lr / lr_2 and their lr_schedule)
    lr_at: Optional[Callable[[int], float]] = None
    # training state beside the model (codebook statistics): saved in and
    # restored from the resume points, never in the model file
    train_state: Optional[torch.nn.Module] = None
    # the files trained on and held out (context.data_split): saved with
    # each resume point, compared on resume and by evaluate.py
    data_split: Optional[dict] = None


class StopFlag:
    """Turns SIGINT / SIGTERM into a flag the loop polls, so it can save a
    resume point and exit cleanly instead of dying mid-write. A second
    signal does not abort that save; a third quits at once, unless the
    resume point is saved already. Once a signal came the run is ending:
    signals after the loop (while the stop message is printed and the
    process exits) are ignored, not turned into a traceback."""

    active = None  # the flag of the loop running now (see mark_saved)

    def __init__(self):
        self.signum, self.count, self._old = None, 0, {}
        self.saved = False

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        StopFlag.active = self
        return self

    def _handle(self, signum, frame):
        self.count += 1
        if self.saved:  # nothing left to abort: the run is ending anyway
            return
        if self.count >= 3:
            raise KeyboardInterrupt
        self.signum = self.signum or signum
        # os.write, not print: the handler may interrupt a print or tqdm
        os.write(2, b'\nstopping: saving a resume point after this batch '
                 b'(signal twice more to quit without saving)\n'
                 if self.count == 1 else
                 b'\nstill saving the resume point: signal once more to quit '
                 b'without saving\n')

    @classmethod
    def mark_saved(cls):
        if cls.active is not None:
            cls.active.saved = True

    def __exit__(self, *exc):
        StopFlag.active = None
        for s, old in self._old.items():
            signal.signal(s, ignore_late_signal if self.count else old)

    def __bool__(self):
        return self.signum is not None


def ignore_late_signal(signum, frame):
    """A signal after a stop began: the run is already ending with 130.
    (A Python handler, not SIG_IGN, which child processes would inherit.)"""


def stop_requested(stop, device):
    """True on every rank once any rank got a signal, so all stop together.
    In one process no tensor is made (a host-to-GPU copy per step would make
    the CPU wait for the GPU)."""
    if not is_dist():
        return bool(stop)
    # a sum > 0: some rank was signalled (ranks get signals at other times)
    flag = torch.tensor([float(bool(stop))], device=device)
    return bool(all_reduce_sum(flag) > 0)


def real_samples(sampler):
    """Samples of its own that this rank's sampler yields: DistributedSampler
    pads every rank to the same length by repeating the first indices, and
    the padding comes last in each rank's list."""
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return len(sampler)
    n = len(sampler.dataset)
    return len(range(sampler.rank, n, sampler.num_replicas))


def remaining_batches(loader, sampler, skip):
    """The batches of this epoch after the first `skip` (a mid-epoch resume):
    the sampler's order of this epoch, without loading the skipped images."""
    if not skip:
        return loader
    # the sampler's order depends only on (seed, epoch): the same list the
    # stopped run was walking, from the first batch it did not do
    indices = list(sampler)[skip * loader.batch_size:]
    return DataLoader(loader.dataset, batch_size=loader.batch_size,
                      sampler=indices, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory,
                      collate_fn=loader.collate_fn,
                      drop_last=loader.drop_last)


def check_finite(values, stage):
    if all(math.isfinite(v) for v in values):
        return
    kept = (f'the last good checkpoint {stage.path} is kept'
            if os.path.isfile(stage.path) else
            'no checkpoint was saved yet')
    raise NonFiniteLoss(
        f'{stage.name} loss became {values[0]}: training stopped; {kept}. '
        'Lower the learning rate (lr) or turn off amp and run again'
        + (' with --resume' if os.path.isfile(stage.path) else ''))


def check_finite_weights(stage):
    """A step with a blown-up lr can leave NaN or inf weights while the loss
    it logged (computed before the step) is finite: never save those over
    the last good files. Every rank holds the same weights under DDP, so
    every rank raises together."""
    modules = [stage.model] + ([stage.train_state] if stage.train_state is not None
                               else [])
    bad = [name for m in modules for name, t in m.state_dict().items()
           if isinstance(t, torch.Tensor) and t.is_floating_point()
           and not bool(torch.isfinite(t).all())]
    if not bad:
        return
    path = stage.path
    kept = (f'the last good checkpoint {path} is kept'
            if os.path.isfile(path) else 'no checkpoint was saved yet')
    raise NonFiniteLoss(
        f'{stage.name} weights became NaN or inf ({bad[0]}'
        + (f' and {len(bad) - 1} more' if len(bad) > 1 else '')
        + f'): training stopped; {kept}. Lower the learning rate '
        f'({"lr_2" if stage.epochs_key == "n_epochs_2" else "lr"}) and run '
        'again' + (' with --resume' if os.path.isfile(path) else ''))


def resume_or_start(ctx, stage):
    """(epoch, step, sums) to start from. --resume on a stage that never
    wrote anything starts it from scratch, so `--resume` can rerun all
    stages of a run that was stopped in stage 1; so does a resume point
    trained on something that changed (the prior of a retrained VQ-VAE)."""
    path = stage.path
    if not ctx.resume:  # a fresh run overwrites what is there
        return 0, 0, []
    if not (os.path.exists(resume_path(path)) or os.path.exists(path)):
        log(f'no {stage.name} checkpoint {path} yet: training it from '
            'scratch')
        return 0, 0, []
    try:
        epoch, step, sums = load_training_state(
            path, stage.model, stage.optimizer, ctx.cfg, stage.provenance,
            stage.train_state)
    except StaleResumePoint as e:
        log(f'{e} since: training the {stage.name} from scratch')
        return 0, 0, []
    log(f'resuming {stage.name} at epoch {epoch} step {step}')
    warning = split_changed(read_resume_entry(path, 'data_split'),
                            stage.data_split)
    if warning:
        log(warning)
    return epoch, step, sums


def save_resume_point_and_stop(ctx, stage, epoch, step=0, sums=(), rng=None):
    """A signal arrived: save where to go on from, then stop cleanly.

    `sums` (this rank's running sums) are summed over the ranks first, so the
    resume point holds the global sums and every rank sees the same check.
    """
    if len(sums):  # mid-epoch: the epoch's mean must include these batches
        sums = all_reduce_sum(sums).tolist()
        check_finite(sums, stage)  # never replace good weights by NaNs
    check_finite_weights(stage)
    if is_main():  # one writer; the model is the unwrapped one
        save_training_state(stage.path, stage.model, stage.optimizer,
                            ctx.cfg, epoch, step, sums, rng,
                            stage.provenance, stage.train_state,
                            stage.data_split)
    barrier()  # no rank exits while rank 0 is still writing
    StopFlag.mark_saved()
    raise Interrupted(f'stopped in {stage.name} epoch {epoch}; resume point '
                      f'saved in {resume_path(stage.path)}: rerun with '
                      '--resume to go on')


def fmt(v):
    return f'{v:.4f}' if abs(v) >= 1e-3 else f'{v:.2e}'


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group['lr'] = lr


def run_epoch(ctx, stage, loader, sampler, train_step, epoch, skip,
              start_sums, stop):
    """One epoch (from batch `skip`): (sums [terms..., samples], images
    seen by this rank, seconds)."""
    device = ctx.device
    sampler.set_epoch(epoch)  # this epoch's shuffle, the same on every rank
    # a resume point saved mid-epoch restores the RNG as it is here, so the
    # resumed run draws exactly what this one draws
    epoch_rng = rng_state()
    sums = torch.zeros(len(stage.terms) + 1, device=device)
    one = torch.ones((), device=device)  # counts samples in sums
    if skip and is_main():  # saved sums are global: add them once
        sums += torch.tensor(start_sums, device=device)
    n_real = real_samples(sampler)
    # one process: a bool test per batch; DDP: an all-reduce every few
    check_every = STOP_CHECK_EVERY if is_dist() else 1
    tic, n_seen = time.perf_counter(), 0
    shown = tic  # when the bar's numbers were last updated
    # epochs count from 0, as the tutorial's epoch line does
    last = ctx.cfg[stage.epochs_key] - 1
    bar = tqdm(remaining_batches(loader, sampler, skip),
               desc=f'{stage.name} epoch {epoch} of 0-{last}', leave=False,
               initial=skip, total=len(loader), disable=not is_main(),
               dynamic_ncols=True)
    for i, batch in enumerate(bar, start=skip):  # i counts from batch 0
        if stage.lr_at is not None:
            set_lr(stage.optimizer, stage.lr_at(epoch * len(loader) + i))
        terms, n, out = train_step(batch)
        # padding repeats a few samples on some ranks: trained on (every
        # rank must step), left out of the mean
        k = max(0, min(n, n_real - i * loader.batch_size))
        sums += torch.stack([t.detach().float() for t in terms] + [one]) * k
        n_seen += n
        # .item() waits for the GPU: only every BAR_EVERY batches, or after
        # BAR_SECONDS
        now = time.perf_counter()
        if is_main() and (i % BAR_EVERY == 0 or now - shown >= BAR_SECONDS):
            shown = now
            info = {name: fmt(t.item()) for name, t in zip(stage.terms, terms)}
            if stage.bar_info is not None:
                info.update(stage.bar_info(out))
            info['img/s'] = f'{n_seen / (time.perf_counter() - tic):.3g}'
            bar.set_postfix(info)
        if (i + 1) % check_every == 0 and stop_requested(stop, device):
            save_resume_point_and_stop(ctx, stage, epoch, i + 1, sums,
                                       epoch_rng)
    return sums, n_seen, time.perf_counter() - tic


def finish_epoch(ctx, stage, epoch, sums, n_seen, seconds, elapsed):
    """The mean over every sample on every rank; then, on rank 0: held-out
    scores, checkpoint, log record, epoch line, plot and previews."""
    totals = all_reduce_sum(sums)  # every rank gets the same totals
    means = (totals[:-1] / totals[-1]).tolist()
    # before any save: NaN weights must never replace the last good ones
    check_finite(means, stage)
    check_finite_weights(stage)
    n_epochs = ctx.cfg[stage.epochs_key]
    record = dict(epoch=epoch, **dict(zip(stage.terms, means)),
                  images_per_s=get_world_size() * n_seen / max(seconds, 1e-9),
                  elapsed_s=elapsed)
    if is_main():  # scoring, saving and plotting are rank 0's alone
        if stage.heldout is not None:
            record.update(stage.heldout())
        if (epoch + 1) % ctx.cfg['save_every'] == 0 or epoch + 1 == n_epochs:
            save_training_state(stage.path, stage.model, stage.optimizer,
                                ctx.cfg, epoch + 1,
                                provenance=stage.provenance,
                                train_state=stage.train_state,
                                data_split=stage.data_split)
        append_jsonl(ctx.out(stage.log_name), record)
        # the tutorial's line, then the held-out numbers beside it
        scores = stage.describe(record) if stage.describe else ''
        # 4 significant digits (the JSONL log keeps every digit)
        print(f'epoch {epoch} loss: {means[0]:.4g} elapsed {elapsed:.2f}s'
              + (f' | {scores}' if scores else ''), flush=True)
        update_loss_plot(ctx.work_dir)
        every = ctx.cfg['preview_every'] if ctx.cfg['n_preview'] else 0
        if stage.preview is not None and every and (epoch + 1) % every == 0:
            stage.preview(epoch)  # drawn after epoch `epoch` (from 0)
    barrier()


def keep_model_file(ctx, stage, restored):
    """Nothing left to train. A resumed run restored the weights from the
    resume point: the model file must hold exactly those, so it is written
    back if it went missing or differs (a kill between the resume point's
    write and the model file's left the previous epoch's weights there). A
    run with 0 epochs that restored nothing has nothing to save: say so
    instead of 'Done'."""
    # `restored`, not ctx.resume: --resume on a work dir without a (current)
    # resume point restores nothing, and saving then passed the untrained
    # weights off as a checkpoint
    if not restored:
        if os.path.isfile(stage.path):
            return
        raise UsageError(f'{stage.epochs_key}=0 trains nothing and there is '
                         f'no {stage.name} checkpoint {stage.path} yet: set '
                         f'{stage.epochs_key} to 1 or more')
    if is_main() and not holds_weights(stage.path, stage.model):
        if os.path.isfile(stage.path):
            log(f'{stage.path} did not hold the weights of its resume point '
                '(a save was cut short): rewriting it')
        save_atomic(stage.model.state_dict(), stage.path)
    barrier()


def holds_weights(path, model):
    """Whether the model file at path holds exactly model's weights."""
    try:
        saved = load_file(path)
    except CheckpointError:  # missing, truncated, not a checkpoint
        return False
    own = model.state_dict()
    return isinstance(saved, dict) and saved.keys() == own.keys() and all(
        isinstance(saved[k], torch.Tensor) and saved[k].shape == v.shape
        and saved[k].dtype == v.dtype and torch.equal(saved[k], v.cpu())
        for k, v in own.items())


def run_epochs(ctx, stage, loader, sampler, train_step):
    """Train `stage` from where it stands to cfg[stage.epochs_key] epochs.

    train_step(batch) -> (loss terms (0-d tensors, in stage.terms order, the total
    loss first), batch size, anything stage.bar_info shows).
    """
    if stage.lr_at is None:  # the config's schedule of this stage's lr
        suffix = stage.epochs_key[len('n_epochs'):]  # '' or '_2'
        stage.lr_at = stage_lr(ctx.cfg, suffix, len(loader))
    stage.data_split = data_split(ctx)  # before resume_or_start compares
    start_epoch, start_step, start_sums = resume_or_start(ctx, stage)
    # a resumed run rewrites the log from its first epoch on
    start_jsonl(ctx.out(stage.log_name), start_epoch)
    n_epochs = ctx.cfg[stage.epochs_key]
    tic = time.perf_counter()
    with StopFlag() as stop:
        for epoch in range(start_epoch, n_epochs):
            # only the first epoch of a resumed run starts mid-way
            skip = start_step if epoch == start_epoch else 0
            sums, n_seen, seconds = run_epoch(ctx, stage, loader, sampler,
                                              train_step, epoch, skip,
                                              start_sums, stop)
            finish_epoch(ctx, stage, epoch, sums, n_seen, seconds,
                         time.perf_counter() - tic)
            if stop_requested(stop, ctx.device):  # came during eval or save
                save_resume_point_and_stop(ctx, stage, epoch + 1)
    keep_model_file(ctx, stage, (start_epoch, start_step) != (0, 0))
    log('Done')
