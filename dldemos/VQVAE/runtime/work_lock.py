"""One run per work dir: an exclusive lock on `<work_dir>/.lock`.

Two runs in one work dir overwrite each other's config.json, logs and
checkpoints. The lock is an flock held for the life of the process: the
kernel drops it when the holder dies, however it dies, so a lock file left
by a killed run never blocks the next one. The file itself only names the
holder, for the error the second run shows.
"""
import datetime
import fcntl
import json
import os
import shlex
import socket
import sys

from dldemos.utils.errors import UsageError

LOCK_FILE = '.lock'
# real path of each work dir this process locked -> the open lock file; the
# lock lasts as long as the fd stays open
_held = {}


def lock_work_dir(work_dir, what='work dir',
                  remedy='pick another --work-dir'):
    """Lock work_dir for this process (again: a no-op), or raise UsageError
    naming the run that holds it (`what` the folder is, and the `remedy`,
    name a checkpoint folder outside the work dir in those words). Returns False where the filesystem has no
    locks (some network filesystems): the run goes on unlocked."""
    key = os.path.realpath(work_dir)
    if key in _held:
        return True
    fd = open_lock_file(work_dir, what, remedy)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_holder(fd)
        os.close(fd)
        raise UsageError(f'{what} {work_dir} is in use by another run '
                         f'({holder}): wait for it, stop it, or {remedy}') \
            from None
    except OSError:  # ENOLCK, EOPNOTSUPP: no locks on this filesystem
        os.close(fd)
        return False
    write_holder(fd)
    _held[key] = fd
    return True


def unlock_work_dir(work_dir):
    """Release the lock this process holds on work_dir, if any."""
    fd = _held.pop(os.path.realpath(work_dir), None)
    if fd is not None:
        os.close(fd)  # closing the last fd of the file drops the flock


def open_lock_file(work_dir, what='work dir',
                   remedy='pick another --work-dir'):
    try:
        os.makedirs(work_dir, exist_ok=True)
        # no O_TRUNC: until the lock is ours, the file names its holder
        return os.open(os.path.join(work_dir, LOCK_FILE),
                       os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UsageError(f'{what} {work_dir} is not writable '
                         f'({e.strerror}): {remedy}') from None


def write_holder(fd):
    holder = {'pid': os.getpid(), 'host': socket.gethostname(),
              'started': datetime.datetime.now().strftime(
                  '%Y-%m-%d %H:%M:%S'),
              'command': shlex.join(sys.argv)}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + '\n').encode(), 0)
    except OSError:  # e.g. a full disk: the lock holds all the same
        pass


def read_holder(fd):
    """'pid P on HOST, started T: COMMAND' from the lock file."""
    try:
        h = json.loads(os.pread(fd, 1 << 16, 0))
        return (f'pid {h["pid"]} on {h["host"]}, started {h["started"]}: '
                f'{h["command"]}')
    except (OSError, ValueError, KeyError, TypeError):
        # the holder has just locked and not yet written its name
        return 'not yet named in its lock file'


def unlock_all():
    """Release every lock this process holds (the work dir and the folders
    of checkpoints outside it): an entry script's last word."""
    for key in list(_held):
        os.close(_held.pop(key))
