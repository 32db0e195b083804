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

from runforge_runner.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:], cancel_signal))
