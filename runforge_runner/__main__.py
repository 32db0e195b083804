"""``python -m runforge_runner``: install the cancel handler first, then run the command."""

from runforge_runner.contract import CancelSignal

# Before any other import: a SIGTERM from here on takes the graceful cancel path.
cancel_signal = CancelSignal.install()

import sys  # noqa: E402

from runforge_runner.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:], cancel_signal))
