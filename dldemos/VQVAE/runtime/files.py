"""Files the project writes and reads: every write goes to a temp file in the
same folder and is renamed into place (a crash mid-write leaves the previous
file whole), and every read of a checkpoint is `weights_only` (a checkpoint
cannot run code) with a one-line error for a bad file.
"""
import errno
import glob
import hashlib
import os
import re
import shutil
import socket

import torch

from dldemos.utils.errors import CheckpointError


def save_atomic(obj, path):
    """torch.save to a temp file in the same folder, then rename: a crash
    mid-write leaves the previous file intact."""
    write_atomic(path, 'wb', lambda f: torch.save(obj, f))


def write_text_atomic(path, text):
    """Write a text file (config.json, command.txt, a JSONL log) the same
    way, with the same one-line errors, a full disk included."""
    write_atomic(path, 'w', lambda f: f.write(text))


def probe_writable(folder, tag=''):
    """Create and remove a file in folder (OSError if it cannot be written):
    said before a run works, not when its first file is due. `tag` keeps
    the probes of processes that share a folder and a pid apart."""
    probe = os.path.join(folder, f'.write_test{os.getpid()}{tag}')
    with open(probe, 'w'):
        pass
    os.remove(probe)


def write_bytes_atomic(path, data):
    """Write an encoded image (or any bytes) the same way."""
    write_atomic(path, 'wb', lambda f: f.write(data))


def append_text_atomic(path, text):
    """Append to a small text file (a JSONL log, command.txt) by writing the
    old content plus `text` anew: a crash leaves the old file or the new
    one, never a torn last line."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            old = f.read()
    except FileNotFoundError:
        old = ''
    write_text_atomic(path, old + text)


def write_atomic(path, mode, write):
    """Call write(f) on a temp file opened with `mode`, then rename it to
    path; errors of the disk become one-line CheckpointErrors."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = os.path.join(folder, f'.{name}.tmp.{HOST}.{os.getpid()}')
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temps(folder, name)
        # text as UTF-8 whatever the locale; surrogateescape writes a path
        # that is not UTF-8 (command.txt) back as the bytes it came from
        text = {} if 'b' in mode else {'encoding': 'utf-8',
                                       'errors': 'surrogateescape'}
        with open(tmp, mode, **text) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)  # make the rename itself survive a power loss
    except (OSError, RuntimeError) as e:
        # judged while the temp file still holds the space it took
        full = disk_full(e, folder)
        discard(tmp)
        if full:
            raise CheckpointError(
                f'could not write {path}: the disk is full '
                f'({free_mib(folder)} MiB free on its filesystem); free '
                'space or pick another --work-dir') from None
        if not isinstance(e, OSError):
            raise  # torch failed for another reason: keep its traceback
        raise CheckpointError(f'could not write {path} ({e.strerror or e}): '
                              'check that its folder is writable') from None
    finally:
        discard(tmp)


# temp file names carry host and pid, so that a save can tell the temp file
# of a killed save from that of another run saving to the same path now
HOST = socket.gethostname()
TEMP_NAME = re.compile(r'\.tmp\.(?P<host>.+)\.(?P<pid>\d+)')
OLD_TEMP_NAME = re.compile(r'\.tmp(?P<pid>\d+)')  # before the host was in it


def remove_stale_temps(folder, name):
    """Remove the temp files of saves that were killed (SIGKILL, power
    loss); those of live writers, or of other hosts, stay."""
    prefix = f'.{name}'
    for old in glob.glob(os.path.join(glob.escape(folder),
                                      f'{glob.escape(prefix)}.tmp*')):
        if is_stale(os.path.basename(old)[len(prefix):]):
            discard(old)


def is_stale(suffix):
    """Whether a temp file (named by its suffix after the target's name)
    was written by a process of this host that is gone."""
    m = TEMP_NAME.fullmatch(suffix) or OLD_TEMP_NAME.fullmatch(suffix)
    if m is None or m.groupdict().get('host', HOST) != HOST:
        return False  # another host's pid says nothing here
    pid = int(m['pid'])
    if pid == os.getpid():
        return True  # this process's own, and it is not saving it now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's
        return False
    return False


LOW_SPACE = 16 * 2**20  # bytes: a write that failed with less free ran out


def disk_full(err, folder):
    """Whether a write failed for want of space. torch's zip writer turns
    ENOSPC into a RuntimeError ('[enforce fail at inline_container.cc ...]')
    that at best has the OSError as its context: free space decides when
    the errno is lost."""
    for e in (err, err.__cause__, err.__context__):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC,
                                                   errno.EDQUOT):
            return True
    if isinstance(err, OSError):
        return False
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


def free_mib(folder):
    try:
        return shutil.disk_usage(folder).free // 2**20
    except OSError:
        return '?'


def discard(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def file_sha256(path):
    """Identifies a checkpoint's exact weights (code caches and priors record
    which VQ-VAE they were made from)."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

def plain(obj):
    """Config values as plain Python types (tuples become lists)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj

def load_file(path, what='checkpoint'):
    """torch.load with weights_only=True and a clear error for bad files."""
    if not os.path.isfile(path):
        raise CheckpointError(f'{what} {path} not found')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # truncated, not a torch file, or unsafe pickle
        raise CheckpointError(
            f'{what} {path} could not be read ({type(e).__name__}): the file '
            'is truncated, corrupt, not a checkpoint or holds more than '
            'tensors and plain values; delete it or point to another') \
            from None


def check_state_dict(model, state, path, what='checkpoint'):
    """Raise CheckpointError naming mismatched keys and shapes."""
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
        # class biases alone differ: the likely cause is the n_classes key
        hint = ' (class_bias: a prior is class-conditional only with ' \
            'n_classes set)' if any('class_bias' in p for p in problems) \
            else ''
        raise CheckpointError(f'{what} {path} does not match the config: '
                              f'{shown}{more}{hint}; use the config it was '
                              'trained with')


def load_model(model, path, what='checkpoint'):
    """Load a plain state dict into model; name mismatched keys and shapes."""
    state = load_file(path, what)
    check_state_dict(model, state, path, what)
    model.load_state_dict(state)
    return model
