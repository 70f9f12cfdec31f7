"""The errors a user can cause, and how an entry point reports them.

A leaf module (it imports nothing of the project's but the DDP rank test), so
every other module can raise these without import cycles. Each class is a
kind of bad input or stop that ends a run with one line and an exit code
instead of a traceback.
"""
import signal
import sys

from dldemos.dist_utils import is_main

EXIT_USAGE = 2        # bad input: one line that says what to do
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM, after saving a resume point


class UsageError(ValueError):
    """Bad input from the user: reported as one line, exit code 2."""


class DataError(UsageError):
    """The dataset is missing, empty or unreadable (one-line error)."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class Interrupted(Exception):
    """Training stopped by a signal (after saving a resume point)."""


def report_errors(fn, debug=False, label='error', quiet=False):
    """Run fn() for a command-line entry point and return its exit code:
    0, 130 after a stop (Ctrl-C / SIGTERM), or 2 after bad input, said in one
    line (`debug` re-raises for the traceback instead; `quiet`: the exit code
    only, for the other torchrun ranks, whose rank 0 says it once).

    SIGTERM outside the training loops (which save a resume point first) is
    handled like Ctrl-C: exit 130 with a message, not a silent 143."""
    set_sigterm_handler()
    try:
        fn()
        return 0
    except Interrupted as e:
        if is_main() and not quiet:
            print(e, file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # outside the training loops, or a 3rd signal
        if debug:
            raise
        if not quiet:
            print('interrupted: nothing was saved after the last checkpoint',
                  file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (UsageError, CheckpointError, NonFiniteLoss) as e:
        if debug:
            raise
        if not quiet:
            print(f'{label}: {e}', file=sys.stderr, flush=True)
        return EXIT_USAGE


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def set_sigterm_handler():
    try:
        signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread: leave signals alone
        pass
