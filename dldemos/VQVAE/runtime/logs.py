"""What a run tells its user: printed lines (rank 0 only) and the per-epoch
JSONL logs that the loss plot and the README's numbers are read from."""
import json
import os
import sys
import time

from dldemos.utils.dist_utils import get_world_size, is_dist, is_main
from dldemos.VQVAE.runtime.files import (append_text_atomic, plain,
                                         write_text_atomic)


def log(*args):
    if is_main():
        text = ' '.join(map(str, args))
        try:
            print(text, flush=True)
        except UnicodeEncodeError:
            # a path that is not valid in the terminal's encoding (Linux
            # paths are bytes): shown escaped rather than ending the run
            encoding = sys.stdout.encoding or 'utf-8'
            print(text.encode(encoding, 'backslashreplace').decode(encoding),
                  flush=True)


def log_batch_size(batch_size):
    """Under torchrun batch_size is per process: say the effective batch."""
    log(f'batch size: {batch_size}' + (f' x {get_world_size()} ranks'
                                       if is_dist() else ''))


STAGE_LINE = 'stage {k} ({name}) took {seconds:.1f} s'


class StageTimer:
    """Wall time of main.py's stages: `if stage.runs(3, 'train PixelCNN'):`
    ends the stage before it (printing `stage 1 (train VQ-VAE) took 84.2 s`,
    which benchmarks/experiments/readme_results.py reads) and starts stage 3's clock
    when 3 is among the stages to run. `runs(None)` ends the last one."""

    def __init__(self, stages):
        self.stages, self.current = stages, None

    def runs(self, k, name=''):
        if self.current is not None:
            (k0, name0, tic), self.current = self.current, None
            log(STAGE_LINE.format(k=k0, name=name0,
                                  seconds=time.perf_counter() - tic))
        if k in self.stages:
            self.current = (k, name, time.perf_counter())
            return True
        return False


def append_jsonl(path, record):
    """One record a line, written atomically like every file of a run: a
    kill mid-write leaves the log as it was, never a torn line."""
    append_text_atomic(path, json.dumps(plain(record)) + '\n')


def read_jsonl(path):
    """The records of a JSONL log ([] if absent). A line cut short by a
    killed run, bytes that are not UTF-8, a line that is not a JSON object
    or one whose epoch is not a whole number >= 0 are skipped: a damaged
    log must not stop a resumed run, nor the loss plot."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and good_epoch(record):
                records.append(record)
    return records


def good_epoch(record):
    """No epoch (not a per-epoch record), or a whole number >= 0."""
    e = record.get('epoch', 0)
    return type(e) is int and e >= 0


def start_jsonl(path, start_epoch):
    """Keep the records of epochs before start_epoch: a fresh run starts an
    empty log, a resumed one drops the epochs it is about to redo."""
    if is_main():
        kept = [r for r in read_jsonl(path)
                if isinstance(r.get('epoch'), int) and r['epoch'] < start_epoch]
        write_text_atomic(path, ''.join(json.dumps(r) + '\n' for r in kept))
