"""The event topic scheme and the event types the daemon publishes.

A published event is two frames: ``[topic, payload]`` where payload is a MessagePack
``runforge_protocol.messages.Event``. Topics are hierarchical so that a ZeroMQ prefix subscription
selects a workspace, a run, or one event type of one run:

    run/<workspace key>/<run id>/<event type>
    daemon/<event type>

Subscribe to ``run/<key>/`` for one workspace, ``run/<key>/<run id>/`` for one run (the
trailing slash keeps run ``abc`` from matching ``abcd``), ``daemon/`` for the daemon's own
events, or ``b""`` for everything.
"""

from __future__ import annotations

RUN_PREFIX = "run/"
DAEMON_PREFIX = "daemon/"

# Published by the daemon itself, or numbered by a run's monitor (``runforged.monitor``
# imports this module with the standard library alone). The runner's own event types
# pass through unchanged (run_start, dataset_loaded, train_started, train_progress,
# train_finished, metrics_computed, artifacts_written, cancelling, run_cancelled,
# run_failed).
DAEMON_STARTED = "daemon_started"
DAEMON_STOPPING = "daemon_stopping"
RUN_QUEUED = "run_queued"
RUN_SPAWNED = "run_spawned"
CANCEL_REQUESTED = "cancel_requested"
CANCEL_COUNTDOWN = "cancel_countdown"  # data: {seconds_remaining}
CANCEL_ESCALATED = "cancel_escalated"  # SIGKILL sent to the process tree at the deadline
RUN_TERMINAL = "run_terminal"  # data: {state, reason, exit_code, partial_artifacts, ...}
INDEX_UPDATED = "index_updated"
INDEX_ORPHANED = "index_orphaned"  # data: {error: {type, message}}
INVALID_EVENT_LINE = "invalid_event_line"  # data: {reason, line (truncated)}
LOGS_TRUNCATED = "logs_truncated"  # data: {max_log_bytes, logged_bytes}


def workspace_key(workspace: str) -> str:
    """A short, topic-safe key for a resolved workspace path."""
    # Imported here: hashlib loads OpenSSL (~3 ms), a cost every runforgectl start would
    # pay although most commands never compute a key.
    import hashlib

    return hashlib.sha256(workspace.encode("utf-8")).hexdigest()[:16]


def run_topic_prefix(workspace: str, run_id: str | None = None) -> bytes:
    key = workspace_key(workspace)
    if run_id is None:
        return f"{RUN_PREFIX}{key}/".encode()
    return f"{RUN_PREFIX}{key}/{run_id}/".encode()


def run_topic(workspace: str, run_id: str, event_type: str) -> bytes:
    return run_topic_prefix(workspace, run_id) + event_type.encode()


def daemon_topic(event_type: str) -> bytes:
    return f"{DAEMON_PREFIX}{event_type}".encode()
