"""CPU threads that stay usable when other processes share the cores.

torch's CPU kernels run on an OpenMP thread pool (libgomp in the Linux pip
wheels). By default an OpenMP thread that runs out of work spins for a while
before it sleeps. On an idle machine that is the fastest setting, but when
other processes hold cores the spinning threads take them from the threads
doing the work: on a 2-core machine with 1-2 busy processes, the quick
config's (-c 5) prior step took 3-5 s with 2 threads against 0.3-0.6 s with 1
(benchmarks/speed/bench_threads.py). With OMP_WAIT_POLICY=PASSIVE idle threads
sleep at once: 2 threads then take 0.6-1.6x the time of 1 thread under the
loads measured instead of 4-12x, at the price of waking them up (about 2x
slower than spinning threads when the cores are free, for these small
models). `--threads 1` avoids both costs where models are small and cores few.

A leaf module that does not import torch at load time: entry points call
passive_wait() before their first `import torch`, and stop_quietly() with
it.
"""
import os
import signal


def passive_wait():
    """OMP_WAIT_POLICY=PASSIVE unless the environment already sets a policy.

    Only works before torch is imported: the OpenMP runtime reads it once,
    when it loads. Child processes (DataLoader workers, torchrun ranks)
    inherit it through the environment."""
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


# More threads than this is a typo: OpenMP fails to start tens of
# thousands of threads (a crash at the first kernel), and no machine this
# runs on has that many cores.
MAX_THREADS = 1024


def stop_quietly():
    """Ctrl-C or SIGTERM from now until the run installs its own handlers
    (report_errors, the training loops) ends the process at once with one
    line and exit code 130, instead of a traceback from inside the imports
    (SIGINT) or a silent exit 143 (SIGTERM): nothing has been written yet.
    report_errors puts it back when it returns, so a late signal while the
    process exits says the same."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop_now)


def stop_now(signum, frame):
    # os.write and os._exit: safe wherever the signal lands (mid-import,
    # mid-print), and nothing is half-written that a cleanup would finish
    os.write(2, f'stopped by {signal.Signals(signum).name}\n'.encode())
    os._exit(130)


stop_now.exits_at_once = True  # report_errors recognises it by this


def configure_threads(n=None):
    """torch.set_num_threads(n) when n is given (None keeps torch's default:
    one thread per core, or OMP_NUM_THREADS). Returns the thread count."""
    import torch
    if n is not None:
        if not 1 <= n <= MAX_THREADS:
            from dldemos.utils.errors import UsageError
            raise UsageError(f'--threads {n}: use an integer from 1 to '
                             f'{MAX_THREADS} (the cores: {os.cpu_count()})')
        torch.set_num_threads(n)
    return torch.get_num_threads()
