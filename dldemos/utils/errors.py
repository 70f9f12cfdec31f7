"""The errors a user can cause, and how an entry point reports them.

A leaf module (it imports nothing of the project's but the DDP rank test), so
every other module can raise these without import cycles. Each class is a
kind of bad input or stop that ends a run with one line and an exit code
instead of a traceback.
"""
import signal
import sys

from dldemos.utils.dist_utils import is_main

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


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loops (nothing to save): a Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated


def one_line(e):
    """The message of e. An error raised in a DataLoader worker reaches the
    main process re-raised with the worker's whole traceback as its message:
    its last line is the error itself ('DataError: ...'), said without the
    class name like any other."""
    msg = str(e)
    if 'in DataLoader worker process' in msg:
        last = msg.strip().splitlines()[-1]
        msg = last.split(': ', 1)[1] if ': ' in last else last
    return msg


def report_errors(fn, debug=False, label='error', catch_sigterm=True):
    """Run fn() for a command-line entry point and return its exit code:
    0, 130 after a stop (Ctrl-C / SIGTERM), or 2 after bad input, said in one
    line (`debug` re-raises for the traceback instead)."""
    # SIGTERM's default action kills the process silently (exit 143), so
    # outside the training loops (which install their own handler and save a
    # resume point) it ended stage 4 or evaluate.py without a word: make it
    # stop the run the way Ctrl-C does. (The torchrun launchers opt out:
    # torchrun ends the other ranks with SIGTERM when one fails, and a rank
    # blocked in a collective would not run a Python handler.)
    # An entry script's stop_quietly() handlers (exit at once) give way to
    # Ctrl-C's KeyboardInterrupt and the SIGTERM above (or, for the
    # launchers, SIGTERM's default) while fn runs, and come back after.
    old = {}
    # (marked by an attribute: threads.py imports this module for its error)
    startup = {s: getattr(signal.getsignal(s), 'exits_at_once', False)
               for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in ((signal.SIGINT, signal.default_int_handler),
                       (signal.SIGTERM, _raise_terminated if catch_sigterm
                        else signal.SIG_DFL)):
        if startup[s] or (s == signal.SIGTERM and catch_sigterm):
            try:
                old[s] = signal.signal(s, handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
    try:
        fn()
        return 0
    except Interrupted as e:
        if is_main():
            print(e, file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt as e:  # outside the training loops
        if debug:
            raise
        # a Ctrl-C here (or the third one in training) saved nothing
        print('stopped by SIGTERM' if isinstance(e, Terminated) else
              'interrupted: nothing was saved since the last checkpoint',
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (UsageError, CheckpointError, NonFiniteLoss) as e:
        if debug:
            raise
        print(f'{label}: {one_line(e)}', file=sys.stderr, flush=True)
        return EXIT_USAGE
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
