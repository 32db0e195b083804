"""``python -m runforge_runner``: install the cancel handler first, then run the command."""

from runforge_runner.contract import CancelSignal

# Before any other import: a SIGTERM from here on takes the graceful cancel path.
cancel_signal = CancelSignal.install()

import sys  # noqa: E402

# The runner needs only the standard library, numpy and scikit-learn. The daemon's own
# dependencies may sit in the same site-packages (the default interpreter is the daemon's),
# and joblib imports psutil whenever it finds it; marking them unimportable keeps this
# process the same wherever it runs (joblib falls back to its psutil-free code).
DAEMON_ONLY_MODULES = ("zmq", "msgspec", "psutil", "structlog", "runforged", "protocol")
for name in DAEMON_ONLY_MODULES:
    sys.modules.setdefault(name, None)  # type: ignore[arg-type]

import os  # noqa: E402

from runforge_runner.cli import main  # noqa: E402

code = main(sys.argv[1:], cancel_signal)
if sys.argv[1:2] == ["train"]:
    # Everything a run leaves is on disk by now (atomic, fsynced writes) and its events
    # are written unbuffered. Tearing down the interpreter with scipy and scikit-learn
    # loaded takes a quarter to half a second (measured: BENCHMARKS.md, figure 16) that
    # buys nothing, so the process leaves at once, as it already does after a cancel.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
