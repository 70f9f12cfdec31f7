"""Pictures of a run: image grids, the loss curves of the JSONL logs and the
preview grids written during training so progress can be watched.

    python dldemos/VQVAE/plots.py work_dirs   # redraw its loss_curves.png
"""
import argparse
import io
import math
import os
import sys

if __name__ == '__main__':  # run as a script: make `dldemos` importable
    sys.path.insert(0, os.path.abspath(os.path.join(__file__, '../../..')))

import cv2
import einops
import numpy as np
import torch

from dldemos.utils.errors import UsageError, report_errors
from dldemos.VQVAE.runtime.files import write_bytes_atomic
from dldemos.VQVAE.runtime.logs import read_jsonl
from dldemos.VQVAE.sampling import grid_labels, sample_with_cfg

LOSS_PLOT = 'loss_curves.png'
PREVIEW_DIR = 'previews'
# (log file, panel title, [(record key, curve label)]): training terms, then
# the held-out measure of the same quantity where one is logged
PANELS = [
    ('log_vqvae.jsonl', 'VQ-VAE',
     [('loss', 'train loss'), ('reconstruct', 'train reconstruction MSE'),
      ('test_mse', 'held-out reconstruction MSE')]),
    ('log_pixelcnn.jsonl', 'PixelCNN prior',
     [('loss', 'train cross-entropy'),
      ('test_nll', 'held-out NLL (nats/latent)')]),
]


def save_grid(imgs, path, dataset_type, n_rows=None, labels=None,
              max_columns=None, min_cell=None):
    """imgs [N, C, H, W] in [0, 1] -> one grid image at path, square-ish, or
    of n_rows rows filled row by row; images beyond full rows are left out.
    labels [N] (a class-conditional prior's samples, in any order): one row
    per class instead, at most max_columns images of each. min_cell: upscale
    small images (nearest neighbour, no smoothing) until a cell is at least
    that many pixels high, so a person can judge 64x64 faces."""
    if labels is not None:
        imgs, n_rows = class_rows(imgs, labels, max_columns)
    n = imgs.shape[0]
    n1 = max(1, int(n**0.5)) if n_rows is None else min(n_rows, n)
    imgs = imgs[:n1 * (n // n1)]
    imgs = (imgs.clip(0, 1) * 255).detach().cpu()
    if min_cell and imgs.shape[2] < min_cell:
        scale = -(-min_cell // imgs.shape[2])  # ceil
        imgs = imgs.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    imgs = einops.rearrange(imgs, '(n1 n2) c h w -> (n1 h) (n2 w) c', n1=n1)
    imgs = imgs.numpy().astype(np.uint8)
    if imgs.shape[-1] == 3:  # RGB (faces, your images) -> cv2's BGR
        imgs = cv2.cvtColor(imgs, cv2.COLOR_RGB2BGR)
    # encoded in memory, then written atomically: a killed run never leaves
    # half an image; the extension picks the format, as cv2.imwrite's does
    ok, data = cv2.imencode(os.path.splitext(path)[1] or '.jpg', imgs)
    if not ok:
        raise UsageError(f'could not encode {path}: use a .jpg or .png name')
    write_bytes_atomic(path, data.tobytes())


def class_rows(imgs, labels, max_columns=None):
    """(imgs reordered one class a row, the number of rows): row r holds the
    first images of the r-th class present, as many as the rarest class
    has (at most max_columns)."""
    labels = torch.as_tensor(labels).cpu()
    classes = torch.unique(labels)  # sorted
    columns = min(int((labels == c).sum()) for c in classes)
    if max_columns is not None:
        columns = min(columns, max_columns)
    order = torch.cat([torch.nonzero(labels == c).flatten()[:columns]
                       for c in classes])  # [rows * columns]
    return imgs[order.to(imgs.device)], len(classes)


def save_code_usage(counts, path, title):
    """A bar chart of how often each code is used (evaluate.py): a code
    never used is codebook capacity the VQ-VAE wastes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(max(6, len(counts) / 8), 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(counts)), counts.tolist(), width=0.9)
    ax.set_xlabel('code')
    ax.set_ylabel('latent positions')
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path):
    """A matplotlib Figure as a PNG, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=100)
    write_bytes_atomic(path, buffer.getvalue())


def by_epoch(records):
    """One record per epoch, the last one logged (a resumed run may have
    logged an epoch twice), in epoch order."""
    last = {r['epoch']: r for r in records if 'epoch' in r}
    return [last[e] for e in sorted(last)]


def loss_panels(work_dir):
    """[(title, [(label, epochs, values)])] of every logged curve in
    work_dir; epochs count from 0, as in the logs and the epoch line."""
    panels = []
    for log_name, title, curves in PANELS:
        records = by_epoch(read_jsonl(os.path.join(work_dir, log_name)))
        lines = []
        for key, label in curves:
            # a hand-edited or damaged log may hold anything: only finite
            # numbers are drawn
            points = [(r['epoch'], r[key]) for r in records
                      if is_number(r.get(key))]
            if points:
                lines.append((label, *zip(*points)))
        if lines:
            panels.append((title, lines))
    return panels


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) \
        and math.isfinite(v)


def plot_losses(work_dir, out=LOSS_PLOT):
    """Draw every logged loss curve of work_dir into one PNG (written to a
    temp file, then renamed). Returns its path, or None when nothing is
    logged yet."""
    panels = loss_panels(work_dir)
    if not panels:
        return None
    path = os.path.join(work_dir, out)
    save_figure(draw_losses(panels), path)
    return path


def draw_losses(panels):
    """A matplotlib Figure of loss_panels' curves, one panel per model."""
    # the Agg canvas directly: no pyplot, no global backend, no display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5 * len(panels), 3.6))
    FigureCanvasAgg(fig)
    for i, (title, lines) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, epochs, values in lines:
            ax.plot(epochs, values, marker='o', markersize=3, label=label)
        if all(v > 0 for _, _, values in lines for v in values):
            log_axis_in_decimals(ax.yaxis)
        ax.set_title(title)
        ax.set_xlabel('epoch (from 0, as in the logs)')
        integer_epochs(ax, [e for _, epochs, _ in lines for e in epochs])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize='small')
    fig.tight_layout()
    return fig


def decimal(x):
    """A tick value as a plain decimal of 3 significant digits: 0.006,
    1.5, 20 (matplotlib's log axis would say 6x10^-3, 1.5x10^0)."""
    return np.format_float_positional(x, precision=3, unique=True,
                                      fractional=False, trim='-')


def log_axis_in_decimals(axis):
    """A log scale on `axis` with plain decimal labels. Which ticks get a
    label stays matplotlib's choice (minor ones only where the axis spans
    few decades), so labels never crowd."""
    from matplotlib.ticker import LogFormatter

    class DecimalLogFormatter(LogFormatter):
        def __call__(self, x, pos=None):
            return decimal(x) if super().__call__(x, pos) else ''

    axis.axes.set_yscale('log')
    axis.set_major_formatter(DecimalLogFormatter())
    axis.set_minor_formatter(DecimalLogFormatter(labelOnlyBase=False))


def integer_epochs(ax, epochs):
    """Epoch ticks at integers only. One epoch logged: one tick, on a range
    of one epoch around it (matplotlib would spread 0.945 to 1.05)."""
    from matplotlib.ticker import MaxNLocator
    if len(set(epochs)) == 1:
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        ax.set_xticks([epochs[0]])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def update_loss_plot(work_dir):
    """plot_losses for the training loops: a plot that cannot be drawn is a
    warning, never the end of a long run."""
    try:
        return plot_losses(work_dir)
    except Exception as e:  # matplotlib missing, disk full, ...
        print(f'warning: could not draw the loss curves ({e})',
              file=sys.stderr)


def preview_path(work_dir, name, epoch):
    """The preview drawn after epoch `epoch`, counted from 0 like the epoch
    line and the logs: 'after' says the epoch's training is in it."""
    folder = os.path.join(work_dir, PREVIEW_DIR)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f'{name}_after_epoch{epoch:03d}.jpg')


@torch.no_grad()
def preview_reconstruction(vqvae, x, path, dataset_type):
    """Originals and reconstructions side by side, without disturbing the
    model's train/eval mode."""
    was_training = vqvae.training
    vqvae.eval()
    x_hat, _, _ = vqvae(x)  # [N, C, H, W]
    vqvae.train(was_training)
    save_grid(torch.concat((x, x_hat.float()), 3), path, dataset_type)


@torch.no_grad()
def preview_samples(vqvae, gen_model, cfg, path, seed, device):
    """A few samples of the prior decoded by the VQ-VAE (a class-conditional
    prior: one row per class). A private generator with a fixed seed draws
    them, so the training RNG stream is untouched and each epoch's grid
    starts from the same random numbers."""
    n, n_classes = cfg['n_preview'], cfg['n_classes']
    labels = None if n_classes is None else grid_labels(n_classes, n)
    imgs = sample_with_cfg(vqvae, gen_model, cfg,
                           n if labels is None else len(labels), device,
                           seed, labels=labels)
    save_grid(imgs, path, cfg['dataset_type'], labels=labels)


def build_parser():
    parser = argparse.ArgumentParser(
        description=f'Redraw {LOSS_PLOT} of a work dir from its logs '
        '(log_vqvae.jsonl, log_pixelcnn.jsonl).')
    parser.add_argument('work_dir', nargs='?', default='work_dirs',
                        help='the run\'s --work-dir (default: %(default)s)')
    return parser


def main(argv=None):
    work_dir = build_parser().parse_args(argv).work_dir
    try:
        path = plot_losses(work_dir)
    except OSError as e:  # an unreadable log, an unwritable work dir
        raise UsageError(f'could not redraw {LOSS_PLOT} in {work_dir} '
                         f'({e.strerror or e}): check the folder') from None
    print('wrote', path) if path else print('no logs found')


if __name__ == '__main__':
    sys.exit(report_errors(main))
