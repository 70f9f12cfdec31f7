"""One run per work dir: the lock on <work_dir>/.lock."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dldemos.utils.errors import UsageError
from dldemos.VQVAE.runtime.work_lock import lock_work_dir, unlock_work_dir

REPO = Path(__file__).resolve().parents[1]

# a first run: takes the lock, says so, and keeps it until killed
HOLDER = '''
import sys, time
from dldemos.VQVAE.runtime.work_lock import lock_work_dir
lock_work_dir(sys.argv[1])
print('locked', flush=True)
time.sleep(120)
'''


@pytest.fixture
def work_dir(tmp_path):
    yield tmp_path / 'run'
    unlock_work_dir(tmp_path / 'run')


def test_second_run_is_refused_until_the_first_is_gone(work_dir):
    first = subprocess.Popen([sys.executable, '-c', HOLDER, str(work_dir),
                              '--tag'], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert first.stdout.readline() == 'locked\n'
        with pytest.raises(UsageError, match=(
                rf'^work dir .*run is in use by another run \(pid '
                rf'{first.pid} on {socket.gethostname()}, started '
                r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: .*--tag\): wait for it, '
                r'stop it, or pick another --work-dir$')):
            lock_work_dir(work_dir)
    finally:
        first.kill()
        first.wait()
    # the kernel dropped the dead run's lock; its lock file is still there
    assert lock_work_dir(work_dir)
    holder = json.loads((work_dir / '.lock').read_text())
    assert holder['pid'] == os.getpid()


def test_relocking_in_the_same_process_is_a_no_op(work_dir, monkeypatch):
    assert lock_work_dir(work_dir)
    monkeypatch.chdir(work_dir.parent)
    assert lock_work_dir('run')  # another spelling of the same dir
    (work_dir.parent / 'link').symlink_to(work_dir)
    assert lock_work_dir('link')
    unlock_work_dir(work_dir)
    unlock_work_dir(work_dir)  # unlocking an unlocked dir is fine too
    assert lock_work_dir(work_dir)


def test_unwritable_work_dir_is_a_one_line_error(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    with pytest.raises(UsageError, match='work dir .* is not writable.*'
                       '--work-dir'):
        lock_work_dir(blocker / 'run')
