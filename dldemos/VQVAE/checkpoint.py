"""Checkpoint files: atomic writes, resume points, safe loading.

A model checkpoint is a plain state dict (what the tutorial's code saves and
loads). Beside it, `<name>.resume.pth` holds what resuming needs: optimizer,
next epoch, RNG states and the resolved config, all as plain types so that
`torch.load(..., weights_only=True)` reads it.
"""
import os
import random

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def save_atomic(obj, path):
    """torch.save to a temp file in the same folder, then rename: a crash
    mid-write leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resume_path(ckpt_path):
    root, ext = os.path.splitext(ckpt_path)
    return f'{root}.resume{ext or ".pth"}'


def plain(obj):
    """Config values as plain Python types (tuples become lists)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def rng_state():
    return {'torch': torch.get_rng_state(),
            'cuda': (torch.cuda.get_rng_state_all()
                     if torch.cuda.is_available() else []),
            'numpy': plain(np.random.get_state()[1].tolist()),
            'python': plain(random.getstate())}


def set_rng_state(state):
    torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    np_state = np.random.get_state()
    np.random.set_state((np_state[0], np.array(state['numpy'],
                                               dtype=np.uint32), 624, 0, 0.0))
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_training_state(ckpt_path, model, optimizer, cfg, epoch, step=0,
                        sums=None):
    """Write the model (plain state dict) and its resume point, atomically.

    Resuming starts at batch `step` of epoch `epoch` (step 0: a fresh epoch);
    `sums` are the running loss sums of that epoch so far.
    """
    save_atomic(model.state_dict(), ckpt_path)
    save_atomic({'optimizer': optimizer.state_dict(), 'epoch': int(epoch),
                 'step': int(step),
                 'sums': [] if sums is None else [float(v) for v in sums],
                 'rng': rng_state(), 'config': plain(cfg)},
                resume_path(ckpt_path))


def load_file(path, what='checkpoint'):
    """torch.load with weights_only=True and a clear error for bad files."""
    if not os.path.isfile(path):
        raise CheckpointError(f'{what} {path} not found')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # truncated, not a torch file, or unsafe pickle
        raise CheckpointError(
            f'{what} {path} could not be read ({type(e).__name__}): the file '
            'is truncated, corrupt or not a checkpoint; delete it or point to '
            'another') from None


def load_model(model, path, what='checkpoint'):
    """Load a plain state dict into model; name mismatched keys and shapes."""
    state = load_file(path, what)
    if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f'{what} {path} is not a model state dict')
    own = model.state_dict()
    problems = [f'missing {k}' for k in own if k not in state]
    problems += [f'unexpected {k}' for k in state if k not in own]
    problems += [f'{k}: file {list(state[k].shape)} vs model '
                 f'{list(own[k].shape)}' for k in own
                 if k in state and state[k].shape != own[k].shape]
    if problems:
        shown = '; '.join(problems[:4])
        more = f' (+{len(problems) - 4} more)' if len(problems) > 4 else ''
        raise CheckpointError(f'{what} {path} does not match the config: '
                              f'{shown}{more}; use the config it was trained '
                              'with')
    model.load_state_dict(state)
    return model


def load_training_state(ckpt_path, model, optimizer):
    """Restore model, optimizer and RNG; return (epoch, step, sums)."""
    path = resume_path(ckpt_path)
    if not os.path.isfile(path):
        raise CheckpointError(f'no resume point {path}: run without --resume '
                              'to start this stage from scratch')
    load_model(model, ckpt_path)
    state = load_file(path, 'resume point')
    optimizer.load_state_dict(state['optimizer'])
    set_rng_state(state['rng'])
    return int(state['epoch']), int(state['step']), state['sums']
