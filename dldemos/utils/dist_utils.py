"""Tiny DDP helpers. Every function is a no-op (or the obvious single-process
answer) when torch.distributed is not initialised, so the same training loop
serves `python main.py` and `torchrun ...`."""
import os

import torch
import torch.distributed as dist


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main():
    return get_rank() == 0


def barrier():
    if is_dist():
        dist.barrier()


def all_reduce_sum(t):
    """Sum of a tensor over all ranks (a copy; the input is left alone)."""
    t = t.clone()
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast(t, src=0):
    """Make `t` (in place) rank `src`'s value on every rank; returns it.
    For choices one rank makes (random picks) that all must share."""
    if is_dist():
        dist.broadcast(t, src)
    return t


def get_backend():
    """The process group's backend ('nccl', 'gloo'), or None in one
    process."""
    return dist.get_backend() if is_dist() else None


def setup_distributed(device=None):
    """Start the process group from torchrun's environment.

    NCCL on GPUs, gloo on CPU. Returns the device this rank should use.
    """
    if 'RANK' not in os.environ:
        raise RuntimeError('not launched by torchrun: run as '
                           '`torchrun --nproc_per_node=N <script> ...`')
    use_cuda = torch.cuda.is_available() and device != 'cpu'
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dist.init_process_group('nccl', device_id=torch.device('cuda',
                                                               local_rank))
        return torch.device('cuda', local_rank)
    dist.init_process_group('gloo')
    return torch.device('cpu')


def cleanup_distributed():
    if is_dist():
        dist.destroy_process_group()
