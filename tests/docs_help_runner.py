"""Run `python SCRIPT --help` for many scripts at the price of one torch import
(used by test_docs_commands.py).

    python tests/docs_help_runner.py JOBS SCRIPT...  # {script: [code, output]}

torch and torchvision are imported once here; each script then runs in a
child forked from this process, as `python SCRIPT --help` would run it:
sys.argv is [SCRIPT, '--help'], sys.path starts with the script's folder and
holds neither this runner's folder nor the current one, and no module of the
repository is imported before the fork, so a script that cannot import its
own modules fails here as it would for a user. At most JOBS children run at
once; each one's exit code and the tail of its output are printed as JSON.
"""
import json
import os
import runpy
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# what `python SCRIPT` has on sys.path besides the script's folder
BASE_PATH = [p for p in sys.path[1:] if p not in ('', os.getcwd(), HERE)]

import torch  # noqa: E402,F401  the costly imports, shared by every child
import torchvision  # noqa: E402,F401


def child(script, out_fd):
    """In the forked child: run the script as __main__, exit with its code."""
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    sys.argv = [script, '--help']
    sys.path[:] = [os.path.dirname(os.path.abspath(script))] + BASE_PATH
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (e.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def main():
    jobs, scripts = int(sys.argv[1]), sys.argv[2:]
    results, running = {}, {}  # running: pid -> (script, output file)
    pending = list(scripts)
    while pending or running:
        while pending and len(running) < jobs:
            script = pending.pop(0)
            out = tempfile.TemporaryFile()
            pid = os.fork()
            if pid == 0:
                child(script, out.fileno())
            running[pid] = (script, out)
        pid, status = os.wait()
        script, out = running.pop(pid)
        out.seek(0)
        text = out.read().decode(errors="replace")[-20000:]
        out.close()
        results[script] = [os.waitstatus_to_exitcode(status), text]
    print(json.dumps(results))


if __name__ == '__main__':
    main()
