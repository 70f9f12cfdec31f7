"""The errors a user can cause, and how an entry point reports them.

A leaf module (it imports nothing of the project's but the DDP rank test), so
every other module can raise these without import cycles. Each class is a
kind of bad input or stop that ends a run with one line and an exit code
instead of a traceback.
"""
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


def report_errors(fn, debug=False, label='error'):
    """Run fn() for a command-line entry point and return its exit code:
    0, 130 after a stop (Ctrl-C / SIGTERM), or 2 after bad input, said in one
    line (`debug` re-raises for the traceback instead)."""
    try:
        fn()
        return 0
    except Interrupted as e:
        if is_main():
            print(e, file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # outside the training loops
        if debug:
            raise
        print('interrupted', file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (UsageError, CheckpointError, NonFiniteLoss) as e:
        if debug:
            raise
        print(f'{label}: {e}', file=sys.stderr, flush=True)
        return EXIT_USAGE
