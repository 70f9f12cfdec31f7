"""What a run tells its user: printed lines (rank 0 only) and the per-epoch
JSONL logs that the loss plot and the README's numbers are read from."""
import json
import os

from dldemos.dist_utils import is_main
from dldemos.VQVAE.checkpoint import plain


def log(*args):
    if is_main():
        print(*args, flush=True)


def append_jsonl(path, record):
    with open(path, 'a') as f:
        f.write(json.dumps(plain(record)) + '\n')


def read_jsonl(path):
    """The records of a JSONL log ([] if absent). A line cut short by a
    killed run, bytes that are not UTF-8 or a line that is not a JSON object
    are skipped: a damaged log must not stop a resumed run."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def start_jsonl(path, start_epoch):
    """Keep the records of epochs before start_epoch: a fresh run starts an
    empty log, a resumed one drops the epochs it is about to redo."""
    if is_main():
        kept = [r for r in read_jsonl(path)
                if isinstance(r.get('epoch'), int) and r['epoch'] < start_epoch]
        with open(path, 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in kept)
