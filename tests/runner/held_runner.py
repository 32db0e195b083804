"""The real runner, held at one step until it is cancelled: makes "cancel at step X" exact.

``RUNFORGE_TEST_HOLD_STEP=<step>``: on entering that step the runner prints
``held at <step>`` on stderr and then waits, checking for a cancel, so a test can send
SIGTERM knowing exactly where the run is. Everything else is the real runner.
"""

from runforge_runner.contract import CancelSignal

cancel_signal = CancelSignal.install()

import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from runforge_runner.cli import main  # noqa: E402
from runforge_runner.contract import TrainerSession  # noqa: E402

HOLD_STEP = os.environ["RUNFORGE_TEST_HOLD_STEP"]
_enter_step = TrainerSession.enter_step


def enter_step_and_hold(self: TrainerSession, step: str) -> None:
    _enter_step(self, step)
    if step != HOLD_STEP:
        return
    self.log(f"held at {step}")
    while True:
        self.checkpoint()
        time.sleep(0.01)


TrainerSession.enter_step = enter_step_and_hold  # type: ignore[method-assign]
sys.exit(main(sys.argv[1:], cancel_signal))
