"""runforgectl's exit statuses: DESIGN §11 for 0-3, run outcomes from 10 up (the same
meaning in every command). PROTOCOL.md documents each one; a test checks that it does."""

from __future__ import annotations

from runforge_protocol.records import RunState

EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_CANCELLED_FORCED = 10
EXIT_COMPLETED_DESPITE_CANCEL = 11  # `cancel`: training won the race
EXIT_RUN_FAILED = 12
EXIT_CANCELLED_GRACEFUL = 13  # `train`: the run you followed was cancelled (gracefully)
EXIT_RUN_LOST = 14

TRAIN_EXIT = {
    RunState.COMPLETED: EXIT_OK,
    RunState.FAILED: EXIT_RUN_FAILED,
    RunState.CANCELLED_GRACEFUL: EXIT_CANCELLED_GRACEFUL,
    RunState.CANCELLED_FORCED: EXIT_CANCELLED_FORCED,
    RunState.LOST: EXIT_RUN_LOST,
}
CANCEL_EXIT = {
    **TRAIN_EXIT,
    RunState.COMPLETED: EXIT_COMPLETED_DESPITE_CANCEL,
    RunState.CANCELLED_GRACEFUL: EXIT_OK,
}

EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it
EXIT_PIPE_CLOSED = 141  # stdout closed early, `| head` (128 + SIGPIPE), as a shell reports it
